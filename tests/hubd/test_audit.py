"""hubd.store.audit on real SQLite files: the chain, the command-line check (gaps, edits) and export,
and answers to audit range requests."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from hubapi import topics
from hubapi.models import GENESIS_HASH, AuditBatch, AuditEntry, AuditOutcome
from hubd.store.audit import AuditLog, AuditRequests, verify_chain
from hubd.store.outbox import Outbox
from hubd.store.database import DB_NAME, Store

REPO = Path(__file__).resolve().parents[2]
HUB = "hub-audit"


class Recorder:
    """A publisher that keeps what it was given."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self.sent.append((topic, payload))


@pytest.fixture
def store(tmp_path: Path):
    store = Store.open(tmp_path / "state")
    yield store
    store.close()


@pytest.fixture
def audit(store: Store) -> AuditLog:
    return AuditLog(store, Outbox(store), HUB, clock=iter(range(1_800_000_000, 1_900_000_000)).__next__)


def fill(audit: AuditLog, n: int) -> list[AuditEntry]:
    """n entries of different kinds, as the daemon writes them."""
    kinds = [
        dict(lock="front", source="remote", outcome=AuditOutcome.ACCEPTED, command="c1", action="unlock",
             actor="nurse-1", role="staff", assignment="visit-1", kid="k1", verified=True),
        dict(lock="front", source="manual", outcome=AuditOutcome.REPORTED, state="locked", battery=80),
        dict(lock="keybox", source="remote", outcome=AuditOutcome.REPORTED, event="key_taken"),
        dict(lock=None, source="remote", outcome=AuditOutcome.REJECTED, reason="malformed"),
    ]
    return [audit.record(**kinds[i % len(kinds)]) for i in range(n)]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hubd.store.audit", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=60)


def test_entries_chain_from_genesis_and_go_to_the_outbox_in_the_same_transaction(store, audit):
    entries = fill(audit, 5)
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0].prev == GENESIS_HASH
    assert all(later.prev == earlier.hash for earlier, later in zip(entries, entries[1:]))
    assert all(e.computed_hash() == e.hash for e in entries)
    queued = store.conn.execute("SELECT topic, payload FROM outbox ORDER BY id").fetchall()
    assert [(t, AuditEntry.model_validate_json(p)) for t, p in queued] == [(topics.audit(HUB), e) for e in entries]


def test_an_entry_whose_transaction_fails_leaves_neither_entry_nor_outbox_row(store, audit):
    fill(audit, 2)
    with pytest.raises(RuntimeError), store.transaction() as conn:
        audit.append(conn, source="manual", outcome=AuditOutcome.REPORTED, lock="front", state="unlocked")
        raise RuntimeError("crash before commit")
    assert audit.last_seq() == 2
    assert store.conn.execute("SELECT count(*) FROM outbox").fetchone()[0] == 2
    assert audit.record(source="manual", outcome=AuditOutcome.REPORTED, lock="front").seq == 3


def test_cli_verifies_an_intact_chain(store, audit):
    fill(audit, 7)
    result = cli("verify", store.path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OK: 7 entries, seq 1..7, chain intact")


def test_cli_points_at_an_edited_entry(store, audit):
    fill(audit, 6)
    # Someone rewrites who opened the door in entry 3, leaving its hash as it was.
    text = store.conn.execute("SELECT entry FROM audit WHERE seq = 3").fetchone()[0]
    edited = json.loads(text) | {"actor": "somebody-else", "source": "remote"}
    store.conn.execute("UPDATE audit SET entry = ? WHERE seq = 3", (json.dumps(edited),))
    result = cli("verify", store.path)
    assert result.returncode == 1
    assert "first problem: seq 3: content does not match its hash" in result.stderr


def test_cli_catches_an_edit_that_recomputed_the_entrys_own_hash(store, audit):
    fill(audit, 6)
    original = AuditEntry.model_validate_json(
        store.conn.execute("SELECT entry FROM audit WHERE seq = 2").fetchone()[0])
    forged = AuditEntry.seal(**(original.model_dump(exclude={"hash"}) | {"state": "unlocked"}))
    store.conn.execute("UPDATE audit SET entry = ?, hash = ? WHERE seq = 2", (forged.model_dump_json(), forged.hash))
    result = cli("verify", store.path)
    assert result.returncode == 1
    assert "first problem: seq 3: prev does not match the hash of seq 2: seq 2 was edited or replaced" in result.stderr


def test_cli_points_at_a_deleted_entry(store, audit):
    fill(audit, 6)
    store.conn.execute("DELETE FROM audit WHERE seq = 4")
    result = cli("verify", store.path)
    assert result.returncode == 1
    assert "first problem: gap before seq 5: seq 4 missing (deleted)" in result.stderr


def test_cli_reports_an_unreadable_row(store, audit):
    fill(audit, 3)
    store.conn.execute("UPDATE audit SET entry = '{not json' WHERE seq = 2")
    result = cli("verify", store.path)
    assert result.returncode == 1
    assert "first problem: seq 2: not a valid audit entry" in result.stderr


def test_export_range_as_json_lines_and_verify_the_file(store, audit, tmp_path):
    entries = fill(audit, 9)
    result = cli("export", store.path, "--from", "3", "--to", "6")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [AuditEntry.model_validate_json(line) for line in lines] == entries[2:6]

    whole = tmp_path / "all.jsonl"
    whole.write_text(cli("export", store.path).stdout)
    assert cli("verify", whole).returncode == 0

    part = tmp_path / "part.jsonl"
    part.write_text(result.stdout)
    checked = cli("verify", part)
    assert checked.returncode == 1  # a range is not the whole chain: the start is reported
    assert "the chain starts at seq 3, not 1: seq 1..2 missing" in checked.stderr


def test_received_copies_with_duplicates_and_out_of_order_lines_verify(store, audit, tmp_path):
    entries = fill(audit, 5)
    lines = [e.model_dump_json() for e in entries]
    received = tmp_path / "received.jsonl"  # at-least-once delivery: a repeat, and a late one
    received.write_text("\n".join([lines[0], lines[2], lines[1], lines[2], lines[3], lines[4]]) + "\n")
    result = cli("verify", received)
    assert result.returncode == 0, result.stderr
    received.write_text("\n".join([lines[0], lines[1], lines[3], lines[4]]) + "\n")
    result = cli("verify", received)
    assert result.returncode == 1
    assert "gap before line 3 (seq 4): seq 3 missing" in result.stderr


def test_cli_on_a_missing_file_exits_2(tmp_path):
    result = cli("verify", tmp_path / "nothing.sqlite3")
    assert result.returncode == 2
    assert "no such file" in result.stderr


def test_verify_chain_names_a_conflicting_copy():
    first = AuditEntry.seal(seq=1, prev=GENESIS_HASH, at=1.0, hub=HUB, lock="front", source="manual",
                            outcome="reported", reason=None, state="locked", battery=None, event=None, command=None,
                            action=None, actor=None, role=None, assignment=None, kid=None, verified=False)
    other = AuditEntry.seal(**(first.model_dump(exclude={"hash"}) | {"state": "unlocked"}))
    report = verify_chain([("a", None, None, first.model_dump_json()), ("b", None, None, other.model_dump_json())])
    assert not report.ok and report.problems[0].kind == "edit"


# --- range requests -----------------------------------------------------------------------------


def batch(recorder: Recorder) -> tuple[str, AuditBatch]:
    topic, payload = recorder.sent[-1]
    return topic, AuditBatch.model_validate_json(payload)


def test_range_request_answers_the_stored_entries(audit):
    entries = fill(audit, 12)
    recorder = Recorder()
    requests = AuditRequests(audit, HUB, recorder)
    reply_to = topics.audit_replies(HUB) + "/backend-1"
    requests.handle(json.dumps({"from_seq": 4, "to_seq": 8, "reply_to": reply_to}).encode(), retained=False)
    topic, answer = batch(recorder)
    assert topic == reply_to
    assert answer.entries == entries[3:8] and answer.missing == [] and answer.last_seq == 12 and answer.error is None


def test_range_request_beyond_the_newest_entry_returns_what_exists(audit):
    fill(audit, 3)
    recorder = Recorder()
    AuditRequests(audit, HUB, recorder).handle(b'{"from_seq": 2, "to_seq": 50}', retained=False)
    topic, answer = batch(recorder)
    assert topic == topics.audit_replies(HUB)
    assert [e.seq for e in answer.entries] == [2, 3] and answer.missing == [] and answer.last_seq == 3


def test_range_request_names_entries_missing_from_the_hubs_store(store, audit):
    fill(audit, 5)
    store.conn.execute("DELETE FROM audit WHERE seq = 3")
    store.conn.execute("UPDATE audit SET entry = 'garbage' WHERE seq = 4")
    recorder = Recorder()
    AuditRequests(audit, HUB, recorder).handle(b'{"from_seq": 1, "to_seq": 5}', retained=False)
    _, answer = batch(recorder)
    assert [e.seq for e in answer.entries] == [1, 2, 5] and answer.missing == [3, 4]


@pytest.mark.parametrize(("payload", "retained", "error"), [
    (b'{"from_seq": 5, "to_seq": 2}', False, "to_seq must not be below from_seq"),
    (b'{"from_seq": 1, "to_seq": 500}', False, "at most 100 entries per request"),
    (b'{"from_seq": 0, "to_seq": 2}', False, "from_seq"),
    (b'{"from_seq": "1", "to_seq": 2}', False, "from_seq"),
    (b'{"from_seq": 1, "to_seq": 2, "drop": "table"}', False, "drop"),
    (b"\xff\xfe", False, "invalid audit request"),
    (b"[]", False, "invalid audit request"),
    (b'{"from_seq": 1, "to_seq": 2}', True, "retained requests are refused"),
    (b"x" * 5000, False, "exceeds 1024"),
], ids=["reversed", "too-many", "zero", "string", "extra-field", "binary", "array", "retained", "oversized"])
def test_bad_range_requests_get_an_error_and_nothing_else(audit, payload, retained, error):
    fill(audit, 3)
    recorder = Recorder()
    AuditRequests(audit, HUB, recorder).handle(payload, retained=retained)
    assert len(recorder.sent) == 1
    topic, answer = batch(recorder)
    assert topic == topics.audit_replies(HUB)
    assert answer.entries == [] and answer.last_seq == 3
    assert error in (answer.error or "")


def test_a_request_cannot_send_the_answer_outside_the_replies_tree(audit):
    fill(audit, 1)
    recorder = Recorder()
    for reply_to in (topics.commands(HUB), topics.audit(HUB), "hubs/other/v1/audit/replies", topics.answers(HUB)):
        AuditRequests(audit, HUB, recorder).handle(
            json.dumps({"from_seq": 1, "to_seq": 1, "reply_to": reply_to}).encode(), retained=False)
    assert {topic for topic, _ in recorder.sent} == {topics.audit_replies(HUB)}


def test_the_state_file_is_where_the_config_says(tmp_path):
    store = Store.open(tmp_path / "deep" / "state")
    try:
        assert store.path == tmp_path / "deep" / "state" / DB_NAME and store.path.exists()
        mode = store.conn.execute("PRAGMA journal_mode").fetchone()[0]
        sync = store.conn.execute("PRAGMA synchronous").fetchone()[0]
        assert (mode, sync) == ("wal", 2)  # 2 = FULL
    finally:
        store.close()
    # Another reader (the CLI, a technician) can read it while hubd has it open.
    assert sqlite3.connect(f"file:{store.path}?mode=ro", uri=True).execute("SELECT count(*) FROM audit").fetchone()


def test_a_flood_of_unverified_refusals_is_counted_not_written_row_by_row(store, audit):
    # The first refusal of each reason is audited at once; the rest of the interval is one entry.
    written = [audit.refusal("malformed", command=f"c{n}") for n in range(1000)]
    assert written == [True] + [False] * 999
    assert audit.refusal("bad_signature") is True
    assert audit.flush_refusals() == 999
    entries, _ = audit.read(1, 100)
    assert [(e.reason, e.count, e.verified) for e in entries] == [
        ("malformed", None, False), ("bad_signature", None, False), ("malformed", 999, False)]
    assert audit.flush_refusals() == 0, "nothing counted since"
    assert audit.refusal("malformed") is True, "a new interval audits its first refusal again"
    assert verify_chain(("db", None, None, e.model_dump_json()) for e in audit.read(1, 100)[0]).ok


def test_entries_written_before_the_later_fields_keep_their_hashes():
    # count, pruned_to and pruned_hash were added to AuditEntry later: left out of the hash when
    # null, an entry stored before them (without the keys) still verifies.
    entry = AuditEntry.seal(seq=1, prev=GENESIS_HASH, at=1.0, hub=HUB, lock="front", source="manual",
                            outcome=AuditOutcome.REPORTED, reason=None, state="locked", battery=None,
                            event=None, command=None, action=None, actor=None, role=None,
                            assignment=None, kid=None, verified=False)
    old_text = json.dumps({k: v for k, v in json.loads(entry.model_dump_json()).items()
                           if k not in ("count", "pruned_to", "pruned_hash")})
    assert AuditEntry.model_validate_json(old_text).computed_hash() == entry.hash
    counted = AuditEntry.seal(**{**entry.model_dump(exclude={"hash"}), "count": 3})
    assert counted.hash != entry.hash, "a set count is covered by the hash"


def test_retention_prunes_old_delivered_entries_and_the_rest_still_verifies(store, audit, tmp_path):
    clock = iter(range(1_000_000, 2_000_000, 3600)).__next__  # an hour between entries
    aged = AuditLog(store, Outbox(store), HUB, clock=lambda: float(clock()))
    for n in range(30):
        aged.record(lock="front", source="manual", outcome=AuditOutcome.REPORTED, state="locked")
    store.conn.execute("DELETE FROM outbox")  # delivered
    store.conn.commit()
    deleted = aged.prune(keep_days=0.5)  # keep the last 12 hours
    assert 15 <= deleted <= 19
    entries = [e for e in aged.read(1, 100)[0]]
    checkpoint = entries[-1]
    assert (checkpoint.outcome, checkpoint.count, checkpoint.pruned_to) == ("pruned", deleted, deleted)
    assert entries[0].seq == deleted + 1 and checkpoint.pruned_hash == entries[0].prev
    result = cli("verify", store.path)
    assert result.returncode == 0, result.stdout + result.stderr
    # Without the checkpoint the missing start is reported again.
    store.conn.execute("DELETE FROM audit WHERE seq = ?", (checkpoint.seq,))
    store.conn.commit()
    assert cli("verify", store.path).returncode == 1


def test_retention_never_prunes_what_the_broker_has_not_acknowledged(store):
    clock = iter(range(1_000_000, 2_000_000, 3600)).__next__
    aged = AuditLog(store, Outbox(store), HUB, clock=lambda: float(clock()))
    for n in range(10):
        aged.record(lock="front", source="manual", outcome=AuditOutcome.REPORTED, state="locked")
    assert aged.prune(keep_days=0.1) == 0, "all ten still wait in the outbox"
    oldest_waiting = store.conn.execute("SELECT min(id) FROM outbox").fetchone()[0]
    store.conn.execute("DELETE FROM outbox WHERE id < ?", (oldest_waiting + 4,))  # four delivered
    store.conn.commit()
    assert aged.prune(keep_days=0.1) == 4
    assert [e.seq for e in aged.read(1, 100)[0]][:1] == [5]
