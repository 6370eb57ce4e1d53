"""SessionLog conformance: per-session streams read back by version, on every backend."""

from __future__ import annotations

import pytest

from meerkat_runtime.errors import StoreError

from ..conftest import Backend
from ._events import happened, other


@pytest.mark.parametrize("group_commit", [True, False])
def test_append_returns_recorded_events_and_reads_them_back(
    backend: Backend, group_commit: bool
) -> None:
    store = backend.open(group_commit=group_commit, incarnation="writer-1")
    recorded = store.append("s-1", 0, [happened(1), other(2)])

    assert [(e.session_id, e.version, e.topic, e.data) for e in recorded] == [
        ("s-1", 1, "test.happened", {"n": 1}),
        ("s-1", 2, "test.other", {"n": 2}),
    ]
    assert recorded[0].position < recorded[1].position
    assert {e.writer for e in recorded} == {"writer-1"}
    assert store.read_session("s-1") == recorded
    assert store.read_all() == recorded
    assert store.session_version("s-1") == 2


def test_read_session_after_version_and_limit(backend: Backend) -> None:
    store = backend.open()
    for n in range(10):
        store.append("s", n, [happened(n + 1)])
    store.append("t", 0, [happened(100)])

    assert [e.version for e in store.read_session("s", after_version=3, limit=4)] == [4, 5, 6, 7]
    assert [e.data["n"] for e in store.read_session("s", after_version=8)] == [9, 10]
    assert store.read_session("s", after_version=10) == []
    assert store.read_session("unknown") == []


def test_session_version(backend: Backend) -> None:
    store = backend.open()
    assert store.session_version("s") == 0
    store.append("s", 0, [happened(1), happened(2), happened(3)])
    assert store.session_version("s") == 3
    assert store.session_version("s-other") == 0


def test_session_ids_in_order_of_first_event(backend: Backend) -> None:
    store = backend.open()
    for session_id in ["charlie", "alpha", "bravo"]:
        store.append(session_id, 0, [happened(1)])
    store.append("alpha", 1, [happened(2)])
    store.append("delta", 0, [happened(1)])
    assert store.session_ids() == ["charlie", "alpha", "bravo", "delta"]


def test_arbitrary_session_ids(backend: Backend) -> None:
    store = backend.open()
    odd = ["s/1 ü 🐈 'quote' \"dq\"", "x" * 256, "550e8400-e29b-41d4-a716-446655440000", " "]
    for session_id in odd:
        store.append(session_id, 0, [happened(1)])
    assert store.session_ids() == odd
    for session_id in odd:
        assert [e.session_id for e in store.read_session(session_id)] == [session_id]
    for bad in ["", "x" * 257, "nul\x00byte"]:
        with pytest.raises(StoreError):
            store.append(bad, 0, [happened(1)])


def test_many_sessions_many_events_round_trip(backend: Backend) -> None:
    store = backend.open()
    futures = [
        store.append_async(f"bulk-{n}", 0, [happened(i, payload="x" * n) for i in range(3)])
        for n in range(200)
    ]
    for future in futures:
        future.result(timeout=60)
    assert len(store.session_ids()) == 200
    assert store.read_session("bulk-199")[2].data == {"n": 2, "payload": "x" * 199}


def test_read_sessions_reads_many_sessions_after_their_own_versions(backend: Backend) -> None:
    store = backend.open()
    for n in range(1, 6):
        store.append("a", n - 1, [happened(n)])
    store.append("b b/ü", 0, [happened(1), other(2)])
    store.append("c", 0, [happened(1)])
    # More sessions than one batch statement holds (SQLite 400, PostgreSQL 1000).
    many = [f"m-{i}" for i in range(1100)]
    for sid in many:
        store.append(sid, 0, [happened(1)])

    got = store.read_sessions({"a": 2, "b b/ü": 0, "c": 1, "unknown": 0, **{s: 0 for s in many}})

    assert list(got)[:4] == ["a", "b b/ü", "c", "unknown"]
    assert [e.version for e in got["a"]] == [3, 4, 5]
    assert got["a"] == store.read_session("a", after_version=2)
    assert got["b b/ü"] == store.read_session("b b/ü")
    assert got["c"] == [] and got["unknown"] == []
    assert all(got[s] == store.read_session(s) for s in many)
    assert store.read_sessions({}) == {}


def test_batch_reads_refuse_an_invalid_session_id(backend: Backend) -> None:
    store = backend.open()
    with pytest.raises(StoreError):
        store.read_sessions({"": 0})
    with pytest.raises(StoreError):
        store.load_snapshots([""])


def test_options_are_exposed(backend: Backend) -> None:
    store = backend.open(snapshot_interval=25)
    assert store.snapshot_interval == 25
    assert backend.open().snapshot_interval == 100
    assert "meerkat-test-password" not in store.url
    assert "***" in store.url or backend.name != "postgres"
