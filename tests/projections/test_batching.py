"""Live runners batch: at most one read-model transaction per ``batch_interval``.

A read-model transaction costs much more than an event in it, so a runner that
has caught up waits out the rest of ``batch_interval`` after the last page it
applied and applies the commits that landed meanwhile together. A backlog is read page after
page without that wait, and closing the set cuts the wait short. No timing is
asserted: the intervals are long (seconds) so that what a runner did or did not
do within one is certain.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from meerkat_runtime.store import NewEvent

from ..waiting import WAIT
from ._support import TEST_TOPIC, CountingProjection, plain_codec, stored_offset
from .conftest import Db

LONG = 3.0  # much longer than an append or a poll takes, even on a loaded machine


def test_commits_within_the_batch_interval_share_one_transaction(db: Db) -> None:
    store = db.store(plain_codec())
    proj = CountingProjection()
    pset = db.projections(store, [proj], poll_interval=60, batch_interval=LONG)
    store.append("s", 0, [NewEvent(TEST_TOPIC, {"n": 0})])
    pset.wait_caught_up(WAIT)  # live now: the next poll waits for the interval

    first = store.append("s", 1, [NewEvent(TEST_TOPIC, {"n": 1})])
    time.sleep(0.3)  # ample for a runner that polled at once to apply it
    assert stored_offset(store) < first[-1].position, "applied before the interval ended"
    later = [store.append("s", v, [NewEvent(TEST_TOPIC, {"n": v})]) for v in range(2, 6)]
    pset.wait_caught_up(WAIT)

    written = [first[-1].position, *(r[-1].position for r in later)]
    assert proj.applied_pages[-1] == written  # five commits, one read-model transaction


def test_a_backlog_is_read_page_after_page_without_waiting(db: Db) -> None:
    store = db.store(plain_codec())
    for v in range(12):
        store.append("s", v, [NewEvent(TEST_TOPIC, {"n": v})])
    proj = CountingProjection()
    # One page per message: each page is its own poll, none of them waits an hour.
    pset = db.projections(store, [proj], page_size=2, pages_per_message=1, batch_interval=3600)
    pset.wait_caught_up(WAIT)
    assert [len(p) for p in proj.applied_pages] == [2] * 6


def test_close_cuts_a_batch_wait_short(db: Db, caplog: pytest.LogCaptureFixture) -> None:
    store = db.store(plain_codec())
    proj = CountingProjection()
    pset = db.projections(store, [proj], poll_interval=60, batch_interval=3600)
    store.append("s", 0, [NewEvent(TEST_TOPIC, {"n": 0})])
    pset.wait_caught_up(WAIT)
    store.append("s", 1, [NewEvent(TEST_TOPIC, {"n": 1})])  # the runner now waits an hour
    with caplog.at_level(logging.WARNING, logger="meerkat_runtime"):
        pset.close()
    assert not [r for r in caplog.records if "did not stop" in r.getMessage()]


def test_runners_at_one_offset_share_a_page_read_after_their_poll(db: Db) -> None:
    store = db.store(plain_codec())
    for v in range(3):
        store.append("s", v, [NewEvent(TEST_TOPIC, {"n": v})])
    pset = db.projections(store, [], poll_interval=60)
    reads: list[int] = []
    read_all = store.read_all

    def counting_read_all(after_position: int = 0, limit: int = 500, topics: Any = ()) -> Any:
        reads.append(after_position)
        return read_all(after_position=after_position, limit=limit, topics=topics)

    store.read_all = counting_read_all  # type: ignore[method-assign]
    polled = time.monotonic()
    first = pset.read_log(0, 10, polled)
    assert pset.read_log(0, 10, polled) == first and reads == [0]  # read once, for both
    # A runner that took its poll after that read began may be answering a later commit.
    later = store.append("s", 3, [NewEvent(TEST_TOPIC, {"n": 3})])
    fresh = pset.read_log(0, 10, time.monotonic())
    assert reads == [0, 0] and fresh[-1].position == later[-1].position
