"""Payloads of the hub API, version 1: defined once here, imported by the hub and the backend.

Times are Unix seconds (JWT NumericDate), as in the signed command claims.
"""

from __future__ import annotations

import time
import uuid
from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from hubapi import topics

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


class RejectReason(StrEnum):
    """Why a command was refused before anything was sent to a lock (status ``rejected``)."""

    MALFORMED = "malformed"
    BAD_SIGNATURE = "bad_signature"  # also: any algorithm other than the one the hub accepts
    UNKNOWN_KEY = "unknown_key"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    REPLAYED = "replayed"
    WRONG_HUB = "wrong_hub"
    UNKNOWN_LOCK = "unknown_lock"
    UNSUPPORTED_ACTION = "unsupported_action"
    RETAINED = "retained"
    BUSY = "busy"  # the lock's queue is full


class FailReason(StrEnum):
    """Reasons the hub itself gives with ``failed``/``timed_out``/``incomplete``.

    The bridge may give other reasons; those are passed through as they are.
    """

    BRIDGE_UNAVAILABLE = "bridge_unavailable"  # nothing was written: the lock did not move
    EXPIRED_IN_QUEUE = "expired_in_queue"  # expired while waiting for the lock: never sent
    BRIDGE_ERROR = "bridge_error"
    BRIDGE_NO_RESPONSE = "bridge_no_response"
    SHUTTING_DOWN = "shutting_down"  # hubd stopped; with ``incomplete`` the write had been attempted


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

    ``id`` is None only for a payload so broken that no id could be read from it.
    """

    v: Literal[1] = 1
    id: str | None
    status: Status
    reason: str | None = None
    lock: str | None = None
    state: str | None = None
    battery: Battery | None = None
    at: float

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


class Online(_Model):
    """Retained presence of a hub. The last will carries ``offline`` without a time."""

    v: Literal[1] = 1
    hub: SegmentId
    status: Literal["online", "offline"]
    at: float | None = None
