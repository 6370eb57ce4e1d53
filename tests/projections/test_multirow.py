"""Read models write a page's rows as multi-row statements (``Cursor.insert_rows``).

A few statements per page (chunks of 256, 64, 16, 4 and 1 rows) instead of ``executemany``'s one statement step per row:
on SQLite each step lets go of the GIL, which a projection runner then waits to get
back behind the accepting threads. On every backend: rows are inserted and updated
on conflict across chunks, a row of the wrong width is refused before anything is
written, and the ledger and views issue a few statements per page, not one per row.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import pytest

from meerkat_runtime.projections import Cursor, LedgerProjection, Sql, ViewsProjection
from meerkat_runtime.store import RecordedEvent

from .conftest import Db

ROWS = 1_201  # 4 x 256 + 2 x 64 + 3 x 16 + 1: ten statements


def _table(db: Db) -> tuple[Sql, str]:
    sql = Sql(db.store())
    with sql.schema_transaction() as cur:
        cur.execute(f"CREATE TABLE {cur.table('multirow_t')} (k TEXT PRIMARY KEY, v INTEGER)")
    return sql, sql.table("multirow_t")


def _rows(sql: Sql, table: str) -> dict[str, int]:
    with sql.read_transaction() as cur:
        return {r["k"]: int(r["v"]) for r in cur.execute(f"SELECT k, v FROM {table}").fetchall()}


def test_insert_rows_inserts_and_updates_across_statements(db: Db) -> None:
    sql, table = _table(db)
    with sql.transaction() as cur:
        cur.insert_rows("multirow_t", ("k", "v"), [(f"k{n:05}", n) for n in range(ROWS)])
    assert _rows(sql, table) == {f"k{n:05}": n for n in range(ROWS)}
    # Every other existing key updated, and new keys past the end, in one call.
    changes = [(f"k{n:05}", -n) for n in range(0, ROWS + 300, 2)]
    with sql.transaction() as cur:
        cur.insert_rows("multirow_t", ("k", "v"), changes, conflict=("k",), update=("v",))
    want = {f"k{n:05}": n for n in range(ROWS)} | dict(changes)
    assert _rows(sql, table) == want
    # With no column to update, a row whose key exists is skipped.
    with sql.transaction() as cur:
        cur.insert_rows("multirow_t", ("k", "v"), [("k00001", 7), ("new", 8)], conflict=("k",))
    assert _rows(sql, table) == want | {"new": 8}


def test_insert_rows_refuses_a_row_of_the_wrong_width_and_writes_nothing(db: Db) -> None:
    sql, table = _table(db)
    rows: list[tuple[Any, ...]] = [(f"k{n}", n) for n in range(600)]
    rows.append(("short",))  # in a later statement: the first ones must not stay either
    with (
        pytest.raises(ValueError, match="a row of 1 values for the 2 columns of multirow_t"),
        sql.transaction() as cur,
    ):
        cur.insert_rows("multirow_t", ("k", "v"), rows)
    assert _rows(sql, table) == {}


class _Counting:
    """A driver cursor that records the statements the read models send."""

    def __init__(self, cur: Any) -> None:
        self._cur = cur
        self.executes: list[str] = []
        self.executemany_rows: list[int] = []

    def execute(self, statement: str, params: Sequence[Any] = ()) -> Any:
        self.executes.append(statement)
        return self._cur.execute(statement, params)

    def executemany(self, statement: str, rows: Sequence[Sequence[Any]]) -> Any:
        self.executemany_rows.append(len(rows))
        return self._cur.executemany(statement, rows)

    @property
    def sqlite_cursor(self) -> Any:
        """The sqlite3 cursor under it, if any (how ``insert_rows`` tells SQLite)."""
        cur = getattr(self._cur, "sqlite_cursor", self._cur)
        return cur if isinstance(cur, sqlite3.Cursor) else None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cur, name)


def _page(db: Db, inputs: int) -> list[RecordedEvent]:
    """The log of ``inputs`` accepted inputs over 3 sessions (2 events each)."""
    rt = db.runtime(projections=False)
    rt.accept_many(
        [(f"s-{n % 3}", {"input_type": "prompt", "content": f"p{n}"}) for n in range(inputs)]
    )
    return [*rt.store.read_all(0, limit=10 * inputs)]


@pytest.mark.parametrize("projection", [LedgerProjection, ViewsProjection])
def test_a_read_model_writes_a_page_in_a_few_statements(
    db: Db, projection: type[LedgerProjection] | type[ViewsProjection]
) -> None:
    events = _page(db, ROWS)
    sql = Sql(db.store())
    model = projection()
    with sql.schema_transaction() as cur:
        model.create_schema(cur)
    with sql.transaction() as real:
        counting = _Counting(real._cur)
        model.apply(Cursor(sql, counting), events)
    inserts = [s for s in counting.executes if s.lstrip().upper().startswith("INSERT")]
    assert counting.executemany_rows == [], "a page's rows went through executemany"
    # Ledger: one row per input. Views: one per input, and one per session (3).
    tables = [ROWS] if projection is LedgerProjection else [ROWS, 3]
    # One statement per table, its rows bound as one JSON value.
    unpack = "json_populate_recordset" if db.backend == "postgres" else "json_each(?)"
    assert len(inserts) == len(tables)
    assert all(unpack in s for s in inserts)
    with sql.read_transaction() as cur:
        written = [
            len(cur.execute(f"SELECT 1 FROM {cur.table(t)}").fetchall()) for t in model.tables
        ]
    assert sorted(written) == sorted(tables)


def test_insert_rows_on_sqlite_keeps_every_value_as_a_bound_parameter_would(
    local_db: Db,
) -> None:
    """SQLite takes a page as one JSON array: each value must come out of it with the type
    and text a bound parameter gives (quotes, newlines, unicode, large and negative ints,
    floats, booleans, NULL). A value JSON would change (bytes; text holding NUL, which
    SQLite's JSON functions cut short) sends the rows through the chunked statements."""
    sql = Sql(local_db.store())
    with sql.schema_transaction() as cur:
        for name in ("json_t", "bound_t"):
            cur.execute(f"CREATE TABLE {cur.table(name)} (k INTEGER PRIMARY KEY, v, w)")
    values: list[Any] = [
        "plain", "it's \"quoted\"", "line\nbreak\ttab", "unicode é 漢字 🦦", "",
        0, -1, 2**63 - 1, -(2**63), 1.5, -0.25, 1e300, True, False, None,
    ]  # fmt: skip
    rows = [(n, v, str(v)) for n, v in enumerate(values)]
    with sql.transaction() as cur:
        counting = _Counting(cur._cur)
        Cursor(sql, counting).insert_rows("json_t", ("k", "v", "w"), rows)
        cur.executemany(f"INSERT INTO {cur.table('bound_t')} VALUES (?, ?, ?)", rows)
    assert any("json_each(?)" in s for s in counting.executes)

    def read(name: str) -> list[Any]:
        with sql.read_transaction() as cur:
            return [
                tuple(r.values())
                for r in cur.execute(
                    f"SELECT k, v, typeof(v) AS tv, w FROM {cur.table(name)} ORDER BY k"
                ).fetchall()
            ]

    assert read("json_t") == read("bound_t")
    for odd in (b"\x00bytes", "nul\x00inside", float("inf")):
        with sql.transaction() as cur:
            counting = _Counting(cur._cur)
            Cursor(sql, counting).insert_rows(
                "json_t", ("k", "v", "w"), [(100, odd, "b"), (101, "text", "t")],
                conflict=("k",), update=("v",),
            )  # fmt: skip
        assert not any("json_each" in s for s in counting.executes)
        with sql.read_transaction() as cur:
            got = cur.execute(f"SELECT v FROM {cur.table('json_t')} WHERE k >= 100 ORDER BY k")
            assert [r["v"] for r in got.fetchall()] == [odd, "text"]


@pytest.mark.postgres
def test_insert_rows_on_postgres_keeps_every_value_as_a_bound_parameter_would(
    postgres_url: str,
) -> None:
    """PostgreSQL takes a page as one JSON array of objects that
    ``json_populate_recordset`` types by the table's columns: each value must land as a
    bound parameter would land it. A value JSON would change (NaN, infinity, bytes,
    a bool) sends the rows through the chunked statements."""
    db = Db("postgres", postgres_url)
    try:
        sql = Sql(db.store())
        with sql.schema_transaction() as cur:
            for name in ("json_pg", "bound_pg"):
                cur.execute(
                    f"CREATE TABLE {cur.table(name)} "
                    "(k BIGINT PRIMARY KEY, t TEXT, f DOUBLE PRECISION, n BIGINT)"
                )
        texts = ["plain", 'it\'s "quoted" \\ back', "line\nbreak", "unicode é 漢字 🦦", "", None]
        rows = [
            (k, texts[k % len(texts)], [1.5, -0.25, 1e300, 0.0, None][k % 5], [0, -1, 2**63 - 1, -(2**63), None][k % 5])
            for k in range(300)
        ]  # fmt: skip
        with sql.transaction() as cur:
            counting = _Counting(cur._cur)
            Cursor(sql, counting).insert_rows("json_pg", ("k", "t", "f", "n"), rows)
            cur.executemany(f"INSERT INTO {cur.table('bound_pg')} VALUES (?, ?, ?, ?)", rows)
        assert [s for s in counting.executes if "json_populate_recordset" in s]

        def read(name: str) -> list[Any]:
            with sql.read_transaction() as cur:
                got = cur.execute(f"SELECT k, t, f, n FROM {cur.table(name)} ORDER BY k")
                return [tuple(r.values()) for r in got.fetchall()]

        assert read("json_pg") == read("bound_pg") and len(read("json_pg")) == 300
        for odd in (float("nan"), float("inf")):
            with sql.transaction() as cur:
                counting = _Counting(cur._cur)
                Cursor(sql, counting).insert_rows(
                    "json_pg", ("k", "t", "f", "n"), [(1000, "x", odd, 1), (1, "u", 2.0, 2)],
                    conflict=("k",), update=("t", "f", "n"),
                )  # fmt: skip
            assert not any("json_populate_recordset" in s for s in counting.executes)
        with sql.read_transaction() as cur:
            got = cur.execute(f"SELECT k, t, f FROM {cur.table('json_pg')} WHERE k IN (1, 1000)")
            assert sorted(tuple(r.values()) for r in got.fetchall()) == [
                (1, "u", 2.0),
                (1000, "x", float("inf")),
            ]
    finally:
        db.close()


@pytest.mark.postgres
def test_insert_rows_on_postgres_sends_json_columns_through_bound_parameters(
    postgres_url: str,
) -> None:
    """A str bound to a ``jsonb`` column is parsed as JSON; the same str inside a JSON
    document given to ``json_populate_recordset`` would stay a JSON string. A table with
    such a column takes the chunked statements, and stores what ``executemany`` does."""
    db = Db("postgres", postgres_url)
    try:
        sql = Sql(db.store())
        with sql.schema_transaction() as cur:
            for name in ("doc_json", "doc_bound"):
                cur.execute(f"CREATE TABLE {cur.table(name)} (k BIGINT PRIMARY KEY, d JSONB)")
        rows = [(1, '{"a": [1, 2]}'), (2, '"text"'), (3, "null")]
        with sql.transaction() as cur:
            counting = _Counting(cur._cur)
            Cursor(sql, counting).insert_rows("doc_json", ("k", "d"), rows)
            cur.executemany(f"INSERT INTO {cur.table('doc_bound')} VALUES (?, ?)", rows)
        assert not any("json_populate_recordset" in s for s in counting.executes)

        def read(name: str) -> list[Any]:
            with sql.read_transaction() as cur:
                got = cur.execute(f"SELECT k, d::text AS d FROM {cur.table(name)} ORDER BY k")
                return [tuple(r.values()) for r in got.fetchall()]

        assert (
            read("doc_json")
            == read("doc_bound")
            == [(1, '{"a": [1, 2]}'), (2, '"text"'), (3, "null")]
        )
    finally:
        db.close()
