"""A store written by commit 901ce2c opens, verifies and recovers with today's code.

``tests/fixtures/legacy_store_901ce2c.db`` was made by
``tests/fixtures/make_legacy_store.py`` running on that commit's code. It holds
the shapes this version no longer writes: run errors with the package's own
kinds (``executor_failed``, ``invalid_output``, ``timeout``, ``interrupted``),
completion errors as ``{"kind", "message"}`` in ledger rows and snapshots, and
``runtime_semantics`` keyed ``handling_mode`` / ``peer_terminal_apply_intent``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from meerkat_runtime import EchoExecutor, Runtime
from meerkat_runtime.events import wire
from meerkat_runtime.events.catalogue import envelope_from_record
from meerkat_runtime.events.completion import (
    Abandoned,
    Completed,
    RuntimeTerminated,
    TurnErrorMetadata,
    TurnTerminalCauseKind,
    TurnTerminalOutcome,
)
from meerkat_runtime.events.policy import RuntimeSemantics
from meerkat_runtime.events.runtime_event import InputAccepted, RunFailed
from meerkat_runtime.events.session import state_from_snapshot
from meerkat_runtime.runtime import event_codec
from meerkat_runtime.store import open_store

from ._support import prompt

FIXTURES = Path(__file__).parent.parent / "fixtures"
LEGACY_DB = FIXTURES / "legacy_store_901ce2c.db"
SUMMARY = json.loads((FIXTURES / "legacy_store_901ce2c.json").read_text())


@pytest.fixture
def legacy_url(tmp_path: Path) -> Iterator[str]:
    path = tmp_path / "legacy.db"
    shutil.copyfile(LEGACY_DB, path)
    yield f"sqlite:///{path}"


def _raw_payloads(url: str, topic: str) -> list[dict[str, Any]]:
    """The payloads as stored (before any upcasting), read with sqlite3."""
    import sqlite3

    path = url.removeprefix("sqlite:///")
    con = sqlite3.connect(path)
    try:
        rows = con.execute("SELECT state FROM meerkat_events WHERE topic = ?", (topic,)).fetchall()
    finally:
        con.close()
    return [orjson.loads(bytes(r[0]))["d"] for r in rows]


def test_fixture_holds_the_legacy_shapes(legacy_url: str) -> None:
    errors = [p["event"]["data"]["error"] for p in _raw_payloads(legacy_url, "run.failed")]
    kinds = {e["kind"] for e in errors}
    assert {"executor_failed", "invalid_output", "timeout", "interrupted"} <= kinds
    semantics = [
        p["event"]["data"]["runtime_semantics"]
        for p in _raw_payloads(legacy_url, "input.accepted")
        if "runtime_semantics" in p["event"]["data"]
    ]
    assert any("peer_terminal_apply_intent" in s for s in semantics)
    assert any(s.get("handling_mode") == "steer" for s in semantics)


def test_every_legacy_event_reads_in_todays_shape(legacy_url: str) -> None:
    with open_store(legacy_url, codec=event_codec()) as store:
        records = store.read_all(limit=10_000)
    assert len(records) == sum(s["events"] for s in SUMMARY["sessions"].values())
    failed = []
    for rec in records:
        env = envelope_from_record(rec.data, rec.version)
        # Each stored payload, once upcast, is exactly the wire form of what it decodes to.
        assert wire.to_json_value(env) == rec.data
        if isinstance(env.event, RunFailed):
            failed.append(env.event.error)
            assert "message" not in rec.data["event"]["data"]["error"]
        if isinstance(env.event, InputAccepted) and env.event.runtime_semantics is not None:
            semantics = rec.data["event"]["data"]["runtime_semantics"]
            assert "handling_mode" not in semantics
            assert "peer_terminal_apply_intent" not in semantics
    by_kind = {e.kind for e in failed}
    assert by_kind == {
        TurnTerminalCauseKind.RUNTIME_APPLY_FAILURE,
        TurnTerminalCauseKind.TIME_BUDGET_EXCEEDED,
    }
    details = " | ".join(e.detail or "" for e in failed)
    assert "the model is on fire" in details  # the executor's message kept in detail


def test_legacy_semantics_keep_their_handling_mode(legacy_url: str) -> None:
    with open_store(legacy_url, codec=event_codec()) as store:
        records = store.read_all(limit=10_000, topics=["input.accepted"])
    semantics = [
        ev.runtime_semantics
        for ev in (envelope_from_record(r.data, r.version).event for r in records)
        if isinstance(ev, InputAccepted) and ev.runtime_semantics is not None
    ]
    assert all(isinstance(s, RuntimeSemantics) for s in semantics)
    assert all(s.execution_handling_mode is not None for s in semantics)
    assert any(s.execution_handling_mode == "steer" for s in semantics)
    assert any(s.peer_response_terminal_apply_intent == "append_content_and_run" for s in semantics)


def test_legacy_snapshots_restore(legacy_url: str) -> None:
    with open_store(legacy_url, codec=event_codec()) as store:
        snapshots = store.load_snapshots(store.session_ids())
    assert snapshots
    for sid, snap in snapshots.items():
        state = state_from_snapshot(snap.data["state"])
        assert state.session_id == sid
        for st in state.inputs.values():
            error = getattr(st.terminal_completion, "error", None)
            assert error is None or isinstance(error, TurnErrorMetadata)


def test_legacy_store_opens_verifies_and_recovers(legacy_url: str) -> None:
    with Runtime.open(legacy_url, executor=EchoExecutor()) as rt:
        rt.projections.wait_caught_up(10)
        report = rt.verify()
        assert report.ok, report.mismatches
        assert report.events == len(rt.store.read_all(limit=10_000))

        rows = rt.ledger.list(limit=1000)
        assert len(rows) == 16
        completions = [r.input_state.terminal_completion for r in rows]
        terminated = [c for c in completions if isinstance(c, RuntimeTerminated)]
        abandoned = [c for c in completions if isinstance(c, Abandoned)]
        assert terminated and abandoned
        for c in terminated:
            assert c.error == TurnErrorMetadata(
                kind=TurnTerminalCauseKind.FATAL_FAILURE,
                terminal=True,
                outcome=TurnTerminalOutcome.FAILED,
                detail=f"runtime {c.reason}",
            )
        kinds = {c.error.kind for c in abandoned}
        assert TurnTerminalCauseKind.RETRY_EXHAUSTED in kinds  # max attempts
        assert TurnTerminalCauseKind.UNKNOWN in kinds  # superseded / coalesced

        reports = rt.recover_by_session()
        assert set(reports) <= set(SUMMARY["sessions"])
        again = rt.session("s-complete")
        outcome = again.accept(prompt("after the upgrade"))
        assert outcome.input_id is not None
        done = again.completion(outcome.input_id)
        assert done is not None
        assert isinstance(done.wait(10), Completed)
        rt.projections.wait_caught_up(10)
        assert rt.verify().ok
