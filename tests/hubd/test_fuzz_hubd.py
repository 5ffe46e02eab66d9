"""Fuzzing hubd's input surfaces with hypothesis: signed commands (valid tokens mutated field by
field and byte by byte, hand-built JWS shapes, raw bytes), audit requests, the alarm centre's
confirmations, status requests, the bridge's link messages and the local socket's requests.

Each surface must answer anything with its typed refusal (or take it, when it is valid), never
with another exception; a mutated token never verifies. The examples are derandomized (the same
few hundred per surface on every run: a CI failure replays); benchmarks/fuzz.py explores with
fresh seeds and thousands of inputs against a live home.
"""

from __future__ import annotations

import base64
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from hubapi import signing, topics
from hubapi.models import Actor, Answer, CommandClaims, RejectReason, Role, Status
from hubd import inputs
from hubd.technician import control
from hubd.alarms.delivery import Alarms
from hubd.store.audit import AuditLog, AuditRequests, verify_chain
from hubd.link.bridge import Bridge
from hubd.access.commands import Commands
from hubd.config import AlarmsConfig
from hubd.devices.health import Health
from hubd.access.journal import Journal
from hubd.mqtt import Inbound
from hubd.store.outbox import Outbox
from hubd.store.database import Store
from hubd.access.verify import Rejection, Verified, Verifier
from tests.fixtures import BackendKey
from wire import messages
from tests.fixtures import LINK_KEY

HUB = "hub-fuzz"
LOCKS = {"front": "in_cylinder", "box": "key_box"}
EXAMPLES = 300
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

BACKEND = BackendKey("backend-fuzz", signing.generate_private_key())


def _claims(**overrides: Any) -> CommandClaims:
    fields: dict[str, Any] = dict(hub=HUB, lock="front", action="unlock",
                                  actor=Actor(id="staff-7", role=Role.STAFF), assignment="visit-42",
                                  ttl_s=30, now=time.time())
    fields.update(overrides)
    return CommandClaims.new(**fields)


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


# --- strategies ---------------------------------------------------------------------------------

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(10 ** 30), 10 ** 30),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)), max_leaves=20)


@st.composite
def hostile_json(draw: st.DrawFn) -> bytes:
    """JSON and near-JSON an attacker would try: deep nesting, huge numbers, NaN, duplicate keys,
    lone surrogates, non-UTF-8, plain garbage."""
    kind = draw(st.sampled_from(["value", "deep", "number", "constant", "duplicate", "surrogate",
                                 "bytes", "truncated"]))
    if kind == "value":
        return json.dumps(draw(json_values)).encode()
    if kind == "deep":
        n = draw(st.integers(10, 3000))
        opener = draw(st.sampled_from([b"[", b'{"a":']))
        return opener * n + (b"1" + (b"]" if opener == b"[" else b"}") * n if draw(st.booleans()) else b"")
    if kind == "number":
        return b'{"id": ' + draw(st.sampled_from([b"1e999999", b"9" * 5000, b"-0", b"1e-999999"])) + b"}"
    if kind == "constant":
        return b'{"id": ' + draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity"])) + b"}"
    if kind == "duplicate":
        return b'{"id": "a", "id": "b", "reply_to": "x", "reply_to": "y"}'
    if kind == "surrogate":
        return b'{"id": "\\ud800", "reply_to": "\\udfff", "hub": "' + HUB.encode() + b'"}'
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    return json.dumps(draw(json_values)).encode()[: draw(st.integers(0, 20))]


@st.composite
def mutated_tokens(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """(a valid signed token, a mutation of it)."""
    claims = _claims(lock=draw(st.sampled_from(["front", "box"])))
    token = BACKEND.sign(claims).encode()
    header, payload, signature = token.split(b".")
    how = draw(st.sampled_from(["flip", "cut", "header", "claims", "segment", "segments", "bytes",
                                "signature", "append"]))
    if how == "flip":
        i = draw(st.integers(0, len(token) - 1))
        mutated = token[:i] + bytes([token[i] ^ (1 << draw(st.integers(0, 7)))]) + token[i + 1:]
    elif how == "cut":
        mutated = token[: draw(st.integers(0, len(token) - 1))]
    elif how == "header":
        obj = json.loads(base64.urlsafe_b64decode(header + b"=" * (-len(header) % 4)))
        field = draw(st.sampled_from(["alg", "kid", "typ", "crit", "jwk", "b64", "zip"]))
        obj[field] = draw(json_values)
        mutated = _b64(json.dumps(obj).encode()) + b"." + payload + b"." + signature
    elif how == "claims":
        obj = json.loads(base64.urlsafe_b64decode(payload + b"=" * (-len(payload) % 4)))
        field = draw(st.sampled_from(sorted(obj)))
        obj[field] = draw(json_values)
        mutated = header + b"." + _b64(json.dumps(obj).encode()) + b"." + signature
    elif how == "segment":
        which = draw(st.integers(0, 2))
        parts = [header, payload, signature]
        parts[which] = _b64(draw(hostile_json()))
        mutated = b".".join(parts)
    elif how == "segments":
        mutated = b".".join(_b64(draw(hostile_json())) for _ in range(draw(st.integers(1, 5))))
    elif how == "bytes":
        mutated = draw(st.binary(max_size=600))
    elif how == "signature":
        mutated = header + b"." + payload + b"." + _b64(draw(st.binary(min_size=0, max_size=80)))
    else:
        mutated = token + draw(st.binary(min_size=1, max_size=40))
    return token, mutated


# --- the surfaces -------------------------------------------------------------------------------

class _Published(list[tuple[str, bytes]]):
    connected = True

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self.append((topic, payload))


class _Rig:
    """hubd's command, audit, alarm and status handlers on a real SQLite store in a temp dir."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="fuzz-hubd-")
        self.store = Store.open(Path(self._dir.name))
        self.outbox = Outbox(self.store)
        self.audit = AuditLog(self.store, self.outbox, HUB)
        self.journal = Journal(self.store, self.audit)
        self.published = _Published()
        self.verifier = Verifier(hub_id=HUB, keys={BACKEND.kid: BACKEND.private.public_key()}, locks=LOCKS,
                                 clock_skew_s=5, max_validity_s=300, seen=self.journal)
        self.commands = Commands(hub_id=HUB, verifier=self.verifier, transport=None, publisher=self.published,  # type: ignore[arg-type]
                                 journal=self.journal, audit=self.audit, lock_states=None,  # type: ignore[arg-type]
                                 command_timeout_s=5)
        self.requests = AuditRequests(self.audit, HUB, self.published)
        self.bridge = Bridge("/nonexistent/fuzz-port", LINK_KEY)  # never opened: messages are fed to it
        self.alarms = Alarms(self.store, HUB, AlarmsConfig(), self.bridge, self.published)  # type: ignore[arg-type]

    def close(self) -> None:
        self.store.close()
        self._dir.cleanup()


@pytest.fixture(scope="module")
def rig() -> Any:
    r = _Rig()
    yield r
    r.close()


@FUZZ
@given(mutated_tokens())
def test_a_mutated_command_is_refused_with_a_reason_and_never_verifies(pair: tuple[bytes, bytes]) -> None:
    token, mutated = pair
    assume(mutated != token)
    verifier = Verifier(hub_id=HUB, keys={BACKEND.kid: BACKEND.private.public_key()}, locks=LOCKS,
                        clock_skew_s=5, max_validity_s=300)
    for retained in (False, True):
        result = verifier.verify(mutated, retained=retained)
        assert isinstance(result, Rejection), f"a mutation verified: {mutated!r}"
        assert isinstance(result.reason, RejectReason)
        if retained:
            assert result.reason is RejectReason.RETAINED
    assert isinstance(verifier.verify(token, retained=False), Verified), "the original still verifies"


@FUZZ
@given(mutated_tokens())
def test_the_command_handler_answers_every_mutation_and_the_audit_chain_stays_whole(
        rig: _Rig, pair: tuple[bytes, bytes]) -> None:
    token, mutated = pair
    assume(mutated != token)
    before = len(rig.published)
    why = rig.commands.handle(Inbound(topics.commands(HUB), mutated, retain=False))
    assert isinstance(why, str) and why.split(":")[0] in tuple(RejectReason)
    # At most one answer (a flood of refusals is answered at a bounded rate), on the hub's answers.
    answered = rig.published[before:]
    assert len(answered) <= 1
    for topic, payload in answered:
        assert topic.startswith(topics.answers(HUB)), topic
        answer = Answer.model_validate_json(payload)
        assert answer.status is Status.REJECTED and answer.verified is False
    # Refusals are audited (the first of each reason at once, the rest counted) and the chain
    # stays whole (checked from seq 1: this module's rig keeps one database for every example).
    rig.audit.flush_refusals()
    rows = rig.store.conn.execute("SELECT seq, seq, hash, entry FROM audit ORDER BY seq").fetchall()
    assert rows, "the refusal is in the audit trail"
    report = verify_chain((f"seq {r[0]}", r[1], r[2], r[3]) for r in rows)
    assert report.ok, report.problems[:3]


@FUZZ
@given(hostile_json(), st.booleans())
def test_audit_requests_get_one_answer_on_the_hubs_own_replies(rig: _Rig, payload: bytes, retained: bool) -> None:
    before = len(rig.published)
    why = rig.requests.handle(payload, retained=retained)
    assert why is None or isinstance(why, str)
    (topic, _), = rig.published[before:]
    assert topic.startswith(topics.audit_replies(HUB))


@FUZZ
@given(hostile_json())
def test_alarm_confirmations_are_refused_with_a_reason(rig: _Rig, payload: bytes) -> None:
    why = rig.alarms.confirmation(payload)
    assert isinstance(why, str), "no fuzzed confirmation names an alarm this hub holds"


class _Stub:
    """What Health reads of the bridge, devices, outbox and alarms, at rest."""

    peer = None
    is_up = False

    class link:  # noqa: N801 - mirrors Bridge.link.engine.stats
        class engine:  # noqa: N801
            stats: dict[str, int] = {}

    def request_health(self) -> bool:
        return False

    def states(self, now: float) -> list[Any]:
        return []

    def __len__(self) -> int:
        return 0

    def oldest_at(self) -> None:
        return None

    def backlog(self, now: float) -> tuple[int, None, int]:
        return 0, None, 0


@FUZZ
@given(hostile_json())
def test_status_requests_are_answered_on_the_hubs_replies_or_refused(payload: bytes) -> None:
    published = _Published()
    stub = _Stub()
    health = Health(HUB, stub, stub, stub, stub, published)
    why = health.request(payload)
    if why is None:
        (topic, _), = published
        assert topic.startswith(topics.status_replies(HUB))
    else:
        assert published == [] and why.startswith("invalid")


link_messages = st.one_of(
    hostile_json(),
    st.builds(lambda kind, extra: json.dumps({"m": kind, **extra}).encode(),
              # "result", "state", "event", "written": what an older bridge firmware sent about
              # its own lock drivers; hubd takes none of them now, and must refuse them unharmed.
              st.sampled_from([messages.ALARM, messages.DEVICE, messages.HEALTH, messages.ALARM_LTE,
                               "result", "state", "event", "written", "nonsense"]),
              st.dictionaries(st.sampled_from(["rid", "lock", "state", "battery", "source", "id", "event",
                                               "device", "unit_at", "outcome", "reason"]), json_values,
                              max_size=8)),
)


@FUZZ
@given(link_messages)
def test_link_messages_from_the_bridge_are_taken_or_refused_never_raised(rig: _Rig, payload: bytes) -> None:
    guard = inputs.Inputs()
    rig.bridge._guard = guard
    if not rig.bridge._listeners:  # hubd's listeners, as hubd/__main__.py registers them
        rig.bridge.on_message(messages.ALARM, rig.alarms.received)
        rig.bridge.on_message(messages.ALARM_LTE, rig.alarms.lte_reported)
    rig.bridge._on_payload(payload)
    counts = guard.snapshot()[inputs.BRIDGE]
    assert counts["seen"] == 1
    assert inputs.CRASHED not in counts, f"a listener raised on {payload!r}"


@FUZZ
@given(st.one_of(hostile_json(), st.builds(lambda r: json.dumps(r).encode(),
                                           st.fixed_dictionaries({"request": st.sampled_from(
                                               ["status", "test_alarm", "scan", "pair", "decommission",
                                                "nonsense"])}, optional={"seconds": json_values,
                                                                         "lock": json_values}))))
def test_local_socket_requests_are_parsed_or_refused_with_a_value_error(line: bytes) -> None:
    try:
        control.parse_request(line + b"\n")
    except ValueError:
        pass
