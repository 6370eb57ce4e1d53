"""A runner keeps the read-model rows it wrote between pages (``RowCache``).

A page then takes the rows of inputs and sessions that earlier pages wrote from
memory instead of selecting them again. The cache is right only while its
runner is the rows' one writer, which the offset's compare-and-set proves at
each commit; these tests race runners on one database and check the read
models against a fresh fold.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from meerkat_runtime import EchoExecutor, Runtime
from meerkat_runtime.projections import (
    Cursor,
    LedgerProjection,
    Projection,
    RowCache,
    Sql,
    ViewsProjection,
    _ledger,
    _views,
    verify,
)
from meerkat_runtime.store import RecordedEvent

from ..waiting import WAIT
from ._support import prompt
from .conftest import Db
from .test_gaps import run_threads


def test_a_page_that_does_not_commit_leaves_the_cache_as_it_was() -> None:
    cache = RowCache(10)
    page = cache.page()
    page.put("t", "a", {"n": 1})
    assert page.get("t", "a") == {"n": 1}
    cache.commit(page, 5)
    failed = cache.page()
    failed.put("t", "a", {"n": 2})
    failed.put("t", "b", {"n": 3})
    # Never committed: the next page sees the rows as of the last commit.
    nxt = cache.page()
    assert nxt.get("t", "a") == {"n": 1}
    assert nxt.get("t", "b") is None
    assert cache.position == 5


def test_the_cache_is_dropped_unless_it_holds_the_rows_at_the_offset_a_page_starts_from() -> None:
    cache = RowCache(10)
    page = cache.page()
    page.put("t", "a", 1)
    cache.commit(page, 7)
    cache.valid_at(7)
    assert cache.page().get("t", "a") == 1
    cache.valid_at(9)  # another runner moved the offset: its rows are unknown here
    assert len(cache) == 0
    assert cache.page().get("t", "a") is None


def test_the_cache_keeps_the_most_recently_put_rows_up_to_its_size() -> None:
    cache = RowCache(3)
    page = cache.page()
    for key in "abcd":
        page.put("t", key, key.upper())
    cache.commit(page, 1)
    assert len(cache) == 3
    assert cache.page().get("t", "a") is None
    again = cache.page()
    again.put("t", "b", "B2")  # put again: now the most recent
    again.put("t", "e", "E")
    cache.commit(again, 2)
    last = cache.page()
    assert [last.get("t", k) for k in "bcde"] == ["B2", None, "D", "E"]


def test_a_forgotten_row_is_unknown_to_its_page_and_to_the_pages_after_it() -> None:
    cache = RowCache(10)
    page = cache.page()
    page.put("t", "a", 1)
    page.put("t", "b", 2)
    cache.commit(page, 1)
    page = cache.page()
    page.forget("t", "a")
    assert page.get("t", "a") is None
    assert page.get("t", "b") == 2
    cache.commit(page, 2)
    assert len(cache) == 1
    assert cache.page().get("t", "a") is None


def test_a_cache_of_size_zero_keeps_nothing() -> None:
    cache = RowCache(0)
    page = cache.page()
    page.put("t", "a", 1)
    cache.commit(page, 1)
    assert len(cache) == 0
    assert cache.page().get("t", "a") is None


@pytest.fixture
def echo_log(tmp_path: Any) -> Iterator[Runtime]:
    """A log of inputs that went through their whole lifecycle (projections off)."""
    rt = Runtime.open(f"sqlite:///{tmp_path}/log.db", projections=False, executor=EchoExecutor())
    try:
        outcomes = rt.accept_many([(f"s{i % 6}", prompt(f"p{i}")) for i in range(60)])
        for outcome in outcomes:
            assert outcome.completion is not None
            outcome.completion.wait(WAIT)
        yield rt
    finally:
        rt.close()


def _apply_in_pages(
    rt: Runtime, projection: Projection, cache: RowCache, page_size: int
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Apply the whole log in pages (as a runner does); the table's rows and how many
    keys each read-model table was asked for."""
    sql = Sql(rt.store)
    with sql.schema_transaction() as cur:
        projection.create_schema(cur)
    asked: dict[str, int] = {}
    real = Cursor.select_in

    def counting(self: Cursor, table: str, column: str, keys: Sequence[Any]) -> Any:
        asked[table] = asked.get(table, 0) + len(keys)
        return real(self, table, column, keys)

    events: list[RecordedEvent] = list(rt.store.read_all(0, limit=100_000))
    Cursor.select_in = counting  # type: ignore[method-assign]
    try:
        for start in range(0, len(events), page_size):
            chunk = events[start : start + page_size]
            page = cache.page()
            with sql.transaction(cache=page) as cur:
                projection.apply(cur, chunk)
            cache.commit(page, chunk[-1].position)
    finally:
        Cursor.select_in = real  # type: ignore[method-assign]
    table = _ledger.TABLE if isinstance(projection, LedgerProjection) else _views.TABLE
    with sql.transaction() as cur:
        rows = cur.execute(f"SELECT * FROM {cur.table(table)} ORDER BY 1, 2").fetchall()
        cur.execute(f"DROP TABLE {cur.table(table)}")
        if isinstance(projection, ViewsProjection):
            cur.execute(f"DROP TABLE {cur.table(_views.INPUTS)}")
    return rows, asked


@pytest.mark.parametrize("projection", [LedgerProjection, ViewsProjection])
def test_pages_take_the_rows_earlier_pages_wrote_from_the_cache(
    echo_log: Runtime, projection: type[Projection]
) -> None:
    """Each input moves through several pages (accepted, queued, staged, applied,
    consumed...). Without a cache every later page selects its inputs' rows again; with
    it, only the sessions never seen (a view row may predate the log read) are asked
    for, and the rows written are the same."""
    plain_rows, plain_asked = _apply_in_pages(echo_log, projection(), RowCache(0), 7)
    cached = RowCache()
    cached_rows, cached_asked = _apply_in_pages(echo_log, projection(), cached, 7)
    assert cached_rows == plain_rows
    assert len(plain_rows) > 0
    if projection is LedgerProjection:
        assert plain_asked[_ledger.TABLE] > 60
        assert cached_asked.get(_ledger.TABLE, 0) == 0
        # Finished inputs are not kept: they get no more events.
        assert len(cached) == 0
    else:
        assert plain_asked[_views.INPUTS] > 60
        assert cached_asked.get(_views.INPUTS, 0) == 0
        assert cached_asked[_views.TABLE] == 6  # each session once, at its first page


def test_runners_racing_on_one_database_never_apply_a_page_to_rows_another_wrote(
    db: Db,
) -> None:
    """Three sets of the built-in read models (like three processes) race on one
    database with small pages while inputs go through their lifecycle. Each page is
    committed by one runner; the others find the offset moved and must not reuse the
    rows they cached before it moved, or their next page would overwrite newer rows
    with ones computed from older ones (a wrong history or counts: ``verify`` says)."""
    rt = db.runtime(executor=EchoExecutor(), projections=False)
    stores = [db.store() for _ in range(3)]
    for store, size in zip(stores, (3, 5, 7), strict=True):
        db.projections(
            store, [LedgerProjection(), ViewsProjection()], page_size=size, poll_interval=0.01
        )
    completions: list[Any] = []

    def accepter(i: int) -> Any:
        def run() -> None:
            for n in range(25):
                outcome = rt.session(f"race-{i}-{n % 3}").accept(prompt(f"{i}/{n}"))
                assert outcome.completion is not None
                completions.append(outcome.completion)
                if n % 5 == 4:
                    outcome.completion.wait(WAIT)

        return run

    run_threads([accepter(i) for i in range(4)])
    for completion in completions:
        completion.wait(WAIT)
    for pset in db.sets:
        pset.wait_caught_up(WAIT)
    report = verify(rt.store)
    assert report.ok, report.mismatches[:10]
    assert report.inputs == 100
