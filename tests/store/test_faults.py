"""Faults in the middle of a group commit: all or nothing, every caller told, store recovers."""

from __future__ import annotations

from typing import Any

import pytest
from eventsourcing.cryptography import AESCipher

from meerkat_runtime.errors import ConcurrencyConflict, StoreError
from meerkat_runtime.store import NewEvent

from ..faulty_store import Fault, FaultInjector, FaultyInserts, GatedCommits, fail_next
from .conftest import Backend


def test_fault_in_a_group_commit_writes_nothing_and_fails_every_caller(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = backend.open()
    fault = FaultyInserts(store, monkeypatch)
    gate = GatedCommits(store)
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
def test_retrying_an_append_whose_acknowledgement_was_lost(backend: Backend, cipher: bool) -> None:
    if backend.name == "memory":
        pytest.skip("memory:// has no connection that could lose an acknowledgement")
    options: dict[str, Any] = {"cipher_key": AESCipher.create_key(16)} if cipher else {}
    store = backend.open(incarnation="me", **options)
    lost = Fault("after", message="server closed the connection unexpectedly")
    faults = FaultInjector(store)
    events = [NewEvent("test.happened", {"n": 1}), NewEvent("test.other", {"n": 2})]
    faults.policy = fail_next(1, ops={"commit"}, fault=lost)
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
