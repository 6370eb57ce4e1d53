"""The runtime's OpenTelemetry metrics and spans, read back through the SDK's in-memory
exporters after real accepts, runs, recovery and projection work (SQLite file and memory).

Every instrument and span of ``meerkat_runtime.telemetry``'s table must show up with
its unit, kind and attributes; ids on spans must be the ones the runtime returned.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import Gauge, Histogram, Metric, Sum
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from meerkat_runtime import InvalidInput, RunRequest, RunResult, RunStarted, Runtime
from meerkat_runtime.projections import Cursor, FailureStrategy, Projection, ProjectionSet
from meerkat_runtime.store import RecordedEvent
from meerkat_runtime.telemetry import INSTRUMENTS, SPANS, telemetry_for

from ..faulty_store import faulty_store
from ..waiting import WAIT, wait_until
from ._support import GatedExecutor, prompt
from .conftest import Otel

KINDS: dict[str, tuple[type, bool | None]] = {
    "counter": (Sum, True),
    "observable_counter": (Sum, True),
    "observable_up_down_counter": (Sum, False),
    "histogram": (Histogram, None),
    "observable_gauge": (Gauge, None),
}


def points(metric: Metric) -> list[Any]:
    return list(metric.data.data_points)


def attribute_sets(metric: Metric) -> list[dict[str, Any]]:
    return [dict(p.attributes or {}) for p in points(metric)]


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def value(metric: Metric, **attributes: Any) -> float:
    """The value (sum, gauge) or count (histogram) of the point with ``attributes``."""
    for point in points(metric):
        if dict(point.attributes or {}) == attributes:
            return float(point.count if isinstance(metric.data, Histogram) else point.value)
    raise AssertionError(f"{metric.name}: no point with {attributes}: {attribute_sets(metric)}")


class HostExecutor:
    """Completes runs, fails those of a ``fail`` prompt (terminally), and opens a span of
    its own, which must be a child of the runtime's run span."""

    def __init__(self, otel: Otel) -> None:
        self.tracer = otel.tracer_provider.get_tracer("host")

    def run(self, request: RunRequest) -> RunResult:
        with self.tracer.start_as_current_span("host.execute"):
            if request.primitive.extract_content() == "fail":
                return RunResult.failed("boom", terminal=True)
            return RunResult.completed({"ok": True})


def test_every_instrument_and_span_after_real_work(otel: Otel, store_url: str) -> None:
    # A runtime with nothing to report to (no SDK set globally, none passed) leaves two
    # sessions with queued work; the next runtime, another process for the log, recovers
    # one on load (its actor) and the other through rt.recover() (inline).
    with Runtime.open(store_url) as first:
        assert first._telemetry is None
        first.session("cold-actor").accept(prompt("queued"))
        first.session("cold-batch").accept(prompt("queued"))

    host = otel.tracer_provider.get_tracer("host")
    with Runtime.open(
        store_url, executor=HostExecutor(otel), max_live_sessions=2, **otel.providers
    ) as rt:
        assert rt.session("cold-actor").state() is not None  # loads: cold recovery
        reports = rt.recover()
        assert reports

        s = rt.session("s-1")
        with host.start_as_current_span("host.request") as request_span:
            accepted = s.accept(prompt("hi", idempotency_key="k-1"))
        assert accepted.kind == "accepted" and accepted.completion is not None
        accepted.completion.wait(WAIT)
        dup = s.accept(prompt("hi again", idempotency_key="k-1"))
        assert dup.kind == "deduplicated"
        failing = s.accept(prompt("fail"))
        assert failing.completion is not None
        failing.completion.wait(WAIT)
        many = rt.session("s-2").accept_many([prompt("a"), prompt("b")])
        for outcome in many:
            assert outcome.completion is not None
            outcome.completion.wait(WAIT)
        rt.accept_many([("s-3", prompt("c")), ("s-4", prompt("d"))])
        retired = rt.session("s-5")
        x = retired.accept(prompt("x")).completion
        assert x is not None
        x.wait(WAIT)
        retired.retire()
        rejected = retired.accept(prompt("too late"))
        assert rejected.kind == "rejected"
        rt.projections.wait_caught_up(WAIT)
        wait_until(lambda: rt.activity().passivations > 0, what="a passivation")

        metrics = otel.metrics()

    # Every instrument of the table, with its unit, kind and attribute names.
    assert set(metrics) == {spec.name for spec in INSTRUMENTS}
    for spec in INSTRUMENTS:
        metric = metrics[spec.name]
        assert metric.unit == spec.unit, spec.name
        assert metric.description == spec.description, spec.name
        data_type, monotonic = KINDS[spec.kind]
        assert isinstance(metric.data, data_type), spec.name
        if monotonic is not None:
            assert isinstance(metric.data, Sum) and metric.data.is_monotonic is monotonic
        for attributes in attribute_sets(metric):
            assert set(attributes) <= set(spec.attributes), (spec.name, attributes)

    accepts = metrics["meerkat.accept.inputs"]
    prompt_kind = {"meerkat.input.kind": "prompt"}
    assert value(accepts, **prompt_kind, **{"meerkat.accept.outcome": "accepted"}) == 7
    assert value(accepts, **prompt_kind, **{"meerkat.accept.outcome": "deduplicated"}) == 1
    assert value(accepts, **prompt_kind, **{"meerkat.accept.outcome": "rejected"}) == 1
    duration = metrics["meerkat.accept.duration"]
    assert value(duration, **{"meerkat.accept.operation": "accept"}) == 5
    assert value(duration, **{"meerkat.accept.operation": "accept_many"}) == 2
    backend = store_url.split(":", 1)[0]
    commits = metrics["meerkat.store.commit.appends"]
    assert value(commits, **{"meerkat.store.backend": backend}) >= 1
    # Every accept above is an append of its own, and commits group them: at least as
    # many appends were committed as commits made.
    (appends,) = points(commits)
    assert appends.sum >= appends.count
    assert value(
        metrics["meerkat.store.commit.duration"], **{"meerkat.store.backend": backend}
    ) == (appends.count)
    runs = metrics["meerkat.session.runs"]
    # Two cold-recovered inputs, hi, the two of s-2, c, d, x: completed; fail: failed.
    assert value(runs, **{"meerkat.run.outcome": "completed"}) >= 6
    failed = {"meerkat.run.outcome": "failed", "error.type": "runtime_apply_failure"}
    assert value(runs, **failed) == 1
    assert value(metrics["meerkat.run.duration"], **failed) == 1
    assert value(metrics["meerkat.input.queued"], **{"meerkat.input.lane": "queue"}) == 0
    assert value(metrics["meerkat.session.live"]) >= 1
    assert value(metrics["meerkat.session.passivations"]) >= 1
    for name in ("ledger", "views"):
        projection = {"meerkat.projection.name": name}
        assert value(metrics["meerkat.projection.position"], **projection) > 0
        assert value(metrics["meerkat.projection.lag"], **projection) >= 0
        status = metrics["meerkat.projection.status"]
        assert value(status, **projection, **{"meerkat.projection.status": "running"}) == 1
        assert value(status, **projection, **{"meerkat.projection.status": "failed"}) == 0

    # Every span of the table, with attributes among those it documents.
    spans = otel.spans()
    ours = [s for s in spans if not s.name.startswith("host.")]
    assert {s.name for s in ours} == {spec.name for spec in SPANS}
    documented = {spec.name: set(spec.attributes) for spec in SPANS}
    for span in ours:
        assert span.instrumentation_scope is not None
        assert span.instrumentation_scope.name == "meerkat_runtime"
        assert set(attrs(span)) <= documented[span.name], span.name

    # The accept span: ids the caller got back, a child of the caller's span.
    (accept_span,) = [
        s for s in otel.spans("meerkat.accept") if attrs(s)["meerkat.accept.outcome"] == "accepted"
        and attrs(s)["meerkat.input.id"] == str(accepted.input_id)
    ]  # fmt: skip
    assert accept_span.attributes is not None
    assert attrs(accept_span)["meerkat.session.id"] == "s-1"
    assert attrs(accept_span)["meerkat.input.kind"] == "prompt"
    assert accept_span.parent is not None
    assert accept_span.parent.span_id == request_span.get_span_context().span_id
    (dup_span,) = [
        s for s in otel.spans("meerkat.accept") if attrs(s)["meerkat.input.id"] == str(dup.input_id)
    ]  # fmt: skip
    assert attrs(dup_span)["meerkat.input.existing_id"] == str(accepted.input_id)
    (rejected_span,) = [
        s for s in otel.spans("meerkat.accept")
        if attrs(s)["meerkat.input.id"] == str(rejected.input_id)
    ]  # fmt: skip
    assert attrs(rejected_span)["meerkat.accept.reject_reason"] == "not_ready"

    # Run spans carry the session and inputs; the executor's span is the run span's child.
    runs_by_input = {
        input_id: s
        for s in otel.spans("meerkat.run")
        for input_id in attrs(s).get("meerkat.input.ids", ())
    }
    run_span = runs_by_input[str(accepted.input_id)]
    assert attrs(run_span)["meerkat.session.id"] == "s-1"
    assert attrs(run_span)["meerkat.run.outcome"] == "completed"
    uuid.UUID(str(attrs(run_span)["meerkat.run.id"]))
    children = [
        s
        for s in otel.spans("host.execute")
        if s.parent is not None and s.parent.span_id == run_span.context.span_id
    ]
    assert len(children) == 1
    fail_span = runs_by_input[str(failing.input_id)]
    assert attrs(fail_span)["meerkat.run.outcome"] == "failed"
    assert fail_span.status.status_code is StatusCode.ERROR

    # accept_many: one session's call names it; a call over several sessions does not.
    many_spans = otel.spans("meerkat.accept_many")
    assert len(many_spans) == 2
    by_session = [s for s in many_spans if "meerkat.session.id" in attrs(s)]
    assert len(by_session) == 1
    assert attrs(by_session[0])["meerkat.input.ids"] == tuple(str(o.input_id) for o in many)

    # Recovery: the load of a session another process left with work recovers it cold;
    # rt.recover() goes over every session of the store.
    loads = [
        s
        for s in otel.spans("meerkat.session.load")
        if attrs(s)["meerkat.session.id"] == "cold-actor"
    ]
    assert attrs(loads[0])["meerkat.recovery.cold"] is True
    assert attrs(loads[0])["meerkat.session.version"] > 0
    (recovery,) = otel.spans("meerkat.recovery")
    assert attrs(recovery)["meerkat.recovery.sessions"] == 2
    assert attrs(recovery)["meerkat.recovery.recovered"] == len(reports)

    batches = otel.spans("meerkat.projection.batch")
    assert {attrs(s)["meerkat.projection.name"] for s in batches} == {"ledger", "views"}
    assert all(attrs(s)["meerkat.projection.events"] > 0 for s in batches)


def test_a_call_that_raises_is_measured_with_its_error_type(otel: Otel) -> None:
    from meerkat_runtime import StoreError

    store, faults = faulty_store("memory://")
    with Runtime.open(store, **otel.providers) as rt:
        s = rt.session("s")
        faults.fail_appends.set()  # the disk fails: accept raises, nothing is written
        with pytest.raises(StoreError):
            s.accept(prompt("x"))
        metrics = otel.metrics()
    store.close()
    duration = metrics["meerkat.accept.duration"]
    assert (
        value(duration, **{"meerkat.accept.operation": "accept", "error.type": "StoreError"}) == 1
    )
    assert "meerkat.accept.inputs" not in metrics or not points(metrics["meerkat.accept.inputs"])
    (span,) = otel.spans("meerkat.accept")
    assert span.status.status_code is StatusCode.ERROR
    assert attrs(span)["error.type"] == "StoreError"


def test_off_without_an_sdk_or_without_the_package(
    otel: Otel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No SDK set globally (no test sets one), none passed: no telemetry object at all.
    assert telemetry_for() is None
    with Runtime.open("memory://") as rt:
        assert rt._telemetry is None
        rt.session("s").accept(prompt())
    # Only a meter provider: metrics on, spans through the API's no-op tracer.
    only_metrics = telemetry_for(otel.meter_provider)
    assert only_metrics is not None and not only_metrics.tracing
    # opentelemetry-api not installed (the otel extra left out): off, even if asked.
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    assert telemetry_for(otel.meter_provider, otel.tracer_provider) is None


def test_gauges_of_several_runtimes_on_one_provider(otel: Otel) -> None:
    """Session counts add up over the runtimes of a provider; a closed one stops reporting."""
    a = Runtime.open("memory://", projections=False, **otel.providers)
    b = Runtime.open("memory://", projections=False, **otel.providers)
    try:
        a.session("a-1").accept(prompt())
        b.session("b-1").accept(prompt())
        b.session("b-2").accept(prompt())
        assert value(otel.metrics()["meerkat.session.live"]) == 3
        queued = otel.metrics()["meerkat.input.queued"]  # no executor: the inputs wait
        assert value(queued, **{"meerkat.input.lane": "queue"}) == 3
        b.close()
        assert value(otel.metrics()["meerkat.session.live"]) == 1
    finally:
        a.close()
        b.close()
    assert "meerkat.session.live" not in otel.metrics()  # no runtime left: no point


def test_a_run_in_flight_at_close_ends_its_span_unfinished(otel: Otel) -> None:

    executor = GatedExecutor()
    rt = Runtime.open("memory://", executor=executor, close_timeout=0.1, **otel.providers)
    try:
        rt.session("s").accept(prompt())
        assert executor.started.wait(WAIT)
    finally:
        rt.close()
        executor.release()
    (span,) = otel.spans("meerkat.run")
    assert attrs(span)["meerkat.run.outcome"] == "unfinished"
    assert "meerkat.session.runs" not in otel.metrics()


class FailingProjection(Projection):
    """A read model whose handler raises on every event: it stops (strategy ``fail``)."""

    name = "failing"
    failure_strategy = FailureStrategy("fail")

    def create_schema(self, cur: Cursor) -> None:
        return None

    def apply(self, cur: Cursor, events: Sequence[RecordedEvent]) -> None:
        raise ValueError("cannot apply")


def test_log_records_carry_the_ids(otel: Otel, caplog: pytest.LogCaptureFixture) -> None:
    executor = GatedExecutor()
    with (
        caplog.at_level(logging.INFO, logger="meerkat_runtime"),
        Runtime.open("memory://", executor=executor, projections=False) as rt,
    ):
        s = rt.session("s-log")
        outcome = s.accept(prompt())
        assert executor.started.wait(WAIT)
        (run_id,) = [e.event.run_id for e in s.events() if isinstance(e.event, RunStarted)]
        assert s.cancel_run("operator says stop")
        # The executor returns once cancelled: its result comes after the run ended.
        wait_until(lambda: any("late result" in r.getMessage() for r in caplog.records))
        # A projection that cannot apply an event logs the event's session.
        pset = ProjectionSet(
            rt.store, [FailingProjection()], telemetry=telemetry_for(**otel.providers)
        )
        try:
            wait_until(lambda: pset.status()[0].status == "failed", what="projection failed")
        finally:
            pset.close()
    assert outcome.input_id

    cancelled = [r for r in caplog.records if "cancelled: operator says stop" in r.getMessage()]
    late = [r for r in caplog.records if "late result" in r.getMessage()]
    for record in cancelled + late:
        assert getattr(record, "meerkat.session.id") == "s-log"
        assert getattr(record, "meerkat.run.id") == str(run_id)
    assert len(cancelled) == 1 and len(late) == 1
    failed = [r for r in caplog.records if "projection failing failed" in r.getMessage()]
    assert failed
    assert getattr(failed[0], "meerkat.projection.name") == "failing"
    assert getattr(failed[0], "meerkat.session.id") == "s-log"
    # The batch that raised is a failed span.
    errors = [
        s
        for s in otel.spans("meerkat.projection.batch")
        if s.status.status_code is StatusCode.ERROR
    ]
    assert errors and attrs(errors[0])["error.type"] == "ValueError"


def test_run_spans_of_async_executors_checkpoints_and_timeouts(otel: Otel) -> None:
    host = otel.tracer_provider.get_tracer("host")

    async def executor(request: RunRequest) -> RunResult:
        with host.start_as_current_span("host.async_execute"):
            await request.acheckpoint("digest", 2)
            if request.primitive.extract_content() == "hang":
                await asyncio.sleep(30)  # cancelled when the run times out
            return RunResult.completed("ok")

    with Runtime.open("memory://", executor=executor, run_timeout=0.5, **otel.providers) as rt:
        s = rt.session("s")
        done = s.accept(prompt("quick")).completion
        assert done is not None
        done.wait(WAIT)
        hung = s.accept(prompt("hang", idempotency_key="h"))
        wait_until(
            lambda: any(
                attrs(r).get("meerkat.run.outcome") == "failed" for r in otel.spans("meerkat.run")
            ),
            what="the timed-out run's span",
        )
        metrics = otel.metrics()
    assert hung.kind == "accepted"
    quick, *_ = [
        r for r in otel.spans("meerkat.run") if attrs(r)["meerkat.run.outcome"] == "completed"
    ]
    # The async executor runs on the runtime's loop, inside the run's span.
    children = [
        s
        for s in otel.spans("host.async_execute")
        if s.parent is not None and s.parent.span_id == quick.context.span_id
    ]
    assert len(children) == 1
    assert [e.name for e in quick.events] == ["meerkat.run.checkpoint"]
    assert dict(quick.events[0].attributes or {}) == {"meerkat.run.checkpoint.sequence": 1}
    (timed_out,) = [
        r for r in otel.spans("meerkat.run") if attrs(r)["meerkat.run.outcome"] == "failed"
    ]
    assert attrs(timed_out)["error.type"] == "time_budget_exceeded"
    runs = metrics["meerkat.session.runs"]
    assert (
        value(runs, **{"meerkat.run.outcome": "failed", "error.type": "time_budget_exceeded"}) == 1
    )


def test_a_cancelled_run_and_one_lost_with_its_lease(otel: Otel, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    executor = GatedExecutor()
    try:
        with Runtime.open(
            url, executor=executor, node_id="a", lease_ttl=1.0, **otel.providers
        ) as a:
            s = a.session("s")
            s.accept(prompt("one"))
            assert executor.started.wait(WAIT)
            assert s.cancel_run("enough")
            wait_until(
                lambda: any(
                    attrs(r).get("meerkat.run.outcome") == "cancelled"
                    for r in otel.spans("meerkat.run")
                ),
                what="the cancelled run's span",
            )
            executor.started.clear()
            s.accept(prompt("two"))
            assert executor.started.wait(WAIT)
            # Another process takes the session by force: this one loses the lease.
            with Runtime.open(url, node_id="b", force_takeover=True) as b:
                b.session("s").state()
                wait_until(
                    lambda: any(
                        attrs(r).get("meerkat.run.outcome") == "lost"
                        for r in otel.spans("meerkat.run")
                    ),
                    what="the lost run's span",
                )
            metrics = otel.metrics()
    finally:
        executor.release()
    runs = metrics["meerkat.session.runs"]
    assert value(runs, **{"meerkat.run.outcome": "cancelled"}) == 1
    assert value(runs, **{"meerkat.run.outcome": "lost"}) == 1


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_the_asyncio_api_is_measured_like_the_sync_one(otel: Otel) -> None:
    from meerkat_runtime.aio import AsyncRuntime

    async with AsyncRuntime.open("memory://", **otel.providers) as rt:
        one = await rt.session("s").accept(prompt("x"))
        await rt.session("s").accept_many([prompt("y"), prompt("z")])
        await rt.accept_many([("t", prompt("w"))])
        with pytest.raises(InvalidInput):
            await rt.session("s").accept({"input_type": "prompt"})
        metrics = otel.metrics()
    inputs = metrics["meerkat.accept.inputs"]
    assert (
        value(inputs, **{"meerkat.input.kind": "prompt", "meerkat.accept.outcome": "accepted"}) == 4
    )
    duration = metrics["meerkat.accept.duration"]
    assert value(duration, **{"meerkat.accept.operation": "accept"}) == 1
    assert value(duration, **{"meerkat.accept.operation": "accept_many"}) == 2
    (span,) = otel.spans("meerkat.accept")
    assert attrs(span)["meerkat.input.id"] == str(one.input_id)
    assert attrs(span)["meerkat.accept.outcome"] == "accepted"
    assert len(otel.spans("meerkat.accept_many")) == 2


@pytest.mark.anyio
async def test_an_async_accept_whose_caller_was_cancelled_is_measured_as_accepted(
    otel: Otel,
) -> None:
    # The caller going away does not withdraw the input: the actor appends it, so the
    # metrics and the span say accepted (not a failure of type CancelledError).
    from meerkat_runtime.aio import AsyncRuntime

    async with AsyncRuntime.open("memory://", **otel.providers) as rt:
        s = rt.session("s")
        task = asyncio.ensure_future(s.accept(prompt("x", idempotency_key="k")))
        many = asyncio.ensure_future(s.accept_many([prompt("y"), prompt("z")]))
        await asyncio.sleep(0)  # both are posted to the actor
        task.cancel()
        many.cancel()
        for cancelled in (task, many):
            with pytest.raises(asyncio.CancelledError):
                await cancelled
        assert (await s.accept(prompt("x", idempotency_key="k"))).is_deduplicated
        await asyncio.to_thread(
            wait_until, lambda: len(otel.spans("meerkat.accept")) == 2, WAIT, "the spans"
        )
        await asyncio.to_thread(
            wait_until, lambda: len(otel.spans("meerkat.accept_many")) == 1, WAIT, "the span"
        )
        metrics = otel.metrics()
    inputs = metrics["meerkat.accept.inputs"]
    kind = {"meerkat.input.kind": "prompt"}
    assert value(inputs, **kind, **{"meerkat.accept.outcome": "accepted"}) == 3
    assert value(inputs, **kind, **{"meerkat.accept.outcome": "deduplicated"}) == 1
    assert all("error.type" not in a for a in attribute_sets(metrics["meerkat.accept.duration"]))
    outcomes = sorted(
        attrs(span)["meerkat.accept.outcome"] for span in otel.spans("meerkat.accept")
    )
    assert outcomes == ["accepted", "deduplicated"]
    assert all(span.status.status_code is not StatusCode.ERROR for span in otel.spans())


@pytest.mark.anyio
async def test_a_cancelled_runtime_accept_many_is_measured_once_answered(otel: Otel) -> None:
    from meerkat_runtime.aio import AsyncRuntime

    async with AsyncRuntime.open("memory://", **otel.providers) as rt:
        task = asyncio.ensure_future(rt.accept_many([("a", prompt("x")), ("b", prompt("y"))]))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.to_thread(
            wait_until, lambda: len(otel.spans("meerkat.accept_many")) == 1, WAIT, "the span"
        )
        metrics = otel.metrics()
    inputs = metrics["meerkat.accept.inputs"]
    assert (
        value(inputs, **{"meerkat.input.kind": "prompt", "meerkat.accept.outcome": "accepted"}) == 2
    )
    (span,) = otel.spans("meerkat.accept_many")
    assert span.status.status_code is not StatusCode.ERROR
