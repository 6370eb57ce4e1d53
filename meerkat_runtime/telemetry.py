"""OpenTelemetry metrics and spans of the runtime, and the ids its log records carry.

Everything goes through ``opentelemetry-api`` (the ``otel`` extra); the host
brings the SDK and its exporters. A runtime reports to the providers passed
to ``Runtime.open(meter_provider=..., tracer_provider=...)``, else to the
global ones the host's SDK set *before* the runtime opened. When there is
nothing to report to (the API is not installed, or no SDK is configured and
none is passed) the runtime has no :class:`Telemetry` at all: every hook site
is one ``is None`` test, and ``opentelemetry`` is not even imported.

:data:`INSTRUMENTS` and :data:`SPANS` are the one table of what is emitted:
the instruments are created from it, and docs/guides/telemetry.md is checked
against it. Log records of the runtime carry the same ids as the spans, as
record attributes named like them (``meerkat.session.id``, ...; see
:func:`log_ids`), which the SDK's logging handler exports as log attributes.

The core (``meerkat_runtime.events``) never imports this module.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from meerkat_runtime.errors import AcceptManyFailed
from meerkat_runtime.events.runtime_event import (
    RunCancelled,
    RunCheckpointed,
    RunCompleted,
    RunFailed,
    RuntimeEventEnvelope,
)

if TYPE_CHECKING:
    import uuid

    from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation
    from opentelemetry.trace import Span, Tracer, TracerProvider

    from meerkat_runtime.actors._session import AcceptOutcome
    from meerkat_runtime.events.inputs import Input

__all__ = [
    "ATTRIBUTES",
    "INSTRUMENTS",
    "SPANS",
    "AcceptCall",
    "InstrumentSpec",
    "RuntimeGauges",
    "SpanSpec",
    "Telemetry",
    "log_ids",
    "telemetry_for",
]

InstrumentKind = Literal[
    "counter",
    "histogram",
    "observable_counter",
    "observable_up_down_counter",
    "observable_gauge",
]


@dataclass(frozen=True, slots=True)
class InstrumentSpec:
    """One metric instrument: its name, kind, unit, the attributes it may carry, its meaning."""

    name: str
    kind: InstrumentKind
    unit: str
    attributes: tuple[str, ...]
    description: str
    #: Bucket boundaries advised to the SDK (histograms only).
    buckets: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True)
class SpanSpec:
    """One span: its name, the attributes it may carry, what it covers."""

    name: str
    attributes: tuple[str, ...]
    description: str


# Attribute names (the spans' and log records' ids first).
SESSION_ID = "meerkat.session.id"
INPUT_ID = "meerkat.input.id"
INPUT_IDS = "meerkat.input.ids"
RUN_ID = "meerkat.run.id"
PROJECTION_NAME = "meerkat.projection.name"
INPUT_KIND = "meerkat.input.kind"
INPUT_COUNT = "meerkat.input.count"
INPUT_LANE = "meerkat.input.lane"
EXISTING_ID = "meerkat.input.existing_id"
ACCEPT_OUTCOME = "meerkat.accept.outcome"
ACCEPT_OPERATION = "meerkat.accept.operation"
REJECT_REASON = "meerkat.accept.reject_reason"
RUN_OUTCOME = "meerkat.run.outcome"
STORE_BACKEND = "meerkat.store.backend"
SESSION_VERSION = "meerkat.session.version"
SNAPSHOT_VERSION = "meerkat.session.snapshot_version"
COLD_RECOVERY = "meerkat.recovery.cold"
RECOVERY_SESSIONS = "meerkat.recovery.sessions"
RECOVERY_RECOVERED = "meerkat.recovery.recovered"
RECOVERY_OWNED = "meerkat.recovery.owned_elsewhere"
PROJECTION_STATUS = "meerkat.projection.status"
PROJECTION_EVENTS = "meerkat.projection.events"
PROJECTION_POSITION = "meerkat.projection.position"
CHECKPOINT_SEQUENCE = "meerkat.run.checkpoint.sequence"
ERROR_TYPE = "error.type"

#: Every attribute any instrument, span or log record carries, and what it holds.
ATTRIBUTES: dict[str, str] = {
    SESSION_ID: "The session's id.",
    INPUT_ID: "The input's id (UUID).",
    INPUT_IDS: "The ids of several inputs: an `accept_many` call's, or those a run contributes.",
    RUN_ID: "The run's id (UUID).",
    PROJECTION_NAME: "The projection's name (`ledger`, `views`, or a host's own).",
    INPUT_KIND: "The input kind used by policy (`prompt`, `peer_message`, `flow_step`, ...).",
    INPUT_COUNT: "How many inputs an `accept_many` call carried.",
    INPUT_LANE: "The queue an input waits in: `queue` or `steer`.",
    EXISTING_ID: "For a deduplicated input: the id of the input it duplicates.",
    ACCEPT_OUTCOME: "What admission answered: `accepted`, `deduplicated` or `rejected`.",
    ACCEPT_OPERATION: "The call: `accept` or `accept_many`.",
    REJECT_REASON: "For a rejected input: why (`not_ready`, ...).",
    RUN_OUTCOME: "How the run ended in the log: `completed`, `failed` or `cancelled`; "
    "`lost` when the session's lease went to another process, `unfinished` when the "
    "runtime closed first (spans only).",
    STORE_BACKEND: "The store: `memory`, `sqlite` or `postgresql`.",
    SESSION_VERSION: "Events in the session's log once loaded.",
    SNAPSHOT_VERSION: "The version of the snapshot the load started from (0: none).",
    COLD_RECOVERY: "Whether the load applied cold recovery (the log's last writer was "
    "another process with work in flight).",
    RECOVERY_SESSIONS: "Sessions in the store that recovery went over.",
    RECOVERY_RECOVERED: "Sessions recovered (a report each).",
    RECOVERY_OWNED: "Sessions left alone: another live process owns them.",
    PROJECTION_STATUS: "`running`, `retrying`, `failed`, `stopped` or `standby`.",
    PROJECTION_EVENTS: "Events in the batch.",
    PROJECTION_POSITION: "The projection's offset (log position) after the batch.",
    CHECKPOINT_SEQUENCE: "On a run span's `meerkat.run.checkpoint` event: the boundary's sequence.",
    ERROR_TYPE: "The exception's class name when the call raised or the span failed; "
    "for a failed run, its error kind (`runtime_apply_failure`, `time_budget_exceeded`, ...).",
}

_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_RUN_SECONDS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
_SIZES = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0)

#: Every metric instrument the runtime creates (meter ``meerkat_runtime``).
INSTRUMENTS: tuple[InstrumentSpec, ...] = (
    InstrumentSpec(
        "meerkat.accept.inputs",
        "counter",
        "{input}",
        (INPUT_KIND, ACCEPT_OUTCOME),
        "Inputs that `accept` or `accept_many` answered, by outcome. A malformed input "
        "(`InvalidInput`) never reaches admission and is not counted.",
    ),
    InstrumentSpec(
        "meerkat.accept.duration",
        "histogram",
        "s",
        (ACCEPT_OPERATION, ERROR_TYPE),
        "Time of one `accept` or `accept_many` call: from the call until its events are "
        "durable, or until it raised (then with `error.type`, e.g. `Overloaded`).",
        _SECONDS,
    ),
    InstrumentSpec(
        "meerkat.store.commit.duration",
        "histogram",
        "s",
        (STORE_BACKEND,),
        "Time of one commit of the store's writer: one transaction for a group of appends.",
        _SECONDS,
    ),
    InstrumentSpec(
        "meerkat.store.commit.appends",
        "histogram",
        "{append}",
        (STORE_BACKEND,),
        "Appends committed together by one commit (the group-commit batch size; an append "
        "is one accept, one `accept_many` share or one lifecycle step of a session).",
        _SIZES,
    ),
    InstrumentSpec(
        "meerkat.session.runs",
        "counter",
        "{run}",
        (RUN_OUTCOME, ERROR_TYPE),
        "Runs started by this runtime that ended, by outcome.",
    ),
    InstrumentSpec(
        "meerkat.run.duration",
        "histogram",
        "s",
        (RUN_OUTCOME, ERROR_TYPE),
        "Time of a run started by this runtime: from its start being durable until its "
        "end is (the executor call and the commits around it).",
        _RUN_SECONDS,
    ),
    InstrumentSpec(
        "meerkat.input.queued",
        "observable_up_down_counter",
        "{input}",
        (INPUT_LANE,),
        "Inputs waiting in the queues of the sessions live in this runtime. With an "
        "executor bound, a session with queued work is never passivated, so this is all "
        "of them; without one, `rt.ledger` counts the queued inputs of the whole store.",
    ),
    InstrumentSpec(
        "meerkat.session.live",
        "observable_up_down_counter",
        "{session}",
        (),
        "Session actors live in this runtime (the others are passivated: their state is "
        "in the store only).",
    ),
    InstrumentSpec(
        "meerkat.session.passivations",
        "observable_counter",
        "{session}",
        (),
        "Session actors passivated since the runtime opened: stopped when idle for "
        "`idle_timeout`, or to make room under `max_live_sessions`.",
    ),
    InstrumentSpec(
        "meerkat.projection.position",
        "observable_gauge",
        "{position}",
        (PROJECTION_NAME,),
        "The log position up to which the projection has applied events (its offset).",
    ),
    InstrumentSpec(
        "meerkat.projection.lag",
        "observable_gauge",
        "{event}",
        (PROJECTION_NAME,),
        "The log's head position minus the projection's position.",
    ),
    InstrumentSpec(
        "meerkat.projection.status",
        "observable_gauge",
        "1",
        (PROJECTION_NAME, PROJECTION_STATUS),
        "1 for the projection's current status, 0 for each other status.",
    ),
)

#: Every span the runtime starts (tracer ``meerkat_runtime``).
SPANS: tuple[SpanSpec, ...] = (
    SpanSpec(
        "meerkat.accept",
        (SESSION_ID, INPUT_ID, INPUT_KIND, ACCEPT_OUTCOME, EXISTING_ID, REJECT_REASON, ERROR_TYPE),
        "`Session.accept`: from the call until the input's events are durable (the "
        "group commit that holds them), or until it raised. A child of the caller's "
        "current span.",
    ),
    SpanSpec(
        "meerkat.accept_many",
        (SESSION_ID, INPUT_IDS, INPUT_COUNT, ERROR_TYPE),
        "`Session.accept_many` and `Runtime.accept_many`: from the call until every "
        "share is durable. `meerkat.session.id` only when one session.",
    ),
    SpanSpec(
        "meerkat.run",
        (SESSION_ID, RUN_ID, INPUT_IDS, RUN_OUTCOME, ERROR_TYPE),
        "A run: from its start being durable until its end is. The executor is called "
        "inside it (blocking executors on the pool, async ones on the loop), so the "
        "executor's own spans are its children; each committed checkpoint adds an event "
        "`meerkat.run.checkpoint`.",
    ),
    SpanSpec(
        "meerkat.session.load",
        (SESSION_ID, SESSION_VERSION, SNAPSHOT_VERSION, COLD_RECOVERY, ERROR_TYPE),
        "A session actor loading its state from the store (latest snapshot, then the "
        "events after it) and applying recovery on load: the first use of a session, "
        "or after a failure dropped its state.",
    ),
    SpanSpec(
        "meerkat.recovery",
        (RECOVERY_SESSIONS, RECOVERY_RECOVERED, RECOVERY_OWNED, ERROR_TYPE),
        "`Runtime.recover` (and `recover='eager'` at open): every session of the store.",
    ),
    SpanSpec(
        "meerkat.projection.batch",
        (PROJECTION_NAME, PROJECTION_EVENTS, PROJECTION_POSITION, ERROR_TYPE),
        "A projection applying a page of events to its read model and moving its offset, "
        "in one transaction.",
    ),
)


def log_ids(
    session_id: str | None = None,
    *,
    input_id: uuid.UUID | str | None = None,
    run_id: uuid.UUID | str | None = None,
    projection: str | None = None,
) -> dict[str, str]:
    """The ids a log record carries, for ``log.warning(..., extra=log_ids(sid, run_id=r))``.

    They become record attributes named like the span attributes
    (``getattr(record, "meerkat.session.id")``).
    """
    ids: dict[str, str] = {}
    if session_id is not None:
        ids[SESSION_ID] = session_id
    if input_id is not None:
        ids[INPUT_ID] = str(input_id)
    if run_id is not None:
        ids[RUN_ID] = str(run_id)
    if projection is not None:
        ids[PROJECTION_NAME] = projection
    return ids


# ---------------------------------------------------------------- what the gauges read


class ProjectionState(Protocol):
    """What the projection gauges read of a ``ProjectionStatus``."""

    @property
    def name(self) -> str: ...

    @property
    def status(self) -> str: ...

    @property
    def position(self) -> int: ...

    @property
    def lag(self) -> int: ...


@dataclass(frozen=True, slots=True)
class RuntimeGauges:
    """Where one runtime's observable instruments read their values (at collection)."""

    live_sessions: Callable[[], int]
    passivations: Callable[[], int]
    queued_inputs: Callable[[], tuple[int, int]]  # (queue lane, steer lane)
    projections: Callable[[], Sequence[ProjectionState]]


_PROJECTION_CACHE_SECONDS = 0.5
_PROJECTION_STATUSES = ("running", "retrying", "failed", "stopped", "standby")


def _error_type(exc: BaseException) -> str:
    return type(exc).__name__


def telemetry_for(
    meter_provider: MeterProvider | None = None,
    tracer_provider: TracerProvider | None = None,
    *,
    store_backend: str = "",
) -> Telemetry | None:
    """The telemetry of a runtime being opened, or None when there is nothing to report to.

    Providers passed are used as given. Otherwise the global ones are, unless
    they are still the API's defaults (no SDK configured): then that half is
    off, and with both off there is no telemetry at all.
    """
    try:
        from opentelemetry import metrics, trace
    except ImportError:  # the otel extra is not installed
        return None
    if meter_provider is None:
        meter_provider = metrics.get_meter_provider()
        if _is_api_default(meter_provider, metrics.NoOpMeterProvider, "_ProxyMeterProvider"):
            meter_provider = None
    if tracer_provider is None:
        tracer_provider = trace.get_tracer_provider()
        if _is_api_default(tracer_provider, trace.NoOpTracerProvider, "ProxyTracerProvider"):
            tracer_provider = None
    if meter_provider is None and tracer_provider is None:
        return None
    return Telemetry(meter_provider, tracer_provider, store_backend=store_backend)


def _is_api_default(provider: object, no_op: type, proxy_name: str) -> bool:
    # The API's proxy stands in until an SDK sets the global provider; its class is
    # private in the metrics API, hence the name.
    return isinstance(provider, no_op) or type(provider).__name__ == proxy_name


class _OpenRun:
    __slots__ = ("session_id", "span", "started")

    def __init__(self, session_id: str, span: Span | None, started: float) -> None:
        self.session_id = session_id
        self.span = span
        self.started = started


class Telemetry:
    """One runtime's instruments, tracer and hooks (made by :func:`telemetry_for`).

    A half without a provider (only metrics, or only traces) uses the API's
    no-op meter or tracer.
    """

    def __init__(
        self,
        meter_provider: MeterProvider | None,
        tracer_provider: TracerProvider | None,
        *,
        store_backend: str = "",
    ) -> None:
        from opentelemetry import context, metrics, trace

        from meerkat_runtime import __version__

        self._context = context
        self._trace = trace
        self._error_status = trace.Status(trace.StatusCode.ERROR)
        self.tracing = tracer_provider is not None
        self.tracer: Tracer = (
            tracer_provider.get_tracer("meerkat_runtime", __version__)
            if tracer_provider is not None
            else trace.NoOpTracer()
        )
        self.meter: Meter = (
            meter_provider.get_meter("meerkat_runtime", __version__)
            if meter_provider is not None
            else metrics.NoOpMeter("meerkat_runtime")
        )
        sync = {s.name: _create(self.meter, s) for s in INSTRUMENTS if not s.kind.startswith("o")}
        self._accept_inputs = sync["meerkat.accept.inputs"]
        self._accept_duration = sync["meerkat.accept.duration"]
        self._commit_duration = sync["meerkat.store.commit.duration"]
        self._commit_appends = sync["meerkat.store.commit.appends"]
        self._runs_ended = sync["meerkat.session.runs"]
        self._run_duration = sync["meerkat.run.duration"]
        self.gauges: RuntimeGauges | None = None
        self._observers = (
            _observers_of(meter_provider, self.meter) if meter_provider is not None else None
        )
        self._store_attrs = {STORE_BACKEND: store_backend}
        # Attribute dicts are made once per value, not per measurement.
        self._outcome_attrs: dict[tuple[str, str], dict[str, str]] = {}
        self._call_attrs = {
            op: {ACCEPT_OPERATION: op} for op in ("accept", "accept_many")
        }  # fmt: skip
        self._runs: dict[uuid.UUID, _OpenRun] = {}
        self._runs_lock = threading.Lock()

    # ------------------------------------------------------------ lifetime

    def observe(self, gauges: RuntimeGauges) -> None:
        """Report ``gauges`` through the observable instruments until :meth:`close`."""
        self.gauges = gauges
        if self._observers is not None:
            self._observers.add(self)

    def close(self) -> None:
        """Stop reporting gauges; end the spans of runs still in flight (``unfinished``)."""
        self.gauges = None
        if self._observers is not None:
            self._observers.discard(self)
        with self._runs_lock:
            runs, self._runs = list(self._runs.values()), {}
        for run in runs:
            if run.span is not None:
                run.span.set_attribute(RUN_OUTCOME, "unfinished")
                run.span.end()

    # ------------------------------------------------------------ accepts

    def accept(
        self, session_id: str, inp: Input, send: Callable[[Input], AcceptOutcome]
    ) -> AcceptOutcome:
        """``Session.accept`` of ``inp`` through ``send``, measured and traced."""
        call = self.accept_started(session_id, inp)
        try:
            outcome = send(inp)
        except BaseException as exc:
            call.failed(exc)
            raise
        call.done(outcome)
        return outcome

    def accept_started(self, session_id: str, inp: Input) -> AcceptCall:
        """An accept of ``inp`` begins: its span starts; the returned call ends it (the
        sync API wraps a blocking send in it, the asyncio API an awaited one)."""
        span = None
        if self.tracing:
            span = self.tracer.start_span(
                "meerkat.accept",
                attributes={
                    SESSION_ID: session_id,
                    INPUT_ID: str(inp.input_header.id),
                    INPUT_KIND: inp.kind.value,
                },
            )
        return AcceptCall(self, "accept", [inp], span)

    def accept_many(
        self,
        session_id: str | None,
        inputs: Sequence[Input],
        send: Callable[[], list[AcceptOutcome]],
    ) -> list[AcceptOutcome]:
        """An ``accept_many`` of ``inputs`` (one session's, or several) through ``send``."""
        call = self.accept_many_started(session_id, inputs)
        try:
            outcomes = send()
        except BaseException as exc:
            call.failed(exc)
            raise
        call.done_many(outcomes)
        return outcomes

    def accept_many_started(self, session_id: str | None, inputs: Sequence[Input]) -> AcceptCall:
        """An ``accept_many`` of ``inputs`` begins (see :meth:`accept_started`)."""
        span = None
        if self.tracing:
            attributes: dict[str, Any] = {
                INPUT_COUNT: len(inputs),
                INPUT_IDS: [str(i.input_header.id) for i in inputs],
            }
            if session_id is not None:
                attributes[SESSION_ID] = session_id
            span = self.tracer.start_span("meerkat.accept_many", attributes=attributes)
        return AcceptCall(self, "accept_many", inputs, span)

    def _count(self, kind: str, outcome: str) -> None:
        attrs = self._outcome_attrs.get((kind, outcome))
        if attrs is None:
            attrs = self._outcome_attrs[(kind, outcome)] = {
                INPUT_KIND: kind,
                ACCEPT_OUTCOME: outcome,
            }
        self._accept_inputs.add(1, attrs)

    def _call_failed(
        self, operation: str, started: float, span: Span | None, exc: BaseException
    ) -> None:
        error = _error_type(exc)
        self._accept_duration.record(
            time.perf_counter() - started, {ACCEPT_OPERATION: operation, ERROR_TYPE: error}
        )
        if span is not None:
            self._fail(span, exc)
            span.end()

    def _fail(self, span: Span, exc: BaseException) -> None:
        span.set_attribute(ERROR_TYPE, _error_type(exc))
        span.record_exception(exc)
        span.set_status(self._error_status)

    # ------------------------------------------------------------ the store's writer

    def commit(self, appends: int, events: int, seconds: float) -> None:
        """One commit of the store's writer (``EventStore.observe_commits``)."""
        attrs = self._store_attrs
        self._commit_duration.record(seconds, attrs)
        self._commit_appends.record(appends, attrs)

    # ------------------------------------------------------------ runs

    @contextmanager
    def run_started(
        self, session_id: str, run_id: uuid.UUID, input_ids: Sequence[uuid.UUID]
    ) -> Iterator[None]:
        """A run's start is durable: open its span, current while the block hands the
        executor call over (so the call, on whatever thread, runs inside it)."""
        span = None
        if self.tracing:
            span = self.tracer.start_span(
                "meerkat.run",
                attributes={
                    SESSION_ID: session_id,
                    RUN_ID: str(run_id),
                    INPUT_IDS: [str(i) for i in input_ids],
                },
            )
        with self._runs_lock:
            self._runs[run_id] = _OpenRun(session_id, span, time.perf_counter())
        if span is None:
            yield
            return
        token = self._context.attach(self._trace.set_span_in_context(span))
        try:
            yield
        finally:
            self._context.detach(token)

    def run_not_started(self, run_id: uuid.UUID) -> None:
        """The executor call could not be handed over (the runtime is closing)."""
        with self._runs_lock:
            run = self._runs.pop(run_id, None)
        if run is not None and run.span is not None:
            run.span.set_attribute(RUN_OUTCOME, "unfinished")
            run.span.end()

    def committed(self, events: Iterable[RuntimeEventEnvelope]) -> None:
        """A session's events are durable: end the runs they end, mark their checkpoints."""
        if not self._runs:
            return
        for envelope in events:
            event = envelope.event
            if isinstance(event, RunCompleted):
                self._run_ended(event.run_id, "completed", None)
            elif isinstance(event, RunFailed):
                self._run_ended(event.run_id, "failed", event.error.kind.value)
            elif isinstance(event, RunCancelled):
                self._run_ended(event.run_id, "cancelled", None)
            elif isinstance(event, RunCheckpointed):
                run = self._runs.get(event.run_id)
                if run is not None and run.span is not None:
                    run.span.add_event(
                        "meerkat.run.checkpoint",
                        {CHECKPOINT_SEQUENCE: event.receipt.sequence},
                    )

    def session_lost(self, session_id: str) -> None:
        """Another process took the session: its runs here end as ``lost``."""
        with self._runs_lock:
            lost = [rid for rid, run in self._runs.items() if run.session_id == session_id]
        for run_id in lost:
            self._run_ended(run_id, "lost", None)

    def _run_ended(self, run_id: uuid.UUID, outcome: str, error: str | None) -> None:
        with self._runs_lock:
            run = self._runs.pop(run_id, None)
        if run is None:
            return  # not started by this runtime
        attrs = (
            {RUN_OUTCOME: outcome} if error is None else {RUN_OUTCOME: outcome, ERROR_TYPE: error}
        )
        self._runs_ended.add(1, attrs)
        self._run_duration.record(time.perf_counter() - run.started, attrs)
        span = run.span
        if span is not None:
            span.set_attributes(attrs)
            if outcome == "failed":
                span.set_status(self._error_status)
            span.end()

    # ------------------------------------------------------------ other spans

    @contextmanager
    def span(self, name: str, attributes: dict[str, Any]) -> Iterator[Span]:
        """A span current for the block; an exception escaping it marks it failed."""
        span = self.tracer.start_span(name, attributes=attributes)
        token = self._context.attach(self._trace.set_span_in_context(span))
        try:
            yield span
        except BaseException as exc:
            self._fail(span, exc)
            raise
        finally:
            self._context.detach(token)
            span.end()


def _create(meter: Meter, spec: InstrumentSpec) -> Any:
    if spec.kind == "counter":
        return meter.create_counter(spec.name, unit=spec.unit, description=spec.description)
    if spec.kind == "histogram":
        return meter.create_histogram(
            spec.name,
            unit=spec.unit,
            description=spec.description,
            explicit_bucket_boundaries_advisory=list(spec.buckets) or None,
        )
    raise ValueError(f"{spec.name} is observable: made once per meter provider")


# ---------------------------------------------------------------- observable instruments

# A meter provider hands out one instrument per name (a second "create" returns the
# first, with its callbacks), so the observable instruments are made once per provider
# and report for every live runtime on it: sums of the session and queue counts, and
# each projection name once (the runtime that opened first reports it).
_OBSERVERS: weakref.WeakKeyDictionary[Any, _Observers] = weakref.WeakKeyDictionary()
_OBSERVERS_LOCK = threading.Lock()


def _observers_of(provider: MeterProvider, meter: Meter) -> _Observers:
    with _OBSERVERS_LOCK:
        try:
            observers = _OBSERVERS.get(provider)
        except TypeError:  # not weakly referenceable: one set per runtime
            return _Observers(meter)
        if observers is None:
            observers = _OBSERVERS[provider] = _Observers(meter)
        return observers


class _Observers:
    """The observable instruments of one meter provider and the runtimes they report."""

    def __init__(self, meter: Meter) -> None:
        from opentelemetry.metrics import Observation

        self._observation = Observation
        self._lock = threading.Lock()
        self._telemetries: list[weakref.ref[Telemetry]] = []
        self._projection_cache: tuple[float, list[ProjectionState]] | None = None
        callbacks = {
            "meerkat.input.queued": self._queued,
            "meerkat.session.live": self._live,
            "meerkat.session.passivations": self._passivations,
            "meerkat.projection.position": self._projection_position,
            "meerkat.projection.lag": self._projection_lag,
            "meerkat.projection.status": self._projection_status,
        }
        makers = {
            "observable_counter": meter.create_observable_counter,
            "observable_up_down_counter": meter.create_observable_up_down_counter,
            "observable_gauge": meter.create_observable_gauge,
        }
        for spec in INSTRUMENTS:
            if spec.kind in makers:
                makers[spec.kind](
                    spec.name,
                    callbacks=[callbacks[spec.name]],
                    unit=spec.unit,
                    description=spec.description,
                )

    def add(self, telemetry: Telemetry) -> None:
        with self._lock:
            self._telemetries.append(weakref.ref(telemetry))

    def discard(self, telemetry: Telemetry) -> None:
        with self._lock:
            self._telemetries = [r for r in self._telemetries if r() not in (None, telemetry)]

    def _sources(self) -> list[RuntimeGauges]:
        with self._lock:
            refs = list(self._telemetries)
        out = []
        for ref in refs:
            telemetry = ref()
            gauges = telemetry.gauges if telemetry is not None else None
            if gauges is not None:
                out.append(gauges)
        return out

    def _sum(self, read: Callable[[RuntimeGauges], int]) -> Iterable[Observation]:
        total, any_source = 0, False
        for gauges in self._sources():
            try:
                total += read(gauges)
            except Exception:  # closing under us: report the others
                continue
            any_source = True
        return [self._observation(total)] if any_source else []

    def _live(self, _options: CallbackOptions) -> Iterable[Observation]:
        return self._sum(lambda g: g.live_sessions())

    def _passivations(self, _options: CallbackOptions) -> Iterable[Observation]:
        return self._sum(lambda g: g.passivations())

    def _queued(self, _options: CallbackOptions) -> Iterable[Observation]:
        queue = steer = 0
        sources = self._sources()
        for gauges in sources:
            try:
                q, s = gauges.queued_inputs()
            except Exception:
                continue
            queue += q
            steer += s
        if not sources:
            return []
        return [
            self._observation(queue, {INPUT_LANE: "queue"}),
            self._observation(steer, {INPUT_LANE: "steer"}),
        ]

    def _projections(self) -> list[ProjectionState]:
        # Three instruments read the same statuses (one store query): read them once per
        # collection.
        now = time.monotonic()
        cached = self._projection_cache
        if cached is not None and now - cached[0] < _PROJECTION_CACHE_SECONDS:
            return cached[1]
        seen: set[str] = set()
        out: list[ProjectionState] = []
        for gauges in self._sources():
            try:
                states = gauges.projections()
            except Exception:  # the store is away: no projection figures this time
                continue
            for state in states:
                if state.name not in seen:
                    seen.add(state.name)
                    out.append(state)
        self._projection_cache = (now, out)
        return out

    def _projection_position(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [
            self._observation(p.position, {PROJECTION_NAME: p.name}) for p in self._projections()
        ]

    def _projection_lag(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [self._observation(p.lag, {PROJECTION_NAME: p.name}) for p in self._projections()]

    def _projection_status(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [
            self._observation(
                1 if p.status == status else 0,
                {PROJECTION_NAME: p.name, PROJECTION_STATUS: status},
            )
            for p in self._projections()
            for status in _PROJECTION_STATUSES
        ]


class AcceptCall:
    """One accept (or ``accept_many``) being measured: ends with :meth:`done`,
    :meth:`done_many` or :meth:`failed`."""

    __slots__ = ("_inputs", "_operation", "_span", "_started", "_tel")

    def __init__(
        self, tel: Telemetry, operation: str, inputs: Sequence[Input], span: Span | None
    ) -> None:
        self._tel, self._operation, self._inputs, self._span = tel, operation, inputs, span
        self._started = time.perf_counter()

    def done(self, outcome: AcceptOutcome) -> None:
        tel, span = self._tel, self._span
        tel._accept_duration.record(time.perf_counter() - self._started, tel._call_attrs["accept"])
        tel._count(self._inputs[0].kind.value, outcome.kind)
        if span is not None and span.is_recording():  # not sampled: no attributes to set
            span.set_attribute(ACCEPT_OUTCOME, outcome.kind)
            if outcome.existing_id is not None:
                span.set_attribute(EXISTING_ID, str(outcome.existing_id))
            if outcome.reason is not None:
                span.set_attribute(REJECT_REASON, getattr(outcome.reason, "__tag__", "unknown"))
        if span is not None:
            span.end()

    def done_many(self, outcomes: Sequence[AcceptOutcome]) -> None:
        tel = self._tel
        tel._accept_duration.record(
            time.perf_counter() - self._started, tel._call_attrs["accept_many"]
        )
        for inp, outcome in zip(self._inputs, outcomes, strict=False):
            tel._count(inp.kind.value, outcome.kind)
        if self._span is not None:
            self._span.end()

    def failed(self, exc: BaseException) -> None:
        if isinstance(exc, AcceptManyFailed):  # some shares were written: count those
            for inp, result in zip(self._inputs, exc.results, strict=False):
                if not isinstance(result, BaseException):
                    self._tel._count(inp.kind.value, getattr(result, "kind", "unknown"))
        self._tel._call_failed(self._operation, self._started, self._span, exc)
