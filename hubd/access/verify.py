"""Verifying signed commands before anything reaches a lock.

A command is a compact JWS (the MQTT payload), signed with the one algorithm
:data:`hubapi.signing.ALGORITHM` under a ``kid`` the hub is configured with. The outcome is a value:
:class:`Verified` or :class:`Rejection` with a :class:`hubapi.models.RejectReason`; nothing raises,
whatever the payload (hubd.inputs bounds the JSON before it is parsed).

The signature is checked before anything else is judged, so every refusal says whether it
concerns a command the backend really signed (``verified``): such a command's id is spent
whatever the refusal (a retained copy refused now must not run when the same token comes live).
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Container, Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from joserfc import jws
from joserfc.errors import BadSignatureError
from joserfc.jwk import OKPKey
from pydantic import ValidationError

from hubapi import signing, topics
from hubapi.models import Action, CommandClaims, RejectReason, Role
from hubd import inputs
from wire import lockkinds

#: A command is a few hundred bytes; anything far larger is not one.
MAX_COMMAND_BYTES = 4096
#: Accepted ``typ`` header, if the signer sets one.
COMMAND_TYP = "hubcmd+jws"


@dataclass(frozen=True)
class Verified:
    """A command whose signature, validity window, hub, lock, action and id all check out."""

    claims: CommandClaims
    kid: str


@dataclass(frozen=True)
class Rejection:
    """Why a command was refused.

    The other fields say what could be read of the command, for the answer and the audit entry.
    With ``verified`` False they are read from the payload on a best-effort basis, unverified:
    use ``reply_to`` only through :func:`hubapi.topics.reply_topic`. With ``verified`` True the
    signature checked out (the refusal came later: expired, wrong hub, replayed, ...). ``detail``
    is for the log.
    """

    reason: RejectReason
    detail: str
    command_id: str | None = None
    reply_to: str | None = None
    lock: str | None = None
    action: str | None = None
    actor: str | None = None
    role: str | None = None
    assignment: str | None = None
    kid: str | None = None
    verified: bool = False
    exp: float | None = None  # a verified command's expiry: its id stays spent until then

    @classmethod
    def of(cls, reason: RejectReason, detail: str, claims: CommandClaims, kid: str) -> Rejection:
        """A refusal of a command whose signature verified."""
        return cls(reason, detail, claims.id, claims.reply_to, claims.lock, claims.action.value, claims.actor.id,
                   claims.actor.role.value, claims.assignment, kid, verified=True, exp=claims.exp)


class Verifier:
    """Checks commands for one hub against the backend's public keys.

    ``locks`` maps each lock id to its kind (:mod:`wire.lockkinds`): an action the kind cannot do
    is refused. ``seen`` holds the ids already used (the durable journal in the daemon); the
    verifier only reads it: recording an id is the caller's job, in the same step as accepting it.
    """

    def __init__(
        self,
        *,
        hub_id: str,
        keys: Mapping[str, Ed25519PublicKey],
        locks: Mapping[str, str],
        clock_skew_s: float,
        max_validity_s: float,
        seen: Container[str] = frozenset(),
        protocols: Mapping[str, str] | None = None,
    ) -> None:
        self._hub_id = hub_id
        self._keys = {kid: OKPKey.import_key(key) for kid, key in keys.items()}
        self._locks = locks  # live: hubctl pair and decommission change it (hubd/technician/commissioning.py)
        # Live too, lock -> wire.lockkinds protocol (hubd.locks.transport.BleLocks.protocols): a
        # protocol may narrow its kind's actions (a dKey cannot unlatch); unlisted: the reference.
        self._protocols = protocols if protocols is not None else {}
        self._skew = clock_skew_s
        self._max_validity = max_validity_s
        self._seen = seen

    @property
    def clock_skew_s(self) -> float:
        """Tolerance applied to ``exp`` and ``nbf``."""
        return self._skew

    def verify(self, payload: bytes, *, retained: bool, now: float | None = None) -> Verified | Rejection:
        """Verify one MQTT payload (it does not record the id as used)."""
        now = time.time() if now is None else now

        def reject(reason: RejectReason, detail: str) -> Rejection:
            # Only a refusal needs what the payload claims: read it then, not for every command.
            # A retained message is refused as retained, whatever else is wrong with it.
            if retained:
                reason, detail = RejectReason.RETAINED, f"retained, and {detail}"
            return Rejection(reason, detail, **_claimed(payload))

        if len(payload) > MAX_COMMAND_BYTES:
            return reject(RejectReason.MALFORMED, f"payload of {len(payload)} bytes exceeds {MAX_COMMAND_BYTES}")
        header = _header(payload)
        if header is None:
            return reject(RejectReason.MALFORMED, "not a compact JWS")
        alg = header.get("alg")
        if alg != signing.ALGORITHM:
            return reject(RejectReason.BAD_SIGNATURE, f"alg {alg!r} refused: only {signing.ALGORITHM} is accepted")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            return reject(RejectReason.MALFORMED, "kid header missing")
        if header.get("typ", COMMAND_TYP) != COMMAND_TYP:
            return reject(RejectReason.MALFORMED, f"typ {header.get('typ')!r} is not {COMMAND_TYP}")
        key = self._keys.get(kid)
        if key is None:
            return reject(RejectReason.UNKNOWN_KEY, f"no key with kid {kid[:64]!r}")
        try:
            signed = jws.deserialize_compact(payload, key, registry=signing.REGISTRY)
        except BadSignatureError:
            return reject(RejectReason.BAD_SIGNATURE, f"signature does not verify with key {kid!r}")
        except Exception as exc:  # JoseError, ValueError, or whatever else hostile bytes provoke in it
            return reject(RejectReason.MALFORMED, f"JWS not readable: {type(exc).__name__}: {str(exc)[:80]}")

        try:
            claims = CommandClaims.model_validate_json(signed.payload)
        except ValidationError as exc:
            if all(error["loc"][:1] == ("action",) for error in exc.errors()):
                return reject(RejectReason.UNSUPPORTED_ACTION,
                              f"action {_claimed(payload).get('action')!r} is not one the hub knows")
            return reject(RejectReason.MALFORMED, f"claims invalid: {_summary(exc)}")

        def refuse(reason: RejectReason, detail: str) -> Rejection:
            return Rejection.of(reason, detail, claims, kid)

        if retained:
            return refuse(RejectReason.RETAINED, "command arrived with the retain flag")
        if claims.id in self._seen:  # spent: whatever else is wrong with it, it was judged before
            return refuse(RejectReason.REPLAYED, "command id was already used")
        if claims.hub != self._hub_id:
            return refuse(RejectReason.WRONG_HUB, f"command is for hub {claims.hub!r}")
        if claims.exp - claims.nbf > self._max_validity:
            return refuse(RejectReason.MALFORMED, f"validity window {claims.exp - claims.nbf} s exceeds {self._max_validity} s")
        if now > claims.exp + self._skew:
            return refuse(RejectReason.EXPIRED, f"expired {now - claims.exp:.1f} s ago")
        if now < claims.nbf - self._skew:
            return refuse(RejectReason.NOT_YET_VALID, f"valid only in {claims.nbf - now:.1f} s")
        kind = self._locks.get(claims.lock)
        if kind is None:
            return refuse(RejectReason.UNKNOWN_LOCK, f"lock {claims.lock!r} is not configured")
        protocol = self._protocols.get(claims.lock, lockkinds.REFERENCE)
        # A prepare asks the hub, not the lock: any lock may be named (every driver can be held:
        # hubd.locks.visit).
        if claims.action is not Action.PREPARE and \
                not lockkinds.supports(kind, claims.action.value, protocol):
            what = kind if protocol == lockkinds.REFERENCE else f"{protocol} ({kind})"
            return refuse(RejectReason.UNSUPPORTED_ACTION, f"a {what} lock cannot {claims.action.value}")
        return Verified(claims, kid)


def _claimed(payload: bytes) -> dict[str, str | None]:
    """What an unverified payload claims, as keyword arguments of :class:`Rejection` (to address
    and audit a refusal); fields that are missing, too long or not printable are left out."""
    if len(payload) > MAX_COMMAND_BYTES:
        return {}
    header = _header(payload) or {}
    try:
        claims = inputs.json_value(_payload_segment(payload), max_bytes=MAX_COMMAND_BYTES)
    except ValueError:  # InputRejected too
        claims = None
    if not isinstance(claims, dict):
        return {"kid": _text(header, "kid", 64)}
    actor = claims.get("actor")
    actor = actor if isinstance(actor, dict) else {}
    role = _text(actor, "role", 16)
    return {"command_id": _text(claims, "id", 64),
            "reply_to": _text(claims, "reply_to", topics.MAX_TOPIC_LENGTH),
            "lock": _text(claims, "lock", 64), "action": _text(claims, "action", 32),
            "actor": _text(actor, "id", 128), "role": role if role in tuple(Role) else None,
            "assignment": _text(claims, "assignment", 128), "kid": _text(header, "kid", 64)}


def _text(obj: dict[str, object], name: str, limit: int) -> str | None:
    value = obj.get(name)
    return value if isinstance(value, str) and 0 < len(value) <= limit and value.isprintable() else None


def _b64url(segment: bytes) -> bytes:
    return base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4))


def _payload_segment(payload: bytes) -> bytes:
    parts = payload.split(b".")
    if len(parts) != 3:
        raise ValueError("not three segments")
    try:
        return _b64url(parts[1])
    except binascii.Error as exc:
        raise ValueError(str(exc)) from None


def _header(payload: bytes) -> dict[str, object] | None:
    parts = payload.split(b".")
    if len(parts) != 3:
        return None
    try:
        header = inputs.json_value(_b64url(parts[0]), max_bytes=MAX_COMMAND_BYTES)
    except (ValueError, binascii.Error):  # InputRejected is a ValueError
        return None
    return header if isinstance(header, dict) else None


def _summary(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'payload'}: {e['msg']}" for e in exc.errors()[:3])
