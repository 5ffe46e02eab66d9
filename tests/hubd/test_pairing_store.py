"""The locks' pairings in hubd's state (hubd/store/pairings.py) on a real SQLite file: kept
across a reopen with their protocol, forgotten without a trace (a dKey's association data as a
reference lock's secret), and the file private to hubd (0600, with its -wal and -shm; the state
directory closed to others), a file found wider narrowed at open. A state file of the schema
before the protocol column still loads: its pairings are reference locks. The number of each
lock's latest report hubd took in is kept with its pairing, and a new pairing starts without."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from hubd.locks import PairedLock
from hubd.store.database import DB_NAME, MIGRATIONS, Store
from hubd.store.pairings import Pairings, record_pairing

SECRET = os.urandom(32)
FRONT = PairedLock("in_cylinder", "C0:FF:EE:00:00:07", SECRET, 1)
ASSOCIATION = os.urandom(4 + 32)  # a dKey's key holder id, then its association secret
DKEY = PairedLock("in_cylinder", "F0:94:0A:00:00:01", ASSOCIATION, 0, "dkey")
#: The schema version whose ``pairings`` had no protocol column (the one before it was added).
BEFORE_PROTOCOL = next(n for n, m in enumerate(MIGRATIONS) if "ADD COLUMN protocol" in m)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_pairing_is_kept_across_a_reopen_and_replaced_by_the_same_lock_or_address(
        tmp_path: Path) -> None:
    record_pairing(tmp_path / "state", "front-door", FRONT)
    store = Store.open(tmp_path / "state")
    try:
        pairings = Pairings(store)
        assert pairings.all() == {"front-door": FRONT}
        assert pairings.lock_at("c0:ff:ee:00:00:07") == "front-door"
        assert pairings.paired_at("front-door") is not None
        other = PairedLock("in_cylinder", FRONT.address, os.urandom(32), 1)
        pairings.record("renamed", other)  # the same lock paired again under another name
        assert pairings.all() == {"renamed": other}
    finally:
        store.close()


def test_the_latest_report_number_is_kept_across_a_reopen_and_a_new_pairing_starts_without(
        tmp_path: Path) -> None:
    record_pairing(tmp_path, "front-door", FRONT)
    store = Store.open(tmp_path)
    try:
        pairings = Pairings(store)
        assert pairings.all()["front-door"].report_counter == -1  # none taken in yet
        pairings.mark("front-door", 17)
        pairings.mark("not-paired", 3)  # a lock decommissioned meanwhile: nothing to keep
    finally:
        store.close()
    store = Store.open(tmp_path)
    try:
        pairings = Pairings(store)
        assert {lock: p.report_counter for lock, p in pairings.all().items()} == {"front-door": 17}
        pairings.record("front-door", FRONT)  # paired again: the lock's numbers start a baseline
        assert pairings.all()["front-door"].report_counter == -1
    finally:
        store.close()


def test_forgetting_leaves_no_copy_of_the_secret_in_the_file_or_its_wal(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    try:
        pairings = Pairings(store)
        pairings.record("front-door", FRONT)
        files = [tmp_path / name for name in (DB_NAME, DB_NAME + "-wal")]
        assert any(SECRET in f.read_bytes() for f in files if f.exists())  # the check can fail
        assert pairings.forget("front-door") and not pairings.forget("front-door")
        assert pairings.all() == {}
        assert not any(SECRET in f.read_bytes() for f in files if f.exists())
    finally:
        store.close()
    assert SECRET not in (tmp_path / DB_NAME).read_bytes()


def test_the_database_and_its_wal_and_shm_are_0600_and_the_state_dir_closed_to_others(
        tmp_path: Path) -> None:
    old = os.umask(0o022)  # a usual umask: without care the file would be 0644
    try:
        store = Store.open(tmp_path / "state")
        try:
            Pairings(store).record("front-door", FRONT)
            files = [tmp_path / "state" / n for n in (DB_NAME, DB_NAME + "-wal", DB_NAME + "-shm")]
            assert all(f.exists() for f in files)
            assert [_mode(f) for f in files] == [0o600] * 3
            assert _mode(tmp_path / "state") & 0o007 == 0
        finally:
            store.close()
    finally:
        os.umask(old)


def test_a_state_dir_and_file_found_open_to_others_are_narrowed_at_open(tmp_path: Path) -> None:
    state = tmp_path / "state"
    Store.open(state).close()
    state.chmod(0o755)
    (state / DB_NAME).chmod(0o644)
    Store.open(state).close()
    assert _mode(state) == 0o750 and _mode(state / DB_NAME) == 0o600


def test_a_dkeys_pairing_is_kept_with_its_protocol_and_its_association_data_forgotten_without_a_trace(
        tmp_path: Path) -> None:
    record_pairing(tmp_path, "front-door", FRONT)
    record_pairing(tmp_path, "back-door", DKEY)
    store = Store.open(tmp_path)
    try:
        pairings = Pairings(store)
        assert pairings.all() == {"back-door": DKEY, "front-door": FRONT}
        assert pairings.all()["back-door"].protocol == "dkey"
        assert pairings.all()["front-door"].protocol == "reference"
        files = [tmp_path / name for name in (DB_NAME, DB_NAME + "-wal")]
        assert any(ASSOCIATION in f.read_bytes() for f in files if f.exists())
        assert pairings.forget("back-door")
        assert pairings.all() == {"front-door": FRONT}
        assert not any(ASSOCIATION in f.read_bytes() for f in files if f.exists())
    finally:
        store.close()
    assert ASSOCIATION not in (tmp_path / DB_NAME).read_bytes()
    assert SECRET in (tmp_path / DB_NAME).read_bytes(), "the other lock's pairing stays"


def test_a_state_file_from_before_the_protocol_column_loads_its_pairings_as_reference_locks(
        tmp_path: Path) -> None:
    """The state file an earlier hubd wrote: its schema up to the version before the protocol
    column, a reference lock paired in it. This hubd migrates it at open and drives the lock as
    before; a dKey paired afterwards is kept beside it."""
    path = tmp_path / DB_NAME
    conn = sqlite3.connect(path)
    for script in MIGRATIONS[:BEFORE_PROTOCOL]:
        conn.executescript(script)
    conn.execute(f"PRAGMA user_version={BEFORE_PROTOCOL}")
    conn.execute("INSERT INTO pairings (lock, kind, address, addr_type, secret, paired_at) "
                 "VALUES (?, ?, ?, ?, ?, ?)", ("front-door", FRONT.kind, FRONT.address,
                                               FRONT.addr_type, SECRET, 1.0))
    conn.commit()
    conn.close()
    path.chmod(0o600)

    store = Store.open(tmp_path)
    try:
        assert store.conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        pairings = Pairings(store)
        assert pairings.all() == {"front-door": FRONT}
        assert pairings.paired_at("front-door") == 1.0
        pairings.record("back-door", DKEY)
    finally:
        store.close()
    store = Store.open(tmp_path)
    try:
        assert Pairings(store).all() == {"back-door": DKEY, "front-door": FRONT}
    finally:
        store.close()


@pytest.mark.parametrize("protocol, length", [("dkey", 32), ("reference", 36)])
def test_a_secret_of_the_wrong_length_for_its_protocol_is_not_a_pairing(protocol: str,
                                                                         length: int) -> None:
    with pytest.raises(ValueError, match="bytes"):
        PairedLock("in_cylinder", DKEY.address, os.urandom(length), 0, protocol)
