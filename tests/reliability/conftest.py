"""Fixtures of the reliability campaigns: store URLs, and a private PostgreSQL server."""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from ..store_urls import store_url_for

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "test-postgres.sh"


def _free_port() -> int:
    """A port nobody listens on now, so two suites on one machine never share a server."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


PRIVATE_PG_PORT = int(os.environ.get("MEERKAT_RELIABILITY_PG_PORT") or _free_port())


@pytest.fixture(params=["memory", "sqlite"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An in-process memory store, then a SQLite file (see ``store_url_for``)."""
    return store_url_for(request.param, request, tmp_path)


@dataclass
class PrivateServer:
    """A PostgreSQL server of our own, which the tests may stop and start at will."""

    url: str
    env: dict[str, str]

    def _script(self, *args: str) -> str:
        done = subprocess.run(
            ["bash", str(SCRIPT), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
            check=True,
        )
        return done.stdout

    def stop(self) -> None:
        self._script("stop")

    def start(self) -> None:
        self._script()

    def terminate_connections(self) -> int:
        """Kill every other connection to the test database (what a network cut looks like)."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchall()
        return len(rows)

    def fresh_schema_url(self) -> str:
        return f"{self.url}?schema=t_{uuid.uuid4().hex[:16]}"


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[PrivateServer]:
    """A throwaway cluster on its own port (the shared test server is never restarted).

    Needs what ``scripts/test-postgres.sh`` needs; skipped without it, except under CI.
    """
    if not os.environ.get("MEERKAT_TEST_POSTGRES_URL") and not os.environ.get("CI"):
        pytest.skip("PostgreSQL tests are off (MEERKAT_TEST_POSTGRES_URL is not set)")
    env = {
        **os.environ,
        "MEERKAT_PG_PORT": str(PRIVATE_PG_PORT),
        # The server runs as the postgres user, who must reach the data directory.
        "MEERKAT_PGDATA": f"/tmp/meerkat-reliability-pg-{PRIVATE_PG_PORT}-{os.getpid()}",
    }
    server = PrivateServer(url="", env=env)
    try:
        out = server._script()
    except (subprocess.CalledProcessError, OSError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        if os.environ.get("CI"):
            pytest.fail(f"cannot start a private PostgreSQL server: {detail[-2000:]}")
        pytest.skip(f"cannot start a private PostgreSQL server: {detail[-500:]}")
    server.url = out.strip().split("=", 1)[1]
    try:
        yield server
    finally:
        subprocess.run(
            ["bash", str(SCRIPT), "destroy"], env=env, capture_output=True, timeout=180, check=False
        )
