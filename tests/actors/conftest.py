"""Fixtures of the actor/runtime suite: a store URL per backend and a runtime factory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from meerkat_runtime import Runtime

from ..store_urls import store_url_for


class OpenRuntime(Protocol):
    def __call__(self, url: str | None = None, executor: Any = None, **options: Any) -> Runtime: ...


@pytest.fixture(
    params=[
        "memory",
        "sqlite",
        pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.slow]),
    ]
)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The store of each backend in turn (see ``store_url_for``)."""
    return store_url_for(request.param, request, tmp_path)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'runtime.db'}"


@pytest.fixture
def open_runtime(store_url: str) -> Iterator[OpenRuntime]:
    """Open runtimes (on ``store_url`` by default); releases executors and closes all at teardown."""
    opened: list[Runtime] = []

    def open_(url: str | None = None, executor: Any = None, **options: Any) -> Runtime:
        options.setdefault("retry_backoff", 0.01)
        options.setdefault("close_timeout", 2.0)
        rt = Runtime.open(url or store_url, executor=executor, **options)
        opened.append(rt)
        return rt

    yield open_
    for rt in opened:
        release = getattr(rt.executor, "release", None)
        if release is not None:
            release()
    for rt in reversed(opened):
        rt.close()
