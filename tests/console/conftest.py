"""Fixtures of the console tests: one demo-like SQLite store for the whole directory
(the console never writes, which test_read_only checks), a runtime opened on it
read-only, and a Starlette TestClient of the console app."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from meerkat_runtime import Runtime
from meerkat_runtime.console import create_app

from ..cli._support import Populated
from ..waiting import WAIT
from ._support import populate_console_store


@pytest.fixture(scope="session")
def console_store(tmp_path_factory: pytest.TempPathFactory) -> Populated:
    return populate_console_store(tmp_path_factory.mktemp("console") / "store.db")


@pytest.fixture(scope="session")
def read_only_runtime(console_store: Populated) -> Iterator[Runtime]:
    with Runtime.open(console_store.url, read_only=True) as rt:
        rt.projections.wait_caught_up(WAIT)
        yield rt


@pytest.fixture
def client(read_only_runtime: Runtime) -> TestClient:
    return TestClient(create_app(read_only_runtime))
