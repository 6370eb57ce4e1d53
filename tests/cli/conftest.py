"""Fixtures of the CLI tests: one populated SQLite store per test run, and copies of it."""

from __future__ import annotations

from pathlib import Path

import pytest

from ._support import Populated, populate


@pytest.fixture(scope="session")
def populated(tmp_path_factory: pytest.TempPathFactory) -> Populated:
    """The shared populated store: tests only read it (commands that write use ``store_copy``)."""
    return populate(tmp_path_factory.mktemp("cli-store") / "runtime.db")


@pytest.fixture
def store_copy(populated: Populated, tmp_path: Path) -> str:
    """A private copy of the populated store, for commands and tests that change it."""
    return populated.copy_to(tmp_path / "copy")
