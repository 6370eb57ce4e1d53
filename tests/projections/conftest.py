"""Fixtures of the projection suite: one database per test on each backend, and runtime/store factories.

``db`` is parametrized over ``memory://`` (a named memory store, so several
store instances in this process share it like processes share a database), a
SQLite file, and PostgreSQL (a fresh schema per test; skipped without a
server, see ``tests/conftest.py``). ``db.runtime()`` and ``db.store()`` open
instances on it; everything opened is closed at teardown.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from meerkat_runtime import Runtime
from meerkat_runtime.projections import Projection, ProjectionSet
from meerkat_runtime.runtime import event_codec
from meerkat_runtime.store import EventCodec, EventStore, open_store


@dataclass
class Db:
    """One database on one backend."""

    backend: str
    url: str
    runtimes: list[Runtime] = field(default_factory=list)
    stores: list[EventStore] = field(default_factory=list)
    sets: list[ProjectionSet] = field(default_factory=list)

    def runtime(self, executor: Any = None, **options: Any) -> Runtime:
        options.setdefault("retry_backoff", 0.01)
        options.setdefault("close_timeout", 5.0)
        if self.backend == "sqlite":  # a process kill is survived all the same; faster tests
            options.setdefault("sqlite_synchronous", "normal")
        rt = Runtime.open(self.url, executor=executor, **options)
        self.runtimes.append(rt)
        return rt

    def store(self, codec: EventCodec | None = None, **options: Any) -> EventStore:
        if self.backend == "sqlite":
            options.setdefault("sqlite_synchronous", "normal")
        store = open_store(self.url, codec=codec or event_codec(), **options)
        self.stores.append(store)
        return store

    def projections(
        self, store: EventStore, projections: Sequence[Projection], **options: Any
    ) -> ProjectionSet:
        options.setdefault("poll_interval", 0.05)
        pset = ProjectionSet(store, projections, **options)
        self.sets.append(pset)
        return pset

    def close(self) -> None:
        for pset in reversed(self.sets):
            pset.close()
        for rt in reversed(self.runtimes):
            release = getattr(rt.executor, "release", None)
            if release is not None:
                release()
        for rt in reversed(self.runtimes):
            rt.close()
        for store in reversed(self.stores):
            store.close()


_POSTGRES = pytest.param("postgres", marks=pytest.mark.postgres)


def _make_db(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Db:
    if backend == "memory":
        return Db("memory", f"memory://proj-{uuid.uuid4().hex}")
    if backend == "sqlite":
        return Db("sqlite", f"sqlite:///{tmp_path / 'runtime.db'}")
    return Db("postgres", request.getfixturevalue("postgres_url"))


@pytest.fixture(params=["memory", "sqlite", _POSTGRES])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    """A fresh database on each backend."""
    d = _make_db(request.param, request, tmp_path)
    yield d
    d.close()


@pytest.fixture(params=["sqlite", _POSTGRES])
def durable_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    """A fresh database on each backend that another process can open (no memory://)."""
    d = _make_db(request.param, request, tmp_path)
    yield d
    d.close()


@pytest.fixture(params=["memory", "sqlite"])
def local_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    """memory:// and SQLite only (for tests whose point does not depend on PostgreSQL)."""
    d = _make_db(request.param, request, tmp_path)
    yield d
    d.close()
