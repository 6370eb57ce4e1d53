"""Executors: what does the work of a run (for an agent host, a model turn).

The executor contract
=====================

An executor is a callable ``f(request) -> RunResult | None``, an object with
``run(request)``, or either of those written ``async def``. A blocking one is
called on a worker thread of the runtime's pool, an async one on the event
loop the runtime owns (one daemon thread, started on first use), never on a
session actor's thread, so a slow run never blocks acceptance.

**The request** (:class:`RunRequest`) carries the session id, the run id, the
run primitive and the contributing input ids, plus the run's controls:

* ``request.cancel`` -- a :class:`CancelToken`. It is signalled when the log
  ends the run before the executor returned: ``session.cancel_run``,
  ``stop``, ``destroy``, ``recycle``, the run
  timeout, the session's lease lost to another node, or a recovery that
  closes the run. Poll ``request.cancel.cancelled``, block on
  ``request.cancel.wait(timeout)``, or register ``add_callback(fn)``. An
  async executor is also cancelled the asyncio way: its task gets
  ``CancelledError`` at its next ``await``.
* ``request.checkpoint(...)`` -- report a checkpoint boundary: every
  contributor still staged (and the interrupts the executor took) is
  committed to ``applied_pending_consumption`` together with a
  :class:`RunBoundaryReceipt`, durably, before the call returns. After a
  crash, inputs with a receipt are consumed, not run again. ``await
  request.acheckpoint(...)`` is the same for async executors.
* ``request.interrupts`` -- an :class:`InterruptQueue` of steer-lane inputs
  admitted with wake mode ``interrupt_yielding`` while the run is going (its
  cooperative yield points). Take them with ``get``/``get_nowait``/
  ``drain`` or ``add_callback``; the next checkpoint stages and applies the
  ones taken. Inputs the executor never takes stay queued for the next run.

**The result** (:class:`RunResult`) says how the run ended:

* ``completed`` (``output``): contributors consumed; waiters get
  ``completed`` with the output.
* ``completed_without_result``, ``callback_pending`` (``tool_use_id``,
  ``tool_name``, ``args``), ``callback_batch_pending``
  (``pending_tool_calls``), ``completed_with_finalization_failure``
  (``error``): consumed; waiters get the outcome of that name.
* ``failed`` with ``terminal=True``: consumed (a non-recoverable failure is
  final); waiters get ``abandoned_with_error``.
* ``failed``: rolled back and retried per the retry policy; after the last
  attempt waiters get ``abandoned`` whose ``error`` is the last run's
  error.
* ``cancelled`` (the executor's own cancel): rolled back and retried.

Returning ``None`` is ``completed`` with no output; raising is ``failed``
(not terminal) with the exception's text.

Fencing and the at-least-once window
====================================

A call belongs to its run id. Once the log has ended the run (any of the
causes listed under ``request.cancel``), nothing the call does changes the
session: its result is ignored (a WARNING line on the
``meerkat_runtime.actors._session`` logger, "late result ... ignored"), a
checkpoint it reports returns ``None`` and commits nothing.

While such a call is still executing, its session starts no new run (so no
input is ever executed by two calls at once) until the call returns or
``cancel_grace`` seconds (a runtime option, 30 s by default; ``None`` waits
for ever) have passed since it was told to cancel. An input's work can
therefore run more than once only:

1. after a run failed, timed out, was cancelled by the executor itself or
   was ended by ``recycle``: its staged contributors are re-run (one call
   after the other); the earlier call saw ``request.cancel`` when the log
   ended its run, and a later one starts only after it returned or the grace
   period passed since the signal -- the only case where two calls for one
   input overlap;
2. after the process died (``kill -9``) or lost its lease during a call:
   contributors without a boundary receipt are re-run by the next owner (a
   call on a node that lost its lease may still be executing; it is
   signalled, and fenced from the log);
3. inputs with a boundary receipt are never re-run: recovery consumes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
import queue
import random
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from meerkat_runtime.events.completion import TurnTerminalCauseKind
from meerkat_runtime.events.inputs import Input
from meerkat_runtime.events.run_primitive import HandlingMode, RunPrimitive
from meerkat_runtime.events.runtime_event import RunBoundaryReceipt

__all__ = [
    "AsyncRunner",
    "CancelToken",
    "EchoExecutor",
    "Executor",
    "ExecutorLike",
    "Interrupt",
    "InterruptQueue",
    "RetryPolicy",
    "RunControl",
    "RunRequest",
    "RunResult",
    "RunStatus",
    "call_executor",
    "start_call",
]

log = logging.getLogger(__name__)


class RunStatus(StrEnum):
    """How a run ended, as the executor reports it."""

    COMPLETED = "completed"
    COMPLETED_WITHOUT_RESULT = "completed_without_result"
    CALLBACK_PENDING = "callback_pending"
    CALLBACK_BATCH_PENDING = "callback_batch_pending"
    COMPLETED_WITH_FINALIZATION_FAILURE = "completed_with_finalization_failure"
    FAILED = "failed"
    CANCELLED = "cancelled"


class CancelToken:
    """Signalled once when the run is to stop; thread-safe, first reason wins."""

    __slots__ = ("_callbacks", "_event", "_lock", "_reason")

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._reason: str | None = None
        self._callbacks: list[Callable[[CancelToken], None]] = []

    def __repr__(self) -> str:
        return f"CancelToken(cancelled={self.cancelled}, reason={self._reason!r})"

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    @property
    def reason(self) -> str | None:
        """Why the run was cancelled (``timeout``, ``stopped``, ``destroyed``, ``recycled``, ...)."""
        return self._reason

    def wait(self, timeout: float | None = None) -> bool:
        """Block until cancelled or ``timeout`` s passed; True when cancelled."""
        return self._event.wait(timeout)

    def add_callback(self, fn: Callable[[CancelToken], None]) -> None:
        """Call ``fn(token)`` once cancelled (at once, on this thread, if it already is)."""
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(fn)
                return
        _call_safely(fn, self)

    def cancel(self, reason: str = "cancelled") -> bool:
        """Signal the token (the runtime does this); False if it already was."""
        with self._lock:
            if self._event.is_set():
                return False
            self._reason = reason
            self._event.set()
            callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            _call_safely(fn, self)
        return True


def _call_safely(fn: Callable[[Any], None], arg: Any) -> None:
    try:
        fn(arg)
    except Exception:
        log.exception("callback %r failed", fn)


@dataclass(frozen=True, slots=True)
class Interrupt:
    """An input admitted with ``interrupt_yielding`` while the run was going.

    ``lane`` says what it asks of the executor. A ``steer`` input may join the
    run in flight: the next checkpoint stages and applies it when the executor
    took it. A ``queue`` input (a peer message or request sent while the run
    goes) only pokes the run to yield at its next cooperative point: it starts
    at a run boundary, so it waits in its queue for the next run, taken or not.
    """

    input_id: uuid.UUID
    input: Input
    lane: HandlingMode = HandlingMode.STEER

    @property
    def joins_run(self) -> bool:
        """True when a checkpoint can apply this input in the run in flight."""
        return self.lane is HandlingMode.STEER


class InterruptQueue:
    """Interrupts for one run. What the executor takes, the next checkpoint applies."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Interrupt] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[Interrupt], None]] = []
        self._taken: list[uuid.UUID] = []

    def put(self, interrupt: Interrupt) -> None:
        """Deliver an interrupt (the runtime does this)."""
        with self._lock:
            callbacks = list(self._callbacks)
            if callbacks and interrupt.joins_run:
                self._taken.append(interrupt.input_id)
            else:
                self._queue.put(interrupt)
        for fn in callbacks:
            _call_safely(fn, interrupt)

    def get(self, timeout: float | None = None) -> Interrupt:
        """The next interrupt; ``queue.Empty`` after ``timeout`` s."""
        item = self._queue.get(timeout=timeout)
        self._took([item])
        return item

    def get_nowait(self) -> Interrupt:
        """The next interrupt; ``queue.Empty`` when none is waiting."""
        item = self._queue.get_nowait()
        self._took([item])
        return item

    def drain(self) -> list[Interrupt]:
        """Every interrupt waiting now."""
        items: list[Interrupt] = []
        while True:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        self._took(items)
        return items

    def _took(self, items: list[Interrupt]) -> None:
        with self._lock:
            self._taken.extend(i.input_id for i in items if i.joins_run)

    def add_callback(self, fn: Callable[[Interrupt], None]) -> None:
        """Call ``fn(interrupt)`` for each interrupt, the waiting ones first (they count as taken)."""
        with self._lock:
            self._callbacks.append(fn)
        for item in self.drain():
            _call_safely(fn, item)

    def take_absorbed(self) -> list[uuid.UUID]:
        """The ids taken since the last call (the runtime applies them at a checkpoint)."""
        with self._lock:
            taken, self._taken = self._taken, []
        return taken


class RunControl(Protocol):
    """How a request reaches its session (implemented by the session actor layer)."""

    def checkpoint(
        self,
        run_id: uuid.UUID,
        absorbed: tuple[uuid.UUID, ...],
        conversation_digest: str | None,
        message_count: int,
        timeout: float | None,
    ) -> RunBoundaryReceipt | None: ...

    def checkpoint_future(
        self,
        run_id: uuid.UUID,
        absorbed: tuple[uuid.UUID, ...],
        conversation_digest: str | None,
        message_count: int,
    ) -> Future[RunBoundaryReceipt | None]: ...


@dataclass(frozen=True, slots=True)
class RunRequest:
    """What an executor receives for one run (see the module docstring)."""

    session_id: str
    run_id: uuid.UUID
    primitive: RunPrimitive
    contributing_input_ids: tuple[uuid.UUID, ...] = field(default=())
    cancel: CancelToken = field(default_factory=CancelToken, compare=False, repr=False)
    interrupts: InterruptQueue = field(default_factory=InterruptQueue, compare=False, repr=False)
    control: RunControl | None = field(default=None, compare=False, repr=False)

    def checkpoint(
        self,
        conversation_digest: str | None = None,
        message_count: int = 0,
        *,
        absorbed: Iterable[uuid.UUID] | None = None,
        timeout: float | None = None,
    ) -> RunBoundaryReceipt | None:
        """Commit a checkpoint boundary; the durable receipt, or None if the run already ended.

        ``absorbed``: interrupt input ids to apply at this boundary (default:
        every interrupt taken since the last checkpoint).
        """
        if self.control is None:
            raise RuntimeError("this request is not bound to a session (built by hand?)")
        ids = self._absorbed(absorbed)
        _check_checkpoint(conversation_digest, message_count)
        return self.control.checkpoint(
            self.run_id, ids, conversation_digest, message_count, timeout
        )

    async def acheckpoint(
        self,
        conversation_digest: str | None = None,
        message_count: int = 0,
        *,
        absorbed: Iterable[uuid.UUID] | None = None,
    ) -> RunBoundaryReceipt | None:
        """:meth:`checkpoint` for async executors (does not block the event loop)."""
        if self.control is None:
            raise RuntimeError("this request is not bound to a session (built by hand?)")
        ids = self._absorbed(absorbed)
        _check_checkpoint(conversation_digest, message_count)
        future = self.control.checkpoint_future(
            self.run_id, ids, conversation_digest, message_count
        )
        return await asyncio.wrap_future(future)

    def _absorbed(self, absorbed: Iterable[uuid.UUID] | None) -> tuple[uuid.UUID, ...]:
        taken = self.interrupts.take_absorbed()
        return tuple(taken if absorbed is None else absorbed)


def _check_checkpoint(digest: str | None, message_count: int) -> None:
    if digest is not None and not isinstance(digest, str):
        raise TypeError(f"conversation_digest must be a str or None, not {type(digest).__name__}")
    if isinstance(message_count, bool) or not isinstance(message_count, int) or message_count < 0:
        raise ValueError(f"message_count must be a non-negative int, got {message_count!r}")


_CONSUMING = frozenset(
    {
        RunStatus.COMPLETED,
        RunStatus.COMPLETED_WITHOUT_RESULT,
        RunStatus.CALLBACK_PENDING,
        RunStatus.CALLBACK_BATCH_PENDING,
        RunStatus.COMPLETED_WITH_FINALIZATION_FAILURE,
    }
)


@dataclass(frozen=True, slots=True)
class RunResult:
    """What an executor returns (see the module docstring for what each status does).

    ``status`` accepts plain strings; ``output`` and ``args`` must be JSON-able.
    A failure's ``error`` text becomes the ``detail`` of the ``run.failed`` error, whose
    ``kind`` is ``error_kind`` (default ``runtime_apply_failure``).
    The class methods build each kind with its required fields.
    """

    status: RunStatus | str = RunStatus.COMPLETED
    output: Any = None
    error: str | None = None
    terminal: bool = False
    error_kind: TurnTerminalCauseKind | str | None = None
    tool_use_id: str | None = None
    tool_name: str | None = None
    args: Any = None
    pending_tool_calls: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        try:
            status = RunStatus(self.status)
        except ValueError:
            names = ", ".join(s.value for s in RunStatus)
            raise ValueError(
                f"RunResult.status must be one of {names}; got {self.status!r}"
            ) from None
        object.__setattr__(self, "status", status)
        if self.error_kind is not None:
            try:
                kind = TurnTerminalCauseKind(self.error_kind)
            except ValueError:
                names = ", ".join(k.value for k in TurnTerminalCauseKind)
                raise ValueError(
                    f"RunResult.error_kind must be one of {names}; got {self.error_kind!r}"
                ) from None
            object.__setattr__(self, "error_kind", kind)
        if self.terminal and status is not RunStatus.FAILED:
            raise ValueError("RunResult.terminal is only meaningful with status 'failed'")
        if status is RunStatus.CALLBACK_PENDING and not (
            isinstance(self.tool_use_id, str) and isinstance(self.tool_name, str)
        ):
            raise ValueError("a callback_pending RunResult needs tool_use_id and tool_name strings")
        if status is RunStatus.CALLBACK_BATCH_PENDING:
            if (
                not isinstance(self.pending_tool_calls, (list, tuple))
                or not self.pending_tool_calls
            ):
                raise ValueError("a callback_batch_pending RunResult needs pending_tool_calls")
            object.__setattr__(self, "pending_tool_calls", tuple(self.pending_tool_calls))

    @property
    def consumes(self) -> bool:
        """True when the run's contributors are consumed (every completion and a terminal failure)."""
        return self.status in _CONSUMING or (self.status is RunStatus.FAILED and self.terminal)

    @classmethod
    def completed(cls, output: Any = None) -> RunResult:
        return cls(status=RunStatus.COMPLETED, output=output)

    @classmethod
    def without_result(cls) -> RunResult:
        return cls(status=RunStatus.COMPLETED_WITHOUT_RESULT)

    @classmethod
    def failed(
        cls, error: str, *, terminal: bool = False, kind: TurnTerminalCauseKind | str | None = None
    ) -> RunResult:
        """A failed run; ``kind`` classifies it (``llm_failure``, ``tool_failure``, ...;
        default ``runtime_apply_failure``) in the ``run.failed`` error."""
        return cls(status=RunStatus.FAILED, error=error, terminal=terminal, error_kind=kind)

    @classmethod
    def cancelled(cls, error: str | None = None) -> RunResult:
        return cls(status=RunStatus.CANCELLED, error=error)

    @classmethod
    def callback_pending(cls, tool_use_id: str, tool_name: str, args: Any = None) -> RunResult:
        return cls(
            status=RunStatus.CALLBACK_PENDING,
            tool_use_id=tool_use_id,
            tool_name=tool_name,
            args=args,
        )

    @classmethod
    def callback_batch(cls, pending_tool_calls: Iterable[Any]) -> RunResult:
        return cls(
            status=RunStatus.CALLBACK_BATCH_PENDING, pending_tool_calls=tuple(pending_tool_calls)
        )

    @classmethod
    def finalization_failed(cls, error: str, output: Any = None) -> RunResult:
        return cls(status=RunStatus.COMPLETED_WITH_FINALIZATION_FAILURE, error=error, output=output)


@runtime_checkable
class Executor(Protocol):
    """An object that performs runs; a plain callable ``f(request)`` works as well, and
    either may be ``async def``."""

    def run(self, request: RunRequest) -> RunResult | Awaitable[RunResult | None] | None: ...


ExecutorLike = Executor | Callable[[RunRequest], Any]


class EchoExecutor:
    """Completes every run with ``{"text": <the primitive's extracted content>}``."""

    def run(self, request: RunRequest) -> RunResult:
        content = request.primitive.extract_content()
        text = content if isinstance(content, str) else list(content)
        return RunResult(status=RunStatus.COMPLETED, output={"text": text})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How rolled-back inputs are retried (runtime option ``retry``).

    * ``max_attempts`` (3): the attempt
      that fails for the ``max_attempts``-th time abandons its inputs.
    * ``initial_backoff`` (0.05 s), ``multiplier`` (2.0), ``max_backoff``
      (5 s): the wait before attempt ``n + 1`` is
      ``min(max_backoff, initial_backoff * multiplier ** (n - 1))``.
    * ``jitter`` (0.5): that wait is scaled by a random factor in
      ``[1 - jitter, 1]``, so sessions that failed together do not retry in step.
    """

    max_attempts: int = 3
    initial_backoff: float = 0.05
    multiplier: float = 2.0
    max_backoff: float = 5.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise ValueError(f"RetryPolicy.max_attempts must be an int, got {self.max_attempts!r}")
        if self.max_attempts < 1:
            raise ValueError(f"RetryPolicy.max_attempts must be >= 1, got {self.max_attempts}")
        for name in ("initial_backoff", "max_backoff"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"RetryPolicy.{name} must be a number >= 0, got {value!r}")
        if not isinstance(self.multiplier, (int, float)) or self.multiplier < 1:
            raise ValueError(f"RetryPolicy.multiplier must be >= 1, got {self.multiplier!r}")
        if not isinstance(self.jitter, (int, float)) or not 0 <= self.jitter <= 1:
            raise ValueError(f"RetryPolicy.jitter must be within [0, 1], got {self.jitter!r}")

    def delay(self, attempts: int) -> float:
        """The wait before the next attempt, after ``attempts`` failed ones."""
        n = max(attempts, 1)
        base = min(self.max_backoff, self.initial_backoff * self.multiplier ** min(n - 1, 64))
        return float(base * (1 - self.jitter * random.random()))


# ---------------------------------------------------------------- calling


def _target(executor: ExecutorLike) -> Callable[[RunRequest], Any]:
    fn: Callable[[RunRequest], Any] = executor.run if isinstance(executor, Executor) else executor
    return fn


def is_async(executor: ExecutorLike) -> bool:
    """True for an ``async def`` executor (function, method or ``async __call__``)."""
    fn = _target(executor)
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an object with async __call__
    )


def _normalise(result: object) -> RunResult:
    if result is None:
        return RunResult(status=RunStatus.COMPLETED)
    if not isinstance(result, RunResult):
        return RunResult(
            status=RunStatus.FAILED,
            error=f"executor returned {type(result).__name__}, expected RunResult or None",
        )
    return result


def _failure(exc: BaseException) -> RunResult:
    return RunResult(status=RunStatus.FAILED, error=f"{type(exc).__name__}: {exc}")


def call_executor(executor: ExecutorLike, request: RunRequest) -> RunResult:
    """Run a blocking executor; an exception becomes a failed result carrying its text."""
    try:
        result: object = _target(executor)(request)
    except Exception as exc:  # an executor may raise anything; it must never kill the actor
        return _failure(exc)
    if inspect.isawaitable(result):
        close = getattr(result, "close", None)
        if close is not None:
            close()  # never awaited here: close it so Python does not warn
        return RunResult(status=RunStatus.FAILED, error="executor returned an awaitable")
    return _normalise(result)


class AsyncRunner:
    """The event loop async executors run on.

    By default the runtime's own: one daemon thread, started on first use. Given a
    ``loop`` (the host's, e.g. the one :class:`~meerkat_runtime.aio.AsyncRuntime` was
    opened on), executors run there instead; closing then cancels only the tasks this
    runner started and leaves the host's loop running.
    """

    def __init__(
        self, name: str = "meerkat-async-executor", loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = loop
        self._external = loop is not None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._thread: threading.Thread | None = None
        self._closed = False

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._closed:
                raise RuntimeError("the runtime's event loop is closed")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def main() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                thread = threading.Thread(target=main, name=self._name, daemon=True)
                thread.start()
                ready.wait()
                self._loop, self._thread = loop, thread
            return self._loop

    def submit(
        self,
        make: Callable[[], Awaitable[Any]],
        token: CancelToken,
        on_done: Callable[[RunResult], None],
    ) -> None:
        """Run ``make()`` on the loop as a task that ``token`` cancels; ``on_done(result)`` after."""
        loop = self.loop()

        async def guarded() -> RunResult:
            task = asyncio.current_task()
            assert task is not None
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

            def cancel_task(_token: CancelToken) -> None:
                with contextlib.suppress(RuntimeError):  # the loop closed: the task is gone
                    loop.call_soon_threadsafe(task.cancel)

            token.add_callback(cancel_task)
            try:
                return _normalise(await make())
            except asyncio.CancelledError:
                return RunResult(status=RunStatus.CANCELLED, error=token.reason or "cancelled")
            except Exception as exc:
                return _failure(exc)

        coro = guarded()
        try:
            future = asyncio.run_coroutine_threadsafe(coro, loop)
        except RuntimeError as exc:  # a host's loop that has closed: the call must still end
            coro.close()
            on_done(_failure(exc))
            return

        def settle(f: Future[RunResult]) -> None:
            try:
                result = f.result()
            except BaseException as exc:  # the loop was closed under the task
                result = _failure(exc)
            on_done(result)

        future.add_done_callback(settle)

    def close(self, timeout: float = 5.0) -> None:
        """Cancel what is still running and stop the loop thread."""
        with self._lock:
            self._closed = True
            loop, thread = self._loop, self._thread
        if loop is not None and self._external:
            # The host's loop may close at any moment, even between a check and the call.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(lambda: [t.cancel() for t in list(self._tasks)])
            return
        if loop is None or thread is None:
            return

        def shutdown() -> None:
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.call_later(0.05, loop.stop)

        loop.call_soon_threadsafe(shutdown)
        thread.join(timeout)


def start_call(
    executor: ExecutorLike,
    request: RunRequest,
    pool: ThreadPoolExecutor,
    runner: AsyncRunner,
    on_done: Callable[[RunResult], None],
) -> None:
    """Start one executor call: an async executor on ``runner``'s loop, a blocking one in
    ``pool``; a blocking callable that returns an awaitable hands it to the loop too."""
    fn = _target(executor)
    if is_async(executor):
        runner.submit(lambda: fn(request), request.cancel, on_done)
        return

    def work() -> None:
        try:
            result: object = fn(request)
        except BaseException as exc:
            # Always report: a call that never reports would hold its session's
            # inputs until the grace period ends.
            on_done(_failure(exc))
            if not isinstance(exc, Exception):
                raise
            return
        if inspect.isawaitable(result):
            awaitable = result
            runner.submit(lambda: _await(awaitable), request.cancel, on_done)
            return
        on_done(_normalise(result))

    # In the caller's context (as an async executor's task is): a span current where the
    # call starts (the run's, see ``telemetry``) is current inside the executor too.
    pool.submit(contextvars.copy_context().run, work)


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable
