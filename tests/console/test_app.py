"""The console's pages through Starlette's TestClient, on a real SQLite store opened read-only."""

from __future__ import annotations

import html
import re
import time
from pathlib import Path
from urllib.parse import quote, unquote

import pytest
from starlette.testclient import TestClient

from meerkat_runtime import EchoExecutor, Runtime
from meerkat_runtime.console import create_app

from ..cli._support import Populated
from ..waiting import WAIT
from ._support import ODD_SESSIONS, UNPROJECTED

_SESSION_LINK = re.compile(r'<td class="mono"><a href="/sessions/([^"]+)">')


def listed_sessions(page: str) -> list[str]:
    """The session ids in the sessions table of a page, in order."""
    return [unquote(html.unescape(m)) for m in _SESSION_LINK.findall(page)]


def get_ok(client: TestClient, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200, (url, response.status_code, response.text[-500:])
    assert response.headers["content-type"].startswith("text/html")
    return response.text


def test_sessions_lists_every_session_with_its_state(
    client: TestClient, console_store: Populated
) -> None:
    page = get_ok(client, "/sessions")
    assert sorted(listed_sessions(page)) == sorted(console_store.sessions)
    assert 'class="badge state-retired">retired<' in page
    assert 'class="badge state-destroyed">destroyed<' in page


@pytest.mark.parametrize("state", ["retired", "destroyed", "stopped"])
def test_state_filter_keeps_only_sessions_in_that_state(client: TestClient, state: str) -> None:
    page = get_ok(client, f"/sessions?state={state}")
    assert listed_sessions(page) == [f"{state}-one"]
    assert f'<option value="{state}" selected>' in page


def test_search_matches_part_of_the_id_ignoring_case_and_combines_with_the_state(
    client: TestClient,
) -> None:
    assert sorted(listed_sessions(get_ok(client, "/sessions?q=ONE"))) == sorted(
        ["retired-one", "destroyed-one", "stopped-one", "queued-one", "ephemeral-one"]
    )
    assert listed_sessions(get_ok(client, "/sessions?q=one&state=stopped")) == ["stopped-one"]
    assert listed_sessions(get_ok(client, "/sessions?q=nothing-like-this")) == []


def test_search_treats_like_wildcards_as_plain_characters(client: TestClient) -> None:
    assert listed_sessions(get_ok(client, "/sessions?q=%25")) == []  # "%"
    assert listed_sessions(get_ok(client, "/sessions?q=_")) == []
    assert listed_sessions(get_ok(client, "/sessions?q=%2F42%3F")) == [ODD_SESSIONS[1]]  # "/42?"


def test_sessions_page_through_every_session_once(
    client: TestClient, console_store: Populated
) -> None:
    seen: list[str] = []
    url: str | None = "/sessions?limit=2"
    while url is not None:
        page = get_ok(client, url)
        rows = listed_sessions(page)
        assert 1 <= len(rows) <= 2
        seen.extend(rows)
        match = re.search(r'<a href="([^"]+)" id="next-page">', page)
        url = html.unescape(match.group(1)) if match else None
    assert sorted(seen) == sorted(console_store.sessions)
    assert len(seen) == len(set(seen))


def test_session_page_shows_inputs_with_history_and_events(
    client: TestClient, console_store: Populated, read_only_runtime: Runtime
) -> None:
    page = get_ok(client, "/sessions/alpha")
    for input_id in console_store.accepted["alpha"]:
        assert f'id="input-{input_id}"' in page
    assert "accepted &rarr; <b>queued</b>" in page
    assert "applied_pending_consumption &rarr; <b>consumed</b>" in page
    assert ">k-hello<" in page
    events = read_only_runtime.store.read_session("alpha")
    assert len(events) > 10
    # the first page of events, oldest first, as stored
    shown = [int(n) for n in re.findall(r'<tr id="event-(\d+)">', page)]
    assert shown == [e.version for e in events][: len(shown)]
    assert {e.topic for e in events[: len(shown)]} <= set(
        re.findall(r'<td class="mono">([a-z_.]+)</td>', page)
    )


def test_session_events_and_inputs_page_on(
    client: TestClient, read_only_runtime: Runtime, console_store: Populated
) -> None:
    versions: list[int] = []
    url: str | None = "/sessions/alpha?limit=5"
    while url is not None:
        page = get_ok(client, url)
        versions.extend(int(n) for n in re.findall(r'<tr id="event-(\d+)">', page))
        match = re.search(r'<a href="([^"]+)" id="events-next">', page)
        url = html.unescape(match.group(1)) if match else None
    assert versions == [e.version for e in read_only_runtime.store.read_session("alpha")]

    inputs: list[str] = []
    url = "/sessions/alpha?limit=3"
    while url is not None:
        page = get_ok(client, url)
        inputs.extend(re.findall(r'<tr id="input-([0-9a-f-]+)">', page))
        match = re.search(r'<a href="([^"]+)" id="inputs-next">', page)
        url = html.unescape(match.group(1)) if match else None
    expected = console_store.accepted["alpha"]
    assert sorted(inputs) == sorted(expected) and len(inputs) == len(expected)


def test_find_an_input_by_idempotency_key_and_by_id(
    client: TestClient, console_store: Populated
) -> None:
    hello = console_store.accepted["alpha"][0]  # accepted with key k-hello
    by_key = get_ok(client, "/inputs?q=k-hello")
    assert "1 input(s)" in by_key
    assert re.findall(r'<tr id="input-([0-9a-f-]+)">', by_key) == [hello]
    by_id = get_ok(client, f"/inputs?q={hello.upper()}")
    assert re.findall(r'<tr id="input-([0-9a-f-]+)">', by_id) == [hello]
    assert "0 input(s)" in get_ok(client, "/inputs?q=no-such-key")
    assert "input(s)" not in get_ok(client, "/inputs")  # the empty form


def test_input_page_shows_the_whole_lifecycle(client: TestClient, console_store: Populated) -> None:
    queued = console_store.queued["queued-one"][0]
    page = get_ok(client, f"/inputs/{queued}?session=queued-one")
    assert 'id="input-state">queued<' in page
    assert ">w-0<" in page
    done = console_store.accepted["beta"][0]
    page = get_ok(client, f"/inputs/{done}")
    assert 'id="input-state">consumed<' in page
    for state in ("queued", "staged", "applied", "consumed"):
        assert f'state-{state}">{state}</span>' in page


def test_odd_session_ids_are_escaped_and_linked_correctly(client: TestClient) -> None:
    page = get_ok(client, "/sessions")
    assert "<b>bold</b>" not in page
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; co" in page
    for sid in ODD_SESSIONS:
        assert sid in listed_sessions(page)
        session_page = get_ok(client, f"/sessions/{quote(sid, safe='')}")
        assert f'id="session-id">{html.escape(sid)}<' in session_page
        assert 'id="session-state">' in session_page


def test_overview_shows_health_and_projections(
    client: TestClient, console_store: Populated
) -> None:
    page = get_ok(client, "/")
    assert 'id="health">' in page
    for name in ("ledger", "views"):
        assert re.search(
            rf"<tr><td>{name}</td><td><span class=\"badge state-running proj\">running</span>", page
        )
    # the queued inputs of the store, counted
    queued = len(console_store.all_queued())
    assert re.search(rf'<div class="n">{queued}</div><div class="l">queued inputs', page)


def test_overview_reports_unhealthy_when_an_input_waits_too_long(
    read_only_runtime: Runtime,
) -> None:
    from meerkat_runtime.health import HealthLimits

    strict = TestClient(create_app(read_only_runtime, limits=HealthLimits(max_queue_age=0.0)))
    page = get_ok(strict, "/")
    assert 'id="health">unhealthy<' in page
    assert "an input has been queued for" in page


def test_cluster_page_on_sqlite_shows_the_nodes(client: TestClient) -> None:
    """Processes sharing a SQLite file are a cluster too; the console itself is no node."""
    page = get_ok(client, "/cluster")
    assert 'id="no-cluster"' not in page and 'id="nodes"' in page
    assert 'href="/cluster"' in page


@pytest.mark.parametrize(
    ("url", "status", "fragment"),
    [
        ("/sessions/no-such-session", 404, "no session &#39;no-such-session&#39;"),
        (
            "/sessions?state=sleeping",
            400,
            "unknown state &#39;sleeping&#39;; use one of: initializing",
        ),
        ("/sessions?after=-1", 400, "must be a whole number"),
        ("/sessions?limit=0", 400, "from 1 to 500"),
        ("/sessions/alpha?events_after=x", 400, "must be a whole number"),
        ("/inputs/not-a-uuid", 400, "not an input id"),
        ("/inputs/00000000-0000-7000-8000-000000000000", 404, "no input"),
        ("/nowhere", 404, "Not Found"),
    ],
)
def test_bad_requests_get_a_page_naming_what_is_wrong(
    client: TestClient, url: str, status: int, fragment: str
) -> None:
    response = client.get(url)
    assert response.status_code == status, response.text[-300:]
    assert fragment in response.text
    assert "Traceback" not in response.text


def test_every_response_forbids_framing_and_scripts(client: TestClient) -> None:
    for url in ("/", "/sessions", "/nowhere"):
        headers = client.get(url).headers
        assert "default-src 'none'" in headers["content-security-policy"]
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-content-type-options"] == "nosniff"
    assert "<script" not in client.get("/sessions/alpha").text


def test_writing_methods_are_refused_on_every_path(client: TestClient) -> None:
    for method in ("POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"):
        for url in ("/", "/sessions", "/sessions/alpha", "/inputs?q=k-hello", "/nowhere"):
            response = client.request(method, url)
            assert response.status_code == 405, (method, url)
            assert response.headers["allow"] == "GET, HEAD"
    assert client.head("/sessions").status_code == 200


def test_loopback_console_refuses_foreign_host_headers(read_only_runtime: Runtime) -> None:
    """DNS rebinding: a page on evil.example resolving to 127.0.0.1 must not read the store."""
    from meerkat_runtime.console._app import LOOPBACK_HOSTS

    app = create_app(read_only_runtime, allowed_hosts=LOOPBACK_HOSTS)
    assert TestClient(app, base_url="http://127.0.0.1:8765").get("/sessions").status_code == 200
    assert TestClient(app, base_url="http://localhost:8765").get("/sessions").status_code == 200
    refused = TestClient(app, base_url="http://evil.example:8765").get("/sessions")
    assert refused.status_code == 400
    assert "alpha" not in refused.text


def test_events_the_stored_read_models_missed_are_shown(
    client: TestClient, console_store: Populated
) -> None:
    """The read models catch up in memory: a session written with the projections off
    is listed, and its input found by key, though nothing was written to the store."""
    assert UNPROJECTED in listed_sessions(get_ok(client, "/sessions?q=late"))
    found = get_ok(client, "/inputs?q=late")
    assert re.findall(r'<tr id="input-([0-9a-f-]+)">', found) == console_store.queued[UNPROJECTED]


def test_the_console_follows_the_log_as_it_grows(tmp_path: Path) -> None:
    """Sessions written while the console runs appear on its pages (read models catch up
    in memory, by polling the store), without the console writing anything."""
    url = f"sqlite:///{tmp_path / 'live.db'}"
    first = {"input_type": "prompt", "content": "first"}
    with Runtime.open(url, executor=EchoExecutor()) as writer:
        assert writer.session("before").accept(first).kind == "accepted"
        writer.projections.wait_caught_up(WAIT)
    with Runtime.open(url, read_only=True) as rt:
        rt.projections.wait_caught_up(WAIT)
        client = TestClient(create_app(rt))
        assert listed_sessions(get_ok(client, "/sessions")) == ["before"]
        with Runtime.open(url, executor=EchoExecutor()) as writer:
            later = {
                "input_type": "prompt",
                "content": "later",
                "header": {"idempotency_key": "live-1"},
            }
            outcome = writer.session("after").accept(later)
            assert outcome.completion is not None
            outcome.completion.wait(WAIT)
        deadline = time.monotonic() + WAIT
        while "after" not in listed_sessions(get_ok(client, "/sessions")):
            assert time.monotonic() < deadline, "the console never showed the new session"
            time.sleep(0.05)
        assert listed_sessions(get_ok(client, "/sessions")) == ["before", "after"]
        assert str(outcome.input_id) in get_ok(client, "/inputs?q=live-1")
