"""SnapshotStore conformance: snapshots as a cache that never breaks a read, on every backend."""

from __future__ import annotations

import logging

import pytest
from eventsourcing.cryptography import AESCipher

from meerkat_runtime.store import Snapshot

from ..conftest import Backend


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
    placeholder = "?"
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
