"""A thin SQL dialect layer over the store's transaction cursor.

Read models live in the same database as the events (SQLite file,
PostgreSQL, or the memory store's private SQLite), so one SQL text serves all
backends: statements are written with ``?`` placeholders and converted to the
driver's style; upserts use ``INSERT ... ON CONFLICT ... DO UPDATE``, which
SQLite (3.24+) and PostgreSQL both speak. Every value is a bound parameter.
"""

from __future__ import annotations

import enum
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

from eventsourcing.persistence import InterfaceError, OperationalError

from meerkat_runtime.errors import InvalidInput, StoreError
from meerkat_runtime.store import EventStore, SQLCursor
from meerkat_runtime.store._drivers import postgres_driver_errors

# Driver errors that mean the database cannot be used now (connection lost or refused,
# pool timeout, lock timeout), as opposed to an error of the statement or the handler.
_UNAVAILABLE: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    *postgres_driver_errors(),
)

__all__ = ["ScratchSql", "Sql", "check_choice", "fetch_dicts"]


def check_choice(value: object, choices: type[enum.Enum], field: str) -> str | None:
    """``value`` as a str if it names one of ``choices`` (None passes); else ``InvalidInput``.

    A query filter that no row can match is a typo, not an empty answer.
    """
    if value is None:
        return None
    names = [str(c.value) for c in choices]
    if str(value) not in names or not isinstance(value, str):
        raise InvalidInput(f"unknown value {value!r}; use one of: {', '.join(names)}", field)
    return str(value)


def fetch_dicts(cursor: SQLCursor) -> list[dict[str, Any]]:
    """All remaining rows as dicts, whatever row type the driver returns."""
    rows = cursor.fetchall()
    if not rows:
        return []
    first = rows[0]
    if isinstance(first, dict):
        return list(rows)
    if hasattr(first, "keys"):  # sqlite3.Row
        return [dict(zip(row.keys(), row, strict=True)) for row in rows]
    columns = [d[0] for d in cursor.description]  # type: ignore[attr-defined]
    return [dict(zip(columns, row, strict=True)) for row in rows]


class Sql:
    """SQL helpers bound to one store: table names, placeholders, transactions."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self._format = getattr(store, "paramstyle", "qmark") == "format"

    @property
    def dialect(self) -> Literal["sqlite", "postgresql"]:
        """The SQL dialect of :meth:`transaction`'s database."""
        return self.store.dialect

    def table(self, name: str) -> str:
        return self.store.table_name(name)

    @staticmethod
    def index(name: str) -> str:
        """``name`` quoted as a bare identifier: an index for ``CREATE INDEX`` (never
        schema-qualified: PostgreSQL puts an index in its table's schema and refuses a
        qualified name), or a column."""
        return '"' + name.replace('"', '""') + '"'

    def q(self, statement: str) -> str:
        """Convert ``?`` placeholders to the driver's style."""
        return statement.replace("?", "%s") if self._format else statement

    @contextmanager
    def transaction(self) -> Iterator[Cursor]:
        """A transaction on the read models; a database that is unavailable raises
        :class:`StoreError` (naming the store, password masked), not a driver error."""
        with self._unavailable_as_store_error(), self.store.transaction() as cur:
            yield Cursor(self, cur)

    @contextmanager
    def read_transaction(self) -> Iterator[Cursor]:
        """A read-only transaction in which every statement sees one consistent snapshot
        (:meth:`EventStore.read_transaction`); errors as :meth:`transaction`."""
        with self._unavailable_as_store_error(), self.store.read_transaction() as cur:
            yield Cursor(self, cur)

    @contextmanager
    def _unavailable_as_store_error(self) -> Iterator[None]:
        try:
            yield
        except _UNAVAILABLE as exc:
            detail = self.store._scrub(str(exc))
            error = StoreError(
                f"read models in store {self.store.url} unavailable: {type(exc).__name__}: {detail}"
            )
            if detail != str(exc):
                raise error from None  # the cause shows a secret: do not chain it
            raise error from exc


class ScratchSql(Sql):
    """Read models of a read-only store, kept in a private in-memory SQLite database.

    The projections read the log from the store and write here, so a runtime on a
    read-only store (``read_only=True``: a backup copy, a read-only file, an
    inspection command) has current read models without writing a byte to the
    store. :meth:`copy_rows` starts them from the rows stored in the store.
    """

    def __init__(self, store: EventStore) -> None:
        super().__init__(store)
        self._format = False
        self._conn = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.Lock()

    @property
    def dialect(self) -> Literal["sqlite", "postgresql"]:
        return "sqlite"

    def table(self, name: str) -> str:
        return self.index(name)

    @contextmanager
    def transaction(self) -> Iterator[Cursor]:
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN")
            try:
                yield Cursor(self, cur)
            except BaseException:
                self._conn.rollback()
                raise
            finally:
                if self._conn.in_transaction:
                    self._conn.commit()
                cur.close()

    @contextmanager
    def read_transaction(self) -> Iterator[Cursor]:
        """The private database's transactions are serialised: each is a consistent read."""
        with self.transaction() as cur:
            yield cur

    def copy_rows(self, source: Sql, tables: Sequence[str]) -> bool:
        """Copy every row of ``tables`` from ``source`` (whose tables may be missing or of
        another release); True when all were copied, else nothing of them is kept."""
        try:
            with source.transaction() as src:
                contents = [
                    (t, src.execute(f"SELECT * FROM {src.table(t)}").fetchall()) for t in tables
                ]
        except Exception:
            return False
        try:
            with self.transaction() as cur:
                for table, rows in contents:
                    if rows:
                        # The same columns in the same order, or this release cannot
                        # take the rows as they are (ValueError: replay instead).
                        mine = [c["name"] for c in cur.execute(f"PRAGMA table_info({cur.table(table)})").fetchall()]  # fmt: skip
                        if list(rows[0]) != mine:
                            raise ValueError(f"{table}: columns {list(rows[0])}, expected {mine}")
                        marks = ", ".join("?" * len(mine))
                        cur.executemany(
                            f"INSERT INTO {cur.table(table)} VALUES ({marks})",
                            [[r[c] for c in mine] for r in rows],
                        )
        except Exception:
            with self.transaction() as cur:
                for table in tables:
                    cur.execute(f"DELETE FROM {cur.table(table)}")
            return False
        return True

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class Cursor:
    """A cursor that takes ``?`` placeholders on every backend."""

    __slots__ = ("_cur", "_sql")

    def __init__(self, sql: Sql, cur: SQLCursor) -> None:
        self._sql = sql
        self._cur = cur

    @property
    def sql(self) -> Sql:
        """The :class:`Sql` (and through it the store) this cursor belongs to."""
        return self._sql

    def execute(self, statement: str, params: Sequence[Any] = ()) -> Cursor:
        self._cur.execute(self._sql.q(statement), tuple(params))
        return self

    def executemany(self, statement: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self._cur.executemany(self._sql.q(statement), [tuple(r) for r in rows])

    def select_in(self, table: str, column: str, keys: Sequence[Any]) -> Iterator[dict[str, Any]]:
        """Rows of ``table`` whose ``column`` is one of ``keys``, in chunks of 500 parameters."""
        for start in range(0, len(keys), 500):
            chunk = list(keys[start : start + 500])
            marks = ", ".join("?" * len(chunk))
            yield from self.execute(
                f"SELECT * FROM {self.table(table)} WHERE {self.index(column)} IN ({marks})", chunk
            ).fetchall()

    def fetchall(self) -> list[dict[str, Any]]:
        return fetch_dicts(self._cur)

    def fetchone(self) -> dict[str, Any] | None:
        rows = self.fetchall()
        return rows[0] if rows else None

    def table(self, name: str) -> str:
        return self._sql.table(name)

    def index(self, name: str) -> str:
        return self._sql.index(name)
