"""hubd's side of the link messages: builders of what only hubd sends the bridge.

wire/messages.py is the messages' one definition (kinds, fields, ``make``, ``decode``); the
bridge decodes these with it but never builds them, so their builders live here and take no
room on its heap (as wire/lockside.py and wire/unitside.py do for the locks and the alarm unit).
"""

from wire import messages
from wire.messages import make


def alarm_stored(alarm_id):
    """hubd has the alarm in its durable outbox."""
    return make(messages.ALARM_STORED, alarm_id)


def alarm_handled(alarm_id):
    """The alarm centre has handled the alarm."""
    return make(messages.ALARM_HANDLED, alarm_id)


def clock(unix):
    """hubd's time in Unix seconds."""
    return make(messages.CLOCK, unix)


def health_request():
    """Ask the bridge for a `health` message now."""
    return make(messages.HEALTH_REQUEST)


def uplink_open(host, port):
    """Open the LTE uplink's socket to ``host``:``port`` on the bridge's modem (wire/uplink.py)."""
    return make(messages.UPLINK_OPEN, host, port)


def uplink_close():
    """Close the LTE uplink's socket."""
    return make(messages.UPLINK_CLOSE)
