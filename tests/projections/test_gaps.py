"""Gap safety under concurrent writers (issue item 5).

Positions are allocated by the database and may have holes; a projection
that follows live must never move its offset past a position that was
allocated but is not committed yet (it would skip that event forever). Many
threads append concurrently, through one store, through two store instances
on one database (like two processes; one of them without group commit so its
appends are separate concurrent transactions), or through runtime sessions,
while a counting projection follows with small pages. At the end every event
of the log must have been applied exactly once.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable

import pytest

from meerkat_runtime import ConcurrencyConflict
from meerkat_runtime.store import EventStore, NewEvent

from ..waiting import WAIT
from ._support import TEST_TOPIC, CountingProjection, assert_exactly_once, plain_codec, prompt
from .conftest import Db


def run_threads(targets: list[Callable[[], None]]) -> None:
    errors: list[BaseException] = []

    def guard(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as e:  # reported by the test, not lost in a thread
                errors.append(e)

        return run

    threads = [threading.Thread(target=guard(t)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT * 4)
    assert not errors, errors[:3]


def writer(
    store: EventStore, prefix: str, sessions: int, appends: int, seed: int
) -> Callable[[], None]:
    """Append ``appends`` times (1 to 3 events each) to this writer's own sessions."""

    def run() -> None:
        rnd = random.Random(seed)
        versions = dict.fromkeys(range(sessions), 0)
        for n in range(appends):
            k = rnd.randrange(sessions)
            events = [NewEvent(TEST_TOPIC, {"n": n, "j": j}) for j in range(rnd.randint(1, 3))]
            store.append(f"{prefix}-{k}", versions[k], events)
            versions[k] += len(events)

    return run


def test_many_threads_one_store(db: Db) -> None:
    store = db.store(plain_codec())
    proj = CountingProjection()
    pset = db.projections(store, [proj], page_size=16, poll_interval=0.01)
    run_threads([writer(store, f"w{i}", 5, 80, seed=i) for i in range(8)])
    pset.wait_caught_up(WAIT)
    total = assert_exactly_once(store)
    assert total == store.max_position() or db.backend == "postgres"  # PG may leave holes
    assert len(proj.applied_pages) > 1, "followed live, page by page"


def test_two_store_instances_write_concurrently(db: Db) -> None:
    """Two "processes" on one database; the follower runs on a third instance."""
    a = db.store(plain_codec())
    b = db.store(plain_codec(), group_commit=False)  # each append its own transaction
    follower = db.store(plain_codec())
    pset = db.projections(follower, [CountingProjection()], page_size=8, poll_interval=0.01)
    targets = [writer(a, f"a{i}", 4, 60, seed=i) for i in range(4)]
    targets += [writer(b, f"b{i}", 4, 60, seed=100 + i) for i in range(4)]
    run_threads(targets)
    pset.wait_caught_up(WAIT)
    assert assert_exactly_once(follower) > 480


def test_contended_sessions_with_conflicts(db: Db) -> None:
    """Writers racing on the same sessions: conflicting appends write nothing; no holes are
    skipped by the projection (rolled-back inserts leave gaps in PostgreSQL sequences)."""
    a, b = db.store(plain_codec()), db.store(plain_codec(), group_commit=False)
    pset = db.projections(a, [CountingProjection()], page_size=5, poll_interval=0.01)
    conflicts = []

    def racer(store: EventStore, seed: int) -> Callable[[], None]:
        def run() -> None:
            rnd = random.Random(seed)
            for n in range(60):
                sid = f"shared-{rnd.randrange(3)}"
                try:
                    event = NewEvent(TEST_TOPIC, {"racer": seed, "n": n})  # unique payloads
                    store.append(sid, store.session_version(sid), [event])
                except ConcurrencyConflict:
                    conflicts.append(sid)

        return run

    run_threads([racer(s, i) for i, s in enumerate([a, b, a, b, a, b])])
    pset.wait_caught_up(WAIT)
    total = assert_exactly_once(a)
    assert total + len(conflicts) == 360


def test_runtime_sessions_accepting_concurrently(db: Db) -> None:
    rt = db.runtime()
    pset = db.projections(rt.store, [CountingProjection()], page_size=10, poll_interval=0.01)

    def accepter(i: int) -> Callable[[], None]:
        def run() -> None:
            for n in range(25):
                rt.session(f"acc-{i}-{n % 3}").accept(prompt(f"{i}/{n}"))

        return run

    run_threads([accepter(i) for i in range(8)])
    rt.projections.wait_caught_up(WAIT)
    pset.wait_caught_up(WAIT)
    assert assert_exactly_once(rt.store) == rt.store.max_position() or db.backend == "postgres"
    report = rt.verify()
    assert report.ok, report.mismatches[:10]
    assert report.inputs == 200 == rt.ledger.count()


@pytest.mark.slow
def test_many_writers_long(db: Db) -> None:
    a = db.store(plain_codec())
    b = db.store(plain_codec(), group_commit=False)
    pset = db.projections(a, [CountingProjection()], page_size=3, poll_interval=0.005)
    targets = [
        writer(s, f"{n}{i}", 6, 300, seed=i) for i in range(6) for n, s in (("a", a), ("b", b))
    ]
    run_threads(targets)
    pset.wait_caught_up(WAIT)
    assert assert_exactly_once(a) > 3600
