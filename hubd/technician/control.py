"""The local control protocol: what hubctl asks hubd on its local socket, and what hubd answers.

One definition for both ends: hubd's server (hubd/technician/status_socket.py) and hubctl (:func:`ask`).

One request per connection, one JSON line from the client::

    {"request": "status"}
    {"request": "test_alarm", "second_path": false}
    {"request": "scan", "seconds": 8}
    {"request": "pair", "lock": "front-door", "kind": "in_cylinder", "addr": "C0:FF:EE:00:00:01",
     "addr_type": 0, "setup_key": "<64 hex digits>"}
    {"request": "pair", "lock": "front-door", "kind": "in_cylinder", "addr": "F0:94:0A:00:00:01",
     "addr_type": 0, "protocol": "dkey", "activation_code": "BCDF2345"}
    {"request": "decommission", "force": false}
    {"request": "uplink_probe", "timeout_s": 60}

hubd answers with JSON lines: any number of ``{"progress": "text"}`` while it works, then one
``{"done": {...}}`` (the request's result, models below) or ``{"error": "text naming the fix"}``.

The socket is the hub's local console (mode 0660, root and the hubd group): who may use it may
also open the serial port to the bridge, so it grants nothing new. Pairing and the proving cycle
of ``pair`` are audited as the technician's (actor ``hubctl``).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from hubapi.models import SegmentId
from hubd.config import LockKind
from hubd.technician import limits
from wire import lockkinds, messages

HEX64 = r"^[0-9a-fA-F]{64}$"
ADDR = f"^(?i:{messages.ADDR_PATTERN})$"  # either case from a technician
#: A dKey's activation code (its card, its leaflet: wire.lockkinds) once dashes and blanks are
#: taken out and letters made upper case, as py-dormakaba-dkey does before it checks (it checks
#: the characters only; the lock's code is 8 long: docs/dkey.md).
ACTIVATION_CODE = rf"^[{lockkinds.DKEY_CODE_ALPHABET}]{{{lockkinds.DKEY_CODE_LEN}}}$"
LockProtocol = Literal[lockkinds.PROTOCOLS]  # type: ignore[valid-type]


def compact_code(code: str) -> str:
    """An activation code as the library reads it: without ``-``, blanks and tabs, upper case."""
    return code.translate(str.maketrans("", "", "- \t")).upper()


MAX_LINE = 1 << 20  # a status snapshot with many devices stays far below this
# hubctl's wait for the next line of a pairing or a decommissioning: the longest step is a lock
# operation, a PAIR or UNPAIR, or the bridge's wipe (hubd/technician/commissioning.py bounds each).
COMMISSIONING_WAIT_S = 120.0


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StatusRequest(_Request):
    request: Literal["status"] = "status"


class TestAlarmRequest(_Request):
    """A test alarm end to end (hubd/technician/trial_alarm.py); ``timeout_s`` bounds hubd's wait for the
    centre's "handled" (and, with ``second_path``, the LTE result), counted from the request."""

    __test__ = False  # not a pytest class, despite its name
    request: Literal["test_alarm"] = "test_alarm"
    second_path: bool = False
    timeout_s: int = Field(limits.TEST_ALARM_WAIT_S, ge=limits.TEST_ALARM_WAIT_RANGE_S[0],
                           le=limits.TEST_ALARM_WAIT_RANGE_S[1])


class ScanRequest(_Request):
    """Listen for locks for ``seconds``; with ``until`` (hubctl pair's), stop at the end of the
    second in which the lock at that address was heard ready for what comes next: in pairing
    mode, or a dKey (its advert does not say), or paired already."""

    request: Literal["scan"] = "scan"
    seconds: int = Field(limits.SCAN_S, ge=1, le=limits.MAX_SCAN_S)
    until: str | None = Field(None, pattern=ADDR)


class PairRequest(_Request):
    """Pair the lock at ``addr`` as ``lock``: a reference lock proven with its ``setup_key``
    (hubd makes the new secret), a dKey (``protocol`` dkey) associated with its
    ``activation_code`` (hubd and the lock agree the association data). Exactly the secret input
    of its protocol, no other. What hubd keeps in its state never crosses this socket."""

    request: Literal["pair"] = "pair"
    lock: SegmentId
    kind: LockKind
    addr: str = Field(pattern=ADDR)
    addr_type: Literal[0, 1] = 0
    protocol: LockProtocol = lockkinds.REFERENCE
    setup_key: str | None = Field(None, pattern=HEX64, repr=False)
    activation_code: str | None = Field(None, pattern=ACTIVATION_CODE, repr=False)

    @field_validator("activation_code", mode="before")
    @classmethod
    def _compact(cls, value: Any) -> Any:
        return compact_code(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _secret_input_of_its_protocol(self) -> PairRequest:
        if self.kind not in lockkinds.PROTOCOL_KINDS[self.protocol]:
            raise ValueError(f"a {self.protocol} lock is not a {self.kind}")
        if self.protocol == lockkinds.DKEY:
            if self.activation_code is None or self.setup_key is not None:
                raise ValueError("a dkey lock is paired with its activation_code, and no setup_key")
        elif self.setup_key is None or self.activation_code is not None:
            raise ValueError(f"a {self.protocol} lock is paired with its setup_key, and no "
                             "activation_code")
        return self


class UplinkProbeRequest(_Request):
    """A broker login through the bridge's LTE modem (hubd.uplink.Uplink.probe_lte), for hubctl
    doctor: the live session when hubd is on LTE, else a CONNECT/CONNACK of its own through a
    channel opened for it and closed after. ``timeout_s`` bounds the login (attach, open, TLS,
    CONNACK); the answer is a :class:`hubapi.models.UplinkProbe`, a failure included."""

    request: Literal["uplink_probe"] = "uplink_probe"
    timeout_s: int = Field(60, ge=5, le=300)


#: hubctl's wait for the probe's answer beyond its own timeout (the channel's close, the socket).
UPLINK_PROBE_SLACK_S = 15.0


class DecommissionRequest(_Request):
    request: Literal["decommission"] = "decommission"
    force: bool = False  # go on although alarms still wait for the alarm centre


Request = Annotated[StatusRequest | TestAlarmRequest | ScanRequest | PairRequest
                    | DecommissionRequest | UplinkProbeRequest, Field(discriminator="request")]
REQUEST = TypeAdapter(Request)


class _Result(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TestAlarmResult(_Result):
    """The test alarm's id and how long each path took; only a full success is a result (any
    failure is an ``error`` naming the hop)."""

    __test__ = False
    alarm_id: str
    primary: Literal["handled"]
    primary_s: float  # from the request to the alarm centre's "handled"
    second_path: Literal["ack"] | None = None  # any other LTE result is an ``error``
    second_path_s: float | None = None


class FoundLock(_Result):
    addr: str
    addr_type: int
    kind: str
    rssi: int
    battery: int | None
    name: str | None
    pairing: bool | None  # in pairing mode; None: its advert does not say (a dKey)
    lock: str | None  # its id, if hubd has paired it already
    protocol: str = lockkinds.REFERENCE  # wire.lockkinds.PROTOCOLS: which secret pairs it


class ScanResult(_Result):
    locks: list[FoundLock]
    listened_s: float = 0.0  # how long hubd listened (less than asked once ``until`` was heard)


class CycleStep(_Result):
    action: str
    status: str
    reason: str | None = None
    state: str | None = None


class PairResult(_Result):
    lock: str
    kind: str
    addr: str
    state: str | None
    battery: int | None
    cycle: list[CycleStep]


#: A dKey's result at decommissioning: hubd forgot its association data and the radio its bond,
#: so the hub opens nothing any more; the lock keeps the hub as a key holder until its owner
#: removes it in the dKey app (py-dormakaba-dkey has no command that removes one).
FORGOTTEN_BY_HUB = "forgotten_by_hub"


def unpaired_text(result: str) -> str:
    """What became of one lock at decommissioning (a DecommissionResult's word), told to the
    technician by hubd's progress line and by hubctl."""
    if result == "ok":
        return "the lock forgot its secret; it works by hand and can be paired again"
    if result == FORGOTTEN_BY_HUB:
        return ("the hub forgot its dKey association and its Bluetooth bond, so it opens nothing "
                "any more; the lock still lists the hub as a key holder until its owner removes "
                "it in the dKey app (the lock works by hand and with the owner's keys meanwhile)")
    if result == "unknown_lock":
        return "no pairing in hubd's state: nothing to forget"
    return (f"{result}: the lock could not confirm; the hub has forgotten it, so its old secret "
            "opens nothing any more (pair it again to give it a new one)")


class DecommissionResult(_Result):
    locks: dict[str, str]  # lock -> hubd.locks.pairing.UNPAIR_RESULTS, "unknown_lock", or a
    #                        dKey's "forgotten_by_hub" (hubd.technician.commissioning)
    backend_told: bool


class Progress(_Result):
    progress: str


class Done(_Result):
    done: dict[str, Any]


class Error(_Result):
    error: str


ANSWER = TypeAdapter(Progress | Done | Error)  # one line from hubd


class Refused(Exception):
    """hubd cannot do the request; the message names why and the fix (sent as ``error``)."""


class ControlError(Exception):
    """hubctl could not get an answer; the message names the fix."""


def ask(path: Path, request: BaseModel, on_progress: Callable[[str], None] = lambda _: None,
        timeout: float = 5.0, origin: str = "") -> dict[str, Any]:
    """Send ``request`` to hubd on ``path``; return its ``done`` object, reporting each progress
    line; :class:`ControlError` for anything else. ``timeout`` bounds each wait for a line.
    ``origin`` says where the path came from (``status_socket in /etc/hubd/hubd.toml``): a
    failure to reach hubd names it, since the wrong file or a typed path looks like a stopped
    hubd."""
    where = f"{path}, {origin}" if origin else str(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
        sock.sendall(request.model_dump_json().encode() + b"\n")
        reader = sock.makefile("rb")
        while True:
            line = reader.readline(MAX_LINE)
            if not line:
                raise ControlError(f"hubd closed {path} without an answer: journalctl -u hubd says "
                                   "why")
            answer = _answer(line, path)
            if isinstance(answer, Progress):
                on_progress(answer.progress)
            elif isinstance(answer, Error):
                raise ControlError(answer.error)
            else:
                return answer.done
    except (FileNotFoundError, ConnectionRefusedError):
        raise ControlError(f"hubd is not running (nothing answers on {where}): systemctl start hubd "
                           "(journalctl -u hubd says why it stopped)") from None
    except PermissionError:
        raise ControlError(f"permission denied on {where}: run as root or a member of group hubd "
                           "(sudo hubctl ...)") from None
    except TimeoutError:
        raise ControlError(f"hubd did not answer on {path} within {timeout:g} s: it may be hung: "
                           "systemctl restart hubd") from None
    except OSError as e:
        raise ControlError(f"cannot use hubd's socket {where}: {e.strerror or e}: is status_socket "
                           "in hubd.toml this path? (pass --socket)") from None
    finally:
        sock.close()


def _answer(line: bytes, path: Path) -> Progress | Done | Error:
    try:
        return ANSWER.validate_json(line)
    except ValidationError:
        raise ControlError(f"{path} answered something hubctl does not understand (is hubctl the "
                           "same version as hubd? reinstall the same homecare-hub release)") from None


def parse_request(line: bytes) -> Request:
    """One request line from a client; ValueError with the reason."""
    try:
        return REQUEST.validate_json(line)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "request"
        raise ValueError(f"{where}: {first['msg']}") from None
