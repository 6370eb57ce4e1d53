"""ReadModelHost conformance: read-model transactions, placeholders and errors, on every backend."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from meerkat_runtime.errors import StoreError, StoreUnavailable
from meerkat_runtime.store import EventCodec, EventStore, open_store

from ..conftest import Backend


def test_transaction_commits_or_rolls_back(backend: Backend) -> None:
    store = backend.open()
    table = store.table_name("test_read_model")
    with store.transaction() as cursor:
        cursor.execute(f"CREATE TABLE {table} (k TEXT PRIMARY KEY, v INTEGER NOT NULL)")
        cursor.execute(f"INSERT INTO {table} (k, v) VALUES (?, ?)", ("a", 1))
    with pytest.raises(RuntimeError), store.transaction() as cursor:
        cursor.execute(f"INSERT INTO {table} (k, v) VALUES (?, ?)", ("b", 2))
        raise RuntimeError("abort")
    with store.transaction() as cursor:
        cursor.execute(f"SELECT k, v FROM {table} ORDER BY k")
        assert [(row["k"], row["v"]) for row in cursor.fetchall()] == [("a", 1)]


def test_every_backend_takes_qmark_placeholders_in_executemany(backend: Backend) -> None:
    store = backend.open()
    table = store.table_name("test_marks")
    with store.transaction() as cursor:
        cursor.execute(f"CREATE TABLE {table} (k TEXT PRIMARY KEY, v INTEGER NOT NULL)")
        cursor.executemany(f"INSERT INTO {table} (k, v) VALUES (?, ?)", [("a", 1), ("b", 2)])
    with store.read_transaction() as cursor:
        cursor.execute(f"SELECT k, v FROM {table} WHERE v > ? ORDER BY k", (0,))
        assert [(row["k"], row["v"]) for row in cursor.fetchall()] == [("a", 1), ("b", 2)]


def test_a_failing_statement_raises_store_error_not_the_drivers(backend: Backend) -> None:
    """The backend maps its driver's errors: a caller never meets sqlite3 or psycopg."""
    store = backend.open()
    with pytest.raises(StoreError) as caught, store.transaction() as cursor:
        cursor.execute("SELECT * FROM no_such_read_model_table")
    assert type(caught.value).__module__ == "meerkat_runtime.errors"
    assert "no_such_read_model_table" in str(caught.value)
    assert "read models" in str(caught.value) and store.url in str(caught.value)


def test_a_constraint_violation_is_a_store_error_and_rolls_back(backend: Backend) -> None:
    store = backend.open()
    table = store.table_name("test_unique")
    with store.transaction() as cursor:
        cursor.execute(f"CREATE TABLE {table} (k TEXT PRIMARY KEY)")
        cursor.execute(f"INSERT INTO {table} (k) VALUES (?)", ("a",))
    with pytest.raises(StoreError) as caught, store.transaction() as cursor:
        cursor.execute(f"INSERT INTO {table} (k) VALUES (?)", ("b",))
        cursor.execute(f"INSERT INTO {table} (k) VALUES (?)", ("a",))
    assert not isinstance(caught.value, StoreUnavailable)
    with store.read_transaction() as cursor:
        cursor.execute(f"SELECT k FROM {table}")
        assert [r["k"] for r in cursor.fetchall()] == ["a"]


def test_other_exceptions_pass_through_unchanged(backend: Backend) -> None:
    store = backend.open()
    with pytest.raises(KeyError), store.transaction():
        raise KeyError("a handler's own error")


def test_schema_transactions_of_many_writers_do_not_collide(backend: Backend) -> None:
    """Concurrent ``CREATE TABLE IF NOT EXISTS`` of one table, as nodes starting together do."""
    stores = [backend.open() for _ in range(4)]
    table = stores[0].table_name("test_schema_race")
    errors: list[BaseException] = []
    start = threading.Barrier(len(stores))

    def create(store: EventStore) -> None:
        try:
            start.wait()
            with store.schema_transaction() as cursor:
                cursor.execute(f"CREATE TABLE IF NOT EXISTS {table} (k TEXT PRIMARY KEY)")
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=create, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_a_locked_sqlite_file_is_store_unavailable(tmp_path: Path) -> None:
    """Another process holding the write lock past ``lock_timeout``: the database cannot
    be used now, which projections retry (not a fault of any event)."""
    path = tmp_path / "locked.db"
    store = open_store(f"sqlite:///{path}", codec=EventCodec(), lock_timeout=1)
    try:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreUnavailable, match="locked"), store.transaction() as cursor:
                cursor.execute("SELECT 1")
        finally:
            other.rollback()
            other.close()
    finally:
        store.close()
