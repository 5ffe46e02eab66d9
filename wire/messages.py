"""Application messages carried in the payload of link DATA frames.

Each payload is one UTF-8 JSON object whose "m" names the kind. Both ends build messages with the
functions here and read them with decode(), which checks kinds, fields and types, so a corrupt or
hostile payload becomes a MessageError instead of a crash.

hubd -> bridge
    op       {"m":"op","rid":int,"lock":str,"action":str,"cmd":str,"ttl":int}
             ttl: milliseconds from receipt after which the bridge must not start the op
bridge -> hubd
    written  {"m":"written","rid":int}            the lock command write is being attempted
    result   {"m":"result","rid":int,"outcome":str,"reason":str|null,"state":str|null,
              "battery":int|null,"ms":int|null,"ble":int|null}
                                                    the final result of one op; ms: time on the
                                                    bridge from receipt to result, ble: of that,
                                                    the time in the lock driver (the radio)
    state    {"m":"state","lock":str,"state":str,"battery":int|null,"source":str}
              a lock state the bridge learned without an op (source: wire.lockkinds.SOURCES)
    event    {"m":"event","lock":str,"event":str,"source":str,"state":str|null,"battery":int|null}
              a happening that is not a state (wire.lockkinds.EVENTS: key taken, box opened...)

Safety alarms (wire/alarms.py has the vocabulary):
bridge -> hubd
    alarm        {"m":"alarm","id":str,"event":str,"device":str,"unit_at":int,"bridge_at":int|null}
                 journaled on the bridge's flash; id is stable (wire.alarms.alarm_id); times are
                 Unix seconds (bridge_at null while the bridge has no clock)
    alarm_lte    {"m":"alarm_lte","id":str,"result":str}   the second path's result for an
                 alarm: "ack" (the receiver has it), "nak", "duh" or "failed"
hubd -> bridge
    alarm_stored {"m":"alarm_stored","id":str}   in hubd's durable outbox
    alarm_handled {"m":"alarm_handled","id":str} the alarm centre handled it: the bridge may
                 drop it from its journal and tell the resident help is on the way
    clock        {"m":"clock","unix":int}        hubd's time, so the bridge can stamp events
"""

import json

OP = "op"
WRITTEN = "written"
RESULT = "result"
STATE = "state"
EVENT = "event"
ALARM = "alarm"
ALARM_LTE = "alarm_lte"
ALARM_STORED = "alarm_stored"
ALARM_HANDLED = "alarm_handled"
CLOCK = "clock"

ACTIONS = ("unlock", "lock", "unlatch", "status")
OUTCOMES = ("succeeded", "failed", "timed_out", "incomplete")
MAX_ID = 64  # longest lock id or command id, in characters

_STR = "str"
_INT = "int"
_OPT_STR = "str?"
_OPT_INT = "int?"

_FIELDS = {
    OP: (("rid", _INT), ("lock", _STR), ("action", _STR), ("cmd", _STR), ("ttl", _INT)),
    WRITTEN: (("rid", _INT),),
    RESULT: (("rid", _INT), ("outcome", _STR), ("reason", _OPT_STR), ("state", _OPT_STR),
             ("battery", _OPT_INT), ("ms", _OPT_INT), ("ble", _OPT_INT)),
    STATE: (("lock", _STR), ("state", _STR), ("battery", _OPT_INT), ("source", _STR)),
    EVENT: (("lock", _STR), ("event", _STR), ("source", _STR), ("state", _OPT_STR),
            ("battery", _OPT_INT)),
    ALARM: (("id", _STR), ("event", _STR), ("device", _STR), ("unit_at", _INT),
            ("bridge_at", _OPT_INT)),
    ALARM_LTE: (("id", _STR), ("result", _STR)),
    ALARM_STORED: (("id", _STR),),
    ALARM_HANDLED: (("id", _STR),),
    CLOCK: (("unix", _INT),),
}


class MessageError(ValueError):
    """A payload that is not a valid application message."""


def _encode(obj):
    return json.dumps(obj).encode()


def op(rid, lock, action, cmd, ttl):
    """Ask the bridge to run `action` on `lock` for command id `cmd`, starting within `ttl` ms."""
    return _encode({"m": OP, "rid": rid, "lock": lock, "action": action, "cmd": cmd,
                    "ttl": ttl})


def written(rid):
    """Tell hubd that the command write to the lock is being attempted: never retry after it."""
    return _encode({"m": WRITTEN, "rid": rid})


def result(rid, outcome, reason, state, battery, ms=None, ble=None):
    """The final result of op `rid`; `ms`: how long the bridge spent on it, `ble`: of that, how
    long in the lock driver."""
    return _encode({"m": RESULT, "rid": rid, "outcome": outcome, "reason": reason,
                    "state": state, "battery": battery, "ms": ms, "ble": ble})


def state(lock, lock_state, battery, source):
    """An unsolicited lock state report (a manual turn, a poll)."""
    return _encode({"m": STATE, "lock": lock, "state": lock_state, "battery": battery,
                    "source": source})


def event(lock, name, source, lock_state=None, battery=None):
    """A discrete happening at a lock (wire.lockkinds.EVENTS)."""
    return _encode({"m": EVENT, "lock": lock, "event": name, "source": source,
                    "state": lock_state, "battery": battery})


def alarm(alarm_id, name, device, unit_at, bridge_at=None):
    """A safety alarm the bridge has journaled (wire.alarms)."""
    return _encode({"m": ALARM, "id": alarm_id, "event": name, "device": device,
                    "unit_at": unit_at, "bridge_at": bridge_at})


def alarm_lte(alarm_id, result):
    """What the second path (LTE, SIA DC-09) achieved for an alarm."""
    return _encode({"m": ALARM_LTE, "id": alarm_id, "result": result})


def alarm_stored(alarm_id):
    """hubd has the alarm in its durable outbox."""
    return _encode({"m": ALARM_STORED, "id": alarm_id})


def alarm_handled(alarm_id):
    """The alarm centre has handled the alarm."""
    return _encode({"m": ALARM_HANDLED, "id": alarm_id})


def clock(unix):
    """hubd's time in Unix seconds."""
    return _encode({"m": CLOCK, "unix": unix})


def _check(value, kind):
    if kind == _STR or kind == _OPT_STR:
        if value is None and kind == _OPT_STR:
            return True
        return isinstance(value, str) and 0 < len(value) <= MAX_ID
    if value is None and kind == _OPT_INT:
        return True
    return isinstance(value, int) and not isinstance(value, bool) and -(1 << 31) <= value < (1 << 31)


def decode(payload):
    """Parse and check one payload; return the message as a dict."""
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeError):
        raise MessageError("payload is not JSON")
    if not isinstance(obj, dict):
        raise MessageError("payload is not a JSON object")
    kind = obj.get("m")
    fields = _FIELDS.get(kind) if isinstance(kind, str) else None
    if fields is None:
        raise MessageError("unknown message kind %r" % (kind,))
    for name, ftype in fields:
        if not _check(obj.get(name), ftype):
            raise MessageError("%s: field %r missing or of the wrong type" % (kind, name))
    if kind == OP and obj["action"] not in ACTIONS:
        raise MessageError("op: unsupported action %r" % obj["action"])
    if kind == RESULT and obj["outcome"] not in OUTCOMES:
        raise MessageError("result: unknown outcome %r" % obj["outcome"])
    return obj
