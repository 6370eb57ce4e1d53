"""The console in a real browser: Chromium from the OS packages driven by Playwright,
against ``meerkat-runtime console`` serving a demo-like SQLite store.

Playwright never downloads a browser here: it launches /usr/bin/chromium (Debian's
``chromium`` package, which .ci/run installs). Without it the test is skipped, except
under CI (env ``CI`` set), where it fails.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..cli._support import Populated
from ._support import console_process, populate_console_store, sqlite_fingerprint

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 30_000


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"the browser test is required under CI: {reason}")
    pytest.skip(f"{reason}; install it with: apt-get install -y chromium")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        _unavailable(f"playwright is not installed ({e})")
    if not (Path(CHROMIUM).exists() or shutil.which("chromium")):
        _unavailable(f"no Chromium at {CHROMIUM}")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Populated:
    return populate_console_store(tmp_path_factory.mktemp("browser") / "store.db")


def test_operator_filters_follows_a_session_and_finds_an_input(
    browser: object, store: Populated
) -> None:
    from playwright.sync_api import Browser, Request, expect

    assert isinstance(browser, Browser)
    before = sqlite_fingerprint(store.path)
    methods: set[str] = set()
    with console_process(store.url) as url:
        page = browser.new_page()
        page.set_default_timeout(TIMEOUT_MS)

        def on_request(request: Request) -> None:
            methods.add(request.method)

        page.on("request", on_request)
        page.goto(url)
        expect(page.locator("#health")).to_have_text("healthy")
        expect(page.locator("#projections")).to_contain_text("ledger")
        expect(page.locator(".banner")).to_contain_text("no authentication")

        # Sessions, filtered by state, then by a search.
        page.get_by_role("link", name="Sessions", exact=True).click()
        expect(page.locator("#sessions tbody tr")).to_have_count(len(store.sessions))
        page.locator("#state-filter").select_option("retired")
        page.locator("#apply-filters").click()
        expect(page).to_have_url(re.compile(r"/sessions\?state=retired"))
        expect(page.locator("#sessions tbody tr")).to_have_count(1)
        expect(page.locator("#sessions")).to_contain_text("retired-one")

        page.locator("#state-filter").select_option("")
        page.locator("#session-search").fill("alph")
        page.locator("#apply-filters").click()
        expect(page.locator("#sessions tbody tr")).to_have_count(1)

        # Follow the session to its timeline: inputs with their history, events.
        page.get_by_role("link", name="alpha", exact=True).click()
        expect(page.locator("#session-id")).to_have_text("alpha")
        inputs = page.locator("#inputs-table tbody tr")
        expect(inputs).to_have_count(len(store.accepted["alpha"]))
        expect(page.locator("#inputs-table")).to_contain_text(
            "applied_pending_consumption → consumed"
        )
        events = page.locator("#events-table tbody tr")
        expect(events.first).to_contain_text("topology.runtime_created")
        expect(page.locator("#events-table")).to_contain_text("input.accepted")
        expect(events.first.locator("pre")).to_be_hidden()
        events.first.locator("summary").click()
        expect(events.first.locator("pre")).to_contain_text('"runtime_id": "alpha"')

        # Find an input by its idempotency key from the search box in the header.
        box = page.get_by_label("find input")
        box.fill("k-hello")
        box.press("Enter")
        expect(page.locator("#find-summary")).to_contain_text("1 input(s)")
        hello = store.accepted["alpha"][0]
        page.get_by_role("link", name=hello).click()
        expect(page.locator("#input-state")).to_have_text("consumed")
        expect(page.locator(".history-table")).to_contain_text("staged")
        page.close()
    assert methods == {"GET"}, methods
    assert sqlite_fingerprint(store.path) == before
