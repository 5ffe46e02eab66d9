"""The audit trail of a real run is evidence: it verifies, and an edit or a deletion is caught."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from hil_tests.harness import HubUnderTest, audit_log, stop_hubd
from hubapi.client import BackendClient


def verify(db: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hubd.store.audit", "verify", str(db)],
                          capture_output=True, text=True, timeout=60, check=False)


async def test_the_trail_of_a_run_verifies_and_tampering_is_named(
        hub: HubUnderTest, backend: BackendClient) -> None:
    for action in ("unlock", "lock", "unlatch"):  # two operations and a refusal
        await hub.command(backend, action)
    trail = await audit_log(hub, backend)
    assert [e.seq for e in trail] == list(range(1, len(trail) + 1))
    assert all(e.prev == p.hash for p, e in zip(trail, trail[1:], strict=False))
    stop_hubd(hub.hubd)
    db = next(hub.config_path.parent.glob("hubd-state/*.sqlite3"))

    intact = verify(db)
    assert intact.returncode == 0, intact.stdout + intact.stderr

    # Someone makes the unlock look like a lock: its last entry, which the lock's and the
    # unlatch's entries follow, so that removing it below leaves a gap inside the chain (the
    # unlock's first entry may be the trail's first, whose removal is a chain that starts late).
    with sqlite3.connect(db) as conn:
        seq, raw = conn.execute("SELECT seq, entry FROM audit WHERE entry LIKE '%\"unlock\"%' "
                                "ORDER BY seq DESC LIMIT 1").fetchone()
        entry = json.loads(raw)
        entry["action"] = "lock"
        conn.execute("UPDATE audit SET entry = ? WHERE seq = ?", (json.dumps(entry), seq))
    edited = verify(db)
    assert edited.returncode == 1
    assert f"{seq}" in edited.stdout + edited.stderr

    with sqlite3.connect(db) as conn:  # ... and then removes the entry altogether
        conn.execute("DELETE FROM audit WHERE seq = ?", (seq,))
    deleted = verify(db)
    assert deleted.returncode == 1
    assert "gap" in (deleted.stdout + deleted.stderr).lower()
