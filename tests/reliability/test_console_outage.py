"""The web console through a PostgreSQL outage: pages that need the database answer 503
with the reason (password masked) while it is down, and the same pages work again once
it is back, without restarting the console. Runs on the private cluster (``private_postgres``)."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from meerkat_runtime import EchoExecutor, Runtime
from meerkat_runtime.console import create_app

from ..waiting import WAIT, wait_until
from ._support import prompt
from .conftest import PrivateServer

PASSWORD = "meerkat-test-password"


@pytest.mark.postgres
def test_console_answers_503_while_the_database_is_down_then_recovers(
    private_postgres: PrivateServer,
) -> None:
    url = private_postgres.fresh_schema_url()
    with Runtime.open(url, executor=EchoExecutor()) as writer:
        outcome = writer.session("s-1").accept(prompt("before the outage"))
        assert outcome.completion is not None
        outcome.completion.wait(WAIT)
        writer.projections.wait_caught_up(WAIT)
    with Runtime.open(url, read_only=True, connect_timeout=2.0, lock_timeout=2.0) as rt:
        rt.projections.wait_caught_up(WAIT)
        client = TestClient(create_app(rt))
        assert client.get("/sessions/s-1").status_code == 200
        private_postgres.stop()
        try:
            down = client.get("/sessions/s-1")  # reads the session's events from the store
        finally:
            private_postgres.start()
        assert down.status_code == 503, down.text[-500:]
        assert 'id="error"' in down.text
        assert PASSWORD not in down.text
        assert "Traceback" not in down.text
        wait_until(
            lambda: client.get("/sessions/s-1").status_code == 200,
            what="the session page to work again after the restart",
        )
        assert str(outcome.input_id) in client.get("/sessions/s-1").text
