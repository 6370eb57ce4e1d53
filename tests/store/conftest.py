"""The backend fixture of the conformance suite: one database per test, on each backend."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from meerkat_runtime.store import EventCodec, EventStore, open_store

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
