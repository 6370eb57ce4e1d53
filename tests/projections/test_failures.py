"""Failure strategies of a projection whose handler raises for chosen events (issue item 4).

The failing event sits in the middle of a page (``page_size=5``), so each
test also checks that the page's good events are neither lost nor applied
twice: the counting projection must hold every applied position exactly once.
"""

from __future__ import annotations

import threading

import pytest

from meerkat_runtime import MeerkatRuntimeError
from meerkat_runtime.projections import FailureStrategy, ProjectionSet, ProjectionStatus
from meerkat_runtime.store import EventStore, NewEvent, RecordedEvent

from ..waiting import WAIT, wait_until
from ._support import (
    TEST_TOPIC,
    CountingProjection,
    EventFilter,
    assert_exactly_once,
    plain_codec,
    seen_counts,
)
from .conftest import Db


def append_numbered(store: EventStore, first: int, count: int, session: str = "s") -> list[int]:
    """Append events ``{"i": first}`` ... one per transaction; return their positions."""
    version = store.session_version(session)
    positions = []
    for i in range(first, first + count):
        (rec,) = store.append(session, version, [NewEvent(TEST_TOPIC, {"i": i})])
        version += 1
        positions.append(rec.position)
    return positions


def bad(*numbers: int) -> EventFilter:
    def predicate(e: RecordedEvent) -> bool:
        return e.data.get("i") in numbers

    return predicate


def status_of(pset: ProjectionSet, name: str = "counting") -> ProjectionStatus:
    return next(s for s in pset.status() if s.name == name)


def test_fail_stops_before_the_bad_event(db: Db) -> None:
    store = db.store(plain_codec())
    positions = append_numbered(store, 0, 20)  # the bad one (i=7) is mid-page: page 2 is 5..9
    fault = threading.Event()
    fault.set()
    proj = CountingProjection(
        fail_when=bad(7), fault_active=fault.is_set, failure_strategy=FailureStrategy("fail")
    )
    pset = db.projections(store, [proj], page_size=5)
    wait_until(lambda: status_of(pset).status == "failed", what="status failed")
    st = status_of(pset)
    assert st.position == positions[6] and st.head == positions[-1]
    assert st.lag == positions[-1] - positions[6]
    assert "injected failure" in (st.error or "")
    with pytest.raises(MeerkatRuntimeError, match="failed"):
        pset.wait_caught_up(WAIT)
    assert seen_counts(store) == {p: 1 for p in positions[:7]}
    # A failed projection stays put while the log grows.
    more = append_numbered(store, 20, 3)
    pset.poke()
    assert status_of(pset).status == "failed"
    assert seen_counts(store) == {p: 1 for p in positions[:7]}
    assert pset.skipped() == []
    # Once the fault is fixed, a rebuild starts it again from scratch.
    fault.clear()
    pset.rebuild("counting")
    pset.wait_caught_up(WAIT)
    assert status_of(pset).status == "running"
    assert assert_exactly_once(store) == len(positions) + len(more)


def test_skip_records_the_event_and_goes_on(db: Db) -> None:
    store = db.store(plain_codec())
    positions = append_numbered(store, 0, 20)
    proj = CountingProjection(fail_when=bad(7, 13), failure_strategy=FailureStrategy("skip"))
    pset = db.projections(store, [proj], page_size=5)
    pset.wait_caught_up(WAIT)
    skipped = pset.skipped()
    assert [(s.projection, s.position, s.session_id, s.topic) for s in skipped] == [
        ("counting", positions[7], "s", TEST_TOPIC),
        ("counting", positions[13], "s", TEST_TOPIC),
    ]
    assert all("injected failure" in s.error and s.skipped_at for s in skipped)
    assert pset.skipped("counting") == skipped and pset.skipped("other") == []
    good = [p for i, p in enumerate(positions) if i not in (7, 13)]
    assert seen_counts(store) == {p: 1 for p in good}
    st = status_of(pset)
    assert (st.status, st.lag, st.error) == ("running", 0, None)
    # Live events after a skip are applied as usual.
    more = append_numbered(store, 20, 7)
    pset.wait_caught_up(WAIT)
    assert seen_counts(store) == {p: 1 for p in good + more}


def test_retry_succeeds_when_the_fault_clears(db: Db) -> None:
    store = db.store(plain_codec())
    positions = append_numbered(store, 0, 12)
    fault = threading.Event()
    fault.set()
    strategy = FailureStrategy("retry", retries=10_000, backoff=0.002, max_backoff=0.01)
    proj = CountingProjection(
        fail_when=bad(3), fault_active=fault.is_set, failure_strategy=strategy
    )
    pset = db.projections(store, [proj], page_size=5)
    wait_until(lambda: status_of(pset).status == "retrying", what="status retrying")
    wait_until(lambda: proj.attempts.get(positions[3], 0) >= 4, what="a few retries")
    st = status_of(pset)
    assert st.position == positions[2] and "injected failure" in (st.error or "")
    with pytest.raises(TimeoutError):
        pset.wait_caught_up(0.05)  # retrying is not failed: it only times out
    fault.clear()
    pset.wait_caught_up(WAIT)
    st = status_of(pset)
    assert (st.status, st.error, st.lag) == ("running", None, 0)
    assert pset.skipped() == []
    assert assert_exactly_once(store) == len(positions)


def test_retry_gives_up_and_fails(db: Db) -> None:
    store = db.store(plain_codec())
    positions = append_numbered(store, 0, 12)
    strategy = FailureStrategy("retry", retries=3, backoff=0.001)
    proj = CountingProjection(fail_when=bad(8), failure_strategy=strategy)
    pset = db.projections(store, [proj], page_size=5)
    wait_until(lambda: status_of(pset).status == "failed", what="status failed")
    assert status_of(pset).position == positions[7]
    assert proj.attempts[positions[8]] >= 1 + strategy.retries
    assert seen_counts(store) == {p: 1 for p in positions[:8]}
    assert pset.skipped() == []
    with pytest.raises(MeerkatRuntimeError):
        pset.wait_caught_up(WAIT)


def test_retry_then_skip(db: Db) -> None:
    store = db.store(plain_codec())
    positions = append_numbered(store, 0, 12)
    strategy = FailureStrategy("retry_then_skip", retries=2, backoff=0.001)
    proj = CountingProjection(fail_when=bad(6), failure_strategy=strategy)
    pset = db.projections(store, [proj], page_size=5)
    pset.wait_caught_up(WAIT)
    assert proj.attempts[positions[6]] >= 1 + strategy.retries
    assert [s.position for s in pset.skipped()] == [positions[6]]
    assert seen_counts(store) == {p: 1 for i, p in enumerate(positions) if i != 6}
    assert status_of(pset).status == "running"


def test_failure_on_the_last_event_of_a_page(local_db: Db) -> None:
    store = local_db.store(plain_codec())
    positions = append_numbered(store, 0, 15)
    proj = CountingProjection(fail_when=bad(4, 5, 14), failure_strategy=FailureStrategy("skip"))
    pset = local_db.projections(store, [proj], page_size=5)
    pset.wait_caught_up(WAIT)
    assert [s.position for s in pset.skipped()] == [positions[4], positions[5], positions[14]]
    assert seen_counts(store) == {p: 1 for i, p in enumerate(positions) if i not in (4, 5, 14)}


def test_a_failing_projection_does_not_hold_back_the_others(local_db: Db) -> None:
    store = local_db.store(plain_codec())
    positions = append_numbered(store, 0, 10)
    broken = CountingProjection(
        "broken", fail_when=bad(2), failure_strategy=FailureStrategy("fail")
    )
    fine = CountingProjection("fine")
    pset = local_db.projections(store, [broken, fine], page_size=4)
    wait_until(lambda: status_of(pset, "broken").status == "failed")
    wait_until(lambda: status_of(pset, "fine").lag == 0)
    assert seen_counts(store, "fine") == {p: 1 for p in positions}
    assert seen_counts(store, "broken") == {p: 1 for p in positions[:2]}


def test_strategy_validation() -> None:
    with pytest.raises(ValueError):
        FailureStrategy("explode")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        FailureStrategy("retry", retries=-1)


def test_close_interrupts_a_long_retry(local_db: Db, caplog: pytest.LogCaptureFixture) -> None:
    """A projection retrying for a long time does not hold ``close`` up."""
    store = local_db.store(plain_codec())
    positions = append_numbered(store, 0, 5)
    strategy = FailureStrategy("retry", retries=1_000_000, backoff=0.01, max_backoff=0.01)
    proj = CountingProjection(fail_when=bad(2), failure_strategy=strategy)
    pset = ProjectionSet(store, [proj], poll_interval=0.05, page_size=5)
    try:
        wait_until(lambda: proj.attempts.get(positions[2], 0) >= 3, what="retrying")
    finally:
        pset.close()
    assert "did not stop in time" not in caplog.text
    assert seen_counts(store) == {p: 1 for p in positions[:2]}
    # Reopened, it resumes from the stored offset and retries the same event.
    again = CountingProjection()
    local_db.projections(store, [again]).wait_caught_up(WAIT)
    assert assert_exactly_once(store) == len(positions)
