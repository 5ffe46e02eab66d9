"""The audit trail: every lock operation as an append-only, hash-chained entry (evidence).

An entry (:class:`hubapi.models.AuditEntry`) is written to the state database and queued in the
outbox in one transaction, so it is on the hub's disk before anything publishes it and it reaches
the backend at least once, in seq order, on ``hubs/{hub}/v1/audit``. Each entry's ``hash`` covers
its content and the previous entry's hash, so a deleted entry leaves a gap in ``seq`` and an edited
one no longer matches its hash (or breaks the next entry's ``prev``). Rewriting the whole chain on
the hub is caught by comparing with the backend's copy.

The backend can ask for a range again (:class:`AuditRequests`, topic ``audit/request``).

Command line (exit 0: the chain is intact; 1: a gap, an edit or an unreadable entry; 2: bad input)::

    python -m hubd.store.audit verify /var/lib/hubd/hubd.sqlite3
    python -m hubd.store.audit verify audit-export.jsonl
    python -m hubd.store.audit export /var/lib/hubd/hubd.sqlite3 --from 100 --to 200 > part.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

from hubapi import topics
from hubapi.models import GENESIS_HASH, AuditBatch, AuditEntry, AuditOutcome, AuditRequest
from hubd import inputs
from hubd.store.outbox import Outbox
from hubd.store.database import Store

log = logging.getLogger(__name__)

#: An audit request is a few dozen bytes.
MAX_REQUEST_BYTES = 1024
#: Refusals of messages that did not verify, per reason: the first in each interval of this
#: length gets an entry of its own, the rest one entry with their ``count`` at its end.
REFUSALS_EVERY_S = 60.0
#: Entries older than ``keep_days`` are pruned at most this many at a time (one transaction).
PRUNE_BATCH = 10_000


class AuditLog:
    """Appends entries to the chain for one hub and reads them back."""

    def __init__(self, store: Store, outbox: Outbox, hub_id: str,
                 clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._outbox = outbox
        self._hub_id = hub_id
        self._topic = topics.audit(hub_id)
        self._clock = clock
        self._refusals: dict[str, int] = {}  # reason -> refusals counted since its last entry

    def append(self, conn: sqlite3.Connection, **fields: Any) -> AuditEntry:
        """Add one entry inside the caller's transaction and queue it for the backend.

        ``fields`` are :class:`AuditEntry` fields except ``seq``, ``prev``, ``hash``, ``at`` and
        ``hub``; left-out optional fields are null, ``verified`` defaults to False.
        """
        last = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev = (1, GENESIS_HASH) if last is None else (last[0] + 1, last[1])
        values: dict[str, Any] = dict.fromkeys(
            ("lock", "reason", "state", "battery", "event", "command", "action", "actor", "role",
             "assignment", "kid"))
        values["verified"] = False
        values.update(fields)
        entry = AuditEntry.seal(seq=seq, prev=prev, at=round(self._clock(), 3), hub=self._hub_id,
                                **values)
        text = entry.model_dump_json()
        conn.execute("INSERT INTO audit (seq, hash, entry) VALUES (?, ?, ?)", (seq, entry.hash, text))
        self._outbox.add(conn, self._topic, text.encode())
        return entry

    def record(self, **fields: Any) -> AuditEntry:
        """:meth:`append` in a transaction of its own (committed, durable, when it returns)."""
        with self._store.transaction() as conn:
            return self.append(conn, **fields)

    def refusal(self, reason: str, **fields: Any) -> bool:
        """A refusal of a message that did not verify (``verified`` false): audited at once if it
        is the first of its ``reason`` since the last :meth:`flush_refusals`, else counted there.
        Returns whether it was written now. Raises sqlite3.Error."""
        if reason in self._refusals:
            self._refusals[reason] += 1
            return False
        self.record(source="remote", outcome=AuditOutcome.REJECTED, reason=reason, verified=False, **fields)
        self._refusals[reason] = 0
        return True

    def flush_refusals(self) -> int:
        """Write one entry per reason for the refusals counted since the last flush (``count``),
        and start a new interval; returns how many refusals the entries stand for."""
        counted = {reason: n for reason, n in self._refusals.items() if n}
        self._refusals = {}
        if not counted:
            return 0
        with self._store.transaction() as conn:
            for reason, n in counted.items():
                self.append(conn, source="remote", outcome=AuditOutcome.REJECTED, reason=reason,
                            verified=False, count=n)
        log.warning("refused %d message(s) that did not verify in the last interval", sum(counted.values()),
                    extra={"refusals": counted})
        return sum(counted.values())

    async def flush_refusals_every(self, interval_s: float = REFUSALS_EVERY_S) -> None:
        """:meth:`flush_refusals` every ``interval_s``, until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                self.flush_refusals()
            except sqlite3.Error as exc:
                log.error("cannot write the counted refusals: %s", exc)

    def prune(self, keep_days: float) -> int:
        """Delete entries older than ``keep_days`` that the broker already has (none still in the
        outbox), at most :data:`PRUNE_BATCH`, and append a ``pruned`` entry carrying the last
        deleted entry's seq and hash, so the chain from there on still verifies. Returns how
        many were deleted. Raises sqlite3.Error."""
        cutoff = self._clock() - keep_days * 86400
        with self._store.transaction() as conn:
            first = conn.execute("SELECT min(seq) FROM audit").fetchone()[0]
            if first is None:
                return 0
            # The newest old entry that is no longer waiting in the outbox (the outbox keeps
            # order, so everything before the oldest waiting entry was delivered).
            last = None
            for seq, text in conn.execute(
                    "SELECT seq, entry FROM audit WHERE seq < ? ORDER BY seq", (first + PRUNE_BATCH,)):
                if AuditEntry.model_validate_json(text).at >= cutoff:
                    break
                last = seq
            if last is None:
                return 0
            waiting = conn.execute("SELECT min(id) FROM outbox WHERE topic = ?", (self._topic,)).fetchone()[0]
            if waiting is not None:
                oldest_waiting = conn.execute("SELECT payload FROM outbox WHERE id = ?", (waiting,)).fetchone()[0]
                last = min(last, AuditEntry.model_validate_json(bytes(oldest_waiting)).seq - 1)
            newest = conn.execute("SELECT max(seq) FROM audit").fetchone()[0]
            last = min(last, newest - 1)  # the newest stays: the chain goes on from it
            if last < first:
                return 0
            pruned_hash = conn.execute("SELECT hash FROM audit WHERE seq = ?", (last,)).fetchone()[0]
            deleted = conn.execute("DELETE FROM audit WHERE seq <= ?", (last,)).rowcount
            self.append(conn, source="hub", outcome=AuditOutcome.PRUNED, reason="retention",
                        count=deleted, pruned_to=last, pruned_hash=pruned_hash)
        log.info("audit trail pruned", extra={"entries": deleted, "through_seq": last})
        return deleted

    def last_seq(self) -> int:
        """The newest seq (0 when the log is empty)."""
        row = self._store.conn.execute("SELECT max(seq) FROM audit").fetchone()
        return row[0] or 0

    def read(self, from_seq: int, to_seq: int) -> tuple[list[AuditEntry], list[int]]:
        """Stored entries ``from_seq``..``to_seq`` and the seqs of that range (up to the newest)
        that are missing or unreadable."""
        rows = self._store.conn.execute(
            "SELECT seq, entry FROM audit WHERE seq BETWEEN ? AND ? ORDER BY seq", (from_seq, to_seq))
        entries: list[AuditEntry] = []
        for seq, text in rows:
            try:
                entry = AuditEntry.model_validate_json(text)
            except ValidationError:
                log.error("audit entry %d in the state database is unreadable", seq)
                continue
            if entry.seq == seq:
                entries.append(entry)
        present = {e.seq for e in entries}
        last = min(to_seq, self.last_seq())
        return entries, [s for s in range(from_seq, last + 1) if s not in present]


class Publisher(Protocol):
    """Where audit answers go (``hubd.mqtt.HubMqtt``)."""

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None: ...


class AuditRequests:
    """Answers ``audit/request`` messages with one :class:`AuditBatch` each; never raises."""

    def __init__(self, log_: AuditLog, hub_id: str, publisher: Publisher) -> None:
        self._log = log_
        self._hub_id = hub_id
        self._publisher = publisher

    def handle(self, payload: bytes, *, retained: bool) -> str | None:
        """Validate one request and publish the answer (or an error) to its reply topic; returns
        why it was refused (for hubd.inputs' count), or None."""
        reply_to = topics.audit_replies(self._hub_id)
        if retained:
            # A retained request would be replayed on every reconnect: refuse it.
            self._error(reply_to, "retained requests are refused: publish without the retain flag")
            return "retained"
        if len(payload) > MAX_REQUEST_BYTES:
            self._error(reply_to, f"request of {len(payload)} bytes exceeds {MAX_REQUEST_BYTES}")
            return "too_large"
        try:
            request = AuditRequest.model_validate_json(payload)
        except ValidationError as exc:
            reply_to = topics.audit_reply_topic(self._hub_id, _reply_hint(payload))
            problem = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'request'}: {e['msg']}"
                                for e in exc.errors()[:2])
            self._error(reply_to, f"invalid audit request: {problem}"[:128])
            return f"invalid: {problem}"
        reply_to = topics.audit_reply_topic(self._hub_id, request.reply_to)
        try:
            entries, missing = self._log.read(request.from_seq, request.to_seq)
            last_seq = self._log.last_seq()
        except sqlite3.Error as exc:
            log.error("cannot read the audit log for a request: %s", exc)
            self._error(reply_to, "the hub cannot read its audit log right now; ask again later")
            return "unreadable"
        log.info("audit range requested", extra={"from_seq": request.from_seq, "to_seq": request.to_seq,
                                                 "entries": len(entries), "missing": len(missing)})
        batch = AuditBatch(hub=self._hub_id, from_seq=request.from_seq, to_seq=request.to_seq,
                           last_seq=last_seq, entries=entries, missing=missing)
        self._publisher.publish(reply_to, batch.model_dump_json().encode())
        return None

    def _error(self, reply_to: str, message: str) -> None:
        # Logged (rate-limited) by hubd.inputs with the request's reason.
        try:
            last_seq = self._log.last_seq()
        except sqlite3.Error:
            last_seq = 0
        batch = AuditBatch(hub=self._hub_id, last_seq=last_seq, error=message)
        self._publisher.publish(reply_to, batch.model_dump_json().encode())


def _reply_hint(payload: bytes) -> str | None:
    try:
        obj = inputs.json_value(payload, max_bytes=MAX_REQUEST_BYTES)
    except inputs.InputRejected:
        return None
    value = obj.get("reply_to") if isinstance(obj, dict) else None
    return value if isinstance(value, str) else None


# --- checking a chain ------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a chain, located by seq (or line of an exported file)."""

    where: str
    kind: str  # "gap" | "edit" | "unreadable" | "start"
    message: str


@dataclass
class ChainReport:
    """What :func:`verify_chain` found."""

    entries: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    last_hash: str | None = None
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_chain(records: Iterable[tuple[str, int | None, str | None, str]]) -> ChainReport:
    """Check a chain given as (where, stored seq, stored hash, entry JSON) in seq order.

    ``stored seq``/``stored hash`` are the database's index columns (None for an exported file);
    they must agree with the entry. A chain that does not start at seq 1 is checked from its first
    entry on: that entry's ``prev`` is taken on trust and reported, unless a ``pruned`` entry of
    the chain vouches for it (its ``pruned_to`` is the seq before, its ``pruned_hash`` that prev).
    """
    report = ChainReport()
    prev: AuditEntry | None = None
    start: tuple[Problem, AuditEntry] | None = None  # a later pruned entry may account for it
    vouched: set[tuple[int, str]] = set()
    for where, stored_seq, stored_hash, text in records:
        try:
            entry = AuditEntry.model_validate_json(text)
        except ValidationError as exc:
            report.problems.append(Problem(where, "unreadable", f"{where}: not a valid audit entry "
                                           f"({exc.errors()[0]['msg']}): it was damaged or edited"))
            prev = None
            continue
        if prev is not None and entry.seq == prev.seq and entry.hash == prev.hash:
            continue  # the same entry delivered twice (at least once delivery)
        report.entries += 1
        if entry.outcome == AuditOutcome.PRUNED and entry.pruned_to and entry.pruned_hash:
            vouched.add((entry.pruned_to, entry.pruned_hash))
        if report.first_seq is None:
            report.first_seq = entry.seq
            if entry.seq != 1:
                start = (Problem(where, "start", f"{where}: the chain starts at seq {entry.seq}, not 1: "
                                 f"seq 1..{entry.seq - 1} missing"), entry)
                report.problems.append(start[0])
        if stored_seq is not None and stored_seq != entry.seq:
            report.problems.append(Problem(where, "edit", f"{where}: stored under seq {stored_seq} "
                                           f"but the entry says seq {entry.seq}: edited"))
        if stored_hash is not None and stored_hash != entry.hash:
            report.problems.append(Problem(where, "edit", f"{where}: the index hash differs from "
                                           f"the entry's hash: edited"))
        if entry.computed_hash() != entry.hash:
            report.problems.append(Problem(where, "edit", f"{where}: content does not match its "
                                           f"hash: the entry was edited after it was written"))
        if prev is not None:
            if entry.seq <= prev.seq:
                report.problems.append(Problem(where, "edit", f"{where}: seq {entry.seq} after seq "
                                               f"{prev.seq}: out of order or a conflicting copy"))
            elif entry.seq != prev.seq + 1:
                missing = (f"seq {prev.seq + 1}" if entry.seq == prev.seq + 2
                           else f"seq {prev.seq + 1}..{entry.seq - 1}")
                report.problems.append(Problem(where, "gap", f"gap before {where}: {missing} "
                                               f"missing (deleted)"))
            elif entry.prev != prev.hash:
                report.problems.append(Problem(where, "edit", f"{where}: prev does not match the "
                                               f"hash of seq {prev.seq}: seq {prev.seq} was edited "
                                               f"or replaced"))
        elif entry.seq == 1 and entry.prev != GENESIS_HASH:
            report.problems.append(Problem(where, "edit", f"{where}: seq 1 must have prev "
                                           f"{GENESIS_HASH[:8]}..., it was edited"))
        report.last_seq = entry.seq
        report.last_hash = entry.hash
        prev = entry
    if start is not None and (start[1].seq - 1, start[1].prev) in vouched:
        report.problems.remove(start[0])  # pruned by the hub's retention, and the chain says so
    return report


def _is_sqlite(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(16) == b"SQLite format 3\x00"


def _open_readonly(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.execute("SELECT count(*) FROM audit")  # fails early on a database without the table
    return conn


def db_records(path: Path, from_seq: int = 1, to_seq: int | None = None
               ) -> Iterator[tuple[str, int | None, str | None, str]]:
    """Chain records from a state database, in seq order."""
    conn = _open_readonly(path)
    try:
        rows = conn.execute("SELECT seq, hash, entry FROM audit WHERE seq BETWEEN ? AND ? ORDER BY seq",
                            (from_seq, to_seq if to_seq is not None else 2**62))
        for seq, stored_hash, text in rows:
            yield f"seq {seq}", seq, stored_hash, text
    finally:
        conn.close()


def jsonl_records(path: Path) -> Iterator[tuple[str, int | None, str | None, str]]:
    """Chain records from JSON lines (one entry per line; blank lines skipped), sorted by seq."""
    records = []
    with path.open(encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                seq = json.loads(line).get("seq")
            except (ValueError, AttributeError, RecursionError):  # a damaged or hostile line
                seq = None
            key = seq if isinstance(seq, int) else -1  # unreadable lines first: reported, not lost
            records.append((key, number, line))
    for seq, number, line in sorted(records, key=lambda r: (r[0], r[1])):
        where = f"line {number} (seq {seq})" if seq >= 0 else f"line {number}"
        yield where, None, None, line


def _cmd_verify(args: argparse.Namespace) -> int:
    path = Path(args.path)
    records = db_records(path) if _is_sqlite(path) else jsonl_records(path)
    report = verify_chain(records)
    if report.entries == 0 and not report.problems:
        print(f"{path}: no audit entries")
        return 0
    if report.ok:
        print(f"OK: {report.entries} entries, seq {report.first_seq}..{report.last_seq}, "
              f"chain intact; last hash {report.last_hash}")
        return 0
    first = report.problems[0]
    print(f"BROKEN: {path}: first problem: {first.message}", file=sys.stderr)
    for problem in report.problems[1:20]:
        print(f"  also: {problem.message}", file=sys.stderr)
    if len(report.problems) > 20:
        print(f"  ... and {len(report.problems) - 20} more", file=sys.stderr)
    return 1


def _cmd_export(args: argparse.Namespace) -> int:
    path = Path(args.db)
    if not _is_sqlite(path):
        print(f"{path} is not a state database (hubd.sqlite3)", file=sys.stderr)
        return 2
    out = sys.stdout
    for _, _, _, text in db_records(path, args.from_seq, args.to_seq):
        out.write(text.strip() + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m hubd.store.audit {verify,export}``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m hubd.store.audit",
        description="Check or export hubd's hash-chained audit trail.",
        epilog="exit status: 0 intact, 1 a gap, an edit or an unreadable entry, 2 unusable input")
    sub = parser.add_subparsers(dest="command", required=True)
    verify = sub.add_parser("verify", help="verify a chain; name the first gap or edit")
    verify.add_argument("path", help="state database (hubd.sqlite3) or exported JSON lines")
    verify.set_defaults(run=_cmd_verify)
    export = sub.add_parser("export", help="write entries as JSON lines to stdout")
    export.add_argument("db", help="state database (hubd.sqlite3)")
    export.add_argument("--from", dest="from_seq", type=int, default=1, metavar="SEQ")
    export.add_argument("--to", dest="to_seq", type=int, default=None, metavar="SEQ")
    export.set_defaults(run=_cmd_export)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except FileNotFoundError as exc:
        print(f"{exc.filename}: no such file", file=sys.stderr)
    except (OSError, sqlite3.Error) as exc:
        print(f"cannot read {getattr(args, 'path', None) or args.db}: {exc}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
