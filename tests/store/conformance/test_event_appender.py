"""EventAppender conformance: optimistic, atomic appends and group commit, on every backend."""

from __future__ import annotations

import threading
from concurrent.futures import Future

import orjson
import pytest
from eventsourcing.persistence import StoredEvent

from meerkat_runtime.errors import ConcurrencyConflict, StoreError
from meerkat_runtime.store import RecordedEvent
from meerkat_runtime.store._eventsourcing import recorder_of

from ...faulty_store import GatedCommits
from ..conftest import Backend
from ._events import happened, other


def test_empty_append_does_not_touch_the_database(backend: Backend) -> None:
    store = backend.open()
    gate = GatedCommits(store)
    gate.release()
    assert store.append("s", 0, []) == []
    assert store.append_async("s", 7, []).result() == []
    assert gate.sizes == []
    assert store.max_position() == 0


@pytest.mark.parametrize("group_commit", [True, False])
def test_concurrency_conflict_names_session_and_versions_and_writes_nothing(
    backend: Backend, group_commit: bool
) -> None:
    store = backend.open(group_commit=group_commit)
    store.append("s-7", 0, [happened(1), happened(2)])

    with pytest.raises(ConcurrencyConflict) as stale:
        store.append("s-7", 1, [happened(99)])
    assert (stale.value.session_id, stale.value.expected_version) == ("s-7", 1)
    assert stale.value.actual_version == 2
    assert "'s-7'" in str(stale.value)
    assert "expected version 1" in str(stale.value)
    assert "store has 2" in str(stale.value)

    # An expected version beyond the end would leave a gap: refused as well.
    with pytest.raises(ConcurrencyConflict) as ahead:
        store.append("s-7", 5, [happened(99)])
    assert ahead.value.actual_version == 2

    assert [e.data["n"] for e in store.read_session("s-7")] == [1, 2]
    assert store.max_position() == store.read_session("s-7")[-1].position


def test_conflict_with_a_write_of_another_store_instance(backend: Backend) -> None:
    first, second = backend.open(), backend.open()
    first.append("s", 0, [happened(1)])
    assert second.session_version("s") == 1
    first.append("s", 1, [happened(2)])
    # `second` last saw version 1: its cached knowledge is stale, the database decides.
    with pytest.raises(ConcurrencyConflict) as conflict:
        second.append("s", 1, [happened(3)])
    assert conflict.value.actual_version == 2
    assert [e.data["n"] for e in second.read_session("s")] == [1, 2]


def test_multi_event_append_is_atomic(backend: Backend) -> None:
    store = backend.open()
    # Plant version 3 behind the store's back, so that only the third event of
    # the append below clashes in the database.
    state, _ = store.serializer.encode_event("test.happened", {"n": 3}, "planted")
    recorder_of(store).insert_events([StoredEvent("s", 3, "test.happened", state)])

    with pytest.raises(ConcurrencyConflict):
        store.append("s", 0, [happened(1), happened(2), happened(3)])

    stored = recorder_of(store).select_events("s")
    assert [(e.originator_version, orjson.loads(e.state)["w"]) for e in stored] == [(3, "planted")]


@pytest.mark.parametrize("group_commit", [True, False])
def test_concurrent_appends_from_many_threads(backend: Backend, group_commit: bool) -> None:
    store = backend.open(group_commit=group_commit)
    threads_n, sessions_per_thread, events_per_session = 12, 4, 15
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for n in range(events_per_session):
                for s in range(sessions_per_thread):
                    store.append(f"t{t}-s{s}", n, [happened(n, t=t)])
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []

    log: list[RecordedEvent] = []
    while page := store.read_all(after_position=log[-1].position if log else 0, limit=100):
        log.extend(page)
    assert len(log) == threads_n * sessions_per_thread * events_per_session
    assert [e.position for e in log] == sorted({e.position for e in log})
    for t in range(threads_n):
        for s in range(sessions_per_thread):
            events = store.read_session(f"t{t}-s{s}")
            assert [e.version for e in events] == list(range(1, events_per_session + 1))
            assert [e.data["n"] for e in events] == list(range(events_per_session))
            in_log = [e for e in log if e.session_id == f"t{t}-s{s}"]
            assert in_log == events  # the log keeps each session's order


@pytest.mark.parametrize("group_commit", [True, False])
def test_racing_writers_on_one_session_leave_no_gap_and_no_duplicate(
    backend: Backend, group_commit: bool
) -> None:
    stores = [backend.open(group_commit=group_commit) for _ in range(2)]
    per_thread, threads_n = 15, 6
    conflicts = [0] * threads_n

    def work(t: int) -> None:
        store = stores[t % 2]
        written = 0
        while written < per_thread:
            version = store.session_version("hot")
            try:
                store.append("hot", version, [happened(written, t=t)])
                written += 1
            except ConcurrencyConflict:
                conflicts[t] += 1

    threads = [threading.Thread(target=work, args=(t,)) for t in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    events = stores[0].read_session("hot")
    assert [e.version for e in events] == list(range(1, per_thread * threads_n + 1))
    for t in range(threads_n):
        assert [e.data["n"] for e in events if e.data["t"] == t] == list(range(per_thread))


def test_group_commit_puts_queued_appends_in_one_transaction(backend: Backend) -> None:
    store = backend.open()
    gate = GatedCommits(store)
    held = store.append_async("gate", 0, [happened(0)])
    assert gate.entered.wait(10)
    futures = [store.append_async(f"s{n}", 0, [happened(n), other(n)]) for n in range(20)]
    # Two appends of one session in one group: the second builds on the first.
    futures.append(store.append_async("s0", 2, [happened(100)]))
    gate.release()
    results = [f.result(timeout=30) for f in futures]
    held.result(timeout=30)

    assert gate.sizes == [1, 41]
    assert [e.version for e in results[-1]] == [3]
    positions = [e.position for r in results for e in r]
    assert positions == sorted(positions)
    assert [e.data["n"] for e in store.read_session("s0")] == [0, 0, 100]


def test_a_group_larger_than_one_insert_statement_gets_the_positions_it_was_stored_at(
    backend: Backend,
) -> None:
    """Backends may insert a group with several rows per statement (SQLite: 500): every
    caller gets the positions its events really have, in order, across the statements."""
    store = backend.open()
    gate = GatedCommits(store)
    held = store.append_async("gate", 0, [happened(0)])
    assert gate.entered.wait(10)
    futures = [
        store.append_async(f"s{n}", 0, [happened(n, k=k) for k in range(150)]) for n in range(6)
    ]
    gate.release()
    held.result(timeout=30)
    results = [f.result(timeout=30) for f in futures]

    assert gate.sizes == [1, 900]
    returned = {(e.session_id, e.version): e.position for r in results for e in r}
    stored = {(e.session_id, e.version): e.position for e in store.read_all(limit=5000)}
    del stored[("gate", 1)]
    assert returned == stored
    for r in results:
        assert [e.data["k"] for e in r] == list(range(150))
        assert [e.position for e in r] == sorted(e.position for e in r)


def test_group_commit_falls_back_so_only_the_conflicting_append_fails(backend: Backend) -> None:
    store, elsewhere = backend.open(), backend.open()
    # Written by another instance: `store` does not know "taken" exists, so
    # its append below passes the cheap checks and clashes in the database.
    elsewhere.append("taken", 0, [happened(-1)])
    gate = GatedCommits(store)
    held = store.append_async("gate", 0, [happened(0)])
    assert gate.entered.wait(10)
    futures: dict[str, Future[list[RecordedEvent]]] = {}
    for n in range(10):
        futures[f"s{n}"] = store.append_async(f"s{n}", 0, [happened(n)])
        if n == 4:
            futures["taken"] = store.append_async("taken", 0, [happened(99), happened(100)])
    futures["s3-next"] = store.append_async("s3", 1, [happened(33)])
    # Same session and same expected version as s5 in the same group: it must
    # lose against the earlier arrival, whatever the batching.
    futures["s5-dup"] = store.append_async("s5", 0, [happened(55)])
    gate.release()
    held.result(timeout=30)

    with pytest.raises(ConcurrencyConflict) as conflict:
        futures.pop("taken").result(timeout=30)
    assert (conflict.value.expected_version, conflict.value.actual_version) == (0, 1)
    with pytest.raises(ConcurrencyConflict) as duplicate:
        futures.pop("s5-dup").result(timeout=30)
    assert duplicate.value.actual_version == 1
    for future in futures.values():
        assert len(future.result(timeout=30)) == 1

    # One combined attempt, then every append of the group on its own.
    # (s5-dup is not in the combined attempt: it could only clash with s5.)
    assert gate.sizes[:2] == [1, 13]
    assert sorted(gate.sizes[2:]) == [1] * 11 + [2]
    assert [e.data["n"] for e in store.read_session("taken")] == [-1]
    assert [e.data["n"] for e in store.read_session("s3")] == [3, 33]
    assert [e.data["n"] for e in store.read_session("s5")] == [5]
    assert len(store.session_ids()) == 12


def test_max_batch_events_bounds_a_group(backend: Backend) -> None:
    store = backend.open(max_batch_events=5)
    gate = GatedCommits(store)
    held = store.append_async("gate", 0, [happened(0)])
    assert gate.entered.wait(10)
    futures = [store.append_async(f"s{n}", 0, [happened(n), happened(n)]) for n in range(6)]
    big = store.append_async("big", 0, [happened(n) for n in range(7)])  # alone, still atomic
    gate.release()
    for future in [held, *futures, big]:
        future.result(timeout=30)
    assert gate.sizes == [1, 4, 4, 4, 7]


def test_close_drains_queued_appends(backend: Backend) -> None:
    store = backend.open()
    futures = [store.append_async(f"s{n}", 0, [happened(n)]) for n in range(50)]
    store.close()
    assert all(len(f.result(timeout=0)) == 1 for f in futures)
    store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        store.append("s", 1, [happened(1)])
    with pytest.raises(StoreError, match="closed"):
        store.read_session("s0")
    assert len(backend.open().session_ids()) == 50
