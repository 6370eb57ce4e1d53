"""SQL helpers for read models over the store's :class:`~meerkat_runtime.store.ReadModelHost`.

Read models live in the same database as the events (SQLite file,
PostgreSQL, or the memory store's private SQLite), so one SQL text serves all
backends: the host takes ``?`` placeholders everywhere and raises the
project's errors (:class:`~meerkat_runtime.errors.StoreUnavailable`,
:class:`~meerkat_runtime.errors.StoreError`), never a driver's. Upserts use
``INSERT ... ON CONFLICT ... DO UPDATE``, which SQLite (3.24+) and PostgreSQL
both speak. Every value is a bound parameter.
"""

from __future__ import annotations

import enum
import itertools
import math
import sqlite3
from collections.abc import Hashable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import orjson

from meerkat_runtime.errors import InvalidInput
from meerkat_runtime.store import EventStore, ReadModelHost, SQLCursor
from meerkat_runtime.store._private_sql import ScratchReadModels

__all__ = ["PageRows", "RowCache", "ScratchSql", "Sql", "check_choice", "fetch_dicts"]


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
    """SQL helpers bound to one store: its log (``store``) and where its read models are
    kept (``host``: the store itself unless given)."""

    def __init__(self, store: EventStore, host: ReadModelHost | None = None) -> None:
        self.store = store
        self.host: ReadModelHost = store if host is None else host
        #: PostgreSQL tables' column types, by quoted table name (``Cursor.insert_rows``).
        self.plain_pg_columns: dict[str, dict[str, str]] = {}

    def table(self, name: str) -> str:
        return self.host.table_name(name)

    @staticmethod
    def index(name: str) -> str:
        """``name`` quoted as a bare identifier: an index for ``CREATE INDEX`` (never
        schema-qualified: PostgreSQL puts an index in its table's schema and refuses a
        qualified name), or a column."""
        return '"' + name.replace('"', '""') + '"'

    @contextmanager
    def transaction(
        self, *, derived: bool = False, cache: PageRows | None = None
    ) -> Iterator[Cursor]:
        """A transaction on the read models (errors: see the module docstring).

        ``derived``: all it writes can be derived again from the log (a page of a
        projection and its offset), so the store may commit it without waiting for
        the disk (:meth:`EventStore.transaction`). ``cache``: the rows the cursor's
        :attr:`Cursor.cache` knows.
        """
        host = self.host
        if derived and isinstance(host, EventStore):
            with host.transaction(derived=True) as cur:
                yield Cursor(self, cur, cache)
            return
        with host.transaction() as cur:
            yield Cursor(self, cur, cache)

    @contextmanager
    def read_transaction(self) -> Iterator[Cursor]:
        """A read-only transaction in which every statement sees one consistent snapshot."""
        with self.host.read_transaction() as cur:
            yield Cursor(self, cur)

    @contextmanager
    def schema_transaction(self) -> Iterator[Cursor]:
        """A transaction for creating tables, serialised with other processes doing so."""
        with self.host.schema_transaction() as cur:
            yield Cursor(self, cur)


class ScratchSql(Sql):
    """Read models of a read-only store, kept in a private in-memory SQLite database.

    The projections read the log from the store and write here, so a runtime on a
    read-only store (``read_only=True``: a backup copy, a read-only file, an
    inspection command) has current read models without writing a byte to the
    store. :meth:`copy_rows` starts them from the rows stored in the store.
    """

    def __init__(self, store: EventStore) -> None:
        self._scratch = ScratchReadModels(store.url)
        super().__init__(store, self._scratch)

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
        self._scratch.close()


#: Rows per statement of :meth:`Cursor.insert_rows`: a page is cut into chunks of these
#: sizes, largest first, so that the few statement texts stay in the driver's statement
#: cache (a multi-row statement of a new length is compiled again: about 1.3 us per row
#: more than ``executemany``; with cached lengths the CPU per row is the same). At most
#: 9 columns each in the built-in read models: 2,304 parameters, far under the limits.
CHUNK_ROWS = (256, 64, 16, 4, 1)


_K = TypeVar("_K", bound=Hashable)

#: Rows a projection runner keeps between its pages (:class:`RowCache`), by default.
ROW_CACHE_ROWS = 4096
#: A row a transaction dropped from the cache (:meth:`PageRows.forget`).
_FORGOTTEN: Any = object()


class PageRows:
    """The read-model rows known to one transaction: those its runner's :class:`RowCache`
    holds, and those this transaction :meth:`put`. The puts reach the cache only if the
    transaction commits (the runner's :meth:`RowCache.commit`).

    A value is a row as the projection last wrote it (or read it): never mutated once
    put, so a projection that changes one copies it first. None is never a value.
    """

    __slots__ = ("_committed", "staged")

    def __init__(self, committed: dict[tuple[str, Hashable], Any] | None = None) -> None:
        self._committed: dict[tuple[str, Hashable], Any] = {} if committed is None else committed
        self.staged: dict[tuple[str, Hashable], Any] = {}

    def get(self, table: str, key: Hashable) -> Any:
        """The row of ``key`` in ``table`` if known, else None (then read it from the table)."""
        k = (table, key)
        found = self.staged.get(k)
        if found is None:
            return self._committed.get(k)
        return None if found is _FORGOTTEN else found

    def known(self, table: str, keys: Iterable[_K]) -> tuple[dict[_K, Any], list[_K]]:
        """The rows of ``keys`` in ``table`` this page knows, and (in order) the keys it
        does not: read those from the table."""
        found: dict[_K, Any] = {}
        unknown: list[_K] = []
        for key in keys:
            row = self.get(table, key)
            if row is None:
                unknown.append(key)
            else:
                found[key] = row
        return found, unknown

    def put(self, table: str, key: Hashable, value: Any) -> None:
        """``value`` is the row of ``key`` in ``table`` as this transaction leaves it."""
        self.staged[(table, key)] = value

    def forget(self, table: str, key: Hashable) -> None:
        """Keep no row of ``key`` in ``table`` (one not worth its memory: the next page
        to need it reads it)."""
        self.staged[(table, key)] = _FORGOTTEN


class RowCache:
    """The read-model rows one projection runner read or wrote, kept between its pages so
    that a page does not read back what the previous ones wrote.

    Each row lookup is a statement and a step per row, and Python's sqlite3 lets go of
    the GIL at each: a runner behind busy accepting threads then waits for it again
    (on ``memory://`` that doubled a page's wall time). The cache holds the rows as of
    ``position``, the offset of the runner's last commit. It is right only while the
    runner is their one writer, which the offset's compare-and-set proves at each
    commit: the runner calls :meth:`valid_at` with the offset it updates from (another
    writer, a rebuild or a lost page means another offset: the cache is dropped), and
    drops it on any failed transaction. At most ``max_rows`` rows, the least recently
    put dropped first: each is memory, and objects the garbage collector walks.
    """

    __slots__ = ("_rows", "max_rows", "position")

    def __init__(self, max_rows: int = ROW_CACHE_ROWS) -> None:
        self._rows: dict[tuple[str, Hashable], Any] = {}
        self.max_rows = max_rows
        self.position: int | None = None

    def __len__(self) -> int:
        return len(self._rows)

    def clear(self) -> None:
        self._rows.clear()
        self.position = None

    def valid_at(self, position: int) -> None:
        """Drop every row unless the cache holds the rows as of ``position``."""
        if self.position != position:
            self.clear()

    def page(self) -> PageRows:
        """The rows of a new transaction (see :class:`PageRows`)."""
        return PageRows(self._rows if self.max_rows > 0 else None)

    def commit(self, page: PageRows, position: int) -> None:
        """``page``'s transaction committed, moving the offset to ``position``."""
        if self.max_rows <= 0:
            return
        rows = self._rows
        for key, value in page.staged.items():
            rows.pop(key, None)  # to the end: the most recently put
            if value is not _FORGOTTEN:
                rows[key] = value
        excess = len(rows) - self.max_rows
        if excess > 0:
            for key in list(itertools.islice(rows, excess)):
                del rows[key]
        self.position = position


#: ``->>`` (SQLite 3.38): :meth:`Cursor.insert_rows` binds a page as one JSON array there.
_JSON_ROWS = sqlite3.sqlite_version_info >= (3, 38, 0)
#: The columns of a row ``json_each`` unpacks (a wider row takes the chunked statements).
_JSON_PICKS = (
    "value ->> 0",
    "value ->> 1",
    "value ->> 2",
    "value ->> 3",
    "value ->> 4",
    "value ->> 5",
    "value ->> 6",
    "value ->> 7",
    "value ->> 8",
    "value ->> 9",
    "value ->> 10",
    "value ->> 11",
    "value ->> 12",
    "value ->> 13",
    "value ->> 14",
    "value ->> 15",
)
#: The values a JSON array carries to SQLite unchanged (str and float: see ``_json_payload``).
_JSON_NATIVE = frozenset({str, int, float, bool, type(None)})
#: The same for PostgreSQL: a JSON true is no integer there, as a bound bool is.
_JSON_NATIVE_PG = frozenset({str, int, float, type(None)})


#: PostgreSQL column types that take a JSON value as they take a bound parameter.
_PLAIN_PG_TYPES = frozenset(
    {"text", "varchar", "int2", "int4", "int8", "float4", "float8", "numeric"}
)
#: The columns of a PostgreSQL table (its quoted, maybe schema-qualified name) and their types.
_COLUMN_TYPES = (
    "SELECT a.attname AS name, t.typname AS type FROM pg_attribute a "
    "JOIN pg_type t ON t.oid = a.atttypid "
    "WHERE a.attrelid = CAST(? AS regclass) AND a.attnum > 0 AND NOT a.attisdropped"
)


def _json_dialect(cur: SQLCursor) -> str | None:
    """How :meth:`Cursor.insert_rows` may bind a page as one JSON value on ``cur``:
    ``"sqlite"`` (Python's sqlite3, bare or in eventsourcing's wrapper; SQLite 3.38+),
    ``"postgresql"`` (the store's psycopg cursor), or None."""
    if isinstance(cur, sqlite3.Cursor) or isinstance(
        getattr(cur, "sqlite_cursor", None), sqlite3.Cursor
    ):
        return "sqlite" if _JSON_ROWS else None
    return "postgresql" if getattr(cur, "dialect", None) == "postgresql" else None


def _json_payload(
    dialect: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> str | None:
    """``rows`` as the one JSON parameter of a single statement: on SQLite an array of
    rows that ``json_each`` unpacks in order, on PostgreSQL an array of objects that
    ``json_populate_recordset`` types by the table's columns. None when a value is not
    one JSON carries unchanged: a str without NUL, an int, a finite float, None, and on
    SQLite a bool (then the rows take the chunked statements).

    One statement instead of one per chunk: each lets go of the GIL (a SQLite step, a
    PostgreSQL round trip), and a runner behind busy threads waits to get it back."""
    width = len(columns)
    if dialect == "sqlite" and width > len(_JSON_PICKS):
        return None
    native = _JSON_NATIVE if dialect == "sqlite" else _JSON_NATIVE_PG
    for row in rows:
        for value in row:
            kind = type(value)
            if kind is str:
                if "\x00" in value:  # SQLite's JSON functions cut text at a NUL
                    return None
            elif kind is float:
                if not math.isfinite(value):  # JSON has no NaN or infinity
                    return None
            elif kind not in native:
                return None
    try:
        if dialect == "sqlite":
            return orjson.dumps(rows).decode()
        return orjson.dumps([dict(zip(columns, row, strict=True)) for row in rows]).decode()
    except TypeError:  # an int past 64 bits
        return None


class Cursor:
    """A cursor that takes ``?`` placeholders on every backend."""

    __slots__ = ("_cache", "_cur", "_sql")

    def __init__(self, sql: Sql, cur: SQLCursor, cache: PageRows | None = None) -> None:
        self._sql = sql
        self._cur = cur
        self._cache = cache

    @property
    def sql(self) -> Sql:
        """The :class:`Sql` (and through it the store) this cursor belongs to."""
        return self._sql

    @property
    def cache(self) -> PageRows:
        """Rows this transaction may take without reading them (:class:`PageRows`): those
        its projection runner kept from earlier pages; outside a runner, only those put
        in this transaction."""
        if self._cache is None:
            self._cache = PageRows()
        return self._cache

    def execute(self, statement: str, params: Sequence[Any] = ()) -> Cursor:
        self._cur.execute(statement, tuple(params))
        return self

    def executemany(self, statement: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self._cur.executemany(statement, [tuple(r) for r in rows])

    def insert_rows(
        self,
        table: str,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        *,
        conflict: Sequence[str] = (),
        update: Sequence[str] = (),
    ) -> None:
        """Insert ``rows`` (one value per column of ``columns``) into ``table``: as one
        statement that unpacks them from a single JSON parameter (SQLite 3.38+,
        PostgreSQL) when every value survives JSON unchanged; otherwise as multi-row
        ``VALUES`` statements of the sizes in :data:`CHUNK_ROWS` (a page of 300 rows: 6
        statements).

        ``conflict``: the key columns of an ``ON CONFLICT``; a row whose key exists then
        sets the ``update`` columns to its values (or is skipped when ``update`` is
        empty). Names are quoted as identifiers; values are bound parameters.

        Rather than ``executemany``'s one statement step per row: Python's sqlite3 lets go
        of the GIL around every step, and a projection runner that must take it back
        behind busy accepting threads waits up to a switch interval each time (a page
        of 300 rows took ~35 ms of wall time for ~6 ms of CPU). ``rows`` must not hold
        two rows for one conflict key (PostgreSQL refuses to update a row twice in one
        statement).
        """
        if not rows:
            return
        cols: list[str] = []
        for column in columns:
            cols.append(self.index(column))
        keys: list[str] = []
        for key in conflict:
            keys.append(self.index(key))
        sets: list[str] = []
        for column in update:
            name = self.index(column)
            sets.append(f"{name} = excluded.{name}")
        on_conflict = ""
        if keys:
            on_conflict = (
                f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {', '.join(sets)}"
                if sets
                else f" ON CONFLICT ({', '.join(keys)}) DO NOTHING"
            )
        width = len(cols)
        for row in rows:  # before any statement: a bad row leaves nothing written
            if len(row) != width:
                raise ValueError(f"a row of {len(row)} values for the {width} columns of {table}")
        t = self.table(table)
        dialect = _json_dialect(self._cur)
        if dialect == "postgresql" and not self._plain_columns(t, columns):
            dialect = None
        payload = None if dialect is None else _json_payload(dialect, columns, rows)
        if payload is not None:
            # One statement whatever the number of rows (see _json_payload).
            source = (
                f"SELECT {', '.join(_JSON_PICKS[:width])} FROM json_each(?) WHERE true"
                if dialect == "sqlite"
                else f"SELECT {', '.join(cols)} FROM json_populate_recordset(NULL::{t}, ?::json)"
            )
            self._cur.execute(
                f"INSERT INTO {t} ({', '.join(cols)}) {source}{on_conflict}", (payload,)
            )
            return
        placeholders = f"({', '.join('?' * width)})"
        head = f"INSERT INTO {t} ({', '.join(cols)}) VALUES "
        start = 0
        for size in CHUNK_ROWS:
            if len(rows) - start < size:
                continue
            groups: list[str] = []
            for _ in range(size):
                groups.append(placeholders)
            statement = f"{head}{', '.join(groups)}{on_conflict}"
            while len(rows) - start >= size:
                params: list[Any] = []
                for row in rows[start : start + size]:
                    params.extend(row)
                self._cur.execute(statement, params)
                start += size

    def _plain_columns(self, table: str, columns: Sequence[str]) -> bool:
        """Whether PostgreSQL's ``table`` (quoted) types every one of ``columns`` as text, an
        integer or a number: there ``json_populate_recordset`` gives what a bound
        parameter gives. A ``json``/``jsonb`` column would keep a JSON string as a string
        where a bound one is parsed; other types are not checked, so they take the
        chunked statements. Asked once per table and :class:`Sql` (a projection
        set has one)."""
        known = self._sql.plain_pg_columns
        types = known.get(table)
        if types is None:
            rows = self.execute(_COLUMN_TYPES, (table,)).fetchall()
            types = known[table] = {r["name"]: r["type"] for r in rows}
        return all(types.get(c) in _PLAIN_PG_TYPES for c in columns)

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
