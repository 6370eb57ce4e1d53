"""The host-facing facade: :class:`Runtime` and :class:`Session`.

::

    from meerkat_runtime import Runtime, EchoExecutor

    with Runtime.open("sqlite:///runtime.db", executor=EchoExecutor()) as rt:
        outcome = rt.session("s-1").accept({"input_type": "prompt", "content": "hello"})
        print(outcome.completion.wait(5))
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, fields
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import orjson

from meerkat_runtime._session_ops import SessionOperations
from meerkat_runtime.actors import (
    AcceptOutcome,
    CompletionHandle,
    CompletionRegistry,
    ExecutorLike,
    RetryPolicy,
    RunBoundaryReceipt,
    Scheduler,
    Services,
    SessionRegistry,
)
from meerkat_runtime.actors import _messages as msg
from meerkat_runtime.actors._executor import AsyncRunner
from meerkat_runtime.actors._messages import Reply
from meerkat_runtime.actors._recovery import recover_batch
from meerkat_runtime.cluster import ClusterView, Membership, default_node_id
from meerkat_runtime.errors import (
    AcceptManyFailed,
    InvalidInput,
    MeerkatRuntimeError,
    SessionOwnedElsewhere,
    UndecodableEvent,
)
from meerkat_runtime.events import wire
from meerkat_runtime.events._typed import checked
from meerkat_runtime.events.catalogue import (
    EVENT_TOPICS,
    SCHEMA_VERSIONS,
    UPCASTERS,
    check_record,
)
from meerkat_runtime.events.ids import parse_uuid, uuid7, validate_session_id
from meerkat_runtime.events.input_state import InputState
from meerkat_runtime.events.inputs import Input
from meerkat_runtime.events.policy import DEFAULT_POLICY, Policy
from meerkat_runtime.events.reports import (
    DestroyReport,
    RecoveryReport,
    RecycleReport,
    ResetReport,
    RetireReport,
    StopReport,
)
from meerkat_runtime.events.runtime_event import RuntimeEventEnvelope
from meerkat_runtime.events.runtime_state import RuntimeState
from meerkat_runtime.events.session import (
    Command,
    Create,
    Destroy,
    Recover,
    Recycle,
    Reset,
    Retire,
    SessionState,
    SetSilentIntents,
    Stop,
)
from meerkat_runtime.events.timefmt import format_timestamp, utc_now
from meerkat_runtime.projections import (
    LedgerProjection,
    LedgerQueries,
    Projection,
    ProjectionSet,
    ScratchSql,
    Sql,
    VerifyReport,
    ViewQueries,
    ViewsProjection,
    verify,
)
from meerkat_runtime.store import EventCodec, EventStore, SessionJournal, open_store
from meerkat_runtime.subscriptions import CommitFeed, EventObserver, Subscription, Until
from meerkat_runtime.telemetry import (
    RECOVERY_OWNED,
    RECOVERY_RECOVERED,
    RECOVERY_SESSIONS,
    RuntimeGauges,
    log_ids,
    telemetry_for,
)
from meerkat_runtime.terminal_status import (
    MISS,
    InteractionQuery,
    InteractionTerminalReport,
    KeyQuery,
    Miss,
    RunQuery,
    RunTerminalReport,
    TerminalQuery,
    held_input_state,
    logged_completion,
    logged_input_state,
    merge_input_states,
    read_input_states,
)

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

__all__ = [
    "DEFAULT_STORE_URL",
    "Runtime",
    "RuntimeActivity",
    "RuntimeOptions",
    "Session",
    "coerce_input",
    "event_codec",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_STORE_URL = "sqlite:///meerkat-runtime.db"


def event_codec() -> EventCodec:
    """A store codec with every runtime event topic registered, which refuses to write an
    event that would not decode back (so none can ever poison a session's log)."""
    codec = EventCodec(check=check_record)
    for topic in EVENT_TOPICS:
        codec.register(topic, SCHEMA_VERSIONS[topic], UPCASTERS[topic])
    return codec


@dataclass(frozen=True, slots=True)
class RuntimeActivity:
    """What this runtime process is doing now, from its own memory (no store read).

    Read without stopping the actors, so a consistent-enough picture for operators,
    dashboards and tests waiting on a condition, not a fence.
    """

    live_sessions: int
    """Session actors in memory now (the rest are passivated)."""
    passivations: int
    """Session actors stopped since the runtime opened (idle, or evicted for room)."""
    active_runs: int
    """Runs started here whose result is not yet recorded (``close()`` waits for them)."""
    retries_pending: int
    """Session retries scheduled or being handled. Zero means no session of this
    process will try its queued work again until a host call or a recovery asks."""
    queued_inputs: int
    """Inputs waiting in the queue lanes of the live sessions."""
    steer_inputs: int
    """Inputs waiting in the steer lanes of the live sessions."""


@dataclass(frozen=True, slots=True)
class RuntimeOptions:
    """Runtime (not store) options of :meth:`Runtime.open`; every other keyword goes to the store.

    * ``executor_threads`` (8): worker threads that run executors.
    * ``session_threads`` (twice the cores): the session hosts, the OS threads that run
      every session actor (sessions are partitioned over them by a hash of their id; no
      session has a thread of its own).
    * ``run_timeout`` (300 s; None = never): a run still going after this fails with ``timeout``.
    * ``retry_backoff`` (0.05 s): the first wait before re-running inputs rolled back by a
      failed run (``retry.initial_backoff`` when ``retry`` is not given).
    * ``retry`` (:class:`RetryPolicy`): max attempts, exponential backoff with jitter, max
      delay. Default: 3 attempts from ``retry_backoff``, doubling, at most 5 s.
    * ``cancel_grace`` (30 s; None = for ever): how long a session waits, after telling a
      call of an ended run to cancel, before it may run that call's inputs again while the
      call is still executing (the at-least-once window, see the executor guide).
    * ``max_live_sessions`` (1000): live actors kept; the least recently used idle one passivates.
    * ``idle_timeout`` (60 s): an actor idle this long passivates.
    * ``max_pending`` (1000): commands waiting for one session before ``accept`` raises ``Overloaded``.
    * ``recovery_timeout`` (10 s): how long a session retries reloading after a store failure
      while its later commands wait.
    * ``close_timeout`` (10 s): how long ``close()`` lets runs in flight finish.
    * ``max_input_bytes`` (1 MiB = 1048576): the largest input ``accept`` takes, measured
      as its JSON document (the text given, a dict's or a typed input's JSON encoding);
      a larger one raises ``InvalidInput`` naming the limit, and nothing is written.
    * ``executor_loop`` (None): the running asyncio event loop async executors run on;
      None gives the runtime a loop thread of its own. :class:`~meerkat_runtime.aio.AsyncRuntime`
      passes the loop it was opened on.
    * ``policy`` (None = :class:`DefaultPolicyTable`): the admission
      :class:`~meerkat_runtime.Policy` every accept of this runtime asks; its ``version``
      is recorded with each decision. Decisions already in the log stay as recorded.
    """

    executor_threads: int = 8
    session_threads: int | None = None
    run_timeout: float | None = 300.0
    retry_backoff: float = 0.05
    retry: RetryPolicy | None = None
    cancel_grace: float | None = 30.0
    max_live_sessions: int = 1000
    idle_timeout: float = 60.0
    max_pending: int = 1000
    recovery_timeout: float = 10.0
    close_timeout: float = 10.0
    max_input_bytes: int = 1024 * 1024
    executor_loop: asyncio.AbstractEventLoop | None = None
    policy: Policy | None = None

    @classmethod
    def split(cls, options: dict[str, Any]) -> tuple[RuntimeOptions, dict[str, Any]]:
        """Separate runtime options from store options; validate the runtime ones."""
        names = {f.name for f in fields(cls)}
        mine = {k: v for k, v in options.items() if k in names}
        rest = {k: v for k, v in options.items() if k not in names}
        for key, value in mine.items():
            if key in ("run_timeout", "cancel_grace", "session_threads") and value is None:
                continue
            if key == "executor_loop":
                if value is not None and not isinstance(value, asyncio.AbstractEventLoop):
                    raise ValueError(
                        "runtime option 'executor_loop' must be an asyncio event loop, "
                        f"got {type(value).__name__}"
                    )
                continue
            if key == "policy":
                _check_policy(value)
                continue
            if key == "retry":
                if value is not None and not isinstance(value, RetryPolicy):
                    raise ValueError(
                        f"runtime option 'retry' must be a RetryPolicy, got {type(value).__name__}"
                    )
                continue
            if key == "cancel_grace" and isinstance(value, (int, float)) and value == 0:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"runtime option {key!r} must be a positive number, got {value!r}")
        return cls(**mine), rest

    def retry_policy(self) -> RetryPolicy:
        return self.retry or RetryPolicy(initial_backoff=self.retry_backoff)


def _check_policy(policy: object) -> None:
    if policy is None:
        return
    if isinstance(policy, type):
        raise ValueError(
            f"runtime option 'policy' must be a policy object, got the class {policy.__name__} "
            f"(pass {policy.__name__}())"
        )
    version = getattr(policy, "version", None)
    if not callable(getattr(policy, "resolve", None)):
        raise ValueError(
            "runtime option 'policy' must have a resolve(input, runtime_idle, ...) method, "
            f"got {type(policy).__name__}"
        )
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ValueError(f"runtime option 'policy' must have an int version >= 0, got {version!r}")


def coerce_input(data: Any, max_bytes: int = 1024 * 1024) -> Input:
    """Turn an :class:`Input`, a wire dict or wire JSON into an :class:`Input`.

    A typed :class:`Input` is checked exactly like wire input (Python
    dataclasses do not check their fields' types): ``InvalidInput`` names the
    field (``content: must not be null``) and nothing is written.

    A host may omit ``header`` or any of its fields: the runtime fills ``id``
    (UUIDv7), ``timestamp`` (now), ``source`` (operator), ``durability``
    (durable) and the default ``visibility``.
    """
    if isinstance(data, Input):
        # Checked exactly like wire input, and what is accepted is the decoded value:
        # equal to what every later read of the stored events gives back.
        inp = checked(Input, data)
        # The size of what is stored: the decoded value may differ from the object handed
        # over (a float field given an int too big for JSON integers is read as a float).
        _check_size(len(wire.encode(inp)), max_bytes)
        return inp
    if isinstance(data, (bytes, bytearray, memoryview, str)):
        raw = bytes(data) if not isinstance(data, str) else data
        value = wire.loads(raw, max_bytes=max_bytes)
    elif isinstance(data, dict):
        value = data
        _check_size(_json_size(data), max_bytes)
    else:
        raise InvalidInput(
            f"input must be an Input, a dict or JSON bytes/str, not {type(data).__name__}"
        )
    if not isinstance(value, dict):
        raise InvalidInput("input must be a JSON object")
    header = value.get("header")
    if header is None:
        header = {}
    if not isinstance(header, dict):
        raise InvalidInput("expected object", "header")
    filled = dict(header)
    if "id" not in filled:
        # The id as a UUID: the decoder takes it as is instead of parsing its text back.
        filled["id"] = uuid7()
    if "timestamp" not in filled:
        filled["timestamp"] = format_timestamp(utc_now())
    filled.setdefault("source", {"type": "operator"})
    filled.setdefault("durability", "durable")
    filled.setdefault("visibility", {"transcript_eligible": True, "operator_eligible": True})
    return wire.decode(Input, {**value, "header": filled})


def _json_size(value: dict[str, Any]) -> int:
    """The size of ``value`` written as JSON; 0 if it is not JSON (decoding then says why)."""
    try:
        return len(orjson.dumps(value))
    except TypeError:
        return 0


def _check_size(size: int, max_bytes: int) -> None:
    """The size limit holds whatever form the input came in (JSON text, dict or object)."""
    if size > max_bytes:
        raise InvalidInput(
            f"input of {size} bytes exceeds the limit of {max_bytes} (max_input_bytes)"
        )


def _coerce_all(
    inputs: Sequence[Input | dict[str, Any] | bytes | str], max_bytes: int, name: str = "inputs"
) -> list[Input]:
    """Coerce every input of a batch; ``InvalidInput`` naming the first bad one."""
    if isinstance(inputs, (str, bytes, dict)) or not isinstance(inputs, Sequence):
        raise InvalidInput(f"must be a list of inputs, got {type(inputs).__name__}", name)
    out = []
    for n, inp in enumerate(inputs):
        try:
            out.append(coerce_input(inp, max_bytes))
        except InvalidInput as exc:
            where = f"{name}[{n}]" + (f".{exc.path}" if exc.path else "")
            raise InvalidInput(exc.detail, where) from None
    return out


def _collect_many(
    by_session: dict[str, list[int]],
    count: int,
    answers: dict[str, list[AcceptOutcome] | MeerkatRuntimeError],
) -> list[AcceptOutcome]:
    """Every input's outcome in the order given; ``AcceptManyFailed`` if a share failed."""
    results: list[Any] = [None] * count
    failed = False
    for sid, positions in by_session.items():
        answer = answers[sid]
        if isinstance(answer, MeerkatRuntimeError):
            failed = True
            for n in positions:
                results[n] = answer
            continue
        for n, outcome in zip(positions, answer, strict=True):
            results[n] = outcome
    if failed:
        raise AcceptManyFailed(results)
    return results


def _observed_state(st: SessionState, attached: bool) -> RuntimeState:
    return st.observed_state(attached)


def _cancel_run_args(reason: str, run_id: uuid.UUID | str | None) -> tuple[str, uuid.UUID | None]:
    if not isinstance(reason, str) or not reason:
        raise InvalidInput("cancel_run reason must be a non-empty string", "reason")
    return reason, None if run_id is None else parse_uuid(run_id, "run_id")


def _receipt_args(run_id: uuid.UUID | str, sequence: int) -> tuple[uuid.UUID, int]:
    rid = parse_uuid(run_id, "run_id")
    if isinstance(sequence, bool) or not isinstance(sequence, int) or sequence < 1:
        raise InvalidInput(f"sequence must be an int >= 1, got {sequence!r}", "sequence")
    return rid, sequence


def _silent_intents_arg(intents: Iterable[str]) -> frozenset[str]:
    if isinstance(intents, (str, bytes)):
        raise InvalidInput("expected a collection of intent strings, not one string", "intents")
    result = frozenset(intents)
    for n, intent in enumerate(result):
        if not isinstance(intent, str):
            raise InvalidInput(f"expected a string, got {type(intent).__name__}", f"intents[{n}]")
    return result


def _check_after(after: int) -> int:
    if isinstance(after, bool) or not isinstance(after, int) or after < 0:
        raise InvalidInput(f"must be an int >= 0, got {after!r:.40}", "after")
    return after


def _projections_to_run(projections: bool | Sequence[Projection]) -> list[Projection]:
    """The built-in read models (unless ``False``) and a host's own (a sequence)."""
    if isinstance(projections, bool):
        return [LedgerProjection(), ViewsProjection()] if projections else []
    own = list(projections)
    names = {"ledger", "views"}
    for n, p in enumerate(own):
        if not isinstance(p, Projection):
            raise TypeError(
                f"projections[{n}] must be a Projection (see meerkat_runtime.projections."
                f"HostProjection), got {type(p).__name__}"
            )
        if not p.name or p.name in names:
            raise ValueError(
                f"projections[{n}]: the name {p.name!r} is "
                + ("empty" if not p.name else "taken (built-in or listed twice)")
            )
        names.add(p.name)
    return [LedgerProjection(), ViewsProjection(), *own]


class Session(SessionOperations):
    """A handle on one session; its actor starts on first use.

    A session exists once it has accepted an input (or :meth:`Runtime.create_session`
    made it). Before that, its lifecycle calls and queries raise
    :class:`~meerkat_runtime.SessionNotFound` and write nothing; ``events()`` is empty.
    """

    __slots__ = ("_rt", "id")

    def __init__(self, runtime: Runtime, session_id: str) -> None:
        self._rt = runtime
        self.id = session_id

    def __repr__(self) -> str:
        return f"Session({self.id!r})"

    def _call(self, message: msg.Message, *, admission: bool = False) -> Any:
        return self._rt._registry.call(self.id, message, admission=admission)

    def _command(self, command: Command) -> Any:
        return self._call(msg.Execute(command))

    def _query(self, fn: Callable[[SessionState, bool], Any]) -> Any:
        return self._call(msg.Query(fn))

    def accept(
        self, input: Input | dict[str, Any] | bytes | str, *, wake: bool = True
    ) -> AcceptOutcome:
        """Accept an input; returns once its events are durable. ``InvalidInput`` when malformed.

        ``wake=False`` admits it without waking the session (spec 6.2 "without wake"):
        its wake mode is ``none``, so it waits for the next run something else starts.
        """
        inp = coerce_input(input, self._rt.options.max_input_bytes)
        send = self._send_accept if wake else self._send_accept_quietly
        telemetry = self._rt._telemetry
        if telemetry is not None:
            return telemetry.accept(self.id, inp, send)
        return send(inp)

    def _send_accept(self, inp: Input) -> AcceptOutcome:
        outcome: AcceptOutcome = self._call(msg.Accept(inp, validated=True), admission=True)
        return outcome

    def _send_accept_quietly(self, inp: Input) -> AcceptOutcome:
        outcome: AcceptOutcome = self._call(
            msg.Accept(inp, wake=False, validated=True), admission=True
        )
        return outcome

    def accept_many(
        self, inputs: Sequence[Input | dict[str, Any] | bytes | str]
    ) -> list[AcceptOutcome]:
        """Accept several inputs with one call and one durable append; outcomes in order.

        Each input is validated, deduplicated and admitted on its own, as by
        :meth:`accept`, in the order given (a repeated idempotency key within the
        batch deduplicates against the earlier one). All are checked before
        anything is sent: one malformed input raises ``InvalidInput`` naming it
        (``inputs[3].content: ...``) and nothing is written. The events of the
        whole batch are appended atomically: all durable, or none and the error
        is raised.
        """
        coerced = _coerce_all(inputs, self._rt.options.max_input_bytes)
        if not coerced:
            return []

        def send() -> list[AcceptOutcome]:
            outcomes: list[AcceptOutcome] = self._call(
                msg.AcceptMany(coerced, validated=True), admission=True
            )
            return outcomes

        telemetry = self._rt._telemetry
        if telemetry is not None:
            return telemetry.accept_many(self.id, coerced, send)
        return send()

    def state(self) -> RuntimeState:
        """The session's state as a host sees it (``attached`` when an executor is bound)."""
        result: RuntimeState = self._query(_observed_state)
        return result

    def input_state(self, input_id: uuid.UUID | str) -> InputState | None:
        """The full state of one input of this session, or None if it never accepted it.

        A terminal input has left the session's state (only live inputs stay in
        memory): its state is then folded from the session's log, which costs a read
        of the log (the input ledger, ``rt.ledger``, is the cheap way to look up many).
        """
        iid = parse_uuid(input_id, "input_id")
        held: InputState | Miss | None = self._query(lambda st, _: held_input_state(st, iid))
        if held is MISS:
            return logged_input_state(self._rt.store, self.id, iid)
        return held

    def active_input_ids(self) -> list[uuid.UUID]:
        """Ids of the inputs that are not terminal yet."""
        result: list[uuid.UUID] = self._query(lambda st, _: st.non_terminal_ids())
        return result

    def stored_input_states_snapshot(self) -> list[InputState]:
        """The states of every input of the session, in acceptance order (Rust's driver
        ``stored_input_states_snapshot``): the session's live states where it holds
        them, the others (terminal inputs) folded from its log."""
        held: list[InputState] = self._query(lambda st, _: list(st.inputs.values()))
        return merge_input_states(read_input_states(self._rt.store, self.id), held)

    def interaction_status(
        self, input_id: uuid.UUID | str | None = None, *, idempotency_key: str | None = None
    ) -> InteractionTerminalReport | None:
        """Did interaction ``input_id`` (or the one accepted under ``idempotency_key``)
        finish, and how? Give exactly one; None when the session has no such input.

        The live session answers when its actor is in memory here and holds the input;
        otherwise the session's log, read from the store, does, without starting the
        session (``report.source``). The same answer before and after a restart (see
        :mod:`meerkat_runtime.terminal_status`).
        """
        return self._witness(InteractionQuery(input_id, idempotency_key))

    def run_status(self, run_id: uuid.UUID | str) -> RunTerminalReport:
        """Did run ``run_id`` finish, and how, judged by the inputs whose last run it is.

        ``no_durable_witness`` for a run no input names: unknown, or retried (its inputs
        were re-staged into a later run), which is not a failure. The live session
        answers for its run in flight, the log for any other run.
        """
        return self._witness(RunQuery(run_id))

    def input_id_for_idempotency_key(self, key: str) -> uuid.UUID | None:
        """The id of the input accepted under idempotency key ``key`` (exact match), or None."""
        return self._witness(KeyQuery(key))

    def _witness(self, query: TerminalQuery[T]) -> T:
        """``query`` answered by the live session if it is in memory here, else by its log."""
        reply = self._rt._registry.post_if_live(self.id, msg.Query(query.live))
        if reply is not None:
            try:
                answer: T | Miss = reply.result()
            except SessionOwnedElsewhere:
                answer = MISS  # another node owns it now: its committed log answers
            if answer is not MISS:
                return answer
        return query.durable(read_input_states(self._rt.store, self.id))

    def completion(self, input_id: uuid.UUID | str) -> CompletionHandle | None:
        """A handle for an input accepted earlier (also after a restart); None if unknown.

        The handle of a terminal input is resolved; the session's state no longer holds
        it, so its outcome is folded from the session's log (a read of the log)."""
        iid = parse_uuid(input_id, "input_id")
        handle: CompletionHandle | Miss | None = self._call(msg.GetCompletion(iid))
        if handle is MISS:
            outcome = logged_completion(self._rt.store, self.id, iid)
            return self._rt.completions.handle(self.id, iid, outcome)
        return handle

    def retire(self) -> RetireReport:
        """Take no new input; drain queued work with an executor, else abandon it."""
        report: RetireReport = self._command(Retire(loop_attached=self._rt.executor is not None))
        return report

    def recycle(self) -> RecycleReport:
        """Rebuild the session's machinery, keeping its pending inputs (staged ones re-queued)."""
        report: RecycleReport = self._command(Recycle())
        return report

    def reset(self) -> ResetReport:
        """Abandon every pending input and become ready again (refused during a run)."""
        report: ResetReport = self._command(Reset())
        return report

    def destroy(self) -> DestroyReport:
        """Abandon everything and end the session for good (``destroyed`` is terminal)."""
        report: DestroyReport = self._command(Destroy())
        return report

    def stop(self) -> StopReport:
        """Cancel any run, abandon every pending input, go to ``stopped`` (``recover`` undoes it)."""
        report: StopReport = self._command(Stop())
        return report

    def set_silent_intents(self, intents: Iterable[str]) -> None:
        """Make peer requests with one of ``intents`` silent (replacing the previous set;
        empty clears it): admitted with wake ``none``, they start no run of their own and
        run with the next work something else wakes. Persisted; ``reset``, ``stop`` and
        ``destroy`` clear it. Refused (``RuntimeControlPlaneError``, ``invalid_state``) on a
        stopped or destroyed session."""
        self._command(SetSilentIntents(_silent_intents_arg(intents)))

    def silent_intents(self) -> frozenset[str]:
        """The session's silent intents (empty when none are set)."""
        result: frozenset[str] = self._query(lambda st, _: st.silent_intents)
        return result

    def cancel_run(self, reason: str = "cancelled", run_id: uuid.UUID | str | None = None) -> bool:
        """Cancel the run in flight (only run ``run_id`` when given): its staged inputs are
        abandoned (``cancelled``; waiters get ``cancelled``), inputs it applied at a
        checkpoint are consumed, and the executor's cancel token is signalled with
        ``reason``. False when there is no such run. A run that a process which died
        left in flight is cancelled the same way, instead of being closed as
        interrupted and its inputs run again, when this is the first call on the
        session after the restart."""
        done: bool = self._call(msg.CancelRun(*_cancel_run_args(reason, run_id)))
        return done

    def boundary_receipt(self, run_id: uuid.UUID | str, sequence: int) -> RunBoundaryReceipt | None:
        """The committed receipt of run ``run_id``'s checkpoint ``sequence`` (from the log)."""
        receipt: RunBoundaryReceipt | None = self._call(
            msg.BoundaryReceipt(*_receipt_args(run_id, sequence))
        )
        return receipt

    def recover(self) -> RecoveryReport:
        """Re-apply the recovery rules; a stopped session is re-registered (idle or attached)."""
        report: RecoveryReport = self._command(Recover(cold=False, reregister=True))
        return report

    def events(self, after: int = 0) -> Iterator[RuntimeEventEnvelope]:
        """The session's durable events with ``sequence > after``, in order (does not wait).

        ``after`` must be an int >= 0 (``InvalidInput`` otherwise, at the call).
        """
        return self._events(_check_after(after))

    def _events(self, after: int) -> Iterator[RuntimeEventEnvelope]:
        return SessionJournal(self._rt.store).envelopes(self.id, after=after)

    def subscribe(
        self, after: int = 0, *, timeout: float | None = None, until: Until | None = None
    ) -> Subscription:
        """The session's events with ``sequence > after`` as they commit: a blocking iterator.

        Waits for each next event; ends on ``sub.close()`` (from any thread), after
        ``timeout`` seconds without an event, after the event ``until(envelope)`` is true
        for, or when the runtime closes. ``sub.position`` is the sequence of the last
        event yielded (resume with ``after=sub.position``). See
        :mod:`meerkat_runtime.subscriptions`.
        """
        return self._rt._feed.subscribe(
            _check_after(after), session_id=self.id, timeout=timeout, until=until
        )


class Runtime:
    """An open runtime: a store, a registry of session actors, and an executor pool.

    Create one with :meth:`Runtime.open`; the constructor is internal.
    """

    def __init__(
        self,
        store: EventStore,
        *,
        executor: ExecutorLike | None,
        options: RuntimeOptions,
        owns_store: bool,
        projections: bool | Sequence[Projection] = True,
        node_id: str | None = None,
        lease_ttl: float = 10.0,
        join_cluster: bool = True,
        force_takeover: bool = False,
        meter_provider: MeterProvider | None = None,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self.store = store
        self.executor = executor
        self.options = options
        self._owns_store = owns_store
        self._closed = False
        self.completions = CompletionRegistry()
        # None unless there is an OpenTelemetry SDK to report to (see ``telemetry``).
        self._telemetry = telemetry_for(
            meter_provider, tracer_provider, store_backend=store.url.split(":", 1)[0]
        )
        self._stop_observing_commits: Callable[[], None] | None = None
        scheduler = Scheduler()
        pool = ThreadPoolExecutor(
            max_workers=options.executor_threads, thread_name_prefix="meerkat-executor"
        )
        self.membership: Membership | None = None
        # Without leases a runtime may not write sessions another process may own; a
        # read-only store writes nothing anyway.
        self.joined = join_cluster or store.read_only or not store.supports_leases
        if store.read_only:
            if executor is not None:
                raise ValueError(
                    f"a read-only store ({store.url}) cannot run inputs: pass no executor"
                )
            if node_id is not None:
                raise ValueError("a runtime on a read-only store joins no cluster: pass no node_id")
        elif store.supports_leases and join_cluster:
            self.membership = Membership(
                store,
                node_id or default_node_id(),
                lease_ttl,
                on_lost=self._lease_lost,
                force=force_takeover,
            )
            scheduler.every(lease_ttl / 3, self.membership.heartbeat)
        elif node_id is not None and not store.supports_leases:
            raise ValueError(
                f"node_id needs a shared store (SQLite file or PostgreSQL), not {store.url}"
            )
        self._services = Services(
            store=store,
            journal=SessionJournal(store),
            executor=executor,
            completions=self.completions,
            scheduler=scheduler,
            pool=pool,
            run_timeout=options.run_timeout,
            retry=options.retry_policy(),
            cancel_grace=options.cancel_grace,
            recovery_timeout=options.recovery_timeout,
            telemetry=self._telemetry,
            runner=AsyncRunner(loop=options.executor_loop),
            membership=self.membership,
            policy=options.policy or DEFAULT_POLICY,
        )
        # A read-only store keeps its read models in memory (ScratchSql), seeded from the
        # stored ones: looking at a store never writes to it.
        sql = ScratchSql(store) if store.read_only else Sql(store)
        self._sql = sql
        self.ledger = LedgerQueries(sql)
        """Input ledger queries (``get``, ``list``, ``count``)."""
        self.views = ViewQueries(sql)
        """Runtime state view queries (``get``, ``list``)."""
        self.projections = ProjectionSet(
            store,
            _projections_to_run(projections),
            schedule_every=scheduler.every,
            membership=self.membership,
            sql=sql,
            telemetry=self._telemetry,
        )
        """The projections: ``wait_caught_up``, ``rebuild``, ``status``, ``skipped``."""
        self._feed = CommitFeed(store)
        self._registry = SessionRegistry(
            self._services,
            max_live=options.max_live_sessions,
            idle_timeout=options.idle_timeout,
            max_pending=options.max_pending,
            session_threads=options.session_threads,
        )
        if self._telemetry is not None:
            self._stop_observing_commits = store.observe_commits(self._telemetry.commit)
            registry = self._registry
            self._telemetry.observe(
                RuntimeGauges(
                    live_sessions=registry.live_count,
                    passivations=registry.passivations,
                    queued_inputs=registry.queued_inputs,
                    projections=self.projections.status,
                )
            )

    @classmethod
    def open(
        cls,
        store: str | EventStore = DEFAULT_STORE_URL,
        *,
        executor: ExecutorLike | None = None,
        recover: Literal["lazy", "eager"] = "lazy",
        projections: bool | Sequence[Projection] = True,
        node_id: str | None = None,
        lease_ttl: float = 10.0,
        join_cluster: bool = True,
        force_takeover: bool = False,
        meter_provider: MeterProvider | None = None,
        tracer_provider: TracerProvider | None = None,
        **options: Any,
    ) -> Runtime:
        """Open a runtime on a store URL (or a store object, which the caller keeps owning).

        Sessions already in the store recover lazily on first use, or all at
        once with ``recover="eager"``. ``projections``: True runs the built-in
        read models (``ledger``, ``views``), False none, and a list of
        :class:`~meerkat_runtime.projections.HostProjection` runs those too (a
        host's own read models; names must be unique). See :class:`RuntimeOptions`
        for runtime options; the rest are store options (``open_store``), among them:

        * ``create_schema``: ``"auto"`` (default) creates the store's tables in an
          empty database or completes an existing store's, and raises
          :class:`StoreError` for a database that holds other tables but no store;
          ``"force"`` adds the tables there anyway; ``"never"`` needs an existing store.
        * ``read_only=True`` (or ``sqlite:///x.db?mode=ro``): nothing is created or
          written. Queries (``ledger``, ``views``, ``verify``, ``session.state()`` of a
          session that needs no recovery) work on read models kept in memory,
          seeded from the stored ones and brought up to date from the log; anything
          that writes raises :class:`StoreError`. No executor, no cluster membership.


        On a SQLite file or PostgreSQL, several processes may share the store:
        each session has one owner process at a time (``meerkat_runtime.cluster``).

        * ``node_id``: this process's name among them; default ``$MEERKAT_NODE_ID``,
          else host name and process id. A process that starts with the node id
          of one that died takes that one's sessions back at once (and fences it
          off, should it still be alive): give a single service a stable id.
        * ``lease_ttl`` (10 s): how long a session stays owned by a process that
          stopped renewing (died without closing, paused, cut off).
        * ``join_cluster`` (True): False for tools that only read: no node row, no
          leases, and sessions cannot be used (``MeerkatRuntimeError``).
        * ``force_takeover`` (False): take sessions from live owners too (operator
          tools' ``--force``): the owner is fenced off and loses them, and a run it
          has in flight may run again here.

        OpenTelemetry (the ``otel`` extra; see the telemetry guide): metrics and
        spans go to ``meter_provider`` and ``tracer_provider`` when given, else to
        the global providers, if the host's SDK set them before this call. With
        neither, telemetry is off and costs nothing.

        ``executor`` that is neither callable nor has a ``run`` method raises
        ``TypeError`` here, not at the first run.
        """
        if recover not in ("lazy", "eager"):
            raise ValueError("recover must be 'lazy' or 'eager'")
        if executor is not None and not (
            callable(getattr(executor, "run", None)) or callable(executor)
        ):
            raise TypeError(
                f"executor must be an object with a run(request) method or a callable "
                f"taking a RunRequest, got {type(executor).__name__} {executor!r:.60}"
            )
        rt_options, store_options = RuntimeOptions.split(options)
        if isinstance(store, EventStore):
            if store_options:
                raise ValueError(f"store options {sorted(store_options)} need a store URL")
            the_store, owns = store, False
        else:
            the_store, owns = open_store(store, codec=event_codec(), **store_options), True
        try:
            rt = cls(
                the_store,
                executor=executor,
                options=rt_options,
                owns_store=owns,
                projections=projections,
                node_id=node_id,
                lease_ttl=lease_ttl,
                join_cluster=join_cluster,
                force_takeover=force_takeover,
                meter_provider=meter_provider,
                tracer_provider=tracer_provider,
            )
        except BaseException:
            if owns:
                the_store.close()
            raise
        if recover == "eager":
            try:
                rt.last_recovery = rt.recover()
            except BaseException:
                rt.close()
                raise
        return rt

    last_recovery: list[RecoveryReport] | None = None

    def session(self, session_id: str) -> Session:
        """A handle on session ``session_id`` (1 to 256 printable characters)."""
        self._check_open()
        self._check_joined()
        return Session(self, validate_session_id(session_id))

    def accept_many(
        self, items: Sequence[tuple[str, Input | dict[str, Any] | bytes | str]]
    ) -> list[AcceptOutcome]:
        """Accept ``(session_id, input)`` pairs with one call; outcomes in the order given.

        Every session id and input is checked first (``InvalidInput`` naming
        ``items[i]``; nothing written). Each session's inputs then go to its actor
        as one :meth:`Session.accept_many` (one atomic append per session), all
        sessions at once, and the call returns when every one is durable. If a
        session's share fails, the others still complete and
        :class:`AcceptManyFailed` is raised with every input's outcome or error.
        """
        by_session, coerced = self._prepare_many(items)
        if self._telemetry is not None:
            only = next(iter(by_session)) if len(by_session) == 1 else None
            return self._telemetry.accept_many(
                only, coerced, lambda: self._send_many(by_session, coerced)
            )
        return self._send_many(by_session, coerced)

    def _prepare_many(
        self, items: Sequence[tuple[str, Input | dict[str, Any] | bytes | str]]
    ) -> tuple[dict[str, list[int]], list[Input]]:
        """Check every pair: positions of each session's inputs, and the inputs."""
        self._check_open()
        self._check_joined()
        by_session: dict[str, list[int]] = {}
        for n, item in enumerate(items):
            if not isinstance(item, tuple) or len(item) != 2:
                raise InvalidInput("must be a (session_id, input) pair", f"items[{n}]")
            try:
                checked_id: str = validate_session_id(item[0])
            except InvalidInput as exc:
                raise InvalidInput(exc.detail, f"items[{n}].session_id") from None
            by_session.setdefault(checked_id, []).append(n)
        coerced = _coerce_all([item[1] for item in items], self.options.max_input_bytes, "items")
        return by_session, coerced

    def _post_many(
        self, by_session: dict[str, list[int]], coerced: list[Input]
    ) -> dict[str, Reply | MeerkatRuntimeError]:
        """Send each session its share at once (no waiting); a refusal stays with its share."""
        replies: dict[str, Reply | MeerkatRuntimeError] = {}
        for sid, positions in by_session.items():
            try:
                share = [coerced[n] for n in positions]
                replies[sid] = self._registry.post(
                    sid, msg.AcceptMany(share, validated=True), admission=True
                )
            except MeerkatRuntimeError as exc:  # e.g. Overloaded: the other shares go on
                replies[sid] = exc
        return replies

    def _send_many(
        self, by_session: dict[str, list[int]], coerced: list[Input]
    ) -> list[AcceptOutcome]:
        answers: dict[str, list[AcceptOutcome] | MeerkatRuntimeError] = {}
        for sid, reply in self._post_many(by_session, coerced).items():
            try:
                if isinstance(reply, MeerkatRuntimeError):
                    raise reply
                answers[sid] = reply.result()
            except MeerkatRuntimeError as exc:
                answers[sid] = exc
        return _collect_many(by_session, len(coerced), answers)

    def create_session(self, session_id: str) -> Session:
        """Bring session ``session_id`` into being without an input; its handle.

        Writes its ``runtime.created`` event, so lifecycle calls and queries work on it
        before its first input. A session that exists (a destroyed one included) is
        left as it is.
        """
        session = self.session(session_id)
        self._registry.call(session.id, msg.Execute(Create()))
        return session

    def new_session(self) -> Session:
        """A handle on a new session with a fresh UUIDv7 id."""
        return self.session(str(uuid7()))

    def sessions(self) -> list[str]:
        """Ids of every session in the store, by first appearance."""
        return self.store.session_ids()

    def recover(self) -> list[RecoveryReport]:
        """Apply the recovery rules to every session that is not destroyed; one report each.

        A session whose log holds an event that cannot be read is left out (logged as
        an error naming it and the event); calls on it raise :class:`UndecodableEvent`.
        """
        return list(self.recover_by_session().values())

    def recover_by_session(self) -> dict[str, RecoveryReport]:
        """Like :meth:`recover`, keyed by session id (destroyed sessions are left out).

        A session owned by another live process raises :class:`SessionOwnedElsewhere`
        (see :meth:`recover_owned` to recover the others and list those).
        """
        reports, owned = self.recover_owned()
        if owned:
            raise owned[0]
        return reports

    def recover_owned(self) -> tuple[dict[str, RecoveryReport], list[SessionOwnedElsewhere]]:
        """Recover every session this process may own; list those another live process owns.

        Those are left alone: their owner runs their work (and recovers them when it
        reloads). ``force_takeover`` takes them instead.
        """
        self._check_open()
        self._check_joined()
        telemetry = self._telemetry
        if telemetry is None or not telemetry.tracing:
            return self._recover_sessions(self.sessions())
        with telemetry.span("meerkat.recovery", {}) as span:
            order = self.sessions()
            reports, owned = self._recover_sessions(order)
            span.set_attributes(
                {
                    RECOVERY_SESSIONS: len(order),
                    RECOVERY_RECOVERED: len(reports),
                    RECOVERY_OWNED: len(owned),
                }
            )
            return reports, owned

    def _recover_sessions(
        self, order: list[str]
    ) -> tuple[dict[str, RecoveryReport], list[SessionOwnedElsewhere]]:
        # Passivated sessions recover inline in batches; live ones (and all on a store
        # with leases) through their actors, which own their state and lease.
        batch = recover_batch(self._services, self._registry, order)
        reports, owned = self._recover_with_actors(batch.to_actors)
        reports.update(batch.reports)
        return {sid: reports[sid] for sid in order if sid in reports}, owned

    def _recover_with_actors(
        self, session_ids: list[str]
    ) -> tuple[dict[str, RecoveryReport], list[SessionOwnedElsewhere]]:
        # A bounded window of sessions at a time: each message starts an actor (a
        # thread), and one in flight cannot be passivated to make room.
        window = max(1, self.options.max_live_sessions // 2)
        pending: deque[tuple[str, Future[RecoveryReport | None]]] = deque()
        reports: dict[str, RecoveryReport] = {}
        owned: list[SessionOwnedElsewhere] = []

        def settle(sid: str, fut: Future[RecoveryReport | None]) -> None:
            try:
                report = fut.result()
            except UndecodableEvent as exc:
                # One unreadable session does not stop the recovery of the others.
                log.error("session %s not recovered: %s", sid, exc, extra=log_ids(sid))
                return
            except SessionOwnedElsewhere as exc:
                owned.append(exc)
                return
            if report is not None:
                reports[sid] = report

        for sid in session_ids:
            if len(pending) >= window:
                settle(*pending.popleft())
            pending.append((sid, self._registry.send(sid, msg.RecoverAll())))
        for sid, fut in pending:
            settle(sid, fut)
        return reports, owned

    def verify(self) -> VerifyReport:
        """Refold every session and compare with the read models, each at the log position it
        has reached: safe while the runtime writes; how far each lags is ``report.lag``."""
        return verify(
            self.store,
            projection_names=tuple(p.name for p in self.projections.status()),
            sql=self._sql,
        )

    def cluster(self) -> ClusterView:
        """Nodes, session leases and projection owners of a shared store (SQLite file, PostgreSQL)."""
        if self.membership is None:
            if self.store.supports_leases:
                raise MeerkatRuntimeError("no cluster view: opened with join_cluster=False")
            raise MeerkatRuntimeError(f"no cluster: {self.store.url} is not a shared store")
        return self.membership.view([s.name for s in self.projections.status()])

    def _lease_lost(self, name: str) -> None:
        if name.startswith("session:"):
            self._registry.tell_if_live(name.removeprefix("session:"), msg.LeaseLost())

    def live_session_count(self) -> int:
        """How many session actors are live now (the rest are passivated)."""
        return self._registry.live_count()

    def live_session_ids(self) -> list[str]:
        """The ids of the sessions whose actors are live now."""
        return self._registry.live_ids()

    def activity(self) -> RuntimeActivity:
        """What this process is doing now: live sessions, runs, retries, queued inputs."""
        registry = self._registry
        queued, steer = registry.queued_inputs()
        return RuntimeActivity(
            live_sessions=registry.live_count(),
            passivations=registry.passivations(),
            active_runs=len(self._services.active_runs),
            retries_pending=self._services.retries.value,
            queued_inputs=queued,
            steer_inputs=steer,
        )

    def subscribe(
        self, after: int = 0, *, timeout: float | None = None, until: Until | None = None
    ) -> Subscription:
        """Every session's events after log position ``after``, as they commit: a blocking
        iterator, in log order, other processes' commits included.

        After each envelope, ``sub.position`` is its log position (resume with
        ``after=sub.position``) and ``sub.session_id`` its session. Ends like
        :meth:`Session.subscribe`. Works on a read-only runtime too.
        """
        self._check_open()
        return self._feed.subscribe(_check_after(after), timeout=timeout, until=until)

    def on_runtime_event(
        self, callback: EventObserver, *, after: int | None = None
    ) -> Callable[[], None]:
        """Call ``callback(envelope)`` with each event committed to the store from now on
        (or after log position ``after``), in log order; return a function that stops it.

        It runs on a thread of its own, never on an accepting one: a slow observer
        delays only itself, and one that raises is logged and goes on with the next
        event, so accepts never see it. On a shared store it sees every process's events.
        """
        self._check_open()
        if after is not None:
            _check_after(after)
        return self._feed.observe(callback, after=after)

    def _check_open(self) -> None:
        if self._closed:
            raise MeerkatRuntimeError("the runtime is closed")

    def _check_joined(self) -> None:
        if not self.joined:
            raise MeerkatRuntimeError(
                "this runtime was opened with join_cluster=False: it holds no leases, "
                "so it may read the store but not use sessions"
            )

    def close(self) -> None:
        """Stop every actor once in-flight work is durable, and release the store. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._registry.close(self.options.close_timeout)
        self._feed.close()  # after the actors: subscribers see the last events first
        # Calls still executing belong to runs the log keeps as started (recovery closes
        # them): tell them to stop, so they do not outlive the runtime for long.
        self._services.calls.cancel_all("runtime closed")
        self._services.runner.close()
        self._services.scheduler.stop()
        self._services.pool.shutdown(wait=False, cancel_futures=True)
        self.completions.close()
        self._services.operations.close()
        self.projections.close()
        if self._telemetry is not None:
            self._telemetry.close()
        if self._stop_observing_commits is not None:
            self._stop_observing_commits()
        if isinstance(self._sql, ScratchSql):
            self._sql.close()
        if self.membership is not None:
            self.membership.close()
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
