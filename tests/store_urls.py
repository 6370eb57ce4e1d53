"""The store URL a backend-parametrized runtime test opens, by backend name."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest


def store_url_for(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """``memory://<unique name>`` (reopenable in this process), a SQLite file, or a fresh
    schema on the test PostgreSQL server (skipped when there is none)."""
    if backend == "memory":
        return f"memory://{uuid.uuid4().hex}"
    if backend == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return f"sqlite:///{tmp_path / 'runtime.db'}"
