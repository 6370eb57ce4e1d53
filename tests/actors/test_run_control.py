"""Run control: the log and the executor agree.

Every executor call is fenced by its run id; the log's decisions (timeout,
stop, destroy, recycle, cancel) reach blocking and async executors through
the request's cancel token; no input is executed by two calls at once outside
the documented grace window; the full result contract and the retry policy;
checkpoints with boundary receipts and interrupts. Real stores throughout
(``store_url``: memory, SQLite, PostgreSQL).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from meerkat_runtime import (
    Abandoned,
    AbandonedWithError,
    AbandonKind,
    CallbackBatchPending,
    CallbackPending,
    Cancelled,
    CancelToken,
    Completed,
    CompletedWithFinalizationFailure,
    CompletedWithoutResult,
    CompletionOutcome,
    InputAbandonReason,
    InputLifecycleState,
    Interrupt,
    InterruptQueue,
    InvalidInput,
    RetryPolicy,
    RunBoundaryReceipt,
    RunError,
    RunFailed,
    RunRequest,
    RunResult,
    Runtime,
    RuntimeTerminated,
    Session,
    TurnTerminalCauseKind,
    TurnTerminalOutcome,
)
from meerkat_runtime.runtime import coerce_input

from ..waiting import WAIT, wait_until
from ._support import abandon_reason, codes, peer_message, phase, prompt
from .conftest import OpenRuntime

L = InputLifecycleState


def outcome_of(session: Session, input_id: uuid.UUID) -> CompletionOutcome:
    handle = session.completion(input_id)
    assert handle is not None
    return handle.wait(WAIT)


class Probe:
    """Records every call; the first call of each input holds until its cancel token fires
    (``cooperative``) or the test releases it. Tracks how many calls run at once."""

    def __init__(
        self, *, cooperative: bool = True, lag: float = 0.0, hold_all: bool = False
    ) -> None:
        self.cooperative = cooperative
        self.hold_all = hold_all  # every call holds, not only an input's first
        self.lag = lag  # seconds a call goes on after it saw the signal (a slow executor)
        self.gate = threading.Event()
        self.started: queue.Queue[RunRequest] = queue.Queue()
        self.observed: queue.Queue[str | None] = queue.Queue()
        self.log: list[tuple[str, uuid.UUID]] = []
        self.requests: list[RunRequest] = []
        self.active = 0
        self.peak = 0
        self.seen: set[uuid.UUID] = set()
        self._lock = threading.Lock()

    def release(self) -> None:
        self.gate.set()

    def _enter(self, request: RunRequest) -> bool:
        with self._lock:
            self.requests.append(request)
            self.log.append(("start", request.run_id))
            self.active += 1
            self.peak = max(self.peak, self.active)
            first = self.hold_all or not (set(request.contributing_input_ids) & self.seen)
            self.seen.update(request.contributing_input_ids)
        self.started.put(request)
        return first

    def _leave(self, request: RunRequest) -> None:
        with self._lock:
            self.active -= 1
            self.log.append(("end", request.run_id))

    def run(self, request: RunRequest) -> RunResult:
        first = self._enter(request)
        try:
            if first:
                if self.cooperative:
                    if request.cancel.wait(WAIT * 3):
                        self.observed.put(request.cancel.reason)
                        threading.Event().wait(self.lag)
                        return RunResult.cancelled()
                else:
                    request.cancel.add_callback(lambda token: self.observed.put(token.reason))
                    self.gate.wait(WAIT * 3)
            return RunResult.completed({"text": request.primitive.extract_content()})
        finally:
            self._leave(request)


class AsyncProbe(Probe):
    """The same, ``async def``: the first call of an input awaits until its task is cancelled."""

    async def run(self, request: RunRequest) -> RunResult:  # type: ignore[override]
        first = self._enter(request)
        try:
            if first:
                try:
                    await asyncio.sleep(WAIT * 3)
                except asyncio.CancelledError:
                    self.observed.put(request.cancel.reason)
                    raise
            return RunResult.completed({"text": request.primitive.extract_content()})
        finally:
            self._leave(request)


def make_probe(kind: str) -> Probe:
    return AsyncProbe() if kind == "async" else Probe()


def no_overlap(log: list[tuple[str, uuid.UUID]]) -> bool:
    """True when every call ended before the next one started."""
    depth = 0
    for what, _ in log:
        depth += 1 if what == "start" else -1
        if depth > 1:
            return False
    return True


# ---------------------------------------------------------------- 1. fencing


def test_timed_out_run_is_retried_only_after_its_call_returned(
    open_runtime: OpenRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    """The issue's case: the executor goes on after its timeout; the retry never runs
    beside it, each late result is ignored and logged, and the final outcome keeps the
    last error."""
    probe = Probe(lag=0.3, hold_all=True)
    caplog.set_level(logging.WARNING, logger="meerkat_runtime.actors._session")
    rt = open_runtime(executor=probe, run_timeout=0.1)
    s = rt.session("s-1")
    out = s.accept(prompt("slow"))
    outcome = outcome_of(s, out.input_id)
    assert isinstance(outcome, Abandoned)
    assert outcome.reason == "max attempts exhausted (3 attempts)"
    assert outcome.error.kind == "time_budget_exceeded" and outcome.error.terminal
    assert len(probe.requests) == 3
    assert probe.peak == 1 and no_overlap(probe.log)
    assert [probe.observed.get(timeout=WAIT) for _ in range(3)] == ["timeout"] * 3
    wait_until(lambda: probe.active == 0)
    wait_until(lambda: sum("late result" in r.getMessage() for r in caplog.records) == 3)
    assert codes(s.events()).count("run.completed") == 0


def test_recycle_during_a_draining_run_never_runs_the_input_twice_at_once(
    open_runtime: OpenRuntime,
) -> None:
    probe = Probe(cooperative=False)
    rt = open_runtime(executor=probe)
    s = rt.session("s-1")
    out = s.accept(prompt("drain me"))
    first = probe.started.get(timeout=WAIT)
    s.retire()
    assert s.recycle().inputs_transferred == 1
    # the call was told, and the log re-queued its input
    assert probe.observed.get(timeout=WAIT) == "recycled"
    assert first.cancel.cancelled
    assert phase(s, out.input_id) is L.QUEUED
    assert len(probe.requests) == 1  # the re-run waits for the call still going
    probe.release()
    outcome = outcome_of(s, out.input_id)
    assert isinstance(outcome, Completed) and outcome.run_id != first.run_id
    assert len(probe.requests) == 2 and no_overlap(probe.log)
    assert codes(s.events()).count("input.consumed") == 1


def test_after_the_grace_period_the_retry_may_overlap_a_call_told_to_cancel(
    open_runtime: OpenRuntime,
) -> None:
    """The documented at-least-once window: a call that ignores its cancel signal for
    longer than ``cancel_grace`` runs beside the retry; its late result is ignored."""
    probe = Probe(cooperative=False)
    rt = open_runtime(executor=probe, run_timeout=0.2, cancel_grace=0.2)
    s = rt.session("s-1")
    out = s.accept(prompt("stubborn"))
    first = probe.started.get(timeout=WAIT)
    second = probe.started.get(timeout=WAIT)
    assert first.cancel.cancelled and first.cancel.reason == "timeout"
    assert probe.peak == 2  # inside the window: the first call never returned
    outcome = outcome_of(s, out.input_id)
    assert isinstance(outcome, Completed) and outcome.run_id == second.run_id
    probe.release()
    wait_until(lambda: probe.active == 0)
    assert codes(s.events()).count("input.consumed") == 1


# ---------------------------------------------------------------- 2. cancellation


@pytest.mark.parametrize("kind", ["blocking", "async"])
@pytest.mark.parametrize(
    ("operation", "reason"),
    [
        ("cancel", "user pressed stop"),
        ("stop", "stopped"),
        ("destroy", "destroyed"),
        ("recycle", "recycled"),
        ("timeout", "timeout"),
    ],
)
def test_the_log_s_decision_reaches_the_executor(
    open_runtime: OpenRuntime, kind: str, operation: str, reason: str
) -> None:
    probe = make_probe(kind)
    options: dict[str, Any] = {"run_timeout": 0.3} if operation == "timeout" else {}
    rt = open_runtime(executor=probe, **options)
    s = rt.session("s-1")
    out = s.accept(prompt("work"))
    request = probe.started.get(timeout=WAIT)
    if operation == "cancel":
        assert s.cancel_run(reason) is True
    elif operation == "stop":
        s.stop()
    elif operation == "destroy":
        s.destroy()
    elif operation == "recycle":
        s.retire()
        s.recycle()
    # the executor observes the signal (a generous bound, not a timing assertion)
    assert probe.observed.get(timeout=WAIT) == reason
    assert request.cancel.cancelled and request.cancel.reason == reason
    outcome = outcome_of(s, out.input_id)
    expected: dict[str, type] = {
        "cancel": Cancelled,
        "stop": RuntimeTerminated,
        "destroy": RuntimeTerminated,
        "recycle": Completed,
        "timeout": Completed,
    }
    assert isinstance(outcome, expected[operation]), outcome
    assert no_overlap(probe.log)


def test_cancel_run_abandons_staged_inputs_and_targets_only_its_run(
    open_runtime: OpenRuntime,
) -> None:
    probe = Probe()
    rt = open_runtime(executor=probe)
    s = rt.create_session("s-1")
    assert s.cancel_run("nothing to cancel") is False
    out = s.accept(prompt("one"))
    later = s.accept(prompt("two"))
    probe.seen.add(later.input_id)  # its call completes at once (it starts after the cancel)
    request = probe.started.get(timeout=WAIT)
    assert s.cancel_run("wrong run", run_id=uuid.uuid4()) is False
    assert not request.cancel.cancelled
    assert s.cancel_run("right run", run_id=request.run_id) is True
    assert probe.observed.get(timeout=WAIT) == "right run"
    st = s.input_state(out.input_id)
    assert st is not None and abandon_reason(st) == InputAbandonReason(AbandonKind.CANCELLED)
    assert isinstance(outcome_of(s, out.input_id), Cancelled)
    # the next input runs as usual once the cancelled call returned
    assert isinstance(outcome_of(s, later.input_id), Completed)
    assert s.cancel_run("already over", run_id=request.run_id) is False
    with pytest.raises(InvalidInput, match="reason"):
        s.cancel_run("")


# ---------------------------------------------------------------- 5. async executors


async def async_echo(request: RunRequest) -> RunResult:
    await asyncio.sleep(0)
    return RunResult.completed({"async": request.primitive.extract_content()})


class AsyncCallable:
    async def __call__(self, request: RunRequest) -> RunResult:
        return await async_echo(request)


class AsyncRunObject:
    async def run(self, request: RunRequest) -> RunResult:
        return await async_echo(request)


def returns_coroutine(request: RunRequest) -> Any:
    return async_echo(request)


@pytest.mark.parametrize(
    "executor",
    [async_echo, AsyncCallable(), AsyncRunObject(), returns_coroutine],
    ids=["async-def", "async-call", "async-run", "returns-coroutine"],
)
def test_async_executors_run_on_the_runtime_s_loop(
    open_runtime: OpenRuntime, executor: Any
) -> None:
    rt = open_runtime(executor=executor)
    s = rt.session("s-1")
    outs = [s.accept(prompt(f"p{n}")) for n in range(3)]
    for n, out in enumerate(outs):
        outcome = outcome_of(s, out.input_id)
        assert isinstance(outcome, Completed) and outcome.output == {"async": f"p{n}"}
    assert codes(s.events()).count("run.failed") == 0


def test_an_async_executor_that_raises_fails_like_a_blocking_one(
    open_runtime: OpenRuntime,
) -> None:
    async def explode(request: RunRequest) -> RunResult:
        await asyncio.sleep(0)
        raise KeyError("no such key")

    rt = open_runtime(executor=explode)
    s = rt.session("s-1")
    out = s.accept(prompt())
    outcome = outcome_of(s, out.input_id)
    assert isinstance(outcome, Abandoned)
    assert "KeyError" in (outcome.error.detail or "")


# ---------------------------------------------------------------- 4. the result contract


RESULTS: list[tuple[str, RunResult, Callable[[CompletionOutcome], bool]]] = [
    (
        "completed",
        RunResult.completed({"a": 1}),
        lambda o: isinstance(o, Completed) and o.output == {"a": 1},
    ),
    (
        "without-result",
        RunResult.without_result(),
        lambda o: isinstance(o, CompletedWithoutResult),
    ),
    (
        "callback",
        RunResult.callback_pending("tu-1", "search", {"q": "x"}),
        lambda o: o == CallbackPending(tool_use_id="tu-1", tool_name="search", args={"q": "x"}),
    ),
    (
        "callback-batch",
        RunResult.callback_batch([{"tool_use_id": "a"}, {"tool_use_id": "b"}]),
        lambda o: (
            o
            == CallbackBatchPending(pending_tool_calls=({"tool_use_id": "a"}, {"tool_use_id": "b"}))
        ),
    ),
    (
        "finalization-failure",
        RunResult.finalization_failed("transcript not saved", output="partial"),
        lambda o: (
            isinstance(o, CompletedWithFinalizationFailure)
            and o.error.detail == "transcript not saved"
            and o.error.outcome == "completed"
        ),
    ),
    (
        "terminal-failure",
        RunResult.failed("bad request", terminal=True),
        lambda o: (
            isinstance(o, AbandonedWithError)
            and o.error.terminal is True
            and o.error.detail == "bad request"
        ),
    ),
]


@pytest.mark.parametrize(("name", "result", "check"), RESULTS, ids=[r[0] for r in RESULTS])
def test_every_result_kind_has_its_completion_outcome(
    open_runtime: OpenRuntime,
    store_url: str,
    name: str,
    result: RunResult,
    check: Callable[[CompletionOutcome], bool],
) -> None:
    calls: list[RunRequest] = []

    def executor(request: RunRequest) -> RunResult:
        calls.append(request)
        return result

    rt = open_runtime(executor=executor)
    s = rt.session("s-1")
    out = s.accept(prompt())
    assert check(outcome_of(s, out.input_id)), outcome_of(s, out.input_id)
    assert phase(s, out.input_id) is L.CONSUMED
    assert len(calls) == 1  # consumed: never retried, a terminal failure included
    rt.close()
    # the outcome is in the log: a fresh runtime folds the same one
    rt2 = open_runtime()
    assert check(outcome_of(rt2.session("s-1"), out.input_id))


def test_retry_policy_sets_the_attempts_and_the_outcome_keeps_the_last_error(
    open_runtime: OpenRuntime,
) -> None:
    calls: list[int] = []

    def executor(request: RunRequest) -> RunResult:
        calls.append(1)
        return RunResult.failed(f"failure #{len(calls)}", kind="llm_failure")

    policy = RetryPolicy(max_attempts=5, initial_backoff=0.001, max_backoff=0.01)
    rt = open_runtime(executor=executor, retry=policy)
    s = rt.session("s-1")
    out = s.accept(prompt())
    outcome = outcome_of(s, out.input_id)
    assert isinstance(outcome, Abandoned)
    assert outcome.reason == "max attempts exhausted (5 attempts)"
    assert outcome.error == RunError(
        kind=TurnTerminalCauseKind.LLM_FAILURE,
        terminal=True,
        outcome=TurnTerminalOutcome.FAILED,
        detail="failure #5",
        retryable=False,
    )
    # each run.failed says the failure was retryable; the last one is final in the outcome
    errors = [e.event.error for e in s.events() if isinstance(e.event, RunFailed)]
    assert [(e.detail, e.terminal, e.retryable) for e in errors] == [
        (f"failure #{n}", False, True) for n in range(1, 6)
    ]
    assert len(calls) == 5


def test_retry_delays_grow_exponentially_with_jitter_up_to_the_cap() -> None:
    exact = RetryPolicy(initial_backoff=0.1, multiplier=2.0, max_backoff=0.5, jitter=0.0)
    assert [exact.delay(n) for n in range(1, 6)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    jittered = RetryPolicy(initial_backoff=1.0, multiplier=3.0, max_backoff=100.0, jitter=0.5)
    for attempts, base in ((1, 1.0), (2, 3.0), (3, 9.0)):
        samples = [jittered.delay(attempts) for _ in range(200)]
        assert all(base * 0.5 <= d <= base for d in samples)
        assert len(set(samples)) > 1
    assert exact.delay(10_000) == 0.5  # no overflow on a huge attempt count


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_attempts": 0}, "max_attempts must be >= 1"),
        ({"max_attempts": 2.5}, "max_attempts must be an int"),
        ({"initial_backoff": -1}, "initial_backoff must be a number >= 0"),
        ({"multiplier": 0.5}, "multiplier must be >= 1"),
        ({"jitter": 2}, "jitter must be within"),
    ],
)
def test_bad_retry_policy_is_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**kwargs)


def test_bad_results_and_options_are_refused() -> None:
    with pytest.raises(ValueError, match="status must be one of"):
        RunResult(status="exploded")
    with pytest.raises(ValueError, match="terminal is only meaningful"):
        RunResult(status="completed", terminal=True)
    with pytest.raises(ValueError, match="tool_use_id and tool_name"):
        RunResult(status="callback_pending", tool_name="x")
    with pytest.raises(ValueError, match="pending_tool_calls"):
        RunResult(status="callback_batch_pending")
    with pytest.raises(ValueError, match="error_kind must be one of"):
        RunResult.failed("x", kind="exploded")
    with pytest.raises(ValueError, match="must be a RetryPolicy"):
        Runtime.open("memory://", retry={"max_attempts": 3})
    with pytest.raises(ValueError, match="cancel_grace"):
        Runtime.open("memory://", cancel_grace=-1)


# ---------------------------------------------------------------- 3. checkpoints and interrupts


class Checkpointer:
    """Checkpoints once (absorbing one interrupt when ``interrupts``), then waits to be released."""

    def __init__(self, *, interrupts: int = 0, then: RunResult | None = None) -> None:
        self.interrupts = interrupts
        self.then = then or RunResult.completed("done")
        self.receipts: queue.Queue[RunBoundaryReceipt | None] = queue.Queue()
        self.gate = threading.Event()
        self.requests: list[RunRequest] = []

    def release(self) -> None:
        self.gate.set()

    def run(self, request: RunRequest) -> RunResult:
        self.requests.append(request)
        if len(self.requests) == 1:
            for _ in range(self.interrupts):
                request.interrupts.get(timeout=WAIT)
            self.receipts.put(request.checkpoint("digest-1", message_count=4))
            self.gate.wait(WAIT * 3)
        return self.then


def test_a_checkpoint_commits_its_contributors_with_a_stored_receipt(
    open_runtime: OpenRuntime,
) -> None:
    executor = Checkpointer()
    rt = open_runtime(executor=executor)
    s = rt.session("s-1")
    out = s.accept(prompt())
    receipt = executor.receipts.get(timeout=WAIT)
    assert receipt is not None
    run_id = executor.requests[0].run_id
    assert receipt.run_id == run_id and receipt.sequence == 1
    assert receipt.contributing_input_ids == (out.input_id,)
    assert receipt.conversation_digest == "digest-1" and receipt.message_count == 4
    st = s.input_state(out.input_id)
    assert st is not None and st.current_state is L.APPLIED_PENDING_CONSUMPTION
    assert st.last_boundary_sequence == 1
    assert s.boundary_receipt(run_id, 1) == receipt
    assert s.boundary_receipt(run_id, 2) is None
    # the read models agree: the run is still the session's current run
    rt.projections.wait_caught_up(WAIT)
    view = rt.views.get("s-1")
    assert view is not None and view.current_run_id == run_id
    assert rt.verify().mismatches == []
    assert s.boundary_receipt(uuid.uuid4(), 1) is None
    with pytest.raises(InvalidInput, match="sequence"):
        s.boundary_receipt(run_id, 0)
    executor.release()
    assert isinstance(outcome_of(s, out.input_id), Completed)
    assert phase(s, out.input_id) is L.CONSUMED


def test_inputs_applied_at_a_checkpoint_are_not_retried_after_a_failure(
    open_runtime: OpenRuntime,
) -> None:
    executor = Checkpointer(then=RunResult.failed("model went away"))
    rt = open_runtime(executor=executor)
    s = rt.session("s-1")
    out = s.accept(prompt())
    assert executor.receipts.get(timeout=WAIT) is not None
    executor.release()
    outcome = outcome_of(s, out.input_id)
    assert isinstance(outcome, AbandonedWithError)
    assert phase(s, out.input_id) is L.CONSUMED
    assert len(executor.requests) == 1


def test_interrupts_reach_the_running_executor_and_join_its_checkpoint(
    open_runtime: OpenRuntime,
) -> None:
    executor = Checkpointer(interrupts=1)
    rt = open_runtime(executor=executor)
    s = rt.session("s-1")
    out = s.accept(prompt("turn"))
    wait_until(lambda: len(executor.requests) == 1)
    steer = s.accept(peer_message(handling_mode="steer"))
    assert steer.policy is not None and steer.policy.decision.wake_mode == "interrupt_yielding"
    receipt = executor.receipts.get(timeout=WAIT)
    assert receipt is not None
    assert receipt.contributing_input_ids == (out.input_id, steer.input_id)
    executor.release()
    for iid in (out.input_id, steer.input_id):
        assert isinstance(outcome_of(s, iid), Completed)
        st = s.input_state(iid)
        assert st is not None and [h.reason for h in st.history][-1] == "RunCompleted"
    assert len(executor.requests) == 1  # the steer input joined the run in flight


def test_an_interrupt_the_executor_never_takes_runs_next(open_runtime: OpenRuntime) -> None:
    release = threading.Event()
    requests: list[RunRequest] = []

    def executor(request: RunRequest) -> RunResult:
        requests.append(request)
        if len(requests) == 1:
            release.wait(WAIT * 3)
        return RunResult.completed("ok")

    rt = open_runtime(executor=executor)
    s = rt.session("s-1")
    s.accept(prompt("turn"))
    wait_until(lambda: len(requests) == 1)
    steer = s.accept(peer_message(handling_mode="steer"))
    release.set()
    assert isinstance(outcome_of(s, steer.input_id), Completed)
    assert len(requests) == 2 and requests[1].contributing_input_ids == (steer.input_id,)


def test_a_queue_lane_interrupt_pokes_the_run_and_waits_for_the_next(
    open_runtime: OpenRuntime,
) -> None:
    """A peer message sent while a run goes is ``interrupt_yielding`` on the queue lane:
    the executor is poked with it, but it starts at a run boundary, so a checkpoint
    does not apply it even when taken; it runs in the next run."""
    executor = Checkpointer(interrupts=1)
    rt = open_runtime(executor=executor)
    s = rt.session("s-1")
    out = s.accept(prompt("turn"))
    wait_until(lambda: len(executor.requests) == 1)
    msg = s.accept(peer_message())
    assert msg.policy is not None and msg.policy.decision.wake_mode == "interrupt_yielding"
    receipt = executor.receipts.get(timeout=WAIT)
    assert receipt is not None and receipt.contributing_input_ids == (out.input_id,)
    assert phase(s, msg.input_id) is L.QUEUED
    executor.release()
    assert isinstance(outcome_of(s, msg.input_id), Completed)
    assert len(executor.requests) == 2
    assert executor.requests[1].contributing_input_ids == (msg.input_id,)


def test_a_fenced_call_s_checkpoint_commits_nothing(open_runtime: OpenRuntime) -> None:
    receipts: queue.Queue[RunBoundaryReceipt | None] = queue.Queue()

    def executor(request: RunRequest) -> RunResult:
        request.cancel.wait(WAIT * 3)
        receipts.put(request.checkpoint())
        return RunResult.completed("late")

    rt = open_runtime(executor=executor)
    s = rt.session("s-1")
    out = s.accept(prompt())
    wait_until(lambda: phase(s, out.input_id) is L.STAGED)
    assert s.cancel_run("enough")
    assert receipts.get(timeout=WAIT) is None
    assert "run.checkpointed" not in codes(s.events())
    assert phase(s, out.input_id) is L.ABANDONED


def test_an_async_executor_checkpoints_without_blocking_its_loop(
    open_runtime: OpenRuntime,
) -> None:
    async def executor(request: RunRequest) -> RunResult:
        receipt = await request.acheckpoint("async-digest", 1)
        assert receipt is not None
        return RunResult.completed({"sequence": receipt.sequence})

    rt = open_runtime(executor=executor)
    s = rt.session("s-1")
    out = s.accept(prompt())
    outcome = outcome_of(s, out.input_id)
    assert isinstance(outcome, Completed) and outcome.output == {"sequence": 1}
    assert codes(s.events()).count("run.checkpointed") == 1


def test_cancel_token_and_interrupt_queue_semantics() -> None:
    token = CancelToken()
    seen: list[str | None] = []
    token.add_callback(lambda t: seen.append(t.reason))
    assert not token.wait(0) and token.reason is None
    assert token.cancel("first") and not token.cancel("second")  # the first reason wins
    token.add_callback(lambda t: seen.append(t.reason))  # already cancelled: called at once
    assert token.cancelled and token.wait(0) and seen == ["first", "first"]

    q = InterruptQueue()
    with pytest.raises(queue.Empty):
        q.get_nowait()
    a, b, c = (Interrupt(uuid.uuid4(), coerce_input(prompt(f"p{n}"))) for n in range(3))
    q.put(a)
    q.put(b)
    assert q.get_nowait() == a
    assert q.take_absorbed() == [a.input_id] and q.take_absorbed() == []
    got: list[Interrupt] = []
    q.add_callback(got.append)  # the waiting one first, then each new one
    q.put(c)
    assert got == [b, c]
    assert q.take_absorbed() == [b.input_id, c.input_id]
