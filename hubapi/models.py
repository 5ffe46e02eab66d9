"""Payloads of the hub API, version 1: defined once here, imported by the hub and the backend.

Times are Unix seconds (JWT NumericDate), as in the signed command claims.

- :class:`CommandClaims`: a signed command (the JWS payload); :class:`Answer`: the hub's answers.
- :class:`LockState`: retained state of a lock; :class:`Online`: retained presence of the hub.
- :class:`AuditEntry`: one entry of the hub's hash-chained audit trail (topic ``audit``): every
  remote, manual, automatic, failed and refused lock operation. ``hash`` is SHA-256 (hex) over the
  entry's canonical JSON without ``hash`` (:meth:`AuditEntry.canonical_bytes`: keys sorted, no
  whitespace, UTF-8, every field present, ``null`` for none); ``prev`` is the hash of the entry
  before it (:data:`GENESIS_HASH` for seq 1). A missing seq is a gap, a hash that does not match
  is an edit.
- :class:`AuditRequest`: the backend asks for a range of entries again (topic ``audit/request``);
  the hub answers with one :class:`AuditBatch` on the request's ``reply_to``.
- :class:`AlarmEvent`: a safety alarm the hub raises to the alarm centre (topic ``alarms/raised``),
  sent again with the same ``id`` until the centre publishes :class:`AlarmHandled` for it (topic
  ``alarms/confirmed``). :class:`HubHeartbeat` (topic ``alarms/heartbeat``) lets the centre see the
  hub is alive between alarms.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from hubapi import topics
from wire import messages as link_messages
from wire import outcomes

#: A command id: unique per command, also used as the audit and replay key.
CommandId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
#: A hub or lock id (a single topic segment).
SegmentId = Annotated[str, StringConstraints(pattern=topics.SEGMENT_PATTERN)]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=128)]
NumericDate = Annotated[int, Field(ge=0, le=2**40)]
Battery = Annotated[int, Field(ge=0, le=100)]


class Action(StrEnum):
    """What a command asks a lock to do."""

    UNLOCK = "unlock"
    LOCK = "lock"
    UNLATCH = "unlatch"  # unlock and pull the latch: the door opens
    STATUS = "status"  # read state and battery, move nothing
    # connect and hold the connection for the visit's coming command, move nothing: the first
    # door of a visit ready before the tap (hubd.locks.visit, docs/ble-timing.md)
    PREPARE = "prepare"


class Role(StrEnum):
    """Who asked for the command."""

    STAFF = "staff"
    RESIDENT = "resident"
    RELATIVE = "relative"
    TECHNICIAN = "technician"


class Status(StrEnum):
    """Answer status: ``accepted`` first, then exactly one final status."""

    ACCEPTED = "accepted"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    INCOMPLETE = "incomplete"  # link lost after the write: the lock state is unknown until read
    REJECTED = "rejected"


FINAL_STATUSES = frozenset(Status) - {Status.ACCEPTED}
# The final statuses of an operation that ran (or was meant to) and did not succeed.
_OPERATION_ENDS = frozenset({Status.FAILED, Status.TIMED_OUT, Status.INCOMPLETE})


class RejectReason(StrEnum):
    """Why a command was refused before anything was sent to a lock (status ``rejected``).
    The values are wire.outcomes' (the one vocabulary); the meanings are in docs/mqtt-api.md."""

    MALFORMED = outcomes.MALFORMED
    BAD_SIGNATURE = outcomes.BAD_SIGNATURE  # also: any algorithm other than the one the hub accepts
    UNKNOWN_KEY = outcomes.UNKNOWN_KEY
    EXPIRED = outcomes.EXPIRED
    NOT_YET_VALID = outcomes.NOT_YET_VALID
    REPLAYED = outcomes.REPLAYED
    WRONG_HUB = outcomes.WRONG_HUB
    UNKNOWN_LOCK = outcomes.UNKNOWN_LOCK
    UNSUPPORTED_ACTION = outcomes.UNSUPPORTED_ACTION
    RETAINED = outcomes.RETAINED
    BUSY = outcomes.BUSY  # the lock's queue is full
    STORE_FAILED = outcomes.STORE_FAILED  # the hub could not record the command durably, so it will not run it


class FailReason(StrEnum):
    """Every reason of ``failed``, ``timed_out`` and ``incomplete``: the lock's refusals, the
    bridge's and hubd's own (wire.outcomes.REASONS, the one vocabulary; meanings in
    docs/mqtt-api.md). The hub sends no other."""

    # the lock refused
    AUTH_FAILED = outcomes.AUTH_FAILED
    BUSY = outcomes.BUSY
    JAMMED = outcomes.JAMMED
    LOW_BATTERY = outcomes.LOW_BATTERY
    BAD_REQUEST = outcomes.BAD_REQUEST
    CHALLENGE_EXPIRED = outcomes.CHALLENGE_EXPIRED
    DUPLICATE = outcomes.DUPLICATE
    UNSUPPORTED = outcomes.UNSUPPORTED
    NOT_PAIRING = outcomes.NOT_PAIRING
    # the bridge
    UNKNOWN_LOCK = outcomes.UNKNOWN_LOCK
    UNSUPPORTED_ACTION = outcomes.UNSUPPORTED_ACTION
    DUPLICATE_COMMAND = outcomes.DUPLICATE_COMMAND
    QUEUED_TOO_LONG = outcomes.QUEUED_TOO_LONG
    UNREACHABLE = outcomes.UNREACHABLE
    LINK_FAILED = outcomes.LINK_FAILED
    NO_CHALLENGE = outcomes.NO_CHALLENGE
    LINK_LOST = outcomes.LINK_LOST
    NO_RESULT = outcomes.NO_RESULT
    BAD_LOCK_MAC = outcomes.BAD_LOCK_MAC
    BRIDGE_ERROR = outcomes.BRIDGE_ERROR
    DRIVER_ERROR = outcomes.DRIVER_ERROR
    # hubd
    BRIDGE_UNAVAILABLE = outcomes.BRIDGE_UNAVAILABLE  # nothing was written: the lock did not move
    BRIDGE_BUSY = outcomes.BRIDGE_BUSY
    BRIDGE_NO_RESPONSE = outcomes.BRIDGE_NO_RESPONSE
    BRIDGE_RESTARTED = outcomes.BRIDGE_RESTARTED
    EXPIRED_IN_QUEUE = outcomes.EXPIRED_IN_QUEUE  # expired while waiting for the lock: never sent
    SHUTTING_DOWN = outcomes.SHUTTING_DOWN  # hubd stopped; with ``incomplete`` the write had been attempted
    HUBD_RESTARTED = outcomes.HUBD_RESTARTED  # with ``incomplete``: hubd died while the command was out; never resent
    SUPERSEDED = outcomes.SUPERSEDED  # a prepare: a later command or prepare ended its hold before it was up
    DAILY_HOLD_SPENT = outcomes.DAILY_HOLD_SPENT  # a prepare: the lock was held its daily allowance today


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Actor(_Model):
    """The person on whose behalf a command is sent."""

    id: ShortText
    role: Role


class CommandClaims(_Model):
    """The signed content of a command (the JWS payload).

    ``exp``/``nbf`` span seconds, not hours; the hub refuses long windows. ``reply_to`` must be the
    hub's answers topic or a subtopic of it (else the hub answers on its default answers topic).
    """

    id: CommandId
    hub: SegmentId
    lock: SegmentId
    action: Action
    actor: Actor
    assignment: ShortText | None = None  # why staff opens the door (visit/assignment id)
    iat: NumericDate
    nbf: NumericDate
    exp: NumericDate
    reply_to: Annotated[str, StringConstraints(min_length=1, max_length=topics.MAX_TOPIC_LENGTH)] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.actor.role is Role.STAFF and self.assignment is None:
            raise ValueError("assignment is required when the actor is staff")
        if not self.nbf <= self.exp:
            raise ValueError("nbf must not be after exp")
        if not self.iat <= self.exp:
            raise ValueError("iat must not be after exp")
        return self

    @classmethod
    def new(
        cls,
        *,
        hub: str,
        lock: str,
        action: Action | str,
        actor: Actor,
        assignment: str | None = None,
        ttl_s: int = 30,
        reply_to: str | None = None,
        now: float | None = None,
    ) -> CommandClaims:
        """Claims for a fresh command: random id, valid from now for ``ttl_s`` seconds."""
        issued = int(time.time() if now is None else now)
        return cls(
            id=uuid.uuid4().hex,
            hub=hub,
            lock=lock,
            action=Action(action),
            actor=actor,
            assignment=assignment,
            iat=issued,
            nbf=issued,
            exp=issued + ttl_s,
            reply_to=reply_to if reply_to is not None else topics.answers(hub),
        )


class Answer(_Model):
    """What the hub says about a command (topic: the command's ``reply_to``).

    ``id`` is None only for a payload so broken that no id could be read from it. ``verified``
    false: the message this refuses did not verify (bad signature, unknown key, not a JWS, ...), so
    its id, lock and reply topic are only what it claimed: anyone with a broker login can publish
    a forged copy of a real command, and this answer says nothing about that real command.
    """

    v: Literal[1] = 1
    id: str | None
    status: Status
    reason: str | None = None
    lock: str | None = None
    state: str | None = None
    battery: Battery | None = None
    at: float
    verified: bool = True

    @model_validator(mode="after")
    def _reason_in_vocabulary(self) -> Self:
        if self.reason is None:
            return self
        allowed = (outcomes.REJECT_REASONS if self.status is Status.REJECTED
                   else outcomes.REASONS if self.status in _OPERATION_ENDS else ())
        if self.reason not in allowed:
            raise ValueError(f"reason {self.reason!r} is not one of status {self.status.value!r}'s "
                             "(wire.outcomes)")
        return self

    @property
    def is_final(self) -> bool:
        """True for every status but ``accepted``."""
        return self.status in FINAL_STATUSES


class LockState(_Model):
    """Retained state of one lock; ``source`` says what reported it (command, manual, poll, ...)."""

    v: Literal[1] = 1
    lock: SegmentId
    state: Annotated[str, StringConstraints(min_length=1, max_length=32)]
    battery: Battery | None = None
    source: Annotated[str, StringConstraints(min_length=1, max_length=32)]
    at: float


#: How a hub reaches its broker: the home's broadband or the bridge's LTE modem.
UplinkPath = Literal["broadband", "lte"]


class Online(_Model):
    """Retained presence of a hub. The last will carries ``offline`` without a time.

    ``uplink`` is the path of the session that said ``online``: the home's ``broadband`` or the
    bridge's ``lte`` modem (null with ``offline``, and from hubs before the LTE uplink)."""

    v: Literal[1] = 1
    hub: SegmentId
    status: Literal["online", "offline"]
    at: float | None = None
    uplink: UplinkPath | None = None


#: ``prev`` of the first audit entry (seq 1).
GENESIS_HASH = "0" * 64
#: Most entries one :class:`AuditRequest` may ask for (the answer is one MQTT message).
MAX_AUDIT_BATCH = 100

Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Label = Annotated[str, StringConstraints(min_length=1, max_length=64)]
#: A lock's Bluetooth address as the hub writes it ("C0:FF:EE:00:00:07").
BleAddress = Annotated[str, StringConstraints(pattern=f"^{link_messages.ADDR_PATTERN}$")]
Seq = Annotated[int, Field(ge=1, le=2**62)]


class AuditOutcome(StrEnum):
    """What an audit entry records: a step of a command, or something a lock reported."""

    ACCEPTED = "accepted"  # a verified command was recorded and queued
    WRITTEN = "written"  # the bridge attempted the lock write: from here on it is never resent
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    INCOMPLETE = "incomplete"
    REJECTED = "rejected"  # refused before anything moved (``reason`` says why)
    REPORTED = "reported"  # a lock changed state or an event happened without a command
    PAIRED = "paired"  # a technician paired the lock with this hub (hubctl pair)
    UNPAIRED = "unpaired"  # the lock was told to forget its secret, and the hub forgot the lock
    PRUNED = "pruned"  # the hub deleted its oldest entries (retention): ``pruned_to``, ``pruned_hash``


class AuditEntry(_Model):
    """One entry of the audit trail (topic ``hubs/{hub}/v1/audit``, QoS 1, delivered at least once).

    ``seq`` counts from 1 without gaps per hub. ``source`` is who or what acted: ``remote`` (a
    command), ``manual`` (key or thumb-turn), ``handle``, ``auto`` (auto-lock), ``poll`` (a state
    read found a change), ``hub`` (the hub's own housekeeping). ``verified`` is false when
    ``actor``/``role``/``assignment``/``command``/``action`` were read from a command whose
    signature did not verify (or not at all): they are what the sender claimed, not who it was.
    ``kid`` names the backend key that signed the command.

    ``count``: this entry stands for that many refusals of messages that did not verify, with the
    same ``reason``, since the previous such entry (a flood is counted, not written row by row;
    the first of each reason in an interval has an entry of its own). ``pruned_to`` and
    ``pruned_hash`` (outcome ``pruned``): the hub deleted entries up to and including seq
    ``pruned_to``, whose hash was ``pruned_hash``, so the chain from ``pruned_to + 1`` on still
    verifies. ``address`` (a technician's pairing, each attempt, and unpairing: ``hubctl pair``,
    ``hubctl decommission``): the Bluetooth address of the lock, so an attempt refused under a
    name that never got a lock still says which lock it was. These four are left out of
    ``hash`` when null: entries written before they existed keep their hashes.
    """

    v: Literal[1] = 1
    seq: Seq
    prev: Sha256Hex
    hash: Sha256Hex
    at: float
    hub: SegmentId
    lock: Label | None
    source: Label
    outcome: AuditOutcome
    reason: ShortText | None
    state: Label | None
    battery: Battery | None
    event: Label | None
    command: Label | None
    action: Label | None
    actor: ShortText | None
    role: Role | None
    assignment: ShortText | None
    kid: Label | None
    verified: bool
    count: Annotated[int, Field(ge=1)] | None = None
    pruned_to: Seq | None = None
    pruned_hash: Sha256Hex | None = None
    address: BleAddress | None = None

    def canonical_bytes(self) -> bytes:
        """The bytes ``hash`` covers: every field but ``hash``, keys sorted, compact, UTF-8 (the
        fields added later only when set)."""
        later = {name for name in _LATER_FIELDS if getattr(self, name) is None}
        fields = self.model_dump(mode="json", exclude={"hash"} | later)
        return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

    def computed_hash(self) -> str:
        """SHA-256 (hex) of :meth:`canonical_bytes`; equals ``hash`` unless the entry was edited."""
        return hashlib.sha256(self.canonical_bytes()).hexdigest()

    @classmethod
    def seal(cls, **fields: object) -> AuditEntry:
        """A new entry from its fields (``seq``, ``prev``, ...), with ``hash`` computed."""
        unsealed = cls.model_validate({**fields, "hash": GENESIS_HASH}, strict=False)
        return unsealed.model_copy(update={"hash": unsealed.computed_hash()})


# Fields AuditEntry gained after entries were first written: out of the hash while null.
_LATER_FIELDS = ("count", "pruned_to", "pruned_hash", "address")


class AuditRequest(_Model):
    """The backend asks for entries ``from_seq``..``to_seq`` again (topic ``hubs/{hub}/v1/audit/request``).

    At most :data:`MAX_AUDIT_BATCH` entries per request. The answer, one :class:`AuditBatch`, goes
    to ``reply_to`` if it is the hub's ``audit/replies`` topic or a subtopic of it, else to
    ``audit/replies``.
    """

    v: Literal[1] = 1
    from_seq: Seq
    to_seq: Seq
    reply_to: Annotated[str, StringConstraints(min_length=1, max_length=topics.MAX_TOPIC_LENGTH)] | None = None

    @model_validator(mode="after")
    def _range(self) -> Self:
        if self.to_seq < self.from_seq:
            raise ValueError("to_seq must not be below from_seq")
        if self.to_seq - self.from_seq + 1 > MAX_AUDIT_BATCH:
            raise ValueError(f"at most {MAX_AUDIT_BATCH} entries per request")
        return self


class AuditBatch(_Model):
    """The answer to an :class:`AuditRequest` (topic ``hubs/{hub}/v1/audit/replies[/...]``).

    ``entries`` are the stored entries of the range, in seq order. ``missing`` lists the seqs of
    the range up to ``last_seq`` that the hub could not return (deleted or unreadable: the log on
    the hub was damaged). ``last_seq`` is the newest seq the hub has (0: none yet). ``error`` is set,
    and ``entries`` empty, when the request itself was unusable.
    """

    v: Literal[1] = 1
    hub: SegmentId
    from_seq: int | None = None
    to_seq: int | None = None
    last_seq: int
    entries: list[AuditEntry] = []
    missing: list[int] = []
    error: ShortText | None = None


#: An alarm id (wire.alarms.alarm_id: the unit's id and its event number, or hubd's own for link
#: supervision); stable across retries and both delivery paths.
AlarmId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:~-]{1,96}$")]
#: Alarm priority (wire.alarms): 1 a life may be at stake, 2 the safety chain is weakened, 3 information.
AlarmPriority = Annotated[int, Field(ge=1, le=3)]


class AlarmEvent(_Model):
    """A safety alarm (topic ``hubs/{hub}/v1/alarms/raised``, QoS 1, at least once).

    The hub publishes it again, with the same ``id``, every resend interval until the alarm centre
    publishes :class:`AlarmHandled` for that id: a broker PUBACK is not delivery. ``attempt`` counts
    the hub's publishes (1 for the first); the centre treats a second copy of an id as a duplicate.
    ``event`` is a name of wire.alarms (``button``, ``fall``, ..., ``hub_link_lost``); ``test`` is
    true for a test alarm, handled like any other. Times are Unix seconds, one per hop: the alarm
    unit (``unit_at``), the bridge journal (``bridge_at``, null while the bridge had no clock),
    hubd's durable store (``received_at``) and this publish (``published_at``). ``lte`` is what the
    second path (SIA DC-09 over LTE) reported for this alarm so far, if anything.
    """

    v: Literal[1] = 1
    id: AlarmId
    hub: SegmentId
    resident: ShortText | None
    device: Label
    event: Label
    priority: AlarmPriority
    test: bool
    unit_at: NumericDate | None
    bridge_at: NumericDate | None
    received_at: float
    published_at: float
    attempt: Annotated[int, Field(ge=1)]
    lte: Label | None


class AlarmHandled(_Model):
    """The alarm centre handled an alarm (topic ``hubs/{hub}/v1/alarms/confirmed``, QoS 1).

    Only this ends the hub's resending; the hub then tells the bridge, which drops the alarm from its
    journal and lets the resident hear that help is on the way. ``operator`` names who handled it.
    """

    v: Literal[1] = 1
    id: AlarmId
    hub: SegmentId
    handled_at: float
    operator: ShortText | None = None


class HubHeartbeat(_Model):
    """The hub is alive (topic ``hubs/{hub}/v1/alarms/heartbeat``, QoS 1, every ``interval_s``).

    The centre raises its own alarm when two heartbeats in a row are missing. ``pending`` counts
    alarms not yet handled, ``overdue`` those of them past the hub's confirmation deadline;
    ``bridge_link`` is whether the hub hears its bridge (the alarm units hang off it).
    """

    v: Literal[1] = 1
    hub: SegmentId
    at: float
    interval_s: Annotated[float, Field(ge=1)]
    pending: Annotated[int, Field(ge=0)]
    overdue: Annotated[int, Field(ge=0)]
    bridge_link: bool


class DeviceKind(StrEnum):
    """What a device is. The lock kinds are ``wire.lockkinds.KINDS``; the rest are the alarm unit's
    parts and the bridge itself."""

    INSIDE_TURNER = "inside_turner"
    IN_CYLINDER = "in_cylinder"
    KEY_BOX = "key_box"
    ENTRANCE_DOOR = "entrance_door"
    PENDANT = "pendant"  # the alarm unit's wrist or neck button
    BASE_UNIT = "base_unit"  # the alarm unit's base (its backup battery carries it through mains loss)
    BRIDGE = "bridge"  # the hub's own bridge and its supply


class BatteryState(StrEnum):
    """A battery's state after hysteresis: ``ok``, ``low`` (replace soon), ``critical`` (replace now)."""

    OK = "ok"
    LOW = "low"
    CRITICAL = "critical"


class BatteryEvent(StrEnum):
    """What a :class:`BatteryWarning` says happened."""

    LOW = "low"
    CRITICAL = "critical"
    REMINDER = "reminder"
    REPLACED = "replaced"


class BatteryUnit(StrEnum):
    """The unit of a device's raw battery reading."""

    PERCENT = "pct"
    MILLIVOLT = "mV"
    RAW = "raw"  # vendor units, e.g. 0..255


#: A device id: a lock id, the alarm unit's id (``au5a000001``), ``{unit}-pendant``, ``bridge``.
DeviceId = SegmentId
#: A battery warning id: ``{device}~{n}-{milliseconds}``, stable across redeliveries.
WarningId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:~-]{1,96}$")]
Reading = Annotated[float, Field(ge=0, le=100_000)]
Rssi = Annotated[int, Field(ge=-127, le=20)]


class BatteryLevel(_Model):
    """A battery as last read: the device's reading, its percent and its state.

    ``reading`` is in ``unit`` as the device reported it; ``percent`` comes from the device model's
    discharge curve (docs/battery.md), ``state`` from the hub's thresholds with hysteresis.
    """

    percent: Battery
    state: BatteryState
    reading: Reading
    unit: BatteryUnit


class DeviceState(_Model):
    """Retained health of one device (topic ``hubs/{hub}/v1/devices/{device}/state``).

    ``battery`` is null for a mains-powered device or one that has not reported a level yet.
    ``mains`` is whether mains power is present, for devices that say (the base unit, the bridge).
    ``available`` is false when the hub's link to the bridge is down, when the bridge reports the
    device out of reach, for a pendant while its base unit is unavailable, and when it has not been
    heard from within its kind's window; ``why`` says which.
    ``last_seen`` is when the hub last heard from it (null: never), ``rssi`` its signal in dBm.
    """

    v: Literal[1] = 1
    hub: SegmentId
    device: DeviceId
    kind: DeviceKind
    model: Label
    battery: BatteryLevel | None
    mains: bool | None
    last_seen: float | None
    rssi: Rssi | None
    firmware: Label | None
    available: bool
    why: ShortText | None
    at: float


class BatteryWarning(_Model):
    """A battery warning (topic ``hubs/{hub}/v1/devices/{device}/battery``, QoS 1, at least once).

    ``low`` and ``critical`` go out once per crossing downward (a drain straight past both gives
    both, in that order), ``reminder`` every reminder interval while the state stays low or
    critical, ``replaced`` when a low or critical battery reads ok again (replaced or recharged).
    ``state``, ``percent``, ``reading`` and ``unit`` are the battery's as of ``at``; ``mains`` is
    whether mains power was present, for devices that say. ``id`` is the same on every redelivery.
    """

    v: Literal[1] = 1
    id: WarningId
    hub: SegmentId
    device: DeviceId
    kind: DeviceKind
    model: Label
    event: BatteryEvent
    state: BatteryState
    percent: Battery
    reading: Reading
    unit: BatteryUnit
    mains: bool | None
    at: float


class StatusRequest(_Model):
    """Ask the hub for a fresh :class:`HubStatus` (topic ``hubs/{hub}/v1/status/request``).

    The answer goes to ``reply_to`` if it is the hub's ``status/replies`` topic or a subtopic of
    it, else to ``status/replies``; it carries the request's ``id``.
    """

    v: Literal[1] = 1
    id: CommandId
    reply_to: Annotated[str, StringConstraints(min_length=1, max_length=topics.MAX_TOPIC_LENGTH)] | None = None


Count = Annotated[int, Field(ge=0)]


class BridgeBle(_Model):
    """The bridge's BLE stack: restarts by its watchdog (and the last one's reason), connections."""

    restarts: Count
    last_restart: ShortText | None
    connected: Count


class BridgeLte(_Model):
    """The LTE modem as the bridge last saw it: registration (e.g. ``home``, ``roaming``,
    ``searching``, ``denied``, ``no_sim``: not registered for want of a SIM ready) and signal in
    dBm."""

    registered: ShortText | None
    rssi: Annotated[int, Field(ge=-140, le=0)] | None


class BridgeUnit(_Model):
    """The alarm unit's link: up or not, and seconds since the bridge last heard it."""

    up: bool
    last_heard_s: Count | None


class BridgeJournals(_Model):
    """Entries in the bridge's flash journals: command ids run, alarms not yet confirmed."""

    commands: Count
    alarms: Count


class BridgeHealth(_Model):
    """The bridge's own report (its ``health`` link message, docs/serial-link.md)."""

    up_s: Count
    reset: Literal[link_messages.RESETS]  # type: ignore[valid-type]  # one definition: the link's
    heap_free: Count  # bytes free after a collection
    heap_min: Count  # the least heap_free the bridge measured since boot (every 5 s and per report)
    heap_blk: Count  # the least largest free block since boot (bytes, measured at each report): the
    # biggest allocation the bridge could still make at its most fragmented
    link: dict[str, Count]
    ble: BridgeBle
    lte: BridgeLte | None
    unit: BridgeUnit | None
    journals: BridgeJournals
    clock: int | None


class BridgeStatus(_Model):
    """The bridge as hubd sees it. ``link_up`` changes within the link's dead time (3.5 s) of a
    bridge going silent; ``since`` is when it last changed; ``health`` is the bridge's last own
    report and ``health_at`` when it arrived (null: none since hubd started); ``clock_offset_s`` is
    the bridge's clock (as it stamps alarms) minus hubd's when that report arrived, to the second
    (null: the bridge has no time yet)."""

    link_up: bool
    since: float
    clock_offset_s: float | None
    firmware: Label | None
    protocol: Annotated[str, StringConstraints(max_length=16)] | None
    link: dict[str, Count]
    health: BridgeHealth | None
    health_at: float | None


class QueueStatus(_Model):
    """A durable queue on the hub: entries waiting, and when the oldest was made (null: empty)."""

    depth: Count
    oldest_at: float | None


class Decommissioned(_Model):
    """The hub was decommissioned (topic ``hubs/{hub}/v1/decommissioned``, retained): each lock's
    result of being told to forget its secret (``ok``: it confirmed; otherwise the hub forgot it
    anyway), the bridge's LTE credentials are gone, and the hub's own credentials are removed
    next. Commands for this hub will not be answered."""

    v: Literal[1] = 1
    hub: SegmentId
    at: float
    locks: dict[Label, Label]
    by: Label


class LteBytes(_Model):
    """Bytes the hub's broker connection carried over LTE on one UTC day.

    ``day`` is YYYY-MM-DD; ``up`` (hub -> broker) and ``down`` count the TCP payload (MQTT over
    TLS) as the modem sent and received it, not the IP and radio overhead."""

    day: Annotated[str, StringConstraints(pattern=r"^\d{4}-\d{2}-\d{2}$")]
    up: Count
    down: Count


class UplinkStatus(_Model):
    """How the hub reaches its broker, and the LTE bytes it used today.

    ``mode`` as configured (hubd.toml's ``[uplink]``), the ``path`` in use (or being tried) since
    ``since``, the LTE bytes today, the last broker login over LTE (null: none since hubd
    started) and the last error of the LTE channel (a wire.messages.UPLINK_WHY, or ``broker``
    when the broker refused the login) with its time: an error older than the last login is
    history, not the state."""

    mode: Literal["broadband", "lte", "auto"]
    path: UplinkPath
    since: float
    lte_today: LteBytes
    last_lte_login: float | None
    last_error: Label | None
    last_error_at: float | None


class UplinkProbe(_Model):
    """A broker login over LTE, as hubctl doctor asks for one.

    ``ok``; how it was proved (``live``: the hub's session runs over LTE now; ``probe``: a
    CONNECT/CONNACK through a channel opened for it); why it failed; the seconds it took."""

    ok: bool
    how: Literal["live", "probe"]
    error: ShortText | None
    took_s: Annotated[float, Field(ge=0)]


class HubStatus(_Model):
    """A full health snapshot of one hub (topics ``status`` (retained) and ``status/replies``).

    ``request_id`` names the :class:`StatusRequest` it answers (null on the retained topic).
    ``outbox``: audit entries and battery warnings not yet acknowledged by the broker; ``alarms``:
    alarms not yet handled by the alarm centre (``overdue``: past the hub's deadline).
    """

    v: Literal[1] = 1
    hub: SegmentId
    request_id: CommandId | None
    at: float
    hubd_version: Label
    hubd_up_s: Annotated[float, Field(ge=0)]
    broker_connected: bool
    bridge: BridgeStatus
    devices: list[DeviceState]
    outbox: QueueStatus
    alarms: QueueStatus
    alarms_overdue: Count
    # Per input surface (commands, audit_requests, alarm_confirmations, status_requests,
    # unknown_topics, bridge): messages ``seen`` and each refusal reason's count since hubd
    # started ("crashed": a handler raised; hubd went on).
    inputs: dict[Label, dict[Label, Count]] = Field(default_factory=dict)
    # hubd's long-running tasks that ended and were started again, by name, since hubd started.
    task_restarts: dict[Label, Count] = Field(default_factory=dict)
    # How the hub reaches its broker, and the LTE bytes today (null: a hubd before the uplink).
    uplink: UplinkStatus | None = None
