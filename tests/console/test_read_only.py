"""The console never changes the store: every route, with every HTTP method, leaves the
database exactly as it was (its file's bytes and every table's rows), on SQLite through
a real server process and on PostgreSQL through the app."""

from __future__ import annotations

import http.client
from pathlib import Path
from urllib.parse import quote, urlsplit

from starlette.routing import Route
from starlette.testclient import TestClient

from meerkat_runtime import EchoExecutor, Runtime
from meerkat_runtime.console import create_app

from ..cli._support import Populated
from ..waiting import WAIT
from ._support import (
    console_process,
    populate_console_store,
    postgres_fingerprint,
    sqlite_fingerprint,
)

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "PROPFIND")


def every_url(populated: Populated) -> list[str]:
    """Every route of the app, with real arguments and the query parameters it reads."""
    alpha_input = populated.accepted["alpha"][0]
    urls = [
        "/",
        "/sessions",
        "/sessions?state=idle&q=a&limit=2&after=1",
        "/sessions/alpha?inputs_after=1&events_after=3&limit=2",
        *[f"/sessions/{quote(sid, safe='')}" for sid in populated.sessions],
        "/inputs",
        "/inputs?q=k-hello",
        f"/inputs?q={alpha_input}",
        f"/inputs/{alpha_input}",
        f"/inputs/{alpha_input}?session=alpha",
        "/cluster",
        "/favicon.ico",
        "/no-such-page",
        "/sessions?state=bogus",
    ]
    return urls


def test_every_route_is_covered_by_the_read_only_check(tmp_path: Path) -> None:
    """A route added later must be added to every_url, or this fails."""
    with Runtime.open(f"sqlite:///{tmp_path / 's.db'}") as rt:
        app = create_app(rt)
    paths = {r.path for r in app.routes if isinstance(r, Route)}
    covered = {
        "/", "/sessions", "/sessions/{session_id:path}", "/inputs", "/inputs/{input_id}",
        "/cluster", "/favicon.ico",
    }  # fmt: skip
    assert paths == covered


def test_no_request_changes_a_sqlite_store(tmp_path: Path) -> None:
    populated = populate_console_store(tmp_path / "store.db")
    before = sqlite_fingerprint(populated.path)
    with console_process(populated.url) as url:
        parts = urlsplit(url)
        statuses: dict[str, set[int]] = {}
        for path in every_url(populated):
            for method in METHODS:
                conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=WAIT)
                try:
                    conn.request(method, path, body=b"state=destroyed" if method != "GET" else None,
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
                    response = conn.getresponse()
                    response.read()
                finally:
                    conn.close()
                statuses.setdefault(method, set()).add(response.status)
    after = sqlite_fingerprint(populated.path)
    assert after[0] == before[0], "the database file changed"
    assert after[1] == before[1]
    assert statuses["GET"] >= {200, 404, 400}
    for method in METHODS[2:]:
        assert statuses[method] == {405}, method


def test_no_request_changes_a_postgres_store(postgres_url: str, postgres_server_url: str) -> None:
    schema = dict(p.split("=", 1) for p in urlsplit(postgres_url).query.split("&"))["schema"]
    with Runtime.open(postgres_url, executor=EchoExecutor(), node_id="node-a") as rt:
        for n in range(3):
            outcome = rt.session(f"pg-{n}").accept(
                {"input_type": "prompt", "content": "hi", "header": {"idempotency_key": f"key-{n}"}}
            )
            assert outcome.completion is not None
            outcome.completion.wait(WAIT)
        rt.projections.wait_caught_up(WAIT)
        input_id = str(outcome.input_id)
    before = postgres_fingerprint(postgres_server_url, schema)
    assert before["meerkat_events"]
    with Runtime.open(postgres_url, read_only=True) as rt:
        rt.projections.wait_caught_up(WAIT)
        client = TestClient(create_app(rt))
        urls = ["/", "/sessions", "/sessions?q=pg", "/sessions/pg-1", "/inputs?q=key-2",
                f"/inputs/{input_id}", "/cluster"]  # fmt: skip
        for url in urls:
            assert client.get(url).status_code == 200, url
            for method in METHODS[2:]:
                assert client.request(method, url).status_code == 405
        assert "pg-2" in client.get("/inputs?q=key-2").text
    assert postgres_fingerprint(postgres_server_url, schema) == before
