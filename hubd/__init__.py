"""hubd: the home hub daemon (MQTT <-> bridge)."""

__version__ = "0.1.0"
