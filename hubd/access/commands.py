"""The command pipeline: MQTT message -> verify -> journal -> per-lock queue -> lock driver -> answers.

Every verified command is answered ``accepted``, then exactly one final status; a refused one is
answered ``rejected`` with the reason and nothing else. Each step is in the journal and the audit
trail (:mod:`hubd.access.journal`, :mod:`hubd.store.audit`) before it is published: the command id is recorded
durably before ``accepted`` goes out and before the lock driver hears of it, so it runs at most once,
across redeliveries and restarts. Each lock has its own bounded queue worked off by one task, so
a lock runs one operation at a time, in arrival order, while other locks go on. Commands are
never retried: the lock driver is asked once (after the lock write it must not be resent).

A ``prepare`` (hubapi.models.Action.PREPARE) is verified, journalled, queued and answered as
every command, but writes nothing to the lock: in the lock's turn it asks the visit's hold
(hubd.locks.visit) to connect to the lock and hold the connection for the visit's coming
command, and is answered ``succeeded`` once that is up, else with why not.

At start, :meth:`Commands.recover` finds the commands hubd was running when it died: they are
never run again; each is answered ``incomplete`` (``hubd_restarted``) with the state read back
from the lock by a ``status`` operation (``unknown`` if the lock cannot be reached).

A final answer is owed until the broker acknowledged it: it is published at once and again (with
backoff) until the PUBACK, and the journal notes it then; one recorded just before a kill -9 is
published again at the next start (at least once: the backend may see a final answer twice).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeVar

from pydantic import ValidationError

from hubapi import topics
from hubapi.models import Action, Answer, AuditOutcome, FailReason, RejectReason, Status
from hubd.store.audit import AuditLog
from hubd.access.journal import AlreadyUsed, Journal
from hubd.access.lockstate import LockStates
from hubd.mqtt import Inbound
from hubd.store.outbox import PublishFailed
from hubd.access.timing import CommandTiming
from hubd.access.verify import Rejection, Verifier
from wire import outcomes as oc

if TYPE_CHECKING:
    from hubd.access.transport import LockTransport

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Extra time given to the lock transport beyond the operation timeout before the hub stops waiting.
BRIDGE_GRACE_S = 5.0
#: How long recovery waits for the bridge link before it answers with state ``unknown``.
RECOVERY_WAIT_S = 10.0
#: Recovery reads a lock that reports this state again, this often, until it settles.
RECOVERY_MOVING = "moving"
RECOVERY_REREAD_S = 1.0
#: How long a command waits for a bridge link coming up before bridge_unavailable (hubd.toml).
BRIDGE_WAIT_S = 5.0
#: Answers per second, at most, to messages that did not verify (a flood is counted instead).
UNVERIFIED_ANSWERS_PER_S = 10.0
#: A final answer's PUBACK wait, and the backoff between attempts (doubling, capped).
ANSWER_PUBACK_S = 15.0
ANSWER_BACKOFF_S = (0.5, 30.0)
#: On stop, how long final answers already published may wait for their PUBACK (one that does not
#: come in time is sent again at the next start).
CLOSE_ANSWERS_S = 2.0


class VisitListener(Protocol):
    """Who holds a visit's next door (``hubd.locks.visit.VisitHold``): told of each command
    accepted (before it runs: a hold ends so the command has the proxy's slot) and of each that
    succeeded, with the assignment it names; asked for each ``prepare`` (announced at its
    acceptance, for its ticket; the hold asked for in the lock's turn: "" once it is up, else
    why not)."""

    def accepted(self, lock: str, assignment: str | None) -> None: ...

    def succeeded(self, lock: str, assignment: str | None) -> None: ...

    def announced(self, lock: str) -> int: ...

    def prepare(self, lock: str, assignment: str | None, ticket: int,
                accepted_at: float) -> asyncio.Future[str]: ...


class Publisher(Protocol):
    """Where answers go (``hubd.mqtt.HubMqtt`` in the daemon)."""

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None: ...

    async def wait_connected(self, timeout: float | None = None) -> None: ...

    async def publish_acked(self, topic: str, payload: bytes, timeout: float) -> None: ...


@dataclass(frozen=True)
class _Job:
    command_id: str
    lock: str
    action: str
    reply_to: str
    exp: float | None  # None for a command recovered after a restart
    written_before: bool = False  # recovered: the journal says the lock write was attempted
    assignment: str | None = None  # the visit a staff command names (None: recovered, or none)
    # A prepare's: its ticket from the visit's hold, and its acceptance (loop time).
    ticket: int = 0
    accepted_at: float = 0.0
    # Where the time went, per hop (None for a command recovered after a restart).
    timing: CommandTiming | None = field(default=None, compare=False)


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

    ``verifier`` checks each message (its replay guard should be ``journal``); ``transport``
    runs operations on the locks (``hubd.access.transport``: hubd's lock drivers); ``publisher`` sends answers; ``journal``,
    ``audit`` and ``lock_states`` record what happened; ``command_timeout_s`` is passed to the
    transport per operation; ``queue_size`` bounds the commands waiting per lock (a command beyond
    it is rejected ``busy``). ``clock`` returns Unix seconds. ``visits``, if given, hears of each
    command accepted and each that succeeded (hubd.locks.visit).
    """

    def __init__(
        self,
        *,
        hub_id: str,
        verifier: Verifier,
        transport: LockTransport,
        publisher: Publisher,
        journal: Journal,
        audit: AuditLog,
        lock_states: LockStates,
        command_timeout_s: float,
        bridge_wait_s: float = BRIDGE_WAIT_S,
        queue_size: int = 8,
        clock: Callable[[], float] = time.time,
        recovery_wait_s: float = RECOVERY_WAIT_S,
        visits: VisitListener | None = None,
    ) -> None:
        self._hub_id = hub_id
        self._verifier = verifier
        self._locks = transport
        self._publisher = publisher
        self._journal = journal
        self._audit = audit
        self._lock_states = lock_states
        self._timeout = command_timeout_s
        self._bridge_wait_s = bridge_wait_s
        self._queue_size = queue_size
        self._clock = clock
        self._recovery_wait_s = recovery_wait_s
        self._visits = visits
        self._queues: dict[str, asyncio.Queue[_Job]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._recovering: dict[str, list[_Job]] = {}
        self._owed: set[asyncio.Task[None]] = set()  # final answers not yet acknowledged
        # Answers to messages that did not verify, beyond the first of each reason per interval.
        self._answers = _Bucket(UNVERIFIED_ANSWERS_PER_S, UNVERIFIED_ANSWERS_PER_S)

    def recover(self) -> int:
        """Answer the commands left unfinished by an earlier run (call once, before handling any);
        returns how many. Each lock's worker finishes them before it takes new commands. Final
        answers an earlier run recorded but never got acknowledged go out again."""
        for owed in self._journal.unanswered():
            log.warning("final answer recorded before hubd stopped, never acknowledged: sending it again",
                        extra={"command_id": owed.id, "status": owed.status})
            answer = Answer(id=owed.id, status=Status(owed.status), reason=owed.reason, lock=owed.lock,
                            state=owed.state, at=owed.at)
            self._owe(owed.reply_to, owed.id, answer.model_dump_json().encode())
        unfinished = self._journal.unfinished()
        for entry in unfinished:
            log.warning("command was unfinished when hubd stopped: never resent; reading the lock state",
                        extra={"command_id": entry.id, "lock": entry.lock, "action": entry.action,
                               "written": entry.written})
            job = _Job(entry.id, entry.lock, entry.action, entry.reply_to, None, entry.written)
            self._recovering.setdefault(entry.lock, []).append(job)
        for lock in list(self._recovering):
            self._queue_for(lock)
        return len(unfinished)

    def handle(self, message: Inbound) -> str | None:
        """Verify one message and answer or queue it; returns the reason it was refused (for
        hubd.inputs' count) or None. Never raises for bad input."""
        started = time.perf_counter()
        result = self._verifier.verify(message.payload, retained=message.retain, now=self._clock())
        verified = time.perf_counter()
        if isinstance(result, Rejection):
            return self._reject(result, message)
        claims, kid = result.claims, result.kid
        reply_to = topics.reply_topic(self._hub_id, claims.reply_to)
        queue = self._queue_for(claims.lock)
        if queue.full():
            return self._reject(Rejection.of(RejectReason.BUSY, f"{queue.qsize()} commands already wait for "
                                             "this lock", claims, kid), message)
        try:
            self._journal.accept(claims, kid, reply_to, until=claims.exp + self._verifier.clock_skew_s)
        except AlreadyUsed:
            return self._reject(Rejection.of(RejectReason.REPLAYED, "command id was already used", claims, kid),
                                message)
        except sqlite3.Error as exc:
            log.error("cannot record the command in the journal: %s", exc, extra={"command_id": claims.id})
            return self._reject(Rejection.of(RejectReason.STORE_FAILED, f"journal write failed: {exc}", claims,
                                             kid), message)
        timing = CommandTiming(message.at, started, verified, time.perf_counter())
        log.info("command accepted", extra={"command_id": claims.id, "lock": claims.lock, "action": claims.action.value,
                                            "actor": claims.actor.id, "role": claims.actor.role.value, "kid": kid})
        self._answer(reply_to, claims.id, claims.lock, _Outcome(Status.ACCEPTED))
        # After the answer, before the job's first await: the hold is let go before the job runs.
        prepare = claims.action is Action.PREPARE  # moves nothing, times nothing: no timing
        ticket, accepted_at = 0, 0.0
        if prepare:
            ticket = self._tell_visits(lambda visits: visits.announced(claims.lock)) or 0
            accepted_at = asyncio.get_running_loop().time()
        else:
            self._tell_visits(lambda visits: visits.accepted(claims.lock, claims.assignment))
        queue.put_nowait(_Job(claims.id, claims.lock, claims.action.value, reply_to, claims.exp,
                              assignment=claims.assignment, ticket=ticket, accepted_at=accepted_at,
                              timing=None if prepare else timing))
        return None

    async def close(self) -> None:
        """Stop the lock workers; commands still waiting or running get their final answer
        (published now; one the broker has not acknowledged goes again at the next start)."""
        for task in self._workers.values():
            task.cancel()
        await asyncio.gather(*self._workers.values(), return_exceptions=True)
        self._workers.clear()
        for queue in self._queues.values():
            while not queue.empty():
                self._finish(queue.get_nowait(), _Outcome(Status.FAILED, FailReason.SHUTTING_DOWN))
        self._queues.clear()
        if self._owed:  # their PUBACKs normally come within milliseconds: wait a little for them
            await asyncio.wait(set(self._owed), timeout=CLOSE_ANSWERS_S)
        for task in self._owed:
            task.cancel()
        await asyncio.gather(*self._owed, return_exceptions=True)

    def _queue_for(self, lock: str) -> asyncio.Queue[_Job]:
        queue = self._queues.get(lock)
        if queue is None:
            queue = self._queues[lock] = asyncio.Queue(self._queue_size)
            self._workers[lock] = asyncio.create_task(self._work(lock, queue), name=f"lock-{lock}")
        return queue

    async def _work(self, lock: str, queue: asyncio.Queue[_Job]) -> None:
        while self._recovering.get(lock):
            job = self._recovering[lock][0]
            await self._run(job, self._recover(job))
            self._recovering[lock].pop(0)
        self._recovering.pop(lock, None)
        while True:
            job = await queue.get()
            progress = _Progress()
            await self._run(job, self._execute(job, progress), progress)

    async def _run(self, job: _Job, work, progress: _Progress | None = None) -> None:
        progress = progress or _Progress(written=job.written_before)
        try:
            outcome = await work
        except asyncio.CancelledError:
            if job.exp is not None:  # a recovered command stays unfinished: the next start reads it back
                self._finish(job, _unfinished(progress.written, FailReason.SHUTTING_DOWN))
            raise
        except Exception:
            # One broken command must not stop the lock's queue.
            log.exception("command failed inside the hub", extra={"command_id": job.command_id})
            outcome = _unfinished(progress.written or job.exp is None, FailReason.BRIDGE_ERROR)
        self._finish(job, outcome)
        if outcome.status is Status.SUCCEEDED and job.exp is not None \
                and job.action != Action.PREPARE:  # a prepared door did not open
            self._tell_visits(lambda visits: visits.succeeded(job.lock, job.assignment))

    def _tell_visits(self, tell: Callable[[VisitListener], T]) -> T | None:
        """Tell the visit's hold (hubd.locks.visit) of a command accepted or succeeded, or a
        prepare announced; what it says back (None without one, or if it failed)."""
        if self._visits is None:
            return None
        try:
            return tell(self._visits)
        except Exception:  # the visit's hold is a speed-up: its bug must not touch a command
            log.exception("the visit's hold failed hearing of a command")
            return None

    async def _execute(self, job: _Job, progress: _Progress) -> _Outcome:
        fields = {"command_id": job.command_id, "lock": job.lock, "action": job.action}
        assert job.exp is not None
        if self._clock() > job.exp + self._verifier.clock_skew_s:
            log.warning("command expired while queued; not sent", extra=fields)
            return _Outcome(Status.FAILED, FailReason.EXPIRED_IN_QUEUE)
        if not self._locks.is_up:
            # Nothing is written yet, so waiting is safe: a bridge rebooting or a hubd just started
            # has its link up in a second or two, and the nurse's door should still open.
            wait = min(self._bridge_wait_s, job.exp + self._verifier.clock_skew_s - self._clock())
            log.info("bridge link down; waiting up to %.1f s for it", max(wait, 0.0), extra=fields)
            if wait <= 0 or not await self._locks.wait_up(wait):
                log.warning("bridge link down; command not sent", extra=fields)
                return _Outcome(Status.FAILED, FailReason.BRIDGE_UNAVAILABLE)
        if job.action == Action.PREPARE:
            return await self._prepare(job, fields)

        def on_written() -> None:
            progress.written = True
            log.info("lock command written", extra=fields)
            try:
                self._journal.written(job.command_id)
            except sqlite3.Error as exc:
                # The lock is being written already: nothing to stop; the final outcome still follows.
                log.error("cannot record the lock write in the journal: %s", exc, extra=fields)

        if job.timing is not None:
            job.timing.mark_sent()
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel (shutdown).
            async with asyncio.timeout(self._timeout + BRIDGE_GRACE_S):
                result = await self._locks.operate(job.lock, job.action, job.command_id, on_written,
                                                    self._timeout)
            if job.timing is not None:
                job.timing.mark_result(result.ble_ms, ble_requests_ms=result.ble_requests_ms,
                                       ble_requests=result.ble_requests)
        except TimeoutError:
            log.error("the lock driver gave no result in time", extra=fields | {"written": progress.written})
            return _unfinished(progress.written, FailReason.BRIDGE_NO_RESPONSE, oc.TIMED_OUT)
        # The link's decoder took only outcomes of wire.outcomes (a bug here is a KeyError, which
        # _run answers by the at-most-once rule).
        status = _STATUS_OF[result.outcome]
        log.info("command finished", extra=fields | {"status": status.value, "reason": result.reason,
                                                     "state": result.state, "written": progress.written})
        return _outcome_from_bridge(status, result.reason, result.state, result.battery)

    async def _prepare(self, job: _Job, fields: dict[str, object]) -> _Outcome:
        """A prepare: the visit's hold of the lock's connection (hubd.locks.visit), up and read
        or why not. Nothing is written to the lock, so nothing is journalled as written."""
        if self._visits is None:
            return _Outcome(Status.FAILED, FailReason.UNSUPPORTED_ACTION)
        ready = self._visits.prepare(job.lock, job.assignment, job.ticket, job.accepted_at)
        try:
            async with asyncio.timeout(self._timeout + BRIDGE_GRACE_S):
                why = await ready
        except TimeoutError:
            log.error("the visit's hold gave no answer to a prepare in time", extra=fields)
            why = oc.BRIDGE_NO_RESPONSE
        log.info("prepare finished", extra=fields | {"reason": why or None})
        if not why:
            return _Outcome(Status.SUCCEEDED)
        return _Outcome(Status(oc.unwritten(why)), why)

    async def _recover(self, job: _Job) -> _Outcome:
        fields = {"command_id": job.command_id, "lock": job.lock}
        if job.action == Action.PREPARE:  # nothing was written, nothing to read back
            return _Outcome(Status.FAILED, FailReason.HUBD_RESTARTED)
        state, battery = "unknown", None
        if await self._locks.wait_up(self._recovery_wait_s):
            # The motor a killed hubd started may still run (hubd's driver died with hubd; the
            # lock finishes on its own): read again while it says "moving", within the timeout.
            result = None
            try:
                async with asyncio.timeout(self._timeout + BRIDGE_GRACE_S):
                    while True:
                        result = await self._locks.operate(job.lock, "status",
                                                            f"status-{uuid.uuid4().hex}",
                                                            lambda: None, self._timeout)
                        if result.outcome != oc.SUCCEEDED or result.state != RECOVERY_MOVING:
                            break
                        await asyncio.sleep(RECOVERY_REREAD_S)
            except TimeoutError:
                result = result if result is not None and result.state == RECOVERY_MOVING else None
            if result is not None and result.outcome == oc.SUCCEEDED and result.state:
                read = _outcome_from_bridge(Status.INCOMPLETE, None, result.state, result.battery)
                state, battery = read.state or "unknown", read.battery
            else:
                log.warning("could not read the lock state back: %s", result, extra=fields)
        else:
            log.warning("bridge not up: the lock state stays unknown", extra=fields)
        return _Outcome(Status.INCOMPLETE, FailReason.HUBD_RESTARTED, state, battery)

    def _finish(self, job: _Job, outcome: _Outcome) -> None:
        """Journal and audit the final outcome, then publish the state and the answer."""
        try:
            self._journal.finish(job.command_id, AuditOutcome(outcome.status.value), outcome.reason,
                                 outcome.state, outcome.battery)
        except (sqlite3.Error, KeyError, ValidationError) as exc:
            log.error("cannot record the final outcome: %s", exc, extra={"command_id": job.command_id})
        # The retained lock state first, the answer after it: a backend that reads the retained
        # state once it has the answer must find the state the answer names (one connection
        # publishes in order; the hil scenario "unlock ... leaves the retained state unlocked"
        # read a stale state under load when the answer went first).
        if outcome.state is not None:
            self._lock_states.after_command(job.lock, outcome.state, outcome.battery)
        answer = Answer(id=job.command_id, status=outcome.status, reason=outcome.reason, lock=job.lock,
                        state=outcome.state, battery=outcome.battery, at=self._clock())
        self._owe(job.reply_to, job.command_id, answer.model_dump_json().encode())
        figures = job.timing.log_fields() if job.timing is not None else None
        if figures is not None:
            log.info("command timing", extra={"command_id": job.command_id, **figures})

    def _reject(self, rejection: Rejection, message: Inbound) -> str:
        reply_to = topics.reply_topic(self._hub_id, rejection.reply_to)
        if rejection.verified:  # a command the backend signed: logged one by one
            log.warning("command rejected: %s", rejection.detail, extra={
                "reason": rejection.reason.value, "command_id": rejection.command_id, "topic": message.topic,
                "bytes": len(message.payload), "retained": message.retain, "verified": True})
        lock = rejection.lock if rejection.lock is not None and topics.is_valid_segment(rejection.lock) else None
        answer_it = True
        try:
            if not rejection.verified:
                # Counted per reason, not a row per garbage message; a flood gets few answers.
                audited = self._audit.refusal(rejection.reason.value, lock=rejection.lock,
                                              command=rejection.command_id, action=rejection.action,
                                              actor=rejection.actor, role=rejection.role,
                                              assignment=rejection.assignment, kid=rejection.kid)
                answer_it = audited or self._answers.take(self._clock())
            elif rejection.reason not in _NOT_SPENT and rejection.exp is not None:
                # Its id is spent, whatever the refusal (at most once, hubd/access/verify.py).
                self._journal.spend(rejection, reply_to, until=rejection.exp + self._verifier.clock_skew_s)
            else:
                self._audit.record(lock=rejection.lock, source="remote", outcome=AuditOutcome.REJECTED,
                                   reason=rejection.reason.value, command=rejection.command_id,
                                   action=rejection.action, actor=rejection.actor, role=rejection.role,
                                   assignment=rejection.assignment, kid=rejection.kid, verified=True)
        except AlreadyUsed:
            pass  # spent before (a retained copy, then the same token again): audited all the same
        except (sqlite3.Error, ValidationError) as exc:
            log.error("cannot audit a rejection: %s", exc, extra={"command_id": rejection.command_id})
        if answer_it:
            answer = Answer(id=rejection.command_id, status=Status.REJECTED, reason=rejection.reason.value,
                            lock=lock, at=self._clock(), verified=rejection.verified)
            self._publisher.publish(reply_to, answer.model_dump_json().encode())
        return f"{rejection.reason.value}: {rejection.detail}"

    def _owe(self, reply_to: str, command_id: str, payload: bytes) -> None:
        task = asyncio.create_task(self._deliver_final(reply_to, command_id, payload),
                                   name=f"answer-{command_id[:16]}")
        self._owed.add(task)
        task.add_done_callback(self._owed.discard)

    async def _deliver_final(self, reply_to: str, command_id: str, payload: bytes) -> None:
        delay = ANSWER_BACKOFF_S[0]
        while True:
            try:
                await self._publisher.publish_acked(reply_to, payload, ANSWER_PUBACK_S)
                break
            except PublishFailed as exc:
                log.warning("final answer not acknowledged: %s; again in %.1f s", exc, delay,
                            extra={"command_id": command_id})
            await asyncio.sleep(delay)
            delay = min(delay * 2, ANSWER_BACKOFF_S[1])
            await self._publisher.wait_connected()
        try:
            self._journal.answered(command_id)
        except sqlite3.Error as exc:  # it goes again at the next start: a duplicate, not a loss
            log.error("cannot note that the final answer was acknowledged: %s", exc,
                      extra={"command_id": command_id})

    def _answer(self, reply_to: str, command_id: str, lock: str, outcome: _Outcome) -> None:
        answer = Answer(id=command_id, status=outcome.status, reason=outcome.reason, lock=lock,
                        state=outcome.state, battery=outcome.battery, at=self._clock())
        self._publisher.publish(reply_to, answer.model_dump_json().encode())


def _unfinished(written: bool, reason: FailReason, otherwise: str = oc.FAILED) -> _Outcome:
    """An operation that ended without the lock's result, by the at-most-once rule (wire.outcomes)."""
    outcome, state = oc.unfinished(written, otherwise)
    return _Outcome(_STATUS_OF[outcome], reason, state)


def _outcome_from_bridge(status: Status, reason: object, state: object, battery: object) -> _Outcome:
    # The reason was typed at the transport seam (wire.outcomes); state and battery end up in
    # strict wire models: pass on only what fits them.
    return _Outcome(
        status,
        str(reason) if reason is not None else None,
        str(state)[:32] if state else None,
        battery if type(battery) is int and 0 <= battery <= 100 else None,
    )


class _Bucket:
    """A token bucket: ``take`` is True at most ``rate`` times a second (``burst`` at once)."""

    def __init__(self, rate: float, burst: float) -> None:
        self._rate, self._burst = rate, burst
        self._tokens, self._at = burst, 0.0

    def take(self, now: float) -> bool:
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


# Refusals that do not spend a verified command's id: it is spent already, or the journal is
# what failed.
_NOT_SPENT = (RejectReason.REPLAYED, RejectReason.STORE_FAILED)

_STATUS_OF = {
    oc.SUCCEEDED: Status.SUCCEEDED,
    oc.FAILED: Status.FAILED,
    oc.TIMED_OUT: Status.TIMED_OUT,
    oc.INCOMPLETE: Status.INCOMPLETE,
}
