"""The command pipeline: MQTT message -> verify -> per-lock queue -> bridge -> answers.

Every verified command is answered ``accepted``, then exactly one final status; a refused one is
answered ``rejected`` with the reason and nothing else. Each lock has its own bounded queue worked
off by one task, so a lock runs one operation at a time, in arrival order, while other locks go on.
Commands are never retried: the bridge is asked once (after the lock write it must not be resent).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from hubapi import topics
from hubapi.models import Answer, CommandClaims, FailReason, LockState, RejectReason, Status
from hubd.mqtt import Inbound
from hubd.verify import Rejection, Verifier

if TYPE_CHECKING:
    from hubd.bridge import Bridge

log = logging.getLogger(__name__)

#: Extra time given to the bridge beyond the operation timeout before the hub stops waiting.
BRIDGE_GRACE_S = 5.0


class Publisher(Protocol):
    """Where answers and lock state go (``hubd.mqtt.HubMqtt`` in the daemon)."""

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None: ...


@dataclass(frozen=True)
class _Job:
    claims: CommandClaims
    reply_to: str


@dataclass
class _Progress:
    written: bool = False  # the bridge attempted the lock write: from here on, never resend


@dataclass(frozen=True)
class _Outcome:
    status: Status
    reason: str | None = None
    state: str | None = None
    battery: int | None = None


class Commands:
    """Runs commands for one hub.

    ``verifier`` checks each message; ``bridge`` executes operations (see ``hubd.bridge.Bridge``);
    ``publisher`` sends answers and retained lock state; ``command_timeout_s`` is passed to the
    bridge per operation; ``queue_size`` bounds the commands waiting per lock (a command beyond it
    is rejected ``busy``). ``clock`` returns Unix seconds.
    """

    def __init__(
        self,
        *,
        hub_id: str,
        verifier: Verifier,
        bridge: Bridge,
        publisher: Publisher,
        command_timeout_s: float,
        queue_size: int = 8,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._hub_id = hub_id
        self._verifier = verifier
        self._bridge = bridge
        self._publisher = publisher
        self._timeout = command_timeout_s
        self._queue_size = queue_size
        self._clock = clock
        self._queues: dict[str, asyncio.Queue[_Job]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        bridge.on_lock_state(self._lock_state_reported)

    async def run(self, messages: AsyncIterable[Inbound]) -> None:
        """Handle messages until the iterable ends or the task is cancelled."""
        async for message in messages:
            self.handle(message)

    def handle(self, message: Inbound) -> None:
        """Verify one message and answer or queue it; never raises for bad input."""
        result = self._verifier.verify(message.payload, retained=message.retain, now=self._clock())
        if isinstance(result, Rejection):
            self._reject(result, message)
            return
        claims = result.claims
        reply_to = topics.reply_topic(self._hub_id, claims.reply_to)
        queue = self._queue_for(claims.lock)
        try:
            queue.put_nowait(_Job(claims, reply_to))
        except asyncio.QueueFull:
            self._reject(Rejection(RejectReason.BUSY, f"{queue.qsize()} commands already wait for this lock",
                                   claims.id, claims.reply_to, claims.lock), message)
            return
        log.info("command accepted", extra={"command_id": claims.id, "lock": claims.lock, "action": claims.action.value,
                                            "actor": claims.actor.id, "role": claims.actor.role.value, "kid": result.kid})
        self._answer(reply_to, claims, _Outcome(Status.ACCEPTED))

    async def close(self) -> None:
        """Stop the lock workers; commands still waiting or running get their final answer."""
        for task in self._workers.values():
            task.cancel()
        await asyncio.gather(*self._workers.values(), return_exceptions=True)
        self._workers.clear()
        for queue in self._queues.values():
            while not queue.empty():
                job = queue.get_nowait()
                self._answer(job.reply_to, job.claims, _Outcome(Status.FAILED, FailReason.SHUTTING_DOWN))
        self._queues.clear()

    def _queue_for(self, lock: str) -> asyncio.Queue[_Job]:
        queue = self._queues.get(lock)
        if queue is None:
            queue = self._queues[lock] = asyncio.Queue(self._queue_size)
            self._workers[lock] = asyncio.create_task(self._work(queue), name=f"lock-{lock}")
        return queue

    async def _work(self, queue: asyncio.Queue[_Job]) -> None:
        while True:
            job = await queue.get()
            progress = _Progress()
            try:
                outcome = await self._execute(job, progress)
            except asyncio.CancelledError:
                status = Status.INCOMPLETE if progress.written else Status.FAILED
                self._answer(job.reply_to, job.claims, _Outcome(status, FailReason.SHUTTING_DOWN))
                raise
            except Exception:
                # One broken command must not stop the lock's queue.
                log.exception("command failed inside the hub", extra={"command_id": job.claims.id})
                status = Status.INCOMPLETE if progress.written else Status.FAILED
                outcome = _Outcome(status, FailReason.BRIDGE_ERROR)
            self._answer(job.reply_to, job.claims, outcome)
            if outcome.state is not None:
                self._publish_state(job.claims.lock, outcome.state, outcome.battery, "command")

    async def _execute(self, job: _Job, progress: _Progress) -> _Outcome:
        claims = job.claims
        fields = {"command_id": claims.id, "lock": claims.lock, "action": claims.action.value}
        if self._clock() > claims.exp + self._verifier.clock_skew_s:
            log.warning("command expired while queued; not sent", extra=fields)
            return _Outcome(Status.FAILED, FailReason.EXPIRED_IN_QUEUE)
        if not self._bridge.is_up:
            log.warning("bridge link down; command not sent", extra=fields)
            return _Outcome(Status.FAILED, FailReason.BRIDGE_UNAVAILABLE)

        def on_written() -> None:
            progress.written = True
            log.info("lock command written", extra=fields)

        try:
            result = await asyncio.wait_for(
                self._bridge.operate(claims.lock, claims.action.value, claims.id, on_written, self._timeout),
                self._timeout + BRIDGE_GRACE_S,
            )
        except TimeoutError:
            log.error("bridge gave no result in time", extra=fields | {"written": progress.written})
            return _Outcome(Status.TIMED_OUT, FailReason.BRIDGE_NO_RESPONSE)
        status = _STATUS_OF.get(result.outcome)
        if status is None:
            log.error("bridge gave unknown outcome %r", result.outcome, extra=fields)
            # After a write the lock may have moved: say so, never claim it did not.
            status = Status.INCOMPLETE if progress.written else Status.FAILED
        log.info("command finished", extra=fields | {"status": status.value, "reason": result.reason,
                                                     "state": result.state, "written": progress.written})
        # The bridge's values end up in strict wire models: pass on only what fits them.
        battery = result.battery if type(result.battery) is int and 0 <= result.battery <= 100 else None
        reason = str(result.reason)[:128] if result.reason is not None else None
        state = str(result.state)[:32] if result.state else None
        return _Outcome(status, reason, state, battery)

    def _reject(self, rejection: Rejection, message: Inbound) -> None:
        reply_to = topics.reply_topic(self._hub_id, rejection.reply_to)
        log.warning("command rejected: %s", rejection.detail, extra={
            "reason": rejection.reason.value, "command_id": rejection.command_id, "topic": message.topic,
            "bytes": len(message.payload), "retained": message.retain})
        lock = rejection.lock if rejection.lock is not None and topics.is_valid_segment(rejection.lock) else None
        answer = Answer(id=rejection.command_id, status=Status.REJECTED, reason=rejection.reason.value,
                        lock=lock, at=self._clock())
        self._publisher.publish(reply_to, answer.model_dump_json().encode())

    def _answer(self, reply_to: str, claims: CommandClaims, outcome: _Outcome) -> None:
        answer = Answer(id=claims.id, status=outcome.status, reason=outcome.reason, lock=claims.lock,
                        state=outcome.state, battery=outcome.battery, at=self._clock())
        self._publisher.publish(reply_to, answer.model_dump_json().encode())

    def _lock_state_reported(self, lock: str, state: str, battery: int | None, source: str) -> None:
        self._publish_state(lock, state, battery, source)

    def _publish_state(self, lock: str, state: str, battery: int | None, source: str) -> None:
        try:
            payload = LockState(lock=lock, state=state, battery=battery, source=source, at=self._clock())
        except ValueError as exc:
            log.error("bridge reported unusable lock state: %s", exc, extra={"lock": lock})
            return
        self._publisher.publish(topics.lock_state(self._hub_id, lock), payload.model_dump_json().encode(), retain=True)


_STATUS_OF = {
    "succeeded": Status.SUCCEEDED,
    "failed": Status.FAILED,
    "timed_out": Status.TIMED_OUT,
    "incomplete": Status.INCOMPLETE,
}
