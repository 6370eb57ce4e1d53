"""The asyncio API: :class:`AsyncRuntime` and :class:`AsyncSession`.

The same runtime as :class:`~meerkat_runtime.Runtime` (the same session actors,
store and projections), for hosts that run an event loop (FastAPI, aiohttp,
agent frameworks)::

    async with AsyncRuntime.open("sqlite:///app.db", executor=my_async_executor) as rt:
        outcome = await rt.session("chat-1").accept({"input_type": "prompt", "content": "hi"})
        result = await outcome.completion          # or: await handle.wait(timeout=30)

How it waits, and what it costs:

* **No thread per waiting call.** A call posts its message to the session's actor
  (which never blocks) and awaits a future of the caller's loop. The actor's reply
  settles that future through ``loop.call_soon_threadsafe``. A thousand tasks
  awaiting a thousand accepts or completions hold no thread.
* **Completions** (:class:`AsyncCompletion`): every awaiter gets a loop future of its
  own, fed by a done-callback on the input's shared completion. Cancelling one
  awaiter (a timeout, a client gone) never cancels the outcome for the others or for
  the sync API.
* **Cancellation never loses or duplicates an accepted input.** Once ``accept`` has
  posted the input, cancelling the awaiting task only drops its interest: the actor
  still appends it, exactly once. Re-sending the input (same id or idempotency key)
  after a cancellation is deduplicated, so "retry on cancel" is safe.
* **Async executors run on the host's loop** (the loop ``AsyncRuntime.open`` was
  awaited on), not on a loop thread of the runtime's: they can share the host's
  clients and locks. Blocking executors still run in the executor thread pool.
* **Blocking parts run in the loop's default executor**, where the store is read or
  written outside an actor: opening (schema, eager recovery), closing (which waits
  for runs in flight), ``recover``, ``verify``, ``sessions``, ``cluster``, the read
  model queries (``ledger``, ``views``, ``projections.wait_caught_up``) and the
  pages of ``session.events()``. Each is one short hop, never a thread parked on
  a completion.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from meerkat_runtime._session_ops import AsyncSessionOperations
from meerkat_runtime.actors import AcceptOutcome, CompletionHandle, RunBoundaryReceipt
from meerkat_runtime.actors import _messages as msg
from meerkat_runtime.actors._messages import Reply
from meerkat_runtime.actors._session import OutcomeKind
from meerkat_runtime.cluster import ClusterView
from meerkat_runtime.errors import (
    CompletionWaitError,
    MeerkatRuntimeError,
    OperationLifecycleError,
    SessionOwnedElsewhere,
)
from meerkat_runtime.events.completion import CompletionOutcome
from meerkat_runtime.events.ids import parse_uuid, uuid7, validate_session_id
from meerkat_runtime.events.input_state import InputState
from meerkat_runtime.events.inputs import Input
from meerkat_runtime.events.policy import AdmissionPlan
from meerkat_runtime.events.reports import (
    DestroyReport,
    RecoveryReport,
    RecycleReport,
    RejectReason,
    ResetReport,
    RetireReport,
    StopReport,
)
from meerkat_runtime.events.runtime_event import RuntimeEventEnvelope
from meerkat_runtime.events.runtime_state import RuntimeState
from meerkat_runtime.events.session import (
    Create,
    Destroy,
    Recover,
    Recycle,
    Reset,
    Retire,
    SetSilentIntents,
    Stop,
)
from meerkat_runtime.projections import (
    Cursor,
    LedgerQueries,
    LedgerRow,
    ProjectionSet,
    ProjectionStatus,
    SkippedEvent,
    VerifyReport,
    ViewQueries,
    ViewRow,
)
from meerkat_runtime.runtime import (
    DEFAULT_STORE_URL,
    Runtime,
    RuntimeActivity,
    _cancel_run_args,
    _check_after,
    _coerce_all,
    _collect_many,
    _observed_state,
    _receipt_args,
    _silent_intents_arg,
    coerce_input,
)
from meerkat_runtime.store import EventStore, SessionJournal
from meerkat_runtime.subscriptions import AsyncSubscription, EventObserver, Until, deliver_async
from meerkat_runtime.telemetry import AcceptCall
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

__all__ = [
    "AsyncAcceptOutcome",
    "AsyncCompletion",
    "AsyncLedger",
    "AsyncProjections",
    "AsyncRuntime",
    "AsyncSession",
    "AsyncViews",
]

P = ParamSpec("P")
T = TypeVar("T")

#: How many events ``AsyncSession.events()`` reads per hop to the executor.
EVENTS_PAGE = 256


async def _offload(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run blocking ``fn`` in the loop's default executor."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, functools.partial(fn, *args, **kwargs))


def _settle(future: asyncio.Future[Any], reply: Reply) -> None:
    if future.cancelled():
        return  # the awaiter went away: the actor's work stands, nobody is told
    error = reply.exception()
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(reply.result())


async def _answer(reply: Reply) -> Any:
    """The actor's answer to ``reply``'s call, awaited on the running loop (no thread)."""
    if reply.done():
        return reply.result()
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def answered(r: Reply) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is left to tell
            loop.call_soon_threadsafe(_settle, future, r)

    reply.add_done_callback(answered)
    return await future


class AsyncCompletion:
    """Awaitable completion of one input: ``await completion`` or ``await completion.wait(t)``.

    Wraps the input's :class:`~meerkat_runtime.CompletionHandle` (``handle``), which the
    sync API and other awaiters share; each await has a loop future of its own.
    """

    __slots__ = ("_relay", "handle")

    def __init__(self, handle: CompletionHandle) -> None:
        self.handle = handle
        # One loop future per completion (and loop), fed by a single done-callback on the
        # shared future; each await hangs on it and unhooks when it ends, so a host that
        # waits again and again (polling with a timeout) adds nothing to the shared future.
        self._relay: asyncio.Future[CompletionOutcome] | None = None

    @property
    def input_id(self) -> uuid.UUID:
        return self.handle.input_id

    def done(self) -> bool:
        """True once the outcome (or a wait error such as ``channel_closed``) is known."""
        return self.handle.done()

    def __await__(self) -> Generator[Any, None, CompletionOutcome]:
        return self._outcome().__await__()

    async def wait(self, timeout: float | None = None) -> CompletionOutcome:
        """The outcome; :class:`~meerkat_runtime.CompletionWaitError` (``timeout``) after
        ``timeout`` seconds, as the sync ``wait``. Timing out cancels only this wait."""
        if timeout is None or self.handle.done():
            return await self._outcome()  # a known outcome is read at once, whatever timeout
        try:
            return await asyncio.wait_for(self._outcome(), timeout)
        except CompletionWaitError:
            raise  # channel_closed: a TimeoutError too, which must not pass for this wait's
        except TimeoutError:
            raise CompletionWaitError(
                "timeout", f"input {self.input_id} not terminal after {timeout} s"
            ) from None

    def _relay_on(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[CompletionOutcome]:
        relay = self._relay
        if relay is not None and relay.get_loop() is loop:
            return relay
        relay = self._relay = loop.create_future()

        def transfer(done: Future[CompletionOutcome]) -> None:
            if relay.done():
                return
            error = done.exception()
            if error is not None:
                relay.set_exception(error)
                relay.exception()  # read here: nobody may be awaiting when it lands
            else:
                relay.set_result(done.result())

        def answered(done: Future[CompletionOutcome]) -> None:
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is left to tell
                loop.call_soon_threadsafe(transfer, done)

        self.handle.future.add_done_callback(answered)
        return relay

    async def _outcome(self) -> CompletionOutcome:
        if self.handle.done():
            return self.handle.wait(0)  # known: the outcome (or its wait error) at once
        loop = asyncio.get_running_loop()
        relay = self._relay_on(loop)
        mine: asyncio.Future[CompletionOutcome] = loop.create_future()

        def forward(done: asyncio.Future[CompletionOutcome]) -> None:
            if mine.done():
                return
            error = done.exception()
            if error is not None:
                mine.set_exception(error)
            else:
                mine.set_result(done.result())

        relay.add_done_callback(forward)
        try:
            return await mine
        finally:
            relay.remove_done_callback(forward)

    def __repr__(self) -> str:
        return f"AsyncCompletion({self.input_id})"


@dataclass(frozen=True, slots=True)
class AsyncAcceptOutcome(OutcomeKind):
    """What the asyncio ``accept`` returns: :class:`~meerkat_runtime.AcceptOutcome`'s
    fields, with an awaitable ``completion`` (``await outcome.completion``)."""

    kind: str
    input_id: uuid.UUID
    existing_id: uuid.UUID | None = None
    reason: RejectReason | None = None
    state: InputState | None = None
    completion: AsyncCompletion | None = None
    policy: AdmissionPlan | None = field(default=None, repr=False)
    operation_error: OperationLifecycleError | None = None

    @classmethod
    def of(cls, outcome: AcceptOutcome) -> AsyncAcceptOutcome:
        handle = outcome.completion
        return cls(
            kind=outcome.kind,
            input_id=outcome.input_id,
            existing_id=outcome.existing_id,
            reason=outcome.reason,
            state=outcome.state,
            completion=None if handle is None else AsyncCompletion(handle),
            policy=outcome.policy,
            operation_error=outcome.operation_error,
        )


def _measure(call: AcceptCall, kind: str, answer: Any) -> None:
    if kind == "accept":
        call.done(answer)
    else:
        call.done_many(answer)


def _measure_reply(call: AcceptCall, kind: str, reply: Reply) -> None:
    """Record an accept whose caller was cancelled, once its actor answered (any thread)."""
    error = reply.exception()
    if error is not None:
        call.failed(error)
    else:
        _measure(call, kind, reply.result())


def _measure_many_later(
    call: AcceptCall,
    by_session: dict[str, list[int]],
    count: int,
    posted: dict[str, Reply | MeerkatRuntimeError],
) -> None:
    """Record a runtime ``accept_many`` whose caller was cancelled, once every session's
    share is answered (the shares stand: they were posted)."""
    replies = [r for r in posted.values() if isinstance(r, Reply)]
    lock = threading.Lock()
    waiting = [len(replies)]

    def finish() -> None:
        answers: dict[str, list[AcceptOutcome] | MeerkatRuntimeError] = {}
        for sid, reply in posted.items():
            if isinstance(reply, MeerkatRuntimeError):
                answers[sid] = reply
                continue
            error = reply.exception()
            if error is not None and not isinstance(error, MeerkatRuntimeError):
                call.failed(error)
                return
            answers[sid] = error if error is not None else reply.result()
        try:
            call.done_many(_collect_many(by_session, count, answers))
        except MeerkatRuntimeError as exc:
            call.failed(exc)

    def answered(_reply: Reply) -> None:
        with lock:
            waiting[0] -= 1
            if waiting[0]:
                return
        finish()

    if not replies:
        finish()
    for reply in replies:
        reply.add_done_callback(answered)


class AsyncSession(AsyncSessionOperations):
    """A handle on one session for coroutines: every method is awaited (see the module)."""

    __slots__ = ("_art", "id")

    def __init__(self, runtime: AsyncRuntime, session_id: str) -> None:
        self._art = runtime
        self.id = session_id

    def __repr__(self) -> str:
        return f"AsyncSession({self.id!r})"

    async def _ask(self, message: msg.Message, *, admission: bool = False) -> Any:
        return await _answer(self._art.sync._registry.post(self.id, message, admission))

    async def _measured(self, call: AcceptCall | None, message: msg.Message) -> Any:
        if call is None:
            return await self._ask(message, admission=True)
        kind = "accept" if isinstance(message, msg.Accept) else "accept_many"
        try:
            reply = self._art.sync._registry.post(self.id, message, True)
        except BaseException as exc:
            call.failed(exc)
            raise
        try:
            answer = await _answer(reply)
        except asyncio.CancelledError:
            # The caller went away, not the input: measure it when the actor answers.
            reply.add_done_callback(functools.partial(_measure_reply, call, kind))
            raise
        except BaseException as exc:
            call.failed(exc)
            raise
        _measure(call, kind, answer)
        return answer

    async def accept(
        self, input: Input | dict[str, Any] | bytes | str, *, wake: bool = True
    ) -> AsyncAcceptOutcome:
        """Accept an input; returns once its events are durable (see :meth:`Session.accept`,
        also for ``wake=False``).

        Cancelled after the input was handed to the actor, the input is still accepted,
        once; sending it again (same id or idempotency key) is deduplicated."""
        rt = self._art.sync
        inp = coerce_input(input, rt.options.max_input_bytes)
        tel = rt._telemetry
        call = tel.accept_started(self.id, inp) if tel is not None else None
        outcome: AcceptOutcome = await self._measured(
            call, msg.Accept(inp, wake=wake, validated=True)
        )
        return AsyncAcceptOutcome.of(outcome)

    async def accept_many(
        self, inputs: Sequence[Input | dict[str, Any] | bytes | str]
    ) -> list[AsyncAcceptOutcome]:
        """Accept several inputs with one atomic append (see :meth:`Session.accept_many`)."""
        rt = self._art.sync
        coerced = _coerce_all(inputs, rt.options.max_input_bytes)
        if not coerced:
            return []
        tel = rt._telemetry
        call = tel.accept_many_started(self.id, coerced) if tel is not None else None
        outcomes: list[AcceptOutcome] = await self._measured(
            call, msg.AcceptMany(coerced, validated=True)
        )
        return [AsyncAcceptOutcome.of(o) for o in outcomes]

    async def state(self) -> RuntimeState:
        """The session's state as a host sees it."""
        result: RuntimeState = await self._ask(msg.Query(_observed_state))
        return result

    async def input_state(self, input_id: uuid.UUID | str) -> InputState | None:
        """The full state of one input of this session, or None if it never accepted it."""
        iid = parse_uuid(input_id, "input_id")
        held: InputState | Miss | None = await self._ask(
            msg.Query(lambda st, _: held_input_state(st, iid))
        )
        if held is MISS:  # terminal, compacted out: the log has it (see Session.input_state)
            return await _offload(logged_input_state, self._art.sync.store, self.id, iid)
        return held

    async def active_input_ids(self) -> list[uuid.UUID]:
        """Ids of the inputs that are not terminal yet."""
        result: list[uuid.UUID] = await self._ask(msg.Query(lambda st, _: st.non_terminal_ids()))
        return result

    async def stored_input_states_snapshot(self) -> list[InputState]:
        """The states of every input of the session, in acceptance order
        (see :meth:`Session.stored_input_states_snapshot`)."""
        held: list[InputState] = await self._ask(msg.Query(lambda st, _: list(st.inputs.values())))
        logged = await _offload(read_input_states, self._art.sync.store, self.id)
        return merge_input_states(logged, held)

    async def interaction_status(
        self, input_id: uuid.UUID | str | None = None, *, idempotency_key: str | None = None
    ) -> InteractionTerminalReport | None:
        """Did the interaction finish, and how (see :meth:`Session.interaction_status`)."""
        return await self._witness(InteractionQuery(input_id, idempotency_key))

    async def run_status(self, run_id: uuid.UUID | str) -> RunTerminalReport:
        """Did the run finish, and how (see :meth:`Session.run_status`)."""
        return await self._witness(RunQuery(run_id))

    async def input_id_for_idempotency_key(self, key: str) -> uuid.UUID | None:
        """The id of the input accepted under idempotency key ``key``, or None."""
        return await self._witness(KeyQuery(key))

    async def _witness(self, query: TerminalQuery[T]) -> T:
        """The live session answers on the loop; the log is read in the default executor."""
        rt = self._art.sync
        reply = rt._registry.post_if_live(self.id, msg.Query(query.live))
        if reply is not None:
            try:
                answer: T | Miss = await _answer(reply)
            except SessionOwnedElsewhere:
                answer = MISS
            if answer is not MISS:
                return answer
        inputs = await _offload(read_input_states, rt.store, self.id)
        return query.durable(inputs)

    async def completion(self, input_id: uuid.UUID | str) -> AsyncCompletion | None:
        """An awaitable completion of an input accepted earlier (also after a restart)."""
        iid = parse_uuid(input_id, "input_id")
        handle: CompletionHandle | Miss | None = await self._ask(msg.GetCompletion(iid))
        if handle is MISS:  # terminal, compacted out: its outcome is in the log
            rt = self._art.sync
            outcome = await _offload(logged_completion, rt.store, self.id, iid)
            handle = rt.completions.handle(self.id, iid, outcome)
        return None if handle is None else AsyncCompletion(handle)

    async def retire(self) -> RetireReport:
        """Take no new input; drain queued work with an executor, else abandon it."""
        report: RetireReport = await self._ask(
            msg.Execute(Retire(loop_attached=self._art.sync.executor is not None))
        )
        return report

    async def recycle(self) -> RecycleReport:
        """Rebuild the session's machinery, keeping its pending inputs."""
        report: RecycleReport = await self._ask(msg.Execute(Recycle()))
        return report

    async def reset(self) -> ResetReport:
        """Abandon every pending input and become ready again (refused during a run)."""
        report: ResetReport = await self._ask(msg.Execute(Reset()))
        return report

    async def destroy(self) -> DestroyReport:
        """Abandon everything and end the session for good."""
        report: DestroyReport = await self._ask(msg.Execute(Destroy()))
        return report

    async def stop(self) -> StopReport:
        """Cancel any run, abandon every pending input, go to ``stopped``."""
        report: StopReport = await self._ask(msg.Execute(Stop()))
        return report

    async def set_silent_intents(self, intents: Iterable[str]) -> None:
        """Make peer requests with one of ``intents`` silent (see
        :meth:`Session.set_silent_intents`)."""
        await self._ask(msg.Execute(SetSilentIntents(_silent_intents_arg(intents))))

    async def silent_intents(self) -> frozenset[str]:
        """The session's silent intents (empty when none are set)."""
        result: frozenset[str] = await self._ask(msg.Query(lambda st, _: st.silent_intents))
        return result

    async def recover(self) -> RecoveryReport:
        """Re-apply the recovery rules; a stopped session is re-registered."""
        report: RecoveryReport = await self._ask(msg.Execute(Recover(cold=False, reregister=True)))
        return report

    async def cancel_run(
        self, reason: str = "cancelled", run_id: uuid.UUID | str | None = None
    ) -> bool:
        """Cancel the run in flight (see :meth:`Session.cancel_run`); False when there is none."""
        done: bool = await self._ask(msg.CancelRun(*_cancel_run_args(reason, run_id)))
        return done

    async def boundary_receipt(
        self, run_id: uuid.UUID | str, sequence: int
    ) -> RunBoundaryReceipt | None:
        """The committed receipt of run ``run_id``'s checkpoint ``sequence``."""
        receipt: RunBoundaryReceipt | None = await self._ask(
            msg.BoundaryReceipt(*_receipt_args(run_id, sequence))
        )
        return receipt

    def events(self, after: int = 0) -> AsyncIterator[RuntimeEventEnvelope]:
        """``async for`` over the session's durable events with ``sequence > after``
        (does not wait for new ones); read a page at a time in the default executor."""
        return self._events(_check_after(after))

    def subscribe(
        self, after: int = 0, *, timeout: float | None = None, until: Until | None = None
    ) -> AsyncSubscription:
        """``async for`` over the session's events with ``sequence > after`` as they commit
        (see :meth:`Session.subscribe`); holds no thread while it waits."""
        return self._art.sync._feed.subscribe_async(
            _check_after(after), session_id=self.id, timeout=timeout, until=until
        )

    async def _events(self, after: int) -> AsyncIterator[RuntimeEventEnvelope]:
        pages = SessionJournal(self._art.sync.store).envelopes(self.id, after=after)
        while True:
            page = await _offload(lambda: list(itertools.islice(pages, EVENTS_PAGE)))
            for envelope in page:
                yield envelope
            if len(page) < EVENTS_PAGE:
                return


class AsyncLedger:
    """The input ledger's queries (``rt.ledger``), awaited."""

    __slots__ = ("_q",)

    def __init__(self, queries: LedgerQueries) -> None:
        self._q = queries

    async def get(
        self, input_id: uuid.UUID | str, session_id: str | None = None
    ) -> LedgerRow | None:
        """See :meth:`LedgerQueries.get`."""
        return await _offload(self._q.get, input_id, session_id)

    async def find(self, input_id: uuid.UUID | str) -> list[LedgerRow]:
        """See :meth:`LedgerQueries.find`."""
        return await _offload(self._q.find, input_id)

    async def list(self, *args: Any, **filters: Any) -> list[LedgerRow]:
        """See :meth:`LedgerQueries.list` (same arguments)."""
        return await _offload(self._q.list, *args, **filters)

    async def count(self, *args: Any, **filters: Any) -> int:
        """See :meth:`LedgerQueries.count` (same arguments)."""
        return await _offload(self._q.count, *args, **filters)


class AsyncViews:
    """The runtime-state views' queries (``rt.views``), awaited."""

    __slots__ = ("_q",)

    def __init__(self, queries: ViewQueries) -> None:
        self._q = queries

    async def get(self, session_id: str) -> ViewRow | None:
        """See :meth:`ViewQueries.get`."""
        return await _offload(self._q.get, session_id)

    async def list(self, *args: Any, **filters: Any) -> list[ViewRow]:
        """See :meth:`ViewQueries.list` (same arguments)."""
        return await _offload(self._q.list, *args, **filters)

    async def count_by_state(self) -> dict[str, int]:
        """See :meth:`ViewQueries.count_by_state`."""
        return await _offload(self._q.count_by_state)


class AsyncProjections:
    """The runtime's projections (``rt.projections``): waits and rebuilds awaited."""

    __slots__ = ("_p",)

    def __init__(self, projections: ProjectionSet) -> None:
        self._p = projections

    async def wait_caught_up(self, timeout: float | None = None) -> None:
        """See :meth:`ProjectionSet.wait_caught_up`."""
        await _offload(self._p.wait_caught_up, timeout)

    async def rebuild(self, name: str | None = None) -> None:
        """See :meth:`ProjectionSet.rebuild`."""
        await _offload(self._p.rebuild, name)

    def status(self) -> list[ProjectionStatus]:
        """Each projection's position, status and lag (from memory: no await needed)."""
        return self._p.status()

    async def query(self, fn: Callable[[Cursor], T]) -> T:
        """``fn(cur)`` in a read-only transaction on the read models, in the default
        executor (see :meth:`ProjectionSet.query`)."""
        return await _offload(self._p.query, fn)

    async def skipped(self, name: str | None = None) -> list[SkippedEvent]:
        """See :meth:`ProjectionSet.skipped`."""
        return await _offload(self._p.skipped, name)


def _close_unclaimed(done: asyncio.Future[Runtime | None]) -> None:
    """Close, off the loop, a runtime whose open finished for a caller that was cancelled."""
    if done.cancelled() or done.exception() is not None:
        return
    sync = done.result()
    if sync is not None:
        threading.Thread(target=sync.close, name="meerkat-close-unclaimed", daemon=True).start()


class _Opening:
    """What :meth:`AsyncRuntime.open` returns: ``await`` it, or ``async with`` it."""

    __slots__ = ("_args", "_runtime")

    def __init__(self, args: tuple[str | EventStore, dict[str, Any]]) -> None:
        self._args = args
        self._runtime: AsyncRuntime | None = None

    async def _open(self) -> AsyncRuntime:
        store, options = self._args
        loop = asyncio.get_running_loop()
        options = {**options, "executor_loop": loop}
        # A caller cancelled while the open runs in its thread holds nothing: whichever
        # side comes second (the thread finishing, or the cancellation) closes the runtime,
        # so its store, leases and threads never outlive the caller.
        lock = threading.Lock()
        claim = {"abandoned": False, "handed": False}

        def open_sync() -> Runtime | None:
            sync = Runtime.open(store, **options)
            with lock:
                if not claim["abandoned"]:
                    claim["handed"] = True
                    return sync
            sync.close()
            return None

        opening = loop.run_in_executor(None, open_sync)
        try:
            sync = await asyncio.shield(opening)
        except asyncio.CancelledError:
            with lock:
                claim["abandoned"] = True
                handed = claim["handed"]
            if handed:
                opening.add_done_callback(_close_unclaimed)
            raise
        assert sync is not None  # only an abandoned open returns None
        return AsyncRuntime(sync)

    def __await__(self) -> Generator[Any, None, AsyncRuntime]:
        return self._open().__await__()

    async def __aenter__(self) -> AsyncRuntime:
        self._runtime = await self._open()
        return self._runtime

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._runtime is not None:
            await self._runtime.close()


class AsyncRuntime:
    """An open runtime for coroutines. Open with ``async with AsyncRuntime.open(...) as rt``
    (or ``rt = await AsyncRuntime.open(...)`` and ``await rt.close()``).

    ``sync`` is the underlying :class:`~meerkat_runtime.Runtime`, for the rare call this
    class does not wrap (from a coroutine, run its blocking calls in an executor).
    """

    def __init__(self, runtime: Runtime) -> None:
        self.sync = runtime
        self.store: EventStore = runtime.store
        self.ledger = AsyncLedger(runtime.ledger)
        """Input ledger queries, awaited."""
        self.views = AsyncViews(runtime.views)
        """Runtime-state view queries, awaited."""
        self.projections = AsyncProjections(runtime.projections)
        """The projections: ``wait_caught_up``, ``rebuild``, ``status``, ``skipped``."""
        self._observers: set[asyncio.Task[None]] = set()  # held: the loop keeps weak refs

    @staticmethod
    def open(store: str | EventStore = DEFAULT_STORE_URL, **options: Any) -> _Opening:
        """Open a runtime; the same arguments as :meth:`Runtime.open`.

        Async executors run on the loop this is awaited on (``executor_loop`` is set to
        it). Opening reads and may write the store, so it runs in the default executor.
        """
        if "executor_loop" in options:
            raise ValueError("AsyncRuntime.open runs async executors on its own loop")
        return _Opening((store, options))

    def session(self, session_id: str) -> AsyncSession:
        """A handle on session ``session_id`` (no I/O: the actor starts on first use)."""
        self.sync._check_open()
        self.sync._check_joined()
        return AsyncSession(self, validate_session_id(session_id))

    async def create_session(self, session_id: str) -> AsyncSession:
        """Bring session ``session_id`` into being without an input (see
        :meth:`Runtime.create_session`); its handle."""
        session = self.session(session_id)
        await session._ask(msg.Execute(Create()))
        return session

    def new_session(self) -> AsyncSession:
        """A handle on a new session with a fresh UUIDv7 id."""
        return self.session(str(uuid7()))

    async def accept_many(
        self, items: Sequence[tuple[str, Input | dict[str, Any] | bytes | str]]
    ) -> list[AsyncAcceptOutcome]:
        """Accept ``(session_id, input)`` pairs (see :meth:`Runtime.accept_many`; the
        outcomes inside an ``AcceptManyFailed`` are the sync ones)."""
        rt = self.sync
        by_session, coerced = rt._prepare_many(items)
        tel = rt._telemetry
        only = next(iter(by_session)) if len(by_session) == 1 else None
        call = tel.accept_many_started(only, coerced) if tel is not None else None
        posted: dict[str, Reply | MeerkatRuntimeError] = {}
        try:
            posted = rt._post_many(by_session, coerced)
            answers: dict[str, list[AcceptOutcome] | MeerkatRuntimeError] = {}
            for sid, reply in posted.items():
                try:
                    if isinstance(reply, MeerkatRuntimeError):
                        raise reply
                    answers[sid] = await _answer(reply)
                except MeerkatRuntimeError as exc:
                    answers[sid] = exc
            outcomes = _collect_many(by_session, len(coerced), answers)
        except asyncio.CancelledError:
            if call is not None:  # the shares stand: measure them once answered
                _measure_many_later(call, by_session, len(coerced), posted)
            raise
        except BaseException as exc:
            if call is not None:
                call.failed(exc)
            raise
        if call is not None:
            call.done_many(outcomes)
        return [AsyncAcceptOutcome.of(o) for o in outcomes]

    async def sessions(self) -> list[str]:
        """Ids of every session in the store, by first appearance."""
        return await _offload(self.sync.sessions)

    async def recover(self) -> list[RecoveryReport]:
        """Recover every session (see :meth:`Runtime.recover`)."""
        return await _offload(self.sync.recover)

    async def recover_by_session(self) -> dict[str, RecoveryReport]:
        """Recover every session; reports by session id."""
        return await _offload(self.sync.recover_by_session)

    async def verify(self) -> VerifyReport:
        """Refold every session and compare with the read models (see :meth:`Runtime.verify`)."""
        return await _offload(self.sync.verify)

    async def cluster(self) -> ClusterView:
        """Nodes, session leases and projection owners of a shared store."""
        return await _offload(self.sync.cluster)

    def subscribe(
        self, after: int = 0, *, timeout: float | None = None, until: Until | None = None
    ) -> AsyncSubscription:
        """``async for`` over every session's events after log position ``after`` as they
        commit (see :meth:`Runtime.subscribe`); holds no thread while it waits."""
        self.sync._check_open()
        return self.sync._feed.subscribe_async(_check_after(after), timeout=timeout, until=until)

    def on_runtime_event(
        self, callback: EventObserver, *, after: int | None = None
    ) -> Callable[[], None]:
        """Call ``callback(envelope)`` (awaited if it returns an awaitable) with each event
        committed from now on (or after log position ``after``), from a task on the running
        loop; return a function that stops it (callable from any thread). One that raises
        is logged and goes on."""
        self.sync._check_open()
        start = self.sync.store.max_position() if after is None else _check_after(after)
        sub = self.sync._feed.subscribe_async(start)
        loop = asyncio.get_running_loop()
        task = loop.create_task(deliver_async(sub, callback))
        self._observers.add(task)
        task.add_done_callback(self._observers.discard)

        def stop() -> None:
            """Stop the observer; from the loop or any other thread (idempotent)."""
            sub.close()
            if _on_loop(loop):
                task.cancel()
            elif not loop.is_closed():
                loop.call_soon_threadsafe(task.cancel)  # Task.cancel is not thread-safe

        return stop

    def activity(self) -> RuntimeActivity:
        """What this process is doing now (from memory: no await needed)."""
        return self.sync.activity()

    def live_session_count(self) -> int:
        """How many session actors are live now."""
        return self.sync.live_session_count()

    async def close(self) -> None:
        """Stop every actor once in-flight work is durable, and release the store (waits
        for runs in flight up to ``close_timeout``, in the default executor). Idempotent."""
        await _offload(self.sync.close)

    async def __aenter__(self) -> AsyncRuntime:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether the calling thread is running ``loop``."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
