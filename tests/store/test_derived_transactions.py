"""``EventStore.transaction(derived=True)``: read-model rows that the log can re-derive.

On a SQLite ``synchronous=FULL`` store such a transaction commits without its fsync
(``synchronous=NORMAL`` for that transaction only); every other transaction, and every
append, keeps ``FULL`` on every pooled connection, whatever the derived one did.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from meerkat_runtime.store import EventStore, NewEvent, open_store

from .conftest import Backend, make_codec

FULL, NORMAL = 2, 1


def synchronous(store: EventStore, *, derived: bool = False) -> int:
    with store.transaction(derived=derived) as cur:
        cur.execute("PRAGMA synchronous")
        return int(cur.fetchone()[0])


@pytest.mark.parametrize("setting", ["full", "normal"])
def test_a_derived_transaction_commits_without_fsync_and_others_keep_full(
    tmp_path: Path, setting: str
) -> None:
    store = open_store(
        f"sqlite:///{tmp_path / 'db.sqlite'}",
        codec=make_codec(),
        sqlite_synchronous=setting,
        pool_size=1,  # one connection: what the derived transaction left is what others get
    )
    try:
        want = FULL if setting == "full" else NORMAL
        assert synchronous(store, derived=True) == NORMAL
        assert synchronous(store) == want
        with pytest.raises(RuntimeError), store.transaction(derived=True):
            raise RuntimeError("the handler failed")
        assert synchronous(store) == want
        with store.transaction() as cur:
            cur.execute("CREATE TABLE rows (n INTEGER)")
        with store.transaction(derived=True) as cur:
            cur.execute("INSERT INTO rows (n) VALUES (1)")
        store.append("s", 0, [NewEvent("test.happened", {"n": 1})])
        with store.read_transaction() as cur:
            cur.execute("SELECT n FROM rows")
            assert [r["n"] for r in cur.fetchall()] == [1]
        assert [e.data["n"] for e in store.read_session("s")] == [1]
        assert synchronous(store) == want
    finally:
        store.close()


def test_a_derived_transaction_is_an_ordinary_one_elsewhere(backend: Backend) -> None:
    store = backend.open()
    table = store.table_name("derived_rows")  # in the test's own schema on PostgreSQL
    with store.transaction() as cur:
        cur.execute(f"CREATE TABLE {table} (n INTEGER)")
    with store.transaction(derived=True) as cur:
        cur.execute(f"INSERT INTO {table} (n) VALUES (?)", (7,))
    with pytest.raises(RuntimeError), store.transaction(derived=True) as cur:
        cur.execute(f"INSERT INTO {table} (n) VALUES (?)", (8,))
        raise RuntimeError("rolled back")
    with store.read_transaction() as cur:
        cur.execute(f"SELECT n FROM {table}")
        assert [r["n"] for r in cur.fetchall()] == [7]


def _spy_on_writes(store: Any, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Record ``derived`` of each write transaction the SQLite store opens."""
    writes: list[bool] = []
    real = store._write

    def spy(*, derived: bool = False) -> Any:
        writes.append(derived)
        return real(derived=derived)

    monkeypatch.setattr(store, "_write", spy)
    return writes


def test_lease_and_node_writes_skip_the_fsync_on_sqlite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session's lease is written when it loads and when it passivates: on a FULL
    store each was an fsync'd commit (two disk waits per session touched), although a
    lease only matters while the processes of this machine that share the file run."""
    from meerkat_runtime.store._sqlite import SQLiteEventStore

    store = open_store(f"sqlite:///{tmp_path / 'db.sqlite'}", codec=make_codec())
    try:
        assert isinstance(store, SQLiteEventStore)
        writes = _spy_on_writes(store, monkeypatch)
        shared = store.shared()
        shared.heartbeat_node("node-a", {}, incarnation=store.incarnation)
        token = shared.acquire_lease("session:s", "node-a", 10.0, incarnation=store.incarnation)
        assert shared.renew_leases(["session:s"], "node-a", 10.0, incarnation=store.incarnation)
        shared.release_lease("session:s", "node-a", incarnation=store.incarnation)
        assert token == 1 and writes == [True, True, True, True]
        monkeypatch.undo()
        assert synchronous(store) == FULL  # appends still commit with their fsync
    finally:
        store.close()


def test_postgres_derived_transactions_and_snapshots_skip_the_wal_flush(
    postgres_url: str,
) -> None:
    """On PostgreSQL a derived transaction, and a snapshot's write, commit with
    ``synchronous_commit = off`` for that transaction only: the pooled connection
    gives the next transaction (an append, a lease write) the server's default."""
    import psycopg

    from meerkat_runtime.store._postgres import PostgresEventStore

    store = open_store(postgres_url, codec=make_codec(), pool_size=1)
    try:
        assert isinstance(store, PostgresEventStore)

        def setting(*, derived: bool) -> str:
            with store.transaction(derived=derived) as cur:
                cur.execute("SHOW synchronous_commit")
                return str(cur.fetchone()["synchronous_commit"])

        assert setting(derived=True) == "off"
        assert setting(derived=False) == "on"
        # The snapshot's statement sets it for its own transaction only (seen here
        # inside an explicit one, which is then rolled back).
        with psycopg.connect(postgres_url.split("?", 1)[0], autocommit=True) as conn:
            conn.execute(f"SET search_path TO {store.table_name('x').split('.')[0]}")
            with conn.transaction(force_rollback=True):
                conn.execute(store._upsert_snapshot_sql, ("s", 1, b"state"))
                assert conn.execute("SHOW synchronous_commit").fetchone() == ("off",)
            assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)
        store.save_snapshot("s", 1, {"n": 1})
        store.save_snapshot("s", 2, {"n": 2})
        store.save_snapshot("s", 1, {"n": 0})  # older: the newer stored one wins
        snap = store.load_snapshot("s")
        assert snap is not None and (snap.version, snap.data) == (2, {"n": 2})
        store.append("s", 0, [NewEvent("test.happened", {"n": 1})])
        assert setting(derived=False) == "on"
    finally:
        store.close()


def test_snapshot_writes_skip_the_fsync_on_sqlite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A snapshot is a cache of durable events that the log refolds: on a FULL store its
    own fsync only held the store's write lock longer (the writer waited behind it)."""
    from meerkat_runtime.store._sqlite import SQLiteEventStore

    store = open_store(f"sqlite:///{tmp_path / 'db.sqlite'}", codec=make_codec())
    try:
        assert isinstance(store, SQLiteEventStore)
        writes = _spy_on_writes(store, monkeypatch)
        store.save_snapshot("s", 3, {"state": {"n": 3}})
        assert writes == [True]
        monkeypatch.undo()
        snap = store.load_snapshot("s")
        assert snap is not None and (snap.version, snap.data) == (3, {"state": {"n": 3}})
        assert synchronous(store) == FULL
    finally:
        store.close()
