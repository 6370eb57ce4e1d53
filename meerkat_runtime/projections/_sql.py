"""A thin SQL dialect layer over the store's transaction cursor.

Read models live in the same database as the events (SQLite file,
PostgreSQL, or the memory store's private SQLite), so one SQL text serves all
backends: statements are written with ``?`` placeholders and converted to the
driver's style; upserts use ``INSERT ... ON CONFLICT ... DO UPDATE``, which
SQLite (3.24+) and PostgreSQL both speak. Every value is a bound parameter.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from eventsourcing.persistence import InterfaceError, OperationalError

from meerkat_runtime.errors import StoreError
from meerkat_runtime.store import EventStore, SQLCursor

# Driver errors that mean the database cannot be used now (connection lost or refused,
# pool timeout, lock timeout), as opposed to an error of the statement or the handler.
_UNAVAILABLE = (OperationalError, InterfaceError, psycopg.OperationalError, psycopg.InterfaceError)

__all__ = ["Sql", "fetch_dicts"]


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
