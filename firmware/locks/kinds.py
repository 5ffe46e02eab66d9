"""What each lock kind may report, so a driver passes on only what that kind can produce.

The actions a kind supports are in ``wire.lockkinds`` (shared with hubd); this adds, per kind,
the events and report sources that make sense for its mechanism. A report outside these came
from a misconfigured or hostile device and is dropped, not passed on as fact.
"""

from wire import lockkinds as lk

_EVENTS = {
    lk.INSIDE_TURNER: (),
    lk.IN_CYLINDER: ("door_opened", "door_closed"),
    lk.KEY_BOX: ("box_opened", "box_closed", "key_taken", "key_returned"),
    lk.ENTRANCE_DOOR: ("door_opened", "door_closed"),
}

_SOURCES = {
    lk.INSIDE_TURNER: (lk.SOURCE_REMOTE, lk.SOURCE_MANUAL, lk.SOURCE_AUTO),
    lk.IN_CYLINDER: (lk.SOURCE_REMOTE, lk.SOURCE_MANUAL, lk.SOURCE_HANDLE, lk.SOURCE_AUTO),
    lk.KEY_BOX: (lk.SOURCE_REMOTE, lk.SOURCE_MANUAL, lk.SOURCE_AUTO),
    lk.ENTRANCE_DOOR: (lk.SOURCE_REMOTE, lk.SOURCE_MANUAL, lk.SOURCE_AUTO),
}

# The reference protocol names the motor as a report's source; to hubd that is a remote action.
_PROTOCOL_SOURCES = {"motor": lk.SOURCE_REMOTE}


def source(kind, protocol_source):
    """The wire.lockkinds source for a report of ``kind``, or None if the kind cannot have it."""
    name = _PROTOCOL_SOURCES.get(protocol_source, protocol_source)
    return name if name in _SOURCES.get(kind, ()) else None


def has_event(kind, event):
    """Whether a lock of ``kind`` can report ``event``."""
    return event in _EVENTS.get(kind, ())
