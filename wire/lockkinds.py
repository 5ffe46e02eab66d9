"""The lock kinds of the domain: what each supports and what it can report.

One definition, imported by hubd (to refuse an action a lock cannot do before anything moves),
by the firmware (to pick a driver) and by the simulator (to model each kind).
"""

INSIDE_TURNER = "inside_turner"  # turns the inside thumb-turn (Danalock type); key still works
IN_CYLINDER = "in_cylinder"  # inside the cylinder / lock case (dKey type); handle opens, relocks
KEY_BOX = "key_box"  # electronic key box holding a copy of the house key
ENTRANCE_DOOR = "entrance_door"  # the shared entrance door of an apartment building

# Actions each kind supports ("status" reads state and battery and moves nothing).
ACTIONS = {
    INSIDE_TURNER: ("unlock", "lock", "status"),
    IN_CYLINDER: ("unlock", "lock", "unlatch", "status"),
    KEY_BOX: ("unlock", "lock", "status"),  # unlock releases the lid; lock latches it again
    ENTRANCE_DOOR: ("unlatch", "status"),  # releases the door for a few seconds
}
KINDS = tuple(ACTIONS)

# States a lock reports. "moving" while the motor runs; "unknown" when it cannot be read.
STATES = ("locked", "unlocked", "unlatched", "moving", "jammed", "unknown")

# Who or what changed a lock's state.
SOURCE_REMOTE = "remote"  # a command through the hub
SOURCE_MANUAL = "manual"  # key or thumb-turn by hand
SOURCE_HANDLE = "handle"  # the door handle (in-cylinder locks open with it from inside)
SOURCE_AUTO = "auto"  # the lock itself: auto-lock, relock after the door closed
SOURCE_POLL = "poll"  # the bridge's periodic state read (no change implied)
SOURCES = (SOURCE_REMOTE, SOURCE_MANUAL, SOURCE_HANDLE, SOURCE_AUTO, SOURCE_POLL)

# Discrete happenings that are not a lock state (carried by the `event` link message).
EVENTS = ("box_opened", "box_closed", "key_taken", "key_returned", "door_opened", "door_closed")


# What each kind's mechanism can report (a lock's own reports, not the hub's polls): the events,
# and the sources of a state or event. A report outside these came from a misconfigured or hostile
# device, and a driver drops it rather than pass it on as fact.
REPORT_EVENTS = {
    INSIDE_TURNER: (),
    IN_CYLINDER: ("door_opened", "door_closed"),
    KEY_BOX: ("box_opened", "box_closed", "key_taken", "key_returned"),
    ENTRANCE_DOOR: ("door_opened", "door_closed"),
}
REPORT_SOURCES = {
    INSIDE_TURNER: (SOURCE_REMOTE, SOURCE_MANUAL, SOURCE_AUTO),
    IN_CYLINDER: (SOURCE_REMOTE, SOURCE_MANUAL, SOURCE_HANDLE, SOURCE_AUTO),
    KEY_BOX: (SOURCE_REMOTE, SOURCE_MANUAL, SOURCE_AUTO),
    ENTRANCE_DOOR: (SOURCE_REMOTE, SOURCE_MANUAL, SOURCE_AUTO),
}


# The lock protocols hubd's drivers speak (hubd/locks/): the reference lock protocol
# (docs/lock-protocol.md), which every kind above speaks in the simulator, and dormakaba's dKey
# (docs/dkey.md, through py-dormakaba-dkey), an in-cylinder lock. A Danalock v3 has no protocol
# its maker publishes: the reference inside turner stands in for it (docs/danalock.md).
REFERENCE = "reference"
DKEY = "dkey"
PROTOCOLS = (REFERENCE, DKEY)
# The kinds each protocol's locks are, and the actions a protocol narrows its kind's to (a dKey
# unlocks and locks; it has no command that releases the latch on its own).
PROTOCOL_KINDS = {REFERENCE: KINDS, DKEY: (IN_CYLINDER,)}
PROTOCOL_ACTIONS = {DKEY: ("unlock", "lock", "status")}
# A dKey's activation code, printed on its card (XXXX-XXXX): 8 characters of this alphabet (no
# vowels, no Y; py-dormakaba-dkey's ACTIVATION_CODE_ALLOWED, which a test holds this to).
DKEY_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ0123456789"
DKEY_CODE_LEN = 8


def supports(kind, action, protocol=REFERENCE):
    """Whether a lock of `kind` speaking `protocol` can do `action`."""
    if action not in ACTIONS.get(kind, ()):
        return False
    narrowed = PROTOCOL_ACTIONS.get(protocol)
    return narrowed is None or action in narrowed


def can_report(kind, source, event=None):
    """Whether a lock of `kind` can make a report from `source` (a state, or with `event` that
    event)."""
    if source not in REPORT_SOURCES.get(kind, ()):
        return False
    return event is None or event in REPORT_EVENTS.get(kind, ())
