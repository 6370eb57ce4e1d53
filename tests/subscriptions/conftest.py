"""Fixtures of the subscription suite: a store URL per backend and a runtime factory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from meerkat_runtime import Runtime

from ..store_urls import store_url_for


class OpenRuntime(Protocol):
    def __call__(self, url: str | None = None, executor: Any = None, **options: Any) -> Runtime: ...


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The store of each backend in turn (see ``store_url_for``)."""
    return store_url_for(request.param, request, tmp_path)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def open_runtime(store_url: str) -> Iterator[OpenRuntime]:
    """Open runtimes (on ``store_url`` by default); all closed at teardown."""
    opened: list[Runtime] = []

    def open_(url: str | None = None, executor: Any = None, **options: Any) -> Runtime:
        options.setdefault("close_timeout", 2.0)
        rt = Runtime.open(url or store_url, executor=executor, **options)
        opened.append(rt)
        return rt

    yield open_
    for rt in reversed(opened):
        rt.close()
