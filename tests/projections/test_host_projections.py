"""A host's own read model on the projection framework (``Runtime.open(projections=[...])``).

The same guarantees as the ledger and views: the model matches the log after catch-up,
rebuild and a layout change replay it, a failing handler follows its failure strategy,
and its position and lag show in ``rt.projections.status()`` and in ``health``.
"""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from meerkat_runtime import Runtime
from meerkat_runtime.aio import AsyncRuntime
from meerkat_runtime.events.runtime_event import InputAccepted
from meerkat_runtime.health import HealthLimits, check_health
from meerkat_runtime.projections import (
    Cursor,
    FailureStrategy,
    HostProjection,
    ProjectedEvent,
    ProjectionStatus,
)
from meerkat_runtime.runtime import event_codec
from meerkat_runtime.store import open_store

from ..cli._support import cli
from ..waiting import WAIT, wait_until
from ._host_support import SessionCounts, read_counts
from .conftest import Db


def prompt(text: str) -> dict[str, Any]:
    return {"input_type": "prompt", "content": text}


def expected_counts(rt: Runtime) -> dict[str, tuple[int, int, int]]:
    """What :class:`SessionCounts` must hold: counted from the log itself."""
    events: Counter[str] = Counter()
    accepted: Counter[str] = Counter()
    last: dict[str, int] = {}
    for sid in rt.sessions():
        for rec in rt.store.read_session(sid):
            events[sid] += 1
            last[sid] = max(last.get(sid, 0), rec.position)
        accepted[sid] = sum(isinstance(e.event, InputAccepted) for e in rt.session(sid).events())
    return {sid: (events[sid], accepted[sid], last[sid]) for sid in events}


def accept_some(rt: Runtime, sessions: tuple[str, ...] = ("a", "b", "c"), n: int = 3) -> None:
    for i in range(n):
        for sid in sessions:
            assert rt.session(sid).accept(prompt(f"{sid}{i}")).kind == "accepted"


def test_a_host_read_model_follows_the_log(db: Db) -> None:
    rt = db.runtime(projections=[SessionCounts()])
    accept_some(rt)
    rt.projections.wait_caught_up(WAIT)
    assert rt.projections.query(read_counts) == expected_counts(rt)
    status = {s.name: s for s in rt.projections.status()}
    assert set(status) == {"ledger", "views", "session_counts"}
    assert status["session_counts"].status == "running"
    assert status["session_counts"].lag == 0
    assert status["session_counts"].position == rt.store.max_position()
    assert rt.verify().ok  # the built-ins run beside it as before


def test_catch_up_from_the_start_and_from_the_stored_offset(db: Db) -> None:
    plain = db.runtime()
    accept_some(plain, ("early",))
    plain.close()
    rt = db.runtime(projections=[SessionCounts()])  # registered after the events
    rt.projections.wait_caught_up(WAIT)
    assert rt.projections.query(read_counts) == expected_counts(rt)
    rt.close()
    plain = db.runtime()  # written while the host projection does not run
    accept_some(plain, ("late",))
    plain.close()
    again = db.runtime(projections=[SessionCounts()])
    again.projections.wait_caught_up(WAIT)
    assert again.projections.query(read_counts) == expected_counts(again)


def test_rebuild_and_a_new_layout_replay_the_model(db: Db) -> None:
    rt = db.runtime(projections=[SessionCounts()])
    accept_some(rt)
    rt.projections.wait_caught_up(WAIT)
    want = expected_counts(rt)
    rt.projections.rebuild("session_counts")
    rt.projections.wait_caught_up(WAIT)
    assert rt.projections.query(read_counts) == want
    rt.close()
    upgraded = db.runtime(projections=[SessionCounts(schema_version=2)])
    upgraded.projections.wait_caught_up(WAIT)
    assert upgraded.projections.query(read_counts) == want


def test_a_failing_handler_is_skipped_under_skip_and_health_says_so(db: Db) -> None:
    counts = SessionCounts(fail_for=frozenset({"poison"}), failure_strategy=FailureStrategy("skip"))
    rt = db.runtime(projections=[counts])
    accept_some(rt, ("ok", "poison"), n=2)
    rt.projections.wait_caught_up(WAIT)
    model = rt.projections.query(read_counts)
    assert model == {"ok": expected_counts(rt)["ok"]}
    skipped = rt.projections.skipped("session_counts")
    assert skipped and {s.session_id for s in skipped} == {"poison"}
    report = check_health(rt)
    assert not report.healthy
    assert any("session_counts" in p and "poison" in p for p in report.problems)


def test_a_failing_handler_stops_the_projection_under_fail(db: Db) -> None:
    counts = SessionCounts(fail_for=frozenset({"poison"}), failure_strategy=FailureStrategy("fail"))
    rt = db.runtime(projections=[counts])
    accept_some(rt, ("ok",), n=1)
    rt.session("poison").accept(prompt("x"))
    wait_until(
        lambda: {s.name: s.status for s in rt.projections.status()}["session_counts"] == "failed",
        what="the projection to fail",
    )
    # The accepts and the built-in read models are not affected.
    assert rt.session("ok").accept(prompt("still")).kind == "accepted"
    status = {s.name: s for s in rt.projections.status()}
    assert "cannot count poison" in (status["session_counts"].error or "")
    assert status["session_counts"].lag > 0
    problems = check_health(rt).problems
    assert any(p.startswith("projection session_counts is failed") for p in problems)


def test_lag_shows_in_status_and_health_and_a_rebuild_clears_it(db: Db) -> None:
    """A stopped host projection falls behind as the log grows; once its handler is fixed,
    a rebuild replays it and the lag is gone. (No gate inside the handler: on SQLite a
    held read-model transaction would hold the single writer too.)"""
    counts = SessionCounts(fail_for=frozenset({"a"}), failure_strategy=FailureStrategy("fail"))
    rt = db.runtime(projections=[counts])
    accept_some(rt, ("a",), n=1)

    def failed() -> ProjectionStatus:
        return {s.name: s for s in rt.projections.status()}["session_counts"]

    wait_until(lambda: failed().status == "failed", what="the projection to stop")
    lag = failed().lag
    accept_some(rt, ("b",), n=2)
    assert failed().lag > lag > 0
    report = check_health(rt, HealthLimits(max_lag=lag))
    assert any(p.startswith("projection session_counts lags") for p in report.problems)
    counts.fail_for = frozenset()
    rt.projections.rebuild("session_counts")
    rt.projections.wait_caught_up(WAIT)
    assert failed().status == "running" and failed().lag == 0
    assert rt.projections.query(read_counts) == expected_counts(rt)


class BatchCounts(HostProjection):
    """Only ``handle_batch`` (the batching entry point), no ``handle``."""

    name = "batch_counts"
    tables = ("host_batch_counts",)

    def create_schema(self, cur: Cursor) -> None:
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {cur.table('host_batch_counts')} "
            "(code TEXT PRIMARY KEY, n INTEGER NOT NULL)"
        )

    def handle_batch(self, cur: Cursor, events: Any) -> None:
        by_code = Counter(e.envelope.event.event_code for e in events)
        cur.executemany(
            f"INSERT INTO {cur.table('host_batch_counts')} AS t (code, n) VALUES (?, ?) "
            "ON CONFLICT (code) DO UPDATE SET n = t.n + excluded.n",
            sorted(by_code.items()),
        )


def test_a_batch_handler_and_two_host_projections(db: Db) -> None:
    rt = db.runtime(projections=[SessionCounts(), BatchCounts()])
    accept_some(rt)
    rt.projections.wait_caught_up(WAIT)
    codes = rt.projections.query(
        lambda cur: {
            r["code"]: int(r["n"])
            for r in cur.execute(f"SELECT * FROM {cur.table('host_batch_counts')}").fetchall()
        }
    )
    assert codes == Counter(e.event.event_code for e in rt.subscribe(timeout=0))
    assert rt.projections.query(read_counts) == expected_counts(rt)


def test_a_handler_gets_typed_envelopes_with_their_places(db: Db) -> None:
    seen: list[ProjectedEvent] = []

    class Recorder(SessionCounts):
        name = "recorder"

        def handle(self, cur: Cursor, event: ProjectedEvent) -> None:
            seen.append(event)

    rt = db.runtime(projections=[Recorder()])
    accept_some(rt, ("a", "b"), n=1)
    rt.projections.wait_caught_up(WAIT)
    sub = rt.subscribe(timeout=0)
    expected = []
    for envelope in sub:
        expected.append((sub.position, sub.session_id, envelope.sequence, envelope))
    assert [(e.position, e.session_id, e.sequence, e.envelope) for e in seen] == expected


class NoHandler(HostProjection):
    name = "no_handler"

    def create_schema(self, cur: Cursor) -> None:
        pass


@pytest.mark.parametrize(
    ("projections", "error", "match"),
    [
        ([SessionCounts(), SessionCounts()], ValueError, "taken"),
        ([type("L", (SessionCounts,), {"name": "ledger"})()], ValueError, "'ledger' is taken"),
        ([type("E", (SessionCounts,), {"name": ""})()], ValueError, "empty"),
        (["not a projection"], TypeError, r"projections\[0\] must be a Projection"),
    ],
)
def test_bad_projection_lists_are_refused_at_open(
    projections: list[Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        Runtime.open("memory://", projections=projections)


def test_a_projection_without_a_handler_says_what_to_implement(db: Db) -> None:
    rt = db.runtime(projections=[NoHandler()])
    accept_some(rt, ("a",), n=1)
    wait_until(
        lambda: {s.name: s for s in rt.projections.status()}["no_handler"].status == "failed",
        what="the projection to fail",
    )
    error = {s.name: s for s in rt.projections.status()}["no_handler"].error or ""
    assert "must implement handle or handle_batch" in error


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_async_runtime_runs_host_projections(db: Db, anyio_backend: str) -> None:
    async with AsyncRuntime.open(db.url, projections=[SessionCounts()]) as rt:
        for sid in ("a", "b"):
            await rt.session(sid).accept(prompt(sid))
        await rt.projections.wait_caught_up(WAIT)
        model = await rt.projections.query(read_counts)
        assert model == expected_counts(rt.sync)
        assert "session_counts" in {s.name for s in rt.projections.status()}


def test_the_guide_example_runs_on_every_backend(db: Db) -> None:
    """``examples/host_read_model.py``, included verbatim in the read-models guide."""
    path = Path(__file__).resolve().parents[2] / "examples" / "host_read_model.py"
    spec = importlib.util.spec_from_file_location("host_read_model_example", path)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    assert example.main(db.url) == {"chat-1": (2, "how are you?"), "chat-2": (1, "hi")}


def test_the_health_command_reports_a_host_read_model_it_does_not_run(durable_db: Db) -> None:
    """``meerkat-runtime health`` runs only the built-in read models; a host's own shows
    from its stored offset (as standby), with its lag and its skipped events."""
    counts = SessionCounts(fail_for=frozenset({"poison"}), failure_strategy=FailureStrategy("skip"))
    rt = durable_db.runtime(projections=[counts])
    accept_some(rt, ("ok", "poison"), n=1)
    rt.projections.wait_caught_up(WAIT)
    rt.close()
    plain = durable_db.runtime()  # the host's read model does not run here
    accept_some(plain, ("later",), n=2)
    plain.close()
    result = cli("health", "--max-lag", "1", "--store", durable_db.url, "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    (mine,) = [p for p in report["projections"] if p["name"] == "session_counts"]
    assert mine["status"] == "standby" and mine["lag"] > 1
    assert any(p.startswith("projection session_counts lags") for p in report["problems"])
    assert any("session_counts skipped session 'poison'" in p for p in report["problems"])
    assert {p["name"] for p in report["projections"]} == {"ledger", "views", "session_counts"}


def test_a_read_only_runtime_serves_a_host_read_model_without_writing(durable_db: Db) -> None:
    rt = durable_db.runtime(projections=[SessionCounts()])
    accept_some(rt, ("a", "b"), n=1)
    rt.projections.wait_caught_up(WAIT)
    rt.close()
    plain = durable_db.runtime()
    accept_some(plain, ("c",), n=1)  # not in the stored host read model yet
    plain.close()
    stored_before = _stored_offset(durable_db, "session_counts")
    viewer = durable_db.runtime(read_only=True, projections=[SessionCounts()])
    viewer.projections.wait_caught_up(WAIT)
    assert viewer.projections.query(read_counts) == expected_counts(viewer)
    assert set(viewer.projections.query(read_counts)) == {"a", "b", "c"}
    viewer.close()
    assert _stored_offset(durable_db, "session_counts") == stored_before  # nothing written


def _stored_offset(db: Db, name: str) -> int:
    from ._support import stored_offset

    with open_store(db.url, codec=event_codec()) as store:
        return stored_offset(store, name)
