"""Several runners of one projection on one database never double-apply (issue item 7).

Two (or three) projection sets, each on its own store instance (like
processes), run the same projection names while writers append; the offset
compare-and-set must let exactly one runner commit each page. Pages of
different sizes make the runners read different page boundaries, so one
often commits a page that overlaps another's.
"""

from __future__ import annotations

import pytest

from ..waiting import WAIT
from ._support import CountingProjection, assert_exactly_once, plain_codec, prompt
from .conftest import Db
from .test_gaps import run_threads, writer


@pytest.mark.parametrize("page_sizes", [(5, 5), (7, 5, 3)])
def test_sets_of_one_projection_apply_each_event_once(db: Db, page_sizes: tuple[int, ...]) -> None:
    stores = [db.store(plain_codec()) for _ in page_sizes]
    sets = [
        db.projections(store, [CountingProjection()], page_size=size, poll_interval=0.01)
        for store, size in zip(stores, page_sizes, strict=True)
    ]
    run_threads([writer(s, f"w{i}", 4, 70, seed=i) for i, s in enumerate(stores)])
    for pset in sets:
        pset.wait_caught_up(WAIT)
    assert assert_exactly_once(stores[0]) >= 70 * len(stores)
    for pset in sets:
        assert all(st.status == "running" for st in pset.status())


def test_two_runtimes_on_one_database(db: Db) -> None:
    """Two runtimes (their ledger and views runners too) follow one database concurrently."""
    rts = [db.runtime(), db.runtime()]
    sets = [db.projections(rt.store, [CountingProjection()], page_size=4) for rt in rts]

    def accepter(i: int) -> object:
        rt = rts[i % 2]

        def run() -> None:
            for n in range(30):
                rt.session(f"rt{i % 2}-{i}-{n % 4}").accept(prompt(f"{i}/{n}"))

        return run

    run_threads([accepter(i) for i in range(6)])  # type: ignore[misc]
    for rt, pset in zip(rts, sets, strict=True):
        rt.projections.wait_caught_up(WAIT)
        pset.wait_caught_up(WAIT)
    assert assert_exactly_once(rts[0].store) > 0
    for rt in rts:
        report = rt.verify()  # a double-applied ledger event would show as a wrong history
        assert report.ok, report.mismatches[:10]
        assert report.inputs == 180 == rt.ledger.count()
