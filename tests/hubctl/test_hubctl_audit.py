"""`hubctl audit export`: a range of the audit trail as JSON lines, refused when its chain is broken.

The state database is a real one, written by hubd's own AuditLog; the command runs as the
technician runs it (`.venv/bin/hubctl`, a subprocess).
"""

from __future__ import annotations

import re
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from hubapi.models import AuditEntry, AuditOutcome
from hubd.store.audit import AuditLog
from hubd.store.outbox import Outbox
from hubd.store.database import DB_NAME, Store
from tests.hubctl_cli import hubctl, hubctl_in_process, one_error_line

HUB = "hub-0042"




@pytest.fixture
def trail(tmp_path: Path) -> tuple[Path, list[AuditEntry]]:
    """A state database with ten audit entries, as hubd writes them."""
    store = Store.open(tmp_path / "state")
    log = AuditLog(store, Outbox(store), HUB, clock=iter(range(1_800_000_000, 1_900_000_000)).__next__)
    kinds = [
        dict(lock="front", source="remote", outcome=AuditOutcome.ACCEPTED, command="c1",
             action="unlock", actor="nurse-1", role="staff", assignment="visit-1", kid="k1",
             verified=True),
        dict(lock="front", source="manual", outcome=AuditOutcome.REPORTED, state="locked", battery=80),
        dict(lock=None, source="remote", outcome=AuditOutcome.REJECTED, reason="malformed"),
    ]
    entries = [log.record(**kinds[i % len(kinds)]) for i in range(10)]
    store.close()
    return tmp_path / "state" / DB_NAME, entries


def tamper(db: Path, sql: str, *args: object) -> None:
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(sql, args)
    conn.close()


def exported(text: str) -> list[AuditEntry]:
    return [AuditEntry.model_validate_json(line) for line in text.splitlines()]


def test_export_writes_the_range_as_json_lines_and_sums_it_up_in_one_line(trail, tmp_path) -> None:
    db, entries = trail
    out = tmp_path / "audit.jsonl"
    proc = hubctl("audit", "export", "--db", db, "--from", "1", "--to", "10", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert exported(out.read_text()) == entries
    assert stat.S_IMODE(out.stat().st_mode) == 0o600, "who visited whom is personal data"
    assert proc.stdout.strip() == f"exported 10 entries, seq 1..10, chain intact to {out}"
    # The export is itself a chain hubd's own check accepts.
    check = subprocess.run([sys.executable, "-m", "hubd.store.audit", "verify", str(out)],
                           capture_output=True, text=True, timeout=60, check=False)
    assert check.returncode == 0 and check.stdout.startswith("OK: 10 entries"), check.stdout


def test_a_range_goes_to_standard_output_and_the_summary_to_standard_error(trail) -> None:
    db, entries = trail
    proc = hubctl("audit", "export", "--db", db, "--from", "4", "--to", "7")
    assert proc.returncode == 0, proc.stderr
    assert exported(proc.stdout) == entries[3:7]
    assert proc.stderr.strip() == "exported 4 entries, seq 4..7, chain intact"


def test_a_range_past_the_newest_entry_ends_there_and_says_so(trail) -> None:
    db, entries = trail
    proc = hubctl("audit", "export", "--db", db, "--from", "8", "--to", "50")
    assert proc.returncode == 0, proc.stderr
    assert exported(proc.stdout) == entries[7:]
    assert "seq 8..10 (asked up to 50: the log ends at seq 10), chain intact" in proc.stderr


def test_an_edited_entry_in_the_range_refuses_the_export_naming_it(trail, tmp_path) -> None:
    db, _ = trail
    tamper(db, "UPDATE audit SET entry = replace(entry, '\"nurse-1\"', '\"nurse-2\"') WHERE seq = 4")
    out = tmp_path / "audit.jsonl"
    proc = hubctl("audit", "export", "--db", db, "--from", "2", "--to", "9", "--out", out)
    line = one_error_line(proc)
    assert proc.returncode == 1
    assert "the audit chain is broken: seq 4: content does not match its hash" in line
    assert "nothing exported" in line and f"hubd-audit verify {db}" in line
    assert not out.exists() and not list(tmp_path.glob(".audit.jsonl*"))


def test_a_deleted_entry_in_the_range_refuses_the_export_naming_the_gap(trail) -> None:
    db, _ = trail
    tamper(db, "DELETE FROM audit WHERE seq = 6")
    proc = hubctl("audit", "export", "--db", db, "--from", "1", "--to", "10")
    line = one_error_line(proc)
    assert "gap before seq 7: seq 6 missing (deleted)" in line
    assert proc.stdout == ""


def test_the_last_entry_of_the_range_deleted_is_a_gap_too(trail) -> None:
    db, _ = trail
    tamper(db, "DELETE FROM audit WHERE seq = 7")
    line = one_error_line(hubctl("audit", "export", "--db", db, "--from", "3", "--to", "7"))
    assert "the audit chain is broken: seq 7 missing (deleted)" in line


def test_the_link_into_the_range_is_checked(trail) -> None:
    db, _ = trail
    tamper(db, "DELETE FROM audit WHERE seq = 3")
    line = one_error_line(hubctl("audit", "export", "--db", db, "--from", "4", "--to", "10"))
    assert "seq 3 missing (deleted): the link into the range cannot be checked" in line
    # An entry replaced just before the range: its successor's prev no longer matches.
    original = trail[1][2]
    tamper(db, "INSERT INTO audit (seq, hash, entry) VALUES (3, ?, ?)", "f" * 64,
           original.model_copy(update={"hash": "f" * 64}).model_dump_json())
    line = one_error_line(hubctl_in_process("audit", "export", "--db", db, "--from", "4", "--to", "10"))
    assert "seq 4: prev does not match the hash of seq 3" in line


def test_an_edit_before_the_range_does_not_block_an_intact_range(trail) -> None:
    db, entries = trail
    tamper(db, "UPDATE audit SET entry = replace(entry, '\"malformed\"', '\"expired\"') WHERE seq = 3")
    assert one_error_line(hubctl("audit", "export", "--db", db, "--from", "1", "--to", "10"))
    proc = hubctl_in_process("audit", "export", "--db", db, "--from", "5", "--to", "10")
    assert proc.returncode == 0, proc.stderr
    assert exported(proc.stdout) == entries[4:]


@pytest.mark.parametrize("case", ["no such db", "not a database", "no entries in range",
                                  "from zero", "to before from", "out dir missing"])
def test_bad_input_is_one_line_and_a_non_zero_exit(case: str, trail, tmp_path) -> None:
    db, _ = trail
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n")
    args, status, says = {
        "no such db": (["--db", tmp_path / "nope.sqlite3"], 1, "does not exist"),
        "not a database": (["--db", text], 1, "cannot read the audit trail"),
        "no entries in range": (["--db", db, "--from", "11"], 1, "the log ends at seq 10"),
        "from zero": (["--db", db, "--from", "0"], 2, "'--from'"),
        "to before from": (["--db", db, "--from", "5", "--to", "4"], 2, "'--to'"),
        "out dir missing": (["--db", db, "--out", tmp_path / "no" / "a.jsonl"], 1, "cannot write"),
    }[case]
    proc = hubctl("audit", "export", *args)
    line = one_error_line(proc)
    assert proc.returncode == status
    assert says in line, line


def test_help_shows_an_example() -> None:
    proc = hubctl("audit", "export", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "Example: hubctl audit export --db" in re.sub(r"\s+", " ", proc.stdout)
