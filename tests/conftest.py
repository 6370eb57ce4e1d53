"""Fixtures shared by the whole suite: a PostgreSQL server for the tests that need one.

Start one with ``eval "$(bash scripts/test-postgres.sh)"``, which exports
``MEERKAT_TEST_POSTGRES_URL``. Without it the PostgreSQL tests are skipped,
except under CI (env ``CI`` set), where a missing server is a failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from meerkat_runtime.errors import mask_url

POSTGRES_URL_ENV = "MEERKAT_TEST_POSTGRES_URL"
_HOW_TO_START = 'start one with: eval "$(bash scripts/test-postgres.sh)"'


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses PostgreSQL, so `-m "not postgres"` deselects them."""
    for item in items:
        if "postgres_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL is required under CI: {reason}")
    pytest.skip(f"{reason}; {_HOW_TO_START}")


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """The URL of the test server (shared: tests must not write to its public schema)."""
    url = os.environ.get(POSTGRES_URL_ENV, "")
    if not url:
        _unavailable(f"{POSTGRES_URL_ENV} is not set")
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as e:
        _unavailable(f"PostgreSQL at {mask_url(url)} is unreachable ({e})".replace(url, "***"))
    return url


def with_schema(url: str, schema: str) -> str:
    """Return ``url`` with the store URL parameter ``schema`` set."""
    parts = urlsplit(url)
    query = f"{parts.query}&schema={schema}" if parts.query else f"schema={schema}"
    return urlunsplit(parts._replace(query=query))


@pytest.fixture
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    """A store URL on the test server with a fresh schema of its own, dropped afterwards."""
    schema = f"test_{uuid.uuid4().hex[:20]}"
    yield with_schema(postgres_server_url, schema)
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
