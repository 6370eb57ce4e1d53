"""Projection status, position, head and lag (issue item 6); ``wait_caught_up`` semantics."""

from __future__ import annotations

import threading

import pytest

from meerkat_runtime.projections import ProjectionSet

from ..waiting import WAIT, wait_until
from ._support import CountingProjection, assert_exactly_once, plain_codec, prompt
from .conftest import Db
from .test_failures import append_numbered, status_of


def test_runtime_projections_report_no_lag_once_caught_up(db: Db) -> None:
    rt = db.runtime()
    for i in range(30):
        rt.session(f"st-{i % 4}").accept(prompt(f"p{i}"))
    rt.projections.wait_caught_up(WAIT)
    head = rt.store.max_position()
    statuses = rt.projections.status()
    assert [s.name for s in statuses] == ["ledger", "views"]
    for s in statuses:
        assert (s.status, s.position, s.head, s.lag, s.error) == ("running", head, head, 0, None)
    rt.close()
    assert {s.status for s in rt.projections.status()} == {"stopped"}


def test_empty_store_is_caught_up(db: Db) -> None:
    rt = db.runtime()
    rt.projections.wait_caught_up(WAIT)
    assert [(s.position, s.head, s.lag) for s in rt.projections.status()] == [(0, 0, 0)] * 2


def test_lag_while_a_projection_is_held(db: Db) -> None:
    store = db.store(plain_codec())
    # Written first: on SQLite a projection's transaction holds the store's write lock.
    positions = append_numbered(store, 0, 10)
    gate = threading.Event()
    proj = CountingProjection(gate=gate)
    pset = db.projections(store, [proj], page_size=4)
    wait_until(lambda: bool(proj.applied_pages), what="the projection to take a page")
    st = status_of(pset)
    assert st.status == "running" and st.head == positions[-1]
    assert st.position < positions[-1] and st.lag == positions[-1] - st.position > 0
    with pytest.raises(TimeoutError, match="counting"):
        pset.wait_caught_up(0.05)
    gate.set()
    pset.wait_caught_up(WAIT)
    st = status_of(pset)
    assert (st.position, st.lag) == (positions[-1], 0)
    assert assert_exactly_once(store) == 10


def test_wait_caught_up_targets_what_is_durable_at_call_time(local_db: Db) -> None:
    """Events appended after the call do not extend the wait; it returns once the target is met."""
    store = local_db.store(plain_codec())
    positions = append_numbered(store, 0, 5)
    pset = local_db.projections(store, [CountingProjection()])
    pset.wait_caught_up(WAIT)
    assert status_of(pset).position >= positions[-1]


def test_a_second_process_resumes_from_the_stored_offset(durable_db: Db) -> None:
    """Status of a fresh projection set starts at the stored offset, not at zero."""
    store = durable_db.store(plain_codec())
    first = ProjectionSet(store, [CountingProjection()], poll_interval=0.05)
    positions = append_numbered(store, 0, 8)
    first.wait_caught_up(WAIT)
    first.close()
    more = append_numbered(store, 8, 4)
    proj = CountingProjection()
    second = durable_db.projections(durable_db.store(plain_codec()), [proj])
    second.wait_caught_up(WAIT)
    applied = sorted(p for page in proj.applied_pages for p in page)
    assert applied == more, "the second set applied only what the first had not"
    assert status_of(second).position == more[-1]
    assert assert_exactly_once(store) == len(positions) + len(more)
