"""The backend conformance suite: every test runs on memory, SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import random
import threading
import zlib
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from eventsourcing.cryptography import AESCipher
from eventsourcing.persistence import StoredEvent

from meerkat_runtime.errors import ConcurrencyConflict, StoreError
from meerkat_runtime.store import EventCodec, NewEvent, RecordedEvent, Snapshot

from .conftest import Backend, GatedInserts


def happened(n: int, **extra: Any) -> NewEvent:
    return NewEvent("test.happened", {"n": n, **extra})


def other(n: int) -> NewEvent:
    return NewEvent("test.other", {"n": n})


# -- append and read -------------------------------------------------------------------------


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


def test_empty_append_does_not_touch_the_database(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = backend.open()
    gate = GatedInserts(store, monkeypatch)
    gate.release()
    assert store.append("s", 0, []) == []
    assert store.append_async("s", 7, []).result() == []
    assert gate.sizes == []
    assert store.max_position() == 0


# -- optimistic concurrency ------------------------------------------------------------------


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
    store.events_recorder.insert_events([StoredEvent("s", 3, "test.happened", state)])

    with pytest.raises(ConcurrencyConflict):
        store.append("s", 0, [happened(1), happened(2), happened(3)])

    stored = store.events_recorder.select_events("s")
    assert [(e.originator_version, orjson.loads(e.state)["w"]) for e in stored] == [(3, "planted")]


# -- the store-wide log ----------------------------------------------------------------------


def test_read_all_pages_in_position_order_with_topic_filter(backend: Backend) -> None:
    store = backend.open()
    versions: dict[str, int] = {}
    expected: list[tuple[str, int, str]] = []
    rng = random.Random(4)
    for n in range(23):
        session_id = rng.choice(["a", "b", "c"])
        event = happened(n) if n % 3 else other(n)
        version = versions.get(session_id, 0)
        store.append(session_id, version, [event])
        versions[session_id] = version + 1
        expected.append((session_id, version + 1, event.topic))

    pages: list[list[RecordedEvent]] = []
    after = 0
    while page := store.read_all(after_position=after, limit=5):
        assert len(page) <= 5
        pages.append(page)
        after = page[-1].position
    log = [e for page in pages for e in page]
    assert len(pages) == 5
    assert [(e.session_id, e.version, e.topic) for e in log] == expected
    positions = [e.position for e in log]
    assert positions == sorted(set(positions))
    assert store.max_position() == positions[-1]

    only_other = store.read_all(topics=["test.other"], limit=100)
    assert [e.data["n"] for e in only_other] == [n for n in range(23) if n % 3 == 0]
    assert (
        store.read_all(after_position=only_other[2].position, topics=["test.other"], limit=2)
        == (only_other[3:5])
    )
    assert store.read_all(after_position=positions[-1]) == []


def test_max_position_of_an_empty_store(backend: Backend) -> None:
    store = backend.open()
    assert store.max_position() == 0
    assert store.read_all() == []
    assert store.session_ids() == []


def test_listener_hears_each_durable_commit(backend: Backend) -> None:
    store = backend.open()
    heard: list[tuple[int, int]] = []

    def listener(position: int) -> None:
        # What the listener is told is already readable.
        heard.append((position, store.max_position()))

    store.add_listener(listener)
    first = store.append("s", 0, [happened(1), happened(2)])
    second = store.append("t", 0, [happened(3)])
    assert heard == [
        (first[-1].position, first[-1].position),
        (second[0].position, second[0].position),
    ]


# -- snapshots -------------------------------------------------------------------------------


def test_snapshots_latest_version_wins(backend: Backend) -> None:
    store = backend.open()
    assert store.load_snapshot("s") is None
    store.save_snapshot("s", 5, {"state": "five"})
    assert store.load_snapshot("s") == Snapshot("s", 5, {"state": "five"})
    store.save_snapshot("s", 3, {"state": "three"})  # older: ignored
    assert store.load_snapshot("s") == Snapshot("s", 5, {"state": "five"})
    store.save_snapshot("s", 8, {"state": "eight", "list": [1, 2]})
    assert store.load_snapshot("s") == Snapshot("s", 8, {"state": "eight", "list": [1, 2]})
    store.save_snapshot("s", 8, {"state": "eight again"})  # same version: replaces
    assert store.load_snapshot("s") == Snapshot("s", 8, {"state": "eight again"})
    assert store.load_snapshot("other") is None
    # A second instance sees the same snapshot.
    assert backend.open().load_snapshot("s") == Snapshot("s", 8, {"state": "eight again"})


def test_unreadable_snapshot_is_ignored_with_a_warning(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    writer = backend.open(cipher_key=AESCipher.create_key(16))
    writer.save_snapshot("s", 4, {"state": 1})
    reader = backend.open(cipher_key=AESCipher.create_key(16))  # another key: undecryptable
    with caplog.at_level(logging.WARNING, logger="meerkat_runtime.store"):
        assert reader.load_snapshot("s") is None
    assert "ignoring unreadable snapshot of session 's' at version 4" in caplog.text
    assert writer.load_snapshot("s") == Snapshot("s", 4, {"state": 1})


def test_corrupt_snapshot_bytes_are_ignored_with_a_warning(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    if backend.name == "memory":
        pytest.skip("memory snapshots live outside any SQL database")
    store = backend.open()
    store.save_snapshot("s", 2, {"state": 1})
    placeholder = "?" if store.paramstyle == "qmark" else "%s"
    with store.transaction() as cursor:
        cursor.execute(
            f"UPDATE {store.table_name('meerkat_snapshots')} SET state = {placeholder}",
            (b"\x00not json",),
        )
    with caplog.at_level(logging.WARNING, logger="meerkat_runtime.store"):
        assert store.load_snapshot("s") is None
    assert "unreadable snapshot" in caplog.text
    store.save_snapshot("s", 2, {"state": 2})  # a fresh one at the same version heals it
    assert store.load_snapshot("s") == Snapshot("s", 2, {"state": 2})


# -- codec: upcasting, writer, encryption, compression ---------------------------------------


def test_upcasting_on_read_after_the_schema_changed(backend: Backend) -> None:
    old = EventCodec()
    old.register("msg.received")
    first = backend.open(codec=old)
    first.append("s", 0, [NewEvent("msg.received", {"text": "hello"})])
    first.close()

    new = EventCodec()
    new.register(
        "msg.received",
        version=3,
        upcasters={1: lambda d: {**d, "lang": "en"}, 2: lambda d: {**d, "chars": len(d["text"])}},
    )
    second = backend.open(codec=new)
    second.append("s", 1, [NewEvent("msg.received", {"text": "salut", "lang": "fr", "chars": 5})])
    assert [e.data for e in second.read_session("s")] == [
        {"text": "hello", "lang": "en", "chars": 5},
        {"text": "salut", "lang": "fr", "chars": 5},
    ]
    assert [e.data for e in second.read_all()] == [e.data for e in second.read_session("s")]

    # The old program cannot read what the new one wrote, and says why.
    third = backend.open(codec=old)
    with pytest.raises(StoreError) as newer:
        third.read_session("s")
    message = str(newer.value)
    assert "'msg.received'" in message
    assert "schema version 3" in message
    assert "registers version 1" in message


def test_unregistered_topic_and_non_json_payload_are_refused(backend: Backend) -> None:
    store = backend.open()
    with pytest.raises(StoreError, match="not registered"):
        store.append("s", 0, [happened(1), NewEvent("nope", {})])
    with pytest.raises(StoreError, match="not JSON-native"):
        store.append("s", 0, [happened(1, at=datetime.now(UTC))])
    with pytest.raises(StoreError, match="must be a dict"):
        store.append("s", 0, [NewEvent("test.happened", [1, 2])])  # type: ignore[arg-type]
    assert store.session_version("s") == 0


def test_writer_incarnation_is_recorded(backend: Backend) -> None:
    a = backend.open(incarnation="node-a/1")
    b = backend.open(incarnation="node-b/7")
    a.append("s", 0, [happened(1)])
    b.append("s", 1, [happened(2)])
    assert [e.writer for e in a.read_session("s")] == ["node-a/1", "node-b/7"]
    assert backend.open().incarnation not in ("node-a/1", "node-b/7")


def _raw_states(backend: Backend, session_id: str) -> list[bytes]:
    reader = backend.open()
    return [e.state for e in reader.events_recorder.select_events(session_id)]


MARKER = "plaintext-marker-5f3a"


def test_encryption_at_rest(backend: Backend) -> None:
    key = AESCipher.create_key(32)
    store = backend.open(cipher_key=key)
    store.append("secret", 0, [happened(1, note=MARKER)])
    store.save_snapshot("secret", 1, {"note": MARKER})

    (encrypted,) = _raw_states(backend, "secret")
    assert MARKER.encode() not in encrypted
    assert b'"n"' not in encrypted
    snapshot = store._get_snapshot("secret")
    assert snapshot is not None
    assert MARKER.encode() not in snapshot[1]
    if backend.path is not None:
        assert MARKER.encode() not in backend.raw_file_bytes()

    # Control: without a key the same check finds the marker.
    plain = backend.open()
    plain.append("clear", 0, [happened(1, note=MARKER)])
    assert MARKER.encode() in _raw_states(backend, "clear")[0]
    if backend.path is not None:
        assert MARKER.encode() in backend.raw_file_bytes()

    assert [e.data["note"] for e in store.read_session("secret")] == [MARKER]
    assert store.load_snapshot("secret") == Snapshot("secret", 1, {"note": MARKER})
    with pytest.raises(StoreError, match="cipher_key"):
        plain.read_session("secret")
    assert backend.open(cipher_key=key).read_session("secret")[0].data["note"] == MARKER


def test_compression_round_trip(backend: Backend) -> None:
    store = backend.open(compress=True)
    payload = {"text": "all work and no play " * 200, "n": 1}
    store.append("s", 0, [NewEvent("test.happened", payload)])
    store.save_snapshot("s", 1, payload)

    (raw,) = _raw_states(backend, "s")
    assert len(raw) < len(orjson.dumps(payload)) / 10
    assert orjson.loads(zlib.decompress(raw))["d"] == payload
    assert store.read_session("s")[0].data == payload
    assert store.load_snapshot("s") == Snapshot("s", 1, payload)


def test_compression_and_encryption_together(backend: Backend) -> None:
    key = AESCipher.create_key(24)
    store = backend.open(compress=True, cipher_key=key)
    payload = {"text": MARKER * 100}
    store.append("s", 0, [NewEvent("test.happened", payload)])
    (raw,) = _raw_states(backend, "s")
    assert MARKER.encode() not in raw
    assert len(raw) < len(MARKER) * 10
    assert store.read_all()[0].data == payload


# -- concurrency and group commit ------------------------------------------------------------


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


def test_group_commit_puts_queued_appends_in_one_transaction(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = backend.open()
    gate = GatedInserts(store, monkeypatch)
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


def test_group_commit_falls_back_so_only_the_conflicting_append_fails(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, elsewhere = backend.open(), backend.open()
    # Written by another instance: `store` does not know "taken" exists, so
    # its append below passes the cheap checks and clashes in the database.
    elsewhere.append("taken", 0, [happened(-1)])
    gate = GatedInserts(store, monkeypatch)
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


def test_max_batch_events_bounds_a_group(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    store = backend.open(max_batch_events=5)
    gate = GatedInserts(store, monkeypatch)
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


# -- transactions for projections ------------------------------------------------------------


def test_transaction_commits_or_rolls_back(backend: Backend) -> None:
    store = backend.open()
    table = store.table_name("test_read_model")
    p = "?" if store.paramstyle == "qmark" else "%s"
    with store.transaction() as cursor:
        cursor.execute(f"CREATE TABLE {table} (k TEXT PRIMARY KEY, v INTEGER NOT NULL)")
        cursor.execute(f"INSERT INTO {table} (k, v) VALUES ({p}, {p})", ("a", 1))
    with pytest.raises(RuntimeError), store.transaction() as cursor:
        cursor.execute(f"INSERT INTO {table} (k, v) VALUES ({p}, {p})", ("b", 2))
        raise RuntimeError("abort")
    with store.transaction() as cursor:
        cursor.execute(f"SELECT k, v FROM {table} ORDER BY k")
        assert [(row["k"], row["v"]) for row in cursor.fetchall()] == [("a", 1)]


def test_options_are_exposed(backend: Backend) -> None:
    store = backend.open(snapshot_interval=25)
    assert store.snapshot_interval == 25
    assert backend.open().snapshot_interval == 100
    assert store.dialect in ("sqlite", "postgresql")
    assert "meerkat-test-password" not in store.url
    assert "***" in store.url or backend.name != "postgres"


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


# -- batch reads (recovery) ------------------------------------------------------------------


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


def test_load_snapshots_of_many_sessions(backend: Backend) -> None:
    store = backend.open()
    store.save_snapshot("a", 3, {"state": "a3"})
    store.save_snapshot("a", 5, {"state": "a5"})
    store.save_snapshot("b", 1, {"state": "b1"})
    many = [f"m-{i}" for i in range(1100)]
    for sid in many:
        store.save_snapshot(sid, 2, {"state": sid})

    got = store.load_snapshots(["a", "b", "none", "a", *many])

    assert got["a"] == Snapshot("a", 5, {"state": "a5"})
    assert got["b"] == Snapshot("b", 1, {"state": "b1"})
    assert "none" not in got
    assert all(got[s] == Snapshot(s, 2, {"state": s}) for s in many)
    assert len(got) == 2 + len(many)
    assert store.load_snapshots([]) == {}


def test_load_snapshots_leaves_out_unreadable_ones(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    writer = backend.open(cipher_key=AESCipher.create_key(16))
    writer.save_snapshot("s", 4, {"state": 1})
    reader = backend.open(cipher_key=AESCipher.create_key(16))
    with caplog.at_level(logging.WARNING, logger="meerkat_runtime.store"):
        assert reader.load_snapshots(["s"]) == {}
    assert "ignoring unreadable snapshot of session 's' at version 4" in caplog.text
    assert writer.load_snapshots(["s"]) == {"s": Snapshot("s", 4, {"state": 1})}


def test_batch_reads_refuse_an_invalid_session_id(backend: Backend) -> None:
    store = backend.open()
    with pytest.raises(StoreError):
        store.read_sessions({"": 0})
    with pytest.raises(StoreError):
        store.load_snapshots([""])
