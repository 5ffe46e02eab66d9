"""The MQTT topic tree of the hub API, version 1: the one place topics are spelled.

Everything a hub reads or writes lies under ``hubs/{hub}/v1/``, so a broker ACL such as
``pattern readwrite hubs/%u/#`` confines each hub to its own subtree.

==============================  =========  ==========================================
topic                           retained   payload
==============================  =========  ==========================================
hubs/{hub}/v1/commands          never      compact JWS of :class:`hubapi.models.CommandClaims`
hubs/{hub}/v1/answers[/...]     no         :class:`hubapi.models.Answer` (JSON)
hubs/{hub}/v1/locks/{lock}/state yes       :class:`hubapi.models.LockState` (JSON)
hubs/{hub}/v1/online            yes        :class:`hubapi.models.Online` (JSON; last will "offline")
hubs/{hub}/v1/audit             no         :class:`hubapi.models.AuditEntry` (JSON; at least once, in seq order)
hubs/{hub}/v1/audit/request     never      :class:`hubapi.models.AuditRequest` (JSON; backend -> hub)
hubs/{hub}/v1/audit/replies[/...] no       :class:`hubapi.models.AuditBatch` (JSON)
hubs/{hub}/v1/alarms/raised     no         :class:`hubapi.models.AlarmEvent` (JSON; resent until handled)
hubs/{hub}/v1/alarms/confirmed  never      :class:`hubapi.models.AlarmHandled` (JSON; centre -> hub)
hubs/{hub}/v1/alarms/heartbeat  no         :class:`hubapi.models.HubHeartbeat` (JSON; hub -> centre)
hubs/{hub}/v1/devices/{device}/state   yes  :class:`hubapi.models.DeviceState` (JSON; health of one device)
hubs/{hub}/v1/devices/{device}/battery no   :class:`hubapi.models.BatteryWarning` (JSON; at least once)
==============================  =========  ==========================================
"""

from __future__ import annotations

import re

API_VERSION = 1

#: Hub and lock ids become topic segments: no ``/``, no wildcards, nothing a shell or log mangles.
SEGMENT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
_SEGMENT = re.compile(SEGMENT_PATTERN)

#: Longest reply topic a command may name (MQTT allows 65535 bytes; nobody needs that).
MAX_TOPIC_LENGTH = 256


def is_valid_segment(value: str) -> bool:
    """Whether ``value`` may be used as a hub or lock id inside a topic."""
    return bool(_SEGMENT.fullmatch(value))


def _segment(value: str, what: str) -> str:
    if not is_valid_segment(value):
        raise ValueError(f"{what} id {value!r} must match {SEGMENT_PATTERN}")
    return value


def root(hub: str) -> str:
    """``hubs/{hub}/v1``: the hub's own subtree."""
    return f"hubs/{_segment(hub, 'hub')}/v{API_VERSION}"


def commands(hub: str) -> str:
    """Where the backend publishes signed commands for ``hub`` (QoS 1, never retained)."""
    return f"{root(hub)}/commands"


def answers(hub: str) -> str:
    """The hub's default answers topic; a command's ``reply_to`` may name a subtopic of it."""
    return f"{root(hub)}/answers"


def lock_state(hub: str, lock: str) -> str:
    """Retained state of one lock."""
    return f"{root(hub)}/locks/{_segment(lock, 'lock')}/state"


def lock_states(hub: str) -> str:
    """Subscription filter for the retained state of every lock of ``hub``."""
    return f"{root(hub)}/locks/+/state"


def online(hub: str) -> str:
    """Retained online/offline state of the hub (its last will publishes "offline")."""
    return f"{root(hub)}/online"


def audit(hub: str) -> str:
    """Where the hub publishes its audit entries (from its durable outbox, QoS 1)."""
    return f"{root(hub)}/audit"


def audit_request(hub: str) -> str:
    """Where the backend asks for a range of audit entries again (never retained)."""
    return f"{root(hub)}/audit/request"


def audit_replies(hub: str) -> str:
    """The hub's default topic for answers to audit requests; a request may name a subtopic."""
    return f"{root(hub)}/audit/replies"


def alarms_raised(hub: str) -> str:
    """Where the hub raises safety alarms to the alarm centre (QoS 1, resent until handled)."""
    return f"{root(hub)}/alarms/raised"


def alarms_confirmed(hub: str) -> str:
    """Where the alarm centre says it handled one of the hub's alarms."""
    return f"{root(hub)}/alarms/confirmed"


def alarms_heartbeat(hub: str) -> str:
    """Where the hub says, periodically, that it is alive, for the alarm centre."""
    return f"{root(hub)}/alarms/heartbeat"


def device_state(hub: str, device: str) -> str:
    """Retained health of one device: battery, last seen, signal, firmware, availability."""
    return f"{root(hub)}/devices/{_segment(device, 'device')}/state"


def device_states(hub: str) -> str:
    """Subscription filter for the retained state of every device of ``hub``."""
    return f"{root(hub)}/devices/+/state"


def device_battery(hub: str, device: str) -> str:
    """Battery warnings of one device (from the hub's durable outbox, QoS 1, at least once)."""
    return f"{root(hub)}/devices/{_segment(device, 'device')}/battery"


def device_batteries(hub: str) -> str:
    """Subscription filter for the battery warnings of every device of ``hub``."""
    return f"{root(hub)}/devices/+/battery"


def status(hub: str) -> str:
    """The hub's health snapshot, retained: republished when the bridge link changes and every
    few minutes, so a late subscriber sees the truth at once."""
    return f"{root(hub)}/status"


def decommissioned(hub: str) -> str:
    """The hub was decommissioned (hubctl decommission), retained: its locks forgot their secrets
    and it accepts no command any more."""
    return f"{root(hub)}/decommissioned"


def status_request(hub: str) -> str:
    """Where the backend or a technician asks for a fresh health snapshot (never retained)."""
    return f"{root(hub)}/status/request"


def status_replies(hub: str) -> str:
    """The hub's default topic for answers to status requests; a request may name a subtopic."""
    return f"{root(hub)}/status/replies"


def every_hubs_alarms() -> tuple[str, str]:
    """Subscription filters for the alarm centre: raised alarms and heartbeats of every hub."""
    return (f"hubs/+/v{API_VERSION}/alarms/raised", f"hubs/+/v{API_VERSION}/alarms/heartbeat")


def every_hubs_online() -> str:
    """Subscription filter for every hub's retained online state (the alarm centre supervises it)."""
    return f"hubs/+/v{API_VERSION}/online"


def is_answer_topic(hub: str, topic: str) -> bool:
    """Whether the hub may publish answers to ``topic``.

    Only the answers topic itself or a subtopic of it qualifies: a command must not make the hub
    publish onto another hub's tree, onto its own command topic, or over retained state.
    """
    return _at_or_under(answers(hub), topic)


def reply_topic(hub: str, requested: str | None) -> str:
    """The topic to answer on: ``requested`` if it is one of the hub's answer topics, else the default."""
    if requested is not None and is_answer_topic(hub, requested):
        return requested
    return answers(hub)


def audit_reply_topic(hub: str, requested: str | None) -> str:
    """Where to answer an audit request: ``requested`` if it is ``audit/replies`` or under it, else that."""
    if requested is not None and _at_or_under(audit_replies(hub), requested):
        return requested
    return audit_replies(hub)


def status_reply_topic(hub: str, requested: str | None) -> str:
    """Where to answer a status request: ``requested`` if it is ``status/replies`` or under it, else that."""
    if requested is not None and _at_or_under(status_replies(hub), requested):
        return requested
    return status_replies(hub)


def _at_or_under(base: str, topic: str) -> bool:
    if not isinstance(topic, str) or not topic or not topic.isprintable():
        return False  # a lone surrogate, a control character: no topic anyone may name
    if len(topic.encode()) > MAX_TOPIC_LENGTH:
        return False
    if any(c in topic for c in "+#\x00"):
        return False
    if topic == base:
        return True
    if not topic.startswith(base + "/"):
        return False
    return all(topic.split("/"))  # no empty levels

