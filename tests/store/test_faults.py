"""Faults in the middle of a group commit: all or nothing, every caller told, store recovers."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pytest
from eventsourcing.cryptography import AESCipher
from eventsourcing.persistence import OperationalError, StoredEvent
from eventsourcing.popo import POPOApplicationRecorder
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder

from meerkat_runtime.errors import ConcurrencyConflict, StoreError
from meerkat_runtime.store import EventStore, NewEvent
from meerkat_runtime.store._eventsourcing import recorder_of

from .conftest import Backend, GatedInserts


class InjectedFault(RuntimeError):
    pass


class FaultyInserts:
    """Makes the recorder fail inside its insert transaction while ``armed``.

    On SQL backends it first really inserts half of the batch in the open
    transaction (and records how many rows that transaction then saw), so the
    test proves those rows are rolled back, not merely never written.
    Batches that do not touch a ``doomed-`` session pass untouched.
    """

    def __init__(self, store: EventStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.armed = threading.Event()
        self.rows_seen_in_transaction: list[int] = []
        recorder: Any = recorder_of(store)
        table = store.table_name("meerkat_events")
        count = f"SELECT count(*) AS n FROM {table} WHERE originator_id LIKE 'doomed-%'"

        def hit(stored_events: Sequence[StoredEvent]) -> bool:
            return self.armed.is_set() and any(
                str(e.originator_id).startswith("doomed-") for e in stored_events
            )

        if isinstance(recorder, SQLiteApplicationRecorder):
            sqlite_original = recorder._insert_events

            def sqlite_insert(c: Any, stored_events: Sequence[StoredEvent], **kw: Any) -> Any:
                if not hit(stored_events):
                    return sqlite_original(c, stored_events, **kw)
                sqlite_original(c, stored_events[: len(stored_events) // 2], **kw)
                c.execute(count)
                self.rows_seen_in_transaction.append(c.fetchone()[0])
                raise InjectedFault("injected fault after some rows")

            monkeypatch.setattr(recorder, "_insert_events", sqlite_insert)
        elif isinstance(recorder, PostgresApplicationRecorder):
            pg_original = recorder._insert_stored_events

            def pg_insert(curs: Any, stored_events: Sequence[StoredEvent], **kw: Any) -> Any:
                if not hit(stored_events):
                    return pg_original(curs, stored_events, **kw)
                pg_original(curs, stored_events[: len(stored_events) // 2], **kw)
                curs.execute(count)
                self.rows_seen_in_transaction.append(curs.fetchone()["n"])
                raise InjectedFault("injected fault after some rows")

            monkeypatch.setattr(recorder, "_insert_stored_events", pg_insert)
        else:
            assert isinstance(recorder, POPOApplicationRecorder)
            popo_original = recorder._assert_uniqueness

            # The POPO recorder has no transaction: it checks, then appends.
            def popo_check(stored_events: Sequence[StoredEvent], **kw: Any) -> None:
                if hit(stored_events):
                    raise InjectedFault("injected fault before the write")
                popo_original(stored_events, **kw)

            monkeypatch.setattr(recorder, "_assert_uniqueness", popo_check)


def test_fault_in_a_group_commit_writes_nothing_and_fails_every_caller(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = backend.open()
    fault = FaultyInserts(store, monkeypatch)
    gate = GatedInserts(store, monkeypatch)
    held = store.append_async("gate", 0, [NewEvent("test.happened", {"n": 0})])
    assert gate.entered.wait(10)
    fault.armed.set()
    futures = [
        store.append_async(f"doomed-{n}", 0, [NewEvent("test.happened", {"n": n})] * 3)
        for n in range(8)
    ]
    futures.append(store.append_async("doomed-0", 3, [NewEvent("test.other", {"n": 9})]))
    gate.release()
    assert [e.version for e in held.result(timeout=30)] == [1]

    for future in futures:
        error = future.exception(timeout=30)
        assert isinstance(error, StoreError)
        assert not isinstance(error, ConcurrencyConflict)
        assert "injected fault" in str(error)
        assert "nothing of it was written" in str(error)
    assert gate.sizes == [1, 25]  # all of them in the one failed transaction
    if backend.name != "memory":
        assert fault.rows_seen_in_transaction == [12]

    # Nothing of the batch exists, seen from this and from a fresh instance.
    for reader in (store, backend.open()):
        assert [e.session_id for e in reader.read_all()] == ["gate"]
        assert reader.session_ids() == ["gate"]
        assert all(reader.session_version(f"doomed-{n}") == 0 for n in range(8))

    # The fault clears: the same appends now succeed, and later ones too.
    fault.armed.clear()
    for n in range(8):
        assert [
            e.version for e in store.append(f"doomed-{n}", 0, [NewEvent("test.happened", {"n": n})])
        ] == [1]
    assert store.append("gate", 1, [NewEvent("test.other", {"n": 1})])[0].version == 2
    assert len(store.read_all()) == 10


def test_fault_without_group_commit_fails_only_that_append(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = backend.open(group_commit=False)
    fault = FaultyInserts(store, monkeypatch)
    fault.armed.set()
    with pytest.raises(StoreError, match="injected fault"):
        store.append("doomed-1", 0, [NewEvent("test.happened", {"n": 1})] * 4)
    store.append("fine", 0, [NewEvent("test.happened", {"n": 1})])
    assert store.session_ids() == ["fine"]
    fault.armed.clear()
    store.append("doomed-1", 0, [NewEvent("test.happened", {"n": 1})])
    assert store.session_ids() == ["fine", "doomed-1"]


def test_a_failing_listener_does_not_break_appends(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    store = backend.open()
    calls: list[int] = []

    def broken(position: int) -> None:
        calls.append(position)
        raise RuntimeError("listener bug")

    store.add_listener(broken)
    store.append("s", 0, [NewEvent("test.happened", {"n": 1})])
    store.append("s", 1, [NewEvent("test.happened", {"n": 2})])
    assert len(calls) == 2
    assert "listener bug" in caplog.text


@pytest.mark.parametrize("cipher", [False, True])
def test_retrying_an_append_whose_acknowledgement_was_lost(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, cipher: bool
) -> None:
    if backend.name == "memory":
        pytest.skip("memory:// has no connection that could lose an acknowledgement")
    options: dict[str, Any] = {"cipher_key": AESCipher.create_key(16)} if cipher else {}
    store = backend.open(incarnation="me", **options)
    recorder: Any = recorder_of(store)
    original = recorder.insert_events
    lose = threading.Event()

    def commit_then_lose_the_ack(stored_events: Sequence[StoredEvent], **kw: Any) -> Any:
        ids = original(stored_events, **kw)
        if lose.is_set():
            lose.clear()
            raise OperationalError("server closed the connection unexpectedly")
        return ids

    monkeypatch.setattr(recorder, "insert_events", commit_then_lose_the_ack)
    events = [NewEvent("test.happened", {"n": 1}), NewEvent("test.other", {"n": 2})]
    lose.set()
    with pytest.raises(StoreError, match="closed the connection"):
        store.append("s", 0, events)
    assert store.session_version("s") == 2  # it did commit

    again = store.append("s", 0, events)  # the caller's retry
    assert again == store.read_session("s")
    assert len(store.read_all()) == 2

    # Not the same events: a real conflict, whoever writes them.
    with pytest.raises(ConcurrencyConflict):
        store.append(
            "s", 0, [NewEvent("test.happened", {"n": 1}), NewEvent("test.other", {"n": 3})]
        )
    with pytest.raises(ConcurrencyConflict):
        backend.open(incarnation="someone-else", **options).append("s", 0, events)


def test_a_listener_cannot_deadlock_the_writer(backend: Backend) -> None:
    store = backend.open()
    outcomes: list[str] = []

    def appending_listener(position: int) -> None:
        if store.session_version("echo") == 0 and not outcomes:
            try:
                store.append("echo", 0, [NewEvent("test.other", {"from": position})])
            except StoreError as e:
                outcomes.append(str(e))

    store.add_listener(appending_listener)
    store.append("s", 0, [NewEvent("test.happened", {"n": 1})])
    assert outcomes == ["append from a store listener would wait for itself: use append_async"]
