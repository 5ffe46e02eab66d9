"""`hubctl audit export`: a range of hubd's audit trail as JSON lines, after checking its chain.

Thin on purpose: reading the state database and checking the chain are hubd's own
(:func:`hubd.store.audit.db_records`, :func:`hubd.store.audit.verify_chain`, the code behind
``hubd-audit verify``). The range is checked together with its link to the entry before it, so
an export starts where an intact chain leads into it.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from hubctl import hubfiles
from hubctl.hubfiles import DEFAULT_DB
from hubd.store import audit as hubd_audit


class AuditError(Exception):
    """The export cannot be made; ``str()`` is one line saying why and what to do."""


@dataclass(frozen=True)
class Export:
    """A checked range: its entries as JSON lines, and where it starts and ends."""

    lines: list[str]
    first_seq: int
    last_seq: int
    newest: int  # the log's newest seq


def export(db: Path, from_seq: int, to_seq: int | None) -> Export:
    """Entries ``from_seq``..``to_seq`` (to the newest when None) of the state database ``db``,
    refused with the first problem when the chain over the range (and its link in) is broken."""
    if not db.is_file():
        raise AuditError(f"{db} does not exist: pass hubd's state database "
                         f"(<state_dir>/hubd.sqlite3, e.g. {DEFAULT_DB}) with --db")
    anchor = max(1, from_seq - 1)  # the entry the range's first prev points at
    try:
        records = list(hubd_audit.db_records(db, anchor, to_seq))
        newest = _newest(db)
    except sqlite3.Error as e:
        raise AuditError(f"cannot read the audit trail in {db} ({e}): pass hubd's state database "
                         "(<state_dir>/hubd.sqlite3) with --db") from None
    in_range = [r for r in records if r[1] is not None and r[1] >= from_seq]
    if not in_range:
        raise AuditError(f"no audit entries in seq {from_seq}..{to_seq or 'the newest'}: the log "
                         f"ends at seq {newest}" if newest else f"{db} holds no audit entries yet")
    report = hubd_audit.verify_chain(records)
    problems = [p.message for p in report.problems
                # A range that starts mid-chain: the entry before it is only its anchor.
                if not (p.kind == "start" and anchor > 1)
                and not (anchor < from_seq and p.where == f"seq {anchor}")]
    first, last = records[0][1], in_range[-1][1]
    assert first is not None and last is not None
    if first > anchor > 1:  # (at seq 1 verify_chain reports the chain's missing start itself)
        problems.insert(0, f"{_seqs(anchor, first - 1)} missing (deleted): the link into the "
                           "range cannot be checked")
    end = min(to_seq or newest, newest)
    if last < end:  # entries after the last one read but before the log's newest
        problems.append(f"{_seqs(last + 1, end)} missing (deleted)")
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise AuditError(f"the audit chain is broken: {problems[0]}{more}: nothing exported; "
                         f"hubd-audit verify {db} lists every problem")
    first_in_range = in_range[0][1]
    assert first_in_range is not None
    return Export([text.strip() for _, _, _, text in in_range], first_in_range, last, newest)


def _seqs(a: int, b: int) -> str:
    return f"seq {a}" if a == b else f"seq {a}..{b}"


def _newest(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT coalesce(max(seq), 0) FROM audit").fetchone()[0])
    finally:
        conn.close()


def write(path: Path, lines: list[str]) -> None:
    """The JSON lines to ``path``, atomically, mode 0600 (who visited whom is personal data)."""
    path = path.absolute()
    data = "".join(line + "\n" for line in lines).encode()
    try:
        hubfiles.replace([hubfiles.Planned(path, data, hubfiles.SECRET)])
    except hubfiles.FilesError as e:
        raise AuditError(f"{e}: pass another --out") from None
