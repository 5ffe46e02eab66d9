"""hubd.store.database: one SQLite file, versioned schema, and clear refusals of files it cannot trust."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from hubd.store.database import DB_NAME, MIGRATIONS, Store, StoreError


def test_a_new_file_gets_the_current_schema_and_reopening_keeps_the_data(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    assert store.conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    with store.transaction() as conn:
        conn.execute("INSERT INTO outbox (topic, payload, created) VALUES ('t', x'00', 1)")
    store.close()
    again = Store.open(tmp_path)
    try:
        assert again.conn.execute("SELECT topic FROM outbox").fetchall() == [("t",)]
    finally:
        again.close()


def test_a_file_from_a_newer_hubd_is_refused(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / DB_NAME)
    conn.execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(StoreError, match=r"schema version \d+, this hubd knows up to \d+: update hubd"):
        Store.open(tmp_path)


def test_a_damaged_file_is_refused_with_what_to_do(tmp_path: Path) -> None:
    (tmp_path / DB_NAME).write_bytes(b"this was never a database" * 100)
    with pytest.raises(StoreError) as raised:
        Store.open(tmp_path)
    message = str(raised.value)
    assert str(tmp_path / DB_NAME) in message and "move it aside" in message and "audit trail" in message
    assert (tmp_path / DB_NAME).read_bytes().startswith(b"this was never"), "the evidence must stay untouched"


def test_an_unwritable_place_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreError, match="cannot open state database"):
        Store.open(blocker / "state")


def test_a_failed_transaction_leaves_nothing(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    try:
        with pytest.raises(sqlite3.IntegrityError), store.transaction() as conn:
            conn.execute("INSERT INTO outbox (topic, payload, created) VALUES ('t', x'00', 1)")
            conn.execute("INSERT INTO outbox (topic, payload, created) VALUES (NULL, x'00', 1)")
        assert store.conn.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0
    finally:
        store.close()
