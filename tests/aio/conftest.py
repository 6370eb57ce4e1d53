"""The asyncio API's tests run under anyio's pytest plugin, on asyncio."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..store_urls import store_url_for


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each backend in turn (see ``store_url_for``)."""
    return store_url_for(request.param, request, tmp_path)
