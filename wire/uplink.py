"""The LTE uplink's byte channel on the serial link: one definition both ends import.

Where a home has no broadband (or it fails) hubd reaches its broker through a TCP socket on the
bridge's LTE modem (firmware/uplink.py opens it with the BG95's socket AT commands). MQTT and
TLS run end to end between hubd and the broker: the bridge and the modem carry ciphertext.

- **Bytes**: a link payload of DATA followed by 1..MAX_CHUNK bytes of the TCP stream, in either
  direction. DATA is wire.link.BULK: the link sends these after every message (an alarm or a
  lock operation never waits behind a stream) and drops them, never hands them back, when its
  session ends: the stream belonged to that session, so the bridge closes the socket then
  (uplink_state closed, why "host_link") and hubd's MQTT client reconnects.
- **Control**: JSON messages (wire/messages.py): uplink_open, uplink_close, uplink_state,
  uplink_ack.
- **Pace** (hubd -> bridge): hubd has at most WINDOW bytes sent and not acknowledged by an
  uplink_ack (the modem took them), so the bridge never holds more than WINDOW of them on its
  heap. The other way the bridge reads the modem only while the link has room for bulk
  (wire.link.Link.bulk_room).
"""

from wire import frame, link

DATA = link.BULK
MAX_CHUNK = frame.MAX_PAYLOAD - 1  # stream bytes in one payload
WINDOW = 1024  # bytes hubd may have sent and not had acknowledged


def data(chunk):
    """The payload carrying `chunk` (1..MAX_CHUNK bytes of the stream)."""
    if not 0 < len(chunk) <= MAX_CHUNK:
        raise ValueError("an uplink chunk is 1..%d bytes, not %d" % (MAX_CHUNK, len(chunk)))
    return bytes((DATA,)) + bytes(chunk)


def is_data(payload):
    """Whether a link payload carries stream bytes (else it is a message for
    wire.messages.decode)."""
    return link.is_bulk(payload)


def chunk(payload):
    """The stream bytes of a DATA payload (may be empty for a payload of DATA alone: a peer's
    error, carried as nothing)."""
    return payload[1:]
