"""The locks' pairings in hubd's state (hubd/store/pairings.py) on a real SQLite file: kept
across a reopen, forgotten without a trace, and the file private to hubd (0600, with its -wal
and -shm; the state directory closed to others), a file found wider narrowed at open."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from hubd.locks import PairedLock
from hubd.store.database import DB_NAME, Store
from hubd.store.pairings import Pairings, record_pairing

SECRET = os.urandom(32)
FRONT = PairedLock("in_cylinder", "C0:FF:EE:00:00:07", SECRET, 1)


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
