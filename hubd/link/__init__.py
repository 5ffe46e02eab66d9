"""The bridge: the serial link over pyserial (serial_port) and the bridge's lock operations and
messages on it (bridge)."""
