"""The backend fixture of the conformance suite: one database per test, on each backend."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import StoredEvent

from meerkat_runtime.store import EventCodec, EventStore, open_store
from meerkat_runtime.store._eventsourcing import recorder_of

TOPICS = ("test.happened", "test.other")


def make_codec() -> EventCodec:
    """A codec with the topics the store tests use."""
    codec = EventCodec()
    for topic in TOPICS:
        codec.register(topic)
    return codec


@dataclass
class Backend:
    """One database on one backend; ``open`` gives store instances on it (like processes)."""

    name: str
    url: str
    path: Path | None = None
    stores: list[EventStore] = field(default_factory=list)

    def open(self, codec: EventCodec | None = None, **options: Any) -> EventStore:
        store = open_store(self.url, codec=codec or make_codec(), **options)
        self.stores.append(store)
        return store

    def raw_file_bytes(self) -> bytes:
        """The SQLite database file plus its WAL, as bytes on disk."""
        assert self.path is not None
        wal = self.path.with_name(self.path.name + "-wal")
        return self.path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "memory":
        b = Backend("memory", f"memory://test-{uuid.uuid4().hex}")
    elif request.param == "sqlite":
        path = tmp_path / "events.db"
        b = Backend("sqlite", f"sqlite:///{path}", path=path)
    else:
        b = Backend("postgres", request.getfixturevalue("postgres_url"))
    yield b
    for store in b.stores:
        store.close()


class GatedInserts:
    """Wraps a store recorder's ``insert_events``: the first call waits until ``release()``.

    While the writer thread is held there, appends queue up and then go into
    one group. ``sizes`` records the number of events of every call.
    """

    def __init__(self, store: EventStore, monkeypatch: pytest.MonkeyPatch) -> None:
        recorder = recorder_of(store)
        self._original = recorder.insert_events
        self.entered = threading.Event()
        self._released = threading.Event()
        self.sizes: list[int] = []
        monkeypatch.setattr(recorder, "insert_events", self._insert_events)

    def _insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Any:
        self.sizes.append(len(stored_events))
        if len(self.sizes) == 1:
            self.entered.set()
            assert self._released.wait(30), "test never released the gate"
        return self._original(stored_events, **kwargs)

    def release(self) -> None:
        self._released.set()
