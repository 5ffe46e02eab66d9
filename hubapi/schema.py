"""The hub API as a machine-readable contract, generated from :mod:`hubapi.topics` and :mod:`hubapi.models`.

:data:`CHANNELS` is the registry: one :class:`Channel` per topic of the API. Adding a channel is one
line there (a topic function, who sends, the payload model); everything below is derived from it:

- ``docs/asyncapi.json``: an AsyncAPI 3.0 document (servers, channels, messages, operations from the
  hub's point of view, payload schemas in ``components/schemas``);
- ``docs/schemas/{Model}.json``: a standalone JSON Schema (2020-12) per payload model;
- the generated blocks of ``docs/mqtt-api.md`` (topics, payload fields, statuses, reasons, examples)
  and of ``docs/broker-setup.md`` (the broker ACL).

``python -m hubapi.schema --write`` regenerates those files; ``--check`` exits 1 with a diff summary
when a checked-in file differs from what the code generates (``tests/hubapi/test_api_contract.py`` runs it);
``--acl`` prints the broker's ACL file.
"""

from __future__ import annotations

import argparse
import base64
import difflib
import hashlib
import inspect
import json
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, get_args

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from hubapi import signing, topics
from hubapi.models import (
    Action,
    Actor,
    Answer,
    AuditBatch,
    AuditEntry,
    AuditOutcome,
    AuditRequest,
    AlarmEvent,
    AlarmHandled,
    BatteryEvent,
    BatteryLevel,
    BatteryState,
    BridgeBle,
    BridgeHealth,
    BridgeJournals,
    BridgeLte,
    BridgeStatus,
    BridgeUnit,
    Decommissioned,
    HubStatus,
    QueueStatus,
    StatusRequest,
    BatteryUnit,
    BatteryWarning,
    CommandClaims,
    DeviceKind,
    DeviceState,
    HubHeartbeat,
    FailReason,
    LockState,
    LteBytes,
    Online,
    RejectReason,
    Role,
    Status,
    UplinkStatus,
)

#: The hub receives (subscribes to) the channel, or sends (publishes) on it.
Direction = Literal["send", "receive"]
#: How the payload is encoded: the model as JSON, or a compact JWS whose payload is the model.
Encoding = Literal["json", "jws"]

#: Broker users other than the hubs (a hub's username is its hub id).
BACKEND = "backend"
ALARM_CENTRE = "alarm-centre"


@dataclass(frozen=True)
class Channel:
    """One topic of the API, seen from the hub.

    ``topic`` is the function of :mod:`hubapi.topics` that spells the topic; its parameters (``hub``,
    ``lock``, ...) become the channel's address parameters. ``peers`` are the broker users at the
    other end (they get the opposite access in the ACL). ``subtopics`` means the hub may also use
    any topic below the address (answers go to a command's ``reply_to``, a subtopic of answers).
    """

    name: str
    topic: Callable[..., str]
    direction: Direction
    model: type[BaseModel]
    retained: bool
    description: str
    peers: tuple[str, ...] = (BACKEND,)
    subtopics: bool = False
    encoding: Encoding = "json"


#: The registry: every channel of the API, in the order the docs list them.
CHANNELS: tuple[Channel, ...] = (
    Channel("commands", topics.commands, "receive", CommandClaims, False,
            "Signed commands for the hub. Never retained: a retained command is refused.", encoding="jws"),
    Channel("answers", topics.answers, "send", Answer, False,
            "Answers to commands: `accepted`, then exactly one final status (or only `rejected`). "
            "A command's `reply_to` may name a subtopic.", subtopics=True),
    Channel("lockState", topics.lock_state, "send", LockState, True,
            "The last known state of one lock, retained for late subscribers."),
    Channel("online", topics.online, "send", Online, True,
            "Whether the hub is connected, retained; the hub's last will publishes `offline`.",
            peers=(BACKEND, ALARM_CENTRE)),
    Channel("audit", topics.audit, "send", AuditEntry, False,
            "The audit trail: every entry once it is stored on the hub, at least once, in seq order."),
    Channel("auditRequest", topics.audit_request, "receive", AuditRequest, False,
            "The backend asks for a range of audit entries again."),
    Channel("auditReplies", topics.audit_replies, "send", AuditBatch, False,
            "The answer to an audit request; a request's `reply_to` may name a subtopic.", subtopics=True),
    Channel("alarmsRaised", topics.alarms_raised, "send", AlarmEvent, False,
            "Safety alarms, resent with the same id until the alarm centre confirms it handled them.",
            peers=(ALARM_CENTRE,)),
    Channel("alarmsConfirmed", topics.alarms_confirmed, "receive", AlarmHandled, False,
            "The alarm centre handled an alarm: only this ends the hub's resending.", peers=(ALARM_CENTRE,)),
    Channel("alarmsHeartbeat", topics.alarms_heartbeat, "send", HubHeartbeat, False,
            "The hub is alive: one every `interval_s`, for the alarm centre to supervise.",
            peers=(ALARM_CENTRE,)),
    Channel("deviceState", topics.device_state, "send", DeviceState, True,
            "The health of one device (battery, last seen, signal, firmware, availability), retained "
            "for late subscribers."),
    Channel("deviceBattery", topics.device_battery, "send", BatteryWarning, False,
            "Battery warnings of one device: `low` and `critical` once per crossing, reminders while "
            "it stays low, `replaced` when it recovers; from the durable outbox, at least once."),
    Channel("status", topics.status, "send", HubStatus, True,
            "The hub's health snapshot (hubd, the bridge and its own report, every device, the durable "
            "queues), retained: republished when the bridge link changes and every few minutes."),
    Channel("statusRequest", topics.status_request, "receive", StatusRequest, False,
            "Ask for a fresh health snapshot now."),
    Channel("statusReplies", topics.status_replies, "send", HubStatus, False,
            "The answer to a status request; a request's `reply_to` may name a subtopic.", subtopics=True),
    Channel("decommissioned", topics.decommissioned, "send", Decommissioned, True,
            "The hub was decommissioned on site (hubctl decommission), retained: its locks were told "
            "to forget their secrets and the hub's credentials are removed next."),
)


#: Who a grant is for: every hub (its own subtree) or one service user.
HUB = "%u"


@dataclass(frozen=True)
class Grant:
    """One ACL line: ``who`` (:data:`HUB` or a service user) may ``access`` ``path``.

    ``path`` is a topic filter below ``hubs/{hub}/v1/``; for a hub ``{hub}`` is its own id, for a
    service user every hub.
    """

    path: str
    who: str
    access: Literal["read", "write"]
    why: str


#: Grants for channels still to come, in the ACL before their channel is registered so brokers need
#: no change when they arrive. Drop a line here when a registered channel covers it (the alarm
#: channels now cover what was reserved for alarms).
RESERVED_GRANTS: tuple[Grant, ...] = ()

#: What each address parameter is (every parameter of a topic function needs a line here).
PARAMETERS: dict[str, str] = {
    "hub": f"The hub id, also its broker username; one topic level matching `{topics.SEGMENT_PATTERN}`.",
    "lock": f"A lock id known to the hub; one topic level matching `{topics.SEGMENT_PATTERN}`.",
    "device": f"A device of the hub: a lock id, the alarm unit's id (`au5a000001`), its pendant "
              f"(`au5a000001-pendant`) or `bridge`; one topic level matching `{topics.SEGMENT_PATTERN}`.",
}

#: What each status and reason means, by value: the docs tables list every member of the enums in
#: hubapi.models with its meaning here (keyed by value, so a new member is reported, not a crash).
STATUS_MEANINGS: dict[str, str] = {
    "accepted": "verified and queued for its lock; a final status follows",
    "succeeded": "the lock did it; `state` is the lock's state after it (`prepare`: the connection is up and held, no `state`)",
    "failed": "not done, with a reason: the lock refused (`auth_failed`, `busy`, `jammed`, "
                 "`low_battery`, ...) or one of the hub's reasons below",
    "timed_out": "the lock could not be reached in time (`unreachable`) or the bridge did not answer; "
                 "the command was not written to the lock",
    "incomplete": "the link was lost after the command was written to the lock; `state` is what was "
                 "read back, or `unknown`. The command is never resent",
    "rejected": "refused before anything moved; `reason` is one of the rejection reasons",
}

REJECT_MEANINGS: dict[str, str] = {
    "malformed": "not a compact JWS, or claims that do not fit `CommandClaims`; if no id can be "
                 "read the answer has `\"id\": null` and goes to the default answers topic",
    "bad_signature": "the signature does not verify, or the algorithm is not `Ed25519`",
    "unknown_key": "no public key with this `kid` is provisioned on the hub",
    "expired": "`exp` has passed (beyond the hub's clock-skew allowance)",
    "not_yet_valid": "`nbf` is still ahead (beyond the clock-skew allowance)",
    "replayed": "this command id was seen before; it runs at most once",
    "wrong_hub": "`hub` names another hub",
    "unknown_lock": "`lock` is not a lock of this hub",
    "unsupported_action": "the lock cannot do this action (e.g. `unlatch` without a latch, or on a dKey, whose protocol has none)",
    "retained": "the command arrived with the retain flag: a stored command never acts",
    "busy": "the lock's queue is full",
    "store_failed": "the hub could not record the command durably, so it will not run it",
}

FAIL_MEANINGS: dict[str, str] = {
    # the lock refused (its answer, authenticated)
    "auth_failed": "the lock: the command's MAC did not verify with the secret it holds, or (a dKey) it no longer knows the hub as a key holder (unpaired or re-paired elsewhere)",
    "busy": "the lock: busy with another operation",
    "jammed": "the lock: the bolt or motor is blocked",
    "low_battery": "the lock: its battery is too low to move the motor",
    "bad_request": "the lock: the command was not one it understands (a driver or protocol mismatch)",
    "challenge_expired": "the lock: the challenge the command answered had expired",
    "duplicate": "the lock: it has seen this command before and did not run it again",
    "unsupported": "the lock: it cannot do this action",
    "not_pairing": "the lock: it is not in pairing mode",
    # the bridge
    "unknown_lock": "the bridge: it has no such lock (its bridge.json and hubd.toml disagree)",
    "unsupported_action": "the bridge: this kind of lock cannot do this action",
    "duplicate_command": "the bridge: its journal says this command ran before; the lock was not moved again",
    "queued_too_long": "with `timed_out`: the command waited behind other operations on the bridge past its ttl; never sent",
    "unreachable": "with `timed_out`: the bridge could not connect to the lock in time (out of range, or its radio is off)",
    "link_failed": "with `timed_out`: connected, but the Bluetooth link failed before the command was written",
    "no_challenge": "with `timed_out`: the lock gave no challenge in time; the command was not written",
    "link_lost": "with `incomplete`: the link (Bluetooth, or hubd's serial link to the bridge) was lost after the write",
    "no_result": "with `incomplete`: the command was written and no result came in time",
    "bad_lock_mac": "the lock's answer did not verify: not trusted, treated as no answer",
    "bridge_error": "something went wrong inside the hub or the bridge (its journal, its storage); `incomplete` if the write had been attempted",
    "driver_error": "the bridge's lock driver failed (a bug); `incomplete` if the write had been attempted",
    # hubd
    "bridge_unavailable": "the bridge was not connected, nor within `bridge_wait_s` (5 s); nothing was written, the lock did not move",
    "bridge_busy": "hubd's queue to the bridge is full (the link is far behind); nothing was sent",
    "bridge_no_response": "the bridge gave no result in time; `timed_out` if the write was not attempted, else `incomplete`",
    "bridge_restarted": "with `incomplete`: the bridge restarted while the command was out; it is never resent",
    "expired_in_queue": "the command expired while waiting for its lock; it was never sent",
    "shutting_down": "hubd stopped; `failed` if nothing was written, `incomplete` if the write had been attempted",
    "hubd_restarted": "with `incomplete`: hubd died while the command was out; it is never resent (a `prepare`: `failed`, nothing was written)",
    "superseded": "with `failed`, a `prepare` only: a later command, or a newer `prepare`, ended its hold before the connection was up and read; nothing moved",
    "daily_hold_spent": "with `failed`, a `prepare` only: the lock's connection was held as long today (UTC) as the hub allows a lock a day (`[visit] daily_hold_s`, its battery's bound); nothing held, nothing moved: the command itself still works, on a new connection",
}

DEVICE_KIND_MEANINGS: dict[str, str] = {
    "inside_turner": "a lock turning the inside thumb-turn (battery)",
    "in_cylinder": "a lock inside the cylinder or lock case (battery)",
    "key_box": "an electronic key box (battery)",
    "entrance_door": "the shared entrance door's lock (usually mains powered: no battery)",
    "pendant": "the alarm unit's wrist or neck button (coin cell); id `{unit}-pendant`",
    "base_unit": "the alarm unit's base; its backup battery carries it through mains loss; id: the unit's id",
    "bridge": "the hub's bridge and the backup cell of the hub's supply; id `bridge`",
}

BATTERY_STATE_MEANINGS: dict[str, str] = {
    "ok": "above the kind's `low` threshold (or back at `low` + hysteresis after a warning)",
    "low": "at or below `low`: replace the battery soon",
    "critical": "at or below `critical`: replace it now, the device may stop any time",
}

BATTERY_EVENT_MEANINGS: dict[str, str] = {
    "low": "the battery fell to or below `low` (once per crossing)",
    "critical": "the battery fell to or below `critical` (once per crossing; after `low`, also when "
                "one reading jumps past both)",
    "reminder": "the battery is still `low` or `critical`, one reminder interval after the last warning",
    "replaced": "a `low` or `critical` battery reads at least `low` + hysteresis again: replaced or recharged",
}

BATTERY_UNIT_MEANINGS: dict[str, str] = {
    "pct": "percent 0..100 as the device computed it",
    "mV": "millivolts measured at the battery",
    "raw": "vendor units (e.g. 0..255), converted by the model's documented scale",
}

#: The tables generated into docs/mqtt-api.md: (marker name, enum, first column heading, meanings).
ENUM_TABLES: tuple[tuple[str, type[StrEnum], str, Mapping[str, str]], ...] = (
    ("statuses", Status, "status", STATUS_MEANINGS),
    ("reject-reasons", RejectReason, "reason (`rejected`)", REJECT_MEANINGS),
    ("fail-reasons", FailReason, "reason (`failed`, `timed_out`, `incomplete`)", FAIL_MEANINGS),
    ("device-kinds", DeviceKind, "kind", DEVICE_KIND_MEANINGS),
    ("battery-states", BatteryState, "state", BATTERY_STATE_MEANINGS),
    ("battery-events", BatteryEvent, "event", BATTERY_EVENT_MEANINGS),
    ("battery-units", BatteryUnit, "unit", BATTERY_UNIT_MEANINGS),
)

# Examples: real payloads built with the models; the docs show them and the contract test checks them.
_AT = 1767225600  # 2026-01-01T00:00:00Z
_EXAMPLE_CLAIMS = CommandClaims(
    id="3f2a9c1e7b6d4e0f9a8b7c6d5e4f3a2b", hub="hub-17", lock="front-door", action=Action.UNLATCH,
    actor=Actor(id="staff-42", role=Role.STAFF), assignment="visit-991",
    iat=_AT, nbf=_AT, exp=_AT + 30, reply_to=topics.answers("hub-17"),
)
_EXAMPLE_AUDIT = AuditEntry.seal(
    seq=42, prev="5" * 64, at=_AT + 4.71, hub="hub-17", lock="front-door", source="remote",
    outcome=AuditOutcome.SUCCEEDED, reason=None, state="unlocked", battery=87, event=None,
    command=_EXAMPLE_CLAIMS.id, action="unlatch", actor="staff-42", role=Role.STAFF, assignment="visit-991",
    kid="backend-2026", verified=True,
)
_EXAMPLE_HEALTH = BridgeHealth(
    up_s=86400, reset="power_on", heap_free=41200, heap_min=29800, heap_blk=18432,
    link={"frames_rx": 17280, "frames_tx": 17301, "crc_errors": 2, "retransmits": 3, "downs": 0},
    ble=BridgeBle(restarts=0, last_restart=None, connected=0),
    lte=BridgeLte(registered="home", rssi=-83), unit=BridgeUnit(up=True, last_heard_s=12),
    journals=BridgeJournals(commands=31, alarms=0), clock=_AT + 86400)
_EXAMPLE_STATUS = HubStatus(
    hub="hub-17", request_id="status-0001", at=_AT + 86400.5, hubd_version="0.1.0", hubd_up_s=86402.1,
    broker_connected=True,
    bridge=BridgeStatus(link_up=True, since=_AT - 1.5, clock_offset_s=0, firmware="0.1.0", protocol="2.0",
                        link={"frames_rx": 17301, "frames_tx": 17280, "crc_errors": 0, "retransmits": 1},
                        health=_EXAMPLE_HEALTH, health_at=_AT + 86390.0),
    devices=[], outbox=QueueStatus(depth=0, oldest_at=None), alarms=QueueStatus(depth=0, oldest_at=None),
    alarms_overdue=0,
    uplink=UplinkStatus(mode="auto", path="lte", since=_AT + 3600.0,
                        lte_today=LteBytes(day="2026-01-02", up=48210, down=61377),
                        last_lte_login=_AT + 3601.2, last_error="network",
                        last_error_at=_AT + 3540.0))
_EXAMPLE_STATUS_DOWN = _EXAMPLE_STATUS.model_copy(update={
    "request_id": None, "at": _AT + 86410.0,
    "bridge": _EXAMPLE_STATUS.bridge.model_copy(update={"link_up": False, "since": _AT + 86406.0}),
    "outbox": QueueStatus(depth=2, oldest_at=_AT + 86407.2)})
EXAMPLES: dict[str, list[tuple[str, BaseModel]]] = {
    "commands": [("a nurse unlatches the front door", _EXAMPLE_CLAIMS)],
    "answers": [
        ("accepted", Answer(id=_EXAMPLE_CLAIMS.id, status=Status.ACCEPTED, lock="front-door", at=_AT + 0.12)),
        ("succeeded", Answer(id=_EXAMPLE_CLAIMS.id, status=Status.SUCCEEDED, lock="front-door",
                             state="unlocked", battery=87, at=_AT + 4.71)),
        ("rejected: expired", Answer(id=_EXAMPLE_CLAIMS.id, status=Status.REJECTED,
                                     reason=RejectReason.EXPIRED, lock="front-door", at=_AT + 95.0)),
        ("incomplete: link lost after the write", Answer(id=_EXAMPLE_CLAIMS.id, status=Status.INCOMPLETE,
                                                         reason="link_lost", lock="front-door",
                                                         state="unknown", at=_AT + 9.3)),
    ],
    "lockState": [("after the unlatch", LockState(lock="front-door", state="unlocked", battery=87,
                                                  source="command", at=_AT + 4.71))],
    "online": [("connected", Online(hub="hub-17", status="online", at=_AT, uplink="broadband")),
               ("connected over the bridge's LTE modem", Online(hub="hub-17", status="online", at=_AT + 3601.2,
                                                                uplink="lte")),
               ("last will", Online(hub="hub-17", status="offline"))],
    "audit": [("the unlatch succeeded", _EXAMPLE_AUDIT)],
    "auditRequest": [("entries 41 to 42 again", AuditRequest(from_seq=41, to_seq=42,
                                                             reply_to=topics.audit_replies("hub-17")))],
    "auditReplies": [("entry 42; 41 was lost on the hub", AuditBatch(hub="hub-17", from_seq=41, to_seq=42,
                                                                     last_seq=42, entries=[_EXAMPLE_AUDIT],
                                                                     missing=[41]))],
    "alarmsRaised": [("the resident pressed the wrist button; second publish", AlarmEvent(
        id="unit-4711-93", hub="hub-17", resident="resident-208", device="unit-4711", event="button",
        priority=1, test=False, unit_at=_AT, bridge_at=_AT, received_at=_AT + 0.04, published_at=_AT + 10.05,
        attempt=2, lte=None))],
    "alarmsConfirmed": [("an operator handled it", AlarmHandled(id="unit-4711-93", hub="hub-17",
                                                                handled_at=_AT + 10.3, operator="op-12"))],
    "alarmsHeartbeat": [("all well", HubHeartbeat(hub="hub-17", at=_AT + 60, interval_s=60, pending=0,
                                                  overdue=0, bridge_link=True))],
    "deviceState": [
        ("a lock in reach, its battery low", DeviceState(
            hub="hub-17", device="front-door", kind=DeviceKind.INSIDE_TURNER, model="reference",
            battery=BatteryLevel(percent=24, state=BatteryState.LOW, reading=24, unit=BatteryUnit.PERCENT),
            mains=None, last_seen=_AT + 3590.2, rssi=-71, firmware="2.4.1", available=True, why=None,
            at=_AT + 3590.2)),
        ("the alarm unit's base on its backup battery, bridge link down", DeviceState(
            hub="hub-17", device="au5a000001", kind=DeviceKind.BASE_UNIT, model="base-nimh-4.8v",
            battery=BatteryLevel(percent=62, state=BatteryState.OK, reading=4960, unit=BatteryUnit.MILLIVOLT),
            mains=False, last_seen=_AT + 3600, rssi=None, firmware=None, available=False,
            why="bridge link down", at=_AT + 3604.5)),
    ],
    "deviceBattery": [
        ("the pendant's coin cell crossed the low threshold", BatteryWarning(
            id="au5a000001-pendant~1-1767229200000", hub="hub-17", device="au5a000001-pendant",
            kind=DeviceKind.PENDANT, model="pendant-cr2032", event=BatteryEvent.LOW, state=BatteryState.LOW,
            percent=29, reading=2730, unit=BatteryUnit.MILLIVOLT, mains=None, at=_AT + 3600)),
        ("a new battery in the front door's lock", BatteryWarning(
            id="front-door~4-1767830400000", hub="hub-17", device="front-door", kind=DeviceKind.INSIDE_TURNER,
            model="reference", event=BatteryEvent.REPLACED, state=BatteryState.OK, percent=100, reading=100,
            unit=BatteryUnit.PERCENT, mains=None, at=_AT + 7 * 86400)),
    ],
    "status": [("a hub whose bridge link went down", _EXAMPLE_STATUS_DOWN)],
    "statusRequest": [("a technician asks", StatusRequest(id="status-0001",
                                                          reply_to=topics.status_replies("hub-17") + "/hubctl"))],
    "statusReplies": [("all well", _EXAMPLE_STATUS)],
    "decommissioned": [("one lock confirmed, the key box was out of reach",
                        Decommissioned(hub="hub-0042", at=_AT + 90000.0,
                                       locks={"front-door": "ok", "key-box": "unreachable"},
                                       by="hubctl"))],
}

#: Signs the example command only. Derived from a public string, so anyone can compute it:
#: never provision its public key on a hub.
EXAMPLE_KID = "example-never-provision"
EXAMPLE_KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"hubapi example key: never provision").digest())

ROOT = Path(__file__).resolve().parents[1]
_HEADER = {"alg": signing.ALGORITHM, "kid": "<backend key id>", "typ": "hubcmd+jws"}
# A compact JWS: base64url header, payload and signature, separated by dots.
_COMPACT_JWS = r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$"


def template(topic_function: Callable[..., str]) -> str:
    """The topic a function of :mod:`hubapi.topics` spells, with ``{param}`` for each parameter.

    Computed by calling the function with sentinel ids, so the topic tree is spelled only there.
    """
    params = list(inspect.signature(topic_function).parameters)
    sentinels = {name: f"P{i}x{name}xP" for i, name in enumerate(params)}
    topic = topic_function(**sentinels)
    for name, sentinel in sentinels.items():
        if topic.count(sentinel) != 1:
            raise ValueError(f"{topic_function.__name__}: parameter {name!r} must appear once in {topic!r}")
        topic = topic.replace(sentinel, "{" + name + "}")
    return topic


_ROOT_TEMPLATE = template(topics.root)  # hubs/{hub}/v1


def address(channel: Channel) -> str:
    """The channel's address (topic with ``{param}`` placeholders)."""
    return template(channel.topic)


def parameters(channel: Channel) -> list[str]:
    """The channel's address parameters, in topic order."""
    return re.findall(r"\{(\w+)\}", address(channel))


def payload_models() -> list[type[BaseModel]]:
    """Every payload model of the registry, once each, in registry order."""
    return list(dict.fromkeys(channel.model for channel in CHANNELS))


def json_schemas() -> dict[str, dict[str, Any]]:
    """A standalone JSON Schema (2020-12) per payload model, by model name."""
    return {
        model.__name__: {"$schema": "https://json-schema.org/draft/2020-12/schema",
                         "$id": f"{model.__name__}.json", **model.model_json_schema()}
        for model in payload_models()
    }


def component_schemas() -> dict[str, Any]:
    """The payload models and what they use, for ``components/schemas`` (refs point there)."""
    _, top = models_json_schema([(model, "validation") for model in payload_models()],
                                ref_template="#/components/schemas/{model}")
    return dict(sorted(top["$defs"].items()))


def example_token(claims: CommandClaims) -> str:
    """``claims`` signed with :data:`EXAMPLE_KEY` (Ed25519 is deterministic, so the docs are stable)."""
    return signing.sign(claims, EXAMPLE_KEY, EXAMPLE_KID)


def example_payload(channel: Channel, model: BaseModel) -> Any:
    """The MQTT payload of an example as a JSON value (the token string for a JWS channel)."""
    if channel.encoding == "jws":
        assert isinstance(model, CommandClaims)
        return example_token(model)
    return as_json(model)


def as_json(model: BaseModel) -> Any:
    """A JSON payload as a JSON value: every field, ``null`` for none (some models require all)."""
    return json.loads(model.model_dump_json())


def asyncapi() -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the hub API."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    used_params: set[str] = set()
    for channel in CHANNELS:
        params = parameters(channel)
        for name in params:
            if name not in PARAMETERS:
                raise ValueError(f"describe the address parameter {name!r} in hubapi.schema.PARAMETERS")
        used_params.update(params)
        messages[channel.name] = _message(channel)
        channels[channel.name] = {
            "address": address(channel),
            "title": channel.name,
            "description": channel.description
            + (" The hub also publishes to any subtopic of this address." if channel.subtopics else ""),
            "messages": {channel.name: {"$ref": f"#/components/messages/{channel.name}"}},
            **({"parameters": {p: {"$ref": f"#/components/parameters/{p}"} for p in params}} if params else {}),
        }
        operation: dict[str, Any] = {
            "action": channel.direction,
            "channel": {"$ref": f"#/channels/{channel.name}"},
            "summary": f"The hub {'publishes to' if channel.direction == 'send' else 'subscribes to'} "
                       f"{channel.name}; {', '.join(channel.peers)} "
                       f"{'subscribe(s)' if channel.direction == 'send' else 'publish(es)'}.",
            "messages": [{"$ref": f"#/channels/{channel.name}/messages/{channel.name}"}],
            "bindings": {"mqtt": {"qos": 1, "retain": channel.retained, "bindingVersion": "0.2.0"}},
        }
        if channel.encoding == "jws":
            operation["bindings"]["mqtt"]["messageExpiryInterval"] = {
                "type": "integer", "minimum": 1,
                "description": "MQTT 5 only: exp - now. The signed exp is what the hub enforces.",
            }
            operation["reply"] = {
                "channel": {"$ref": "#/channels/answers"},
                "messages": [{"$ref": "#/channels/answers/messages/answers"}],
            }
        operations[channel.direction + channel.name[0].upper() + channel.name[1:]] = operation
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Home care hub MQTT API",
            "version": str(topics.API_VERSION),
            "description": (
                "The hub (hubd) takes signed commands for door locks and publishes answers and state. "
                "Operations are described from the hub's point of view. Generated from hubapi.topics "
                "and hubapi.models by `python -m hubapi.schema --write`; do not edit by hand. "
                "Everything that matters is in the payload, so the API works on MQTT 3.1.1 and 5."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "production": {
                "host": "broker.example:8883",
                "protocol": "secure-mqtt",
                "protocolVersion": "5",
                "description": "Your Mosquitto (see docs/broker-setup.md): TLS, one broker user per hub, "
                               "topic ACLs. MQTT 3.1.1 works too.",
                "security": [{"$ref": "#/components/securitySchemes/clientCertificate"},
                             {"$ref": "#/components/securitySchemes/userPassword"}],
            },
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": component_schemas(),
            "messages": messages,
            "parameters": {name: {"description": PARAMETERS[name]} for name in sorted(used_params)},
            "securitySchemes": {
                "clientCertificate": {"type": "X509", "description": "TLS client certificate; its CN is the "
                                      "broker username (the hub id, `backend`, `alarm-centre`)."},
                "userPassword": {"type": "userPassword", "description": "Username (the hub id) and password."},
            },
        },
    }


def _message(channel: Channel) -> dict[str, Any]:
    name = channel.model.__name__
    ref = {"$ref": f"#/components/schemas/{name}"}
    examples = [{"name": re.sub(r"\W+", "-", title).strip("-"), "summary": title,
                 "payload": example_payload(channel, model)}
                for title, model in EXAMPLES.get(channel.name, [])]
    message: dict[str, Any] = {"name": channel.name, "title": name}
    if channel.encoding == "jws":
        message |= {
            "contentType": "application/jose",
            "summary": f"A compact JWS (RFC 7515) whose payload is {name} as JSON.",
            "description": (
                f"The MQTT payload is the JWS compact serialization, UTF-8. Protected header: "
                f"{json.dumps(_HEADER)}; the hub accepts exactly the algorithm {signing.ALGORITHM} "
                f"(RFC 9864) and only key ids it was provisioned with. The decoded payload is "
                f"{name} (schema in x-jws-payload). Correlation: the claims' id; on MQTT 5 also the "
                f"correlation data and response topic properties."
            ),
            "payload": {"type": "string", "pattern": _COMPACT_JWS, "maxLength": 4096},
            "x-jws-payload": ref,
            "x-jws-header": {
                "type": "object", "required": ["alg", "kid"],
                "properties": {"alg": {"const": signing.ALGORITHM}, "kid": {"type": "string"},
                               "typ": {"const": "hubcmd+jws"}},
            },
            "bindings": {"mqtt": {
                "correlationData": {"type": "string", "description": "MQTT 5: the command id"},
                "responseTopic": {"type": "string", "description": "MQTT 5: the claims' reply_to"},
                "bindingVersion": "0.2.0",
            }},
        }
    else:
        message |= {"contentType": "application/json", "summary": _first_line(channel.model), "payload": ref}
        if channel.model is Answer:
            message["correlationId"] = {"description": "The id of the command answered.",
                                        "location": "$message.payload#/id"}
    if examples:
        message["examples"] = examples
    return message


def _first_line(model: type[BaseModel]) -> str:
    # Docstrings use reStructuredText literals; the docs are Markdown.
    return re.sub(r":\w+:`", "`", (model.__doc__ or model.__name__).strip().splitlines()[0].replace("``", "`"))


# --- the broker ACL -------------------------------------------------------------------------------


def grants() -> list[Grant]:
    """Every ACL grant: both ends of each registered channel, then :data:`RESERVED_GRANTS`."""
    result = []
    for channel in CHANNELS:
        if not address(channel).startswith(_ROOT_TEMPLATE + "/"):
            raise ValueError(f"{channel.name}: {address(channel)} is outside the hub's subtree {_ROOT_TEMPLATE}")
        below_root = address(channel).removeprefix(_ROOT_TEMPLATE + "/")
        path = re.sub(r"\{\w+\}", "+", below_root) + ("/#" if channel.subtopics else "")
        hub_access, peer_access = ("write", "read") if channel.direction == "send" else ("read", "write")
        result.append(Grant(path, HUB, hub_access, f"{channel.name}: the hub {channel.direction}s"))
        result += [Grant(path, peer, peer_access, channel.name) for peer in channel.peers]
    return result + list(RESERVED_GRANTS)


def acl() -> str:
    """The Mosquitto ACL file for the API: each hub in its own subtree, one direction per topic.

    Hubs match ``pattern`` lines with ``%u`` = their username = their hub id; the service users get
    ``topic`` lines over every hub (``+``).
    """
    lines = [
        "# Generated by `python -m hubapi.schema --write` from hubapi/schema.py; do not edit.",
        "# Hubs: the username is the hub id (password file, or client certificate CN).",
    ]
    by_user: dict[str, list[str]] = {}
    for grant in grants():
        if grant.who == HUB:
            lines += [f"# {grant.why}", f"pattern {grant.access} {_ROOT_TEMPLATE.format(hub='%u')}/{grant.path}"]
        else:
            by_user.setdefault(grant.who, []).append(f"topic {grant.access} {_ROOT_TEMPLATE.format(hub='+')}/{grant.path}")
    for user, user_lines in by_user.items():
        lines += ["", f"user {user}", *user_lines]
    return "\n".join(lines) + "\n"


# --- the markdown tables --------------------------------------------------------------------------


def _topics_table() -> str:
    rows = ["| topic | hub | peers | QoS | retained | payload |", "|---|---|---|---|---|---|"]
    for channel in CHANNELS:
        topic = f"`{address(channel)}`" + (" (and subtopics)" if channel.subtopics else "")
        payload = f"[`{channel.model.__name__}`](schemas/{channel.model.__name__}.json)"
        if channel.encoding == "jws":
            payload = "compact JWS of " + payload
        rows.append(f"| {topic} | {channel.direction}s | {', '.join(channel.peers)} | 1 | "
                    f"{'yes' if channel.retained else 'no'} | {payload} |")
    return "\n".join(rows)


def _type_of(schema: dict[str, Any], defs: dict[str, Any]) -> str:
    if "$ref" in schema:
        target = defs[schema["$ref"].rsplit("/", 1)[1]]
        if "enum" in target:
            return " \\| ".join(f"`{v}`" for v in target["enum"])
        return f"`{target['title']}`"
    if "anyOf" in schema:
        return " or ".join(_type_of(s, defs) for s in schema["anyOf"])
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    if schema.get("type") == "array":
        return f"array of {_type_of(schema['items'], defs)}"
    if "enum" in schema:
        return " \\| ".join(f"`{v}`" for v in schema["enum"])
    text = schema.get("type", "any")
    limits = [f"{key} {schema[key]}" for key in ("minLength", "maxLength", "minimum", "maximum") if key in schema]
    if "pattern" in schema:
        limits.insert(0, f"`{schema['pattern']}`".replace("|", "\\|"))
    return text + (f" ({', '.join(limits)})" if limits else "")


def _fields_tables() -> str:
    parts = []
    for model in _documented_models():
        schema = model.model_json_schema()
        defs = schema.get("$defs", {})
        rows = [f"**`{model.__name__}`**: {_first_line(model)}", "", "| field | type | required |", "|---|---|---|"]
        for name, prop in schema["properties"].items():
            rows.append(f"| `{name}` | {_type_of(prop, defs)} | {'yes' if name in schema.get('required', []) else 'no'} |")
        parts.append("\n".join(rows))
    return "\n\n".join(parts)


def _documented_models() -> list[type[BaseModel]]:
    models: list[type[BaseModel]] = []
    for model in payload_models():
        for field_info in model.model_fields.values():
            # A nested model, alone or in an optional or list field (``BatteryLevel | None``).
            for nested in (field_info.annotation, *get_args(field_info.annotation)):
                if isinstance(nested, type) and issubclass(nested, BaseModel) and nested not in models:
                    models.append(nested)
        if model not in models:
            models.append(model)
    return models


def _enum_table(enum: type[StrEnum], heading: str, meanings: Mapping[str, str]) -> str:
    rows = [f"| {heading} | meaning |", "|---|---|"]
    rows += [f"| `{member.value}` | {meanings.get(member.value, 'UNDOCUMENTED: describe it in hubapi/schema.py')} |"
             for member in enum]
    return "\n".join(rows)


def _examples_block() -> str:
    parts = []
    for channel in CHANNELS:
        for title, model in EXAMPLES.get(channel.name, []):
            payload = example_payload(channel, model)
            topic = address(channel).format(hub="hub-17", lock="front-door",
                                            device=getattr(model, "device", "front-door"))
            shown = f"```\n{payload}" if isinstance(payload, str) else f"```json\n{json.dumps(payload)}"
            parts.append(f"{channel.name}, {title}, on `{topic}`:\n\n{shown}\n```")
            if channel.encoding == "jws":
                claims = jws_payload(payload)
                parts.append(f"whose decoded payload is:\n\n```json\n{json.dumps(claims)}\n```")
    return "\n\n".join(parts)


def doc_blocks() -> dict[str, dict[str, str]]:
    """Generated blocks by document (relative path) and marker name."""
    api = {"topics": _topics_table(), "fields": _fields_tables(), "examples": _examples_block()}
    for name, enum, heading, meanings in ENUM_TABLES:
        api[name] = _enum_table(enum, heading, meanings)
    return {"docs/mqtt-api.md": api, "docs/broker-setup.md": {"acl": f"```\n{acl()}```"}}


def meaning_mismatches() -> list[str]:
    """Enum members without a meaning here, and meanings of values no enum has (both must be fixed)."""
    problems = []
    for _, enum, _, meanings in ENUM_TABLES:
        values = {member.value for member in enum}
        problems += [f"{enum.__name__} {value!r} has no meaning" for value in sorted(values - set(meanings))]
        problems += [f"{enum.__name__} has no {value!r} (stale meaning)" for value in sorted(set(meanings) - values)]
    return problems


_BLOCK = re.compile(r"(?P<begin><!-- BEGIN generated:(?P<name>[\w-]+) [^>]*-->\n)(?P<body>.*?)"
                    r"(?P<end><!-- END generated:(?P=name) -->)", re.DOTALL)


def fill_blocks(text: str, blocks: Mapping[str, str], path: str) -> str:
    """``text`` with every generated block replaced; each block's markers must be present once."""
    found = [m.group("name") for m in _BLOCK.finditer(text)]
    missing = sorted(set(blocks) - set(found))
    if missing:
        raise ValueError(f"{path}: add the markers `<!-- BEGIN generated:NAME (python -m hubapi.schema --write) -->` "
                         f"and `<!-- END generated:NAME -->` for {missing}")
    def fill(match: re.Match[str]) -> str:
        name = match.group("name")
        body = blocks[name] + "\n" if name in blocks else match.group("body")
        return match.group("begin") + body + match.group("end")

    return _BLOCK.sub(fill, text)


def _dump(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


def generated(root: Path = ROOT) -> dict[Path, str]:
    """Every generated file's path and expected content (docs with generated blocks filled in)."""
    files = {root / "docs" / "asyncapi.json": _dump(asyncapi())}
    for name, schema in json_schemas().items():
        files[root / "docs" / "schemas" / f"{name}.json"] = _dump(schema)
    for relative, blocks in doc_blocks().items():
        path = root / relative
        files[path] = fill_blocks(path.read_text(), blocks, relative)
    return files


def drift(root: Path = ROOT) -> list[str]:
    """What differs between the checked-in files and the generated ones: a short diff per file."""
    problems = []
    for path, expected in generated(root).items():
        relative = path.relative_to(root)
        if not path.exists():
            problems.append(f"{relative}: missing")
            continue
        actual = path.read_text()
        if actual != expected:
            diff = list(difflib.unified_diff(actual.splitlines(), expected.splitlines(),
                                             f"{relative} (checked in)", f"{relative} (generated)", lineterm="", n=1))
            shown = diff[:40] + ([f"... {len(diff) - 40} more diff lines"] if len(diff) > 40 else [])
            problems.append("\n".join(shown))
    schemas_dir = root / "docs" / "schemas"
    expected_names = {f"{name}.json" for name in json_schemas()}
    for stale in sorted(p.name for p in schemas_dir.glob("*.json") if p.name not in expected_names):
        problems.append(f"docs/schemas/{stale}: no longer generated (remove it, or run --write)")
    return problems


def write(root: Path = ROOT) -> list[Path]:
    """Regenerate the files; remove schema files of models no channel uses. Returns what changed."""
    changed = []
    for path, content in generated(root).items():
        if not path.exists() or path.read_text() != content:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
            changed.append(path)
    expected_names = {f"{name}.json" for name in json_schemas()}
    for stale in (root / "docs" / "schemas").glob("*.json"):
        if stale.name not in expected_names:
            stale.unlink()
            changed.append(stale)
    return changed


def jws_payload(token: str) -> Any:
    """The JSON payload a compact JWS carries (unverified)."""
    return json.loads(decode_compact(token)[1])


def decode_compact(token: str) -> tuple[dict[str, Any], bytes]:
    """Header and payload bytes of a compact JWS, unverified (for docs and tests)."""
    header, payload, _ = token.split(".")
    def b64(part: str) -> bytes:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    return json.loads(b64(header)), b64(payload)


def main(argv: list[str] | None = None) -> int:
    """``--write`` regenerates the contract files, ``--check`` reports drift (exit 1), ``--acl`` prints the ACL."""
    parser = argparse.ArgumentParser(prog="python -m hubapi.schema", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="regenerate the checked-in contract files")
    mode.add_argument("--check", action="store_true", help="exit 1 if the checked-in files differ")
    mode.add_argument("--acl", action="store_true", help="print the Mosquitto ACL file for the broker")
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except ValueError as exc:  # a registry or marker mistake: say what to fix, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.acl:
        print(acl(), end="")
        return 0
    missing = meaning_mismatches()
    if missing:
        print(f"fix hubapi/schema.py STATUS/REJECT/FAIL_MEANINGS: {'; '.join(missing)}", file=sys.stderr)
    if args.write:
        for path in write(args.root):
            print(f"wrote {path.relative_to(args.root)}")
        return 1 if missing else 0
    problems = drift(args.root)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"{len(problems)} contract file(s) drifted: run `python -m hubapi.schema --write` and commit",
              file=sys.stderr)
    return 1 if problems or missing else 0


if __name__ == "__main__":
    sys.exit(main())
