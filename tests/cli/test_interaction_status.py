"""``interaction-status``: the terminal status of an input or a run, read from the log.

Checked against the public API's durable witness (``session.interaction_status`` and
``run_status`` of a runtime where the session is not live), on SQLite and PostgreSQL.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from meerkat_runtime import EchoExecutor, Runtime
from meerkat_runtime.events import wire

from ..store_urls import store_url_for
from ..waiting import WAIT
from ._support import assert_clean_error, cli, cli_json, prompt


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store with session ``s-1``: input ``k-done`` consumed, input ``k-wait`` queued."""
    url = store_url_for(request.param, request, tmp_path)
    with Runtime.open(url, executor=EchoExecutor()) as rt:
        out = rt.session("s-1").accept(prompt("done", idempotency_key="k-done"))
        assert out.completion is not None
        out.completion.wait(WAIT)
    with Runtime.open(url) as rt:  # no executor: it stays queued
        rt.session("s-1").accept(prompt("waiting", idempotency_key="k-wait"))
    return url


def as_json(value: Any) -> Any:
    """What ``--json`` prints for a report field."""
    if value is None or isinstance(value, int | str):
        return value
    if isinstance(value, uuid.UUID):
        return str(value)
    return wire.to_json_value(value)


def test_by_key_and_by_input_as_the_api_answers(url: str) -> None:
    with Runtime.open(url) as rt:
        api = rt.session("s-1").interaction_status(idempotency_key="k-done")
    assert api is not None and api.resolving_run_id is not None
    doc = cli_json("interaction-status", "s-1", "--key", "k-done", "--store", url)
    assert doc == {"session_id": "s-1"} | {
        f: as_json(getattr(api, f)) for f in api.__dataclass_fields__
    }
    assert doc["phase"] == "consumed" and doc["terminal"] == {"outcome_type": "consumed"}
    assert doc["source"] == "durable_store" and doc["attempt_count"] == 1
    by_id = cli_json("interaction-status", "s-1", "--input", str(api.input_id), "--store", url)
    assert by_id == doc
    queued = cli_json("interaction-status", "s-1", "--key", "k-wait", "--store", url)
    assert queued["phase"] == "queued" and queued["terminal"] is None
    assert queued["resolving_run_id"] is None

    table = cli("interaction-status", "s-1", "--key", "k-done", "--store", url)
    assert table.exit_code == 0, table.output
    for shown in ("consumed", str(api.resolving_run_id), "k-done", "durable_store"):
        assert shown in table.stdout


def test_a_run_resolved_and_a_run_nobody_names(url: str) -> None:
    with Runtime.open(url) as rt:
        s = rt.session("s-1")
        done = s.interaction_status(idempotency_key="k-done")
        assert done is not None and done.resolving_run_id is not None
        api = s.run_status(done.resolving_run_id)
    doc = cli_json("interaction-status", "s-1", "--run", str(api.run_id), "--store", url)
    assert doc["status"] == "resolved" and doc["outcome"] == "consumed"
    assert doc["abandon_reason"] is None and doc["source"] == "durable_store"
    assert [w["input_id"] for w in doc["witnesses"]] == [str(done.input_id)]
    assert doc["witnesses"][0]["terminal"] == {"outcome_type": "consumed"}

    nobody = str(uuid.uuid4())
    unknown = cli_json("interaction-status", "s-1", "--run", nobody, "--store", url)
    assert unknown["status"] == "no_durable_witness" and unknown["witnesses"] == []
    table = cli("interaction-status", "s-1", "--run", nobody, "--store", url)
    assert table.exit_code == 0 and "no_durable_witness" in table.stdout
    assert "not a failure" in table.stdout


def test_unknown_session_input_or_key_is_a_clean_error(url: str) -> None:
    assert_clean_error(
        cli("interaction-status", "ghost", "--key", "k", "--store", url), "unknown session 'ghost'"
    )
    assert_clean_error(
        cli("interaction-status", "s-1", "--key", "k-don", "--store", url), "no input", "'k-don'"
    )
    missing = str(uuid.uuid4())
    assert_clean_error(
        cli("interaction-status", "s-1", "--input", missing, "--store", url), missing
    )
    assert_clean_error(
        cli("interaction-status", "s-1", "--input", "not-a-uuid", "--store", url), "input_id"
    )


def test_exactly_one_selector(url: str) -> None:
    for args in ((), ("--key", "k-done", "--run", str(uuid.uuid4()))):
        result = cli("interaction-status", "s-1", *args, "--store", url)
        assert result.exit_code == 2 and "exactly one of --input, --key and --run" in result.stderr
