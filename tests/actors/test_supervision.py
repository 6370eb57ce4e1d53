"""Supervision: store faults fail the command that met them, the actor reloads with
backoff while later commands wait, and executors that raise or hang never kill an actor."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from meerkat_runtime import (
    Abandoned,
    Completed,
    EchoExecutor,
    InputAbandonReason,
    InputLifecycleState,
    RunRequest,
    RunResult,
    Runtime,
    RuntimeState,
    StoreError,
)

from ..faulty_store import faulty_store
from ..waiting import WAIT, wait_until
from ._support import abandon_reason, accepted_ids, codes, prompt, run_failures

L = InputLifecycleState


@pytest.fixture
def store(store_url: str) -> Iterator[Any]:
    s, faults = faulty_store(store_url)
    s.faults = faults  # type: ignore[attr-defined]
    yield s
    faults.clear()
    s.close()


def open_on(store: Any, executor: Any = None, **options: Any) -> Runtime:
    options.setdefault("retry_backoff", 0.01)
    options.setdefault("close_timeout", 2.0)
    return Runtime.open(store, executor=executor, **options)


def test_append_failure_fails_the_call_and_loses_nothing_acknowledged(store: Any) -> None:
    with open_on(store) as rt:
        s = rt.session("s-1")
        ok = [s.accept(prompt(f"ok{n}")).input_id for n in range(3)]
        store.faults.fail_appends.set()
        doomed = prompt("doomed", id="01955b3c-0000-7000-8000-0000000000d0")
        with pytest.raises(StoreError, match="injected fault: append"):
            s.accept(doomed)
        store.faults.fail_appends.clear()
        assert s.active_input_ids() == ok
        assert s.input_state(doomed["header"]["id"]) is None
        # the session works again, and what it says matches the log
        again = s.accept(doomed)
        assert again.kind == "accepted"
        assert accepted_ids(s) == [*ok, again.input_id]
    with open_on(store) as rt2:
        assert rt2.session("s-1").active_input_ids() == [*ok, again.input_id]


def test_later_commands_wait_while_the_actor_reloads_with_backoff(store: Any) -> None:
    with open_on(store, recovery_timeout=30.0) as rt:
        s = rt.session("s-1")
        first = s.accept(prompt("first")).input_id
        store.faults.fail_appends.set()
        store.faults.fail_reads.set()
        with pytest.raises(StoreError):
            s.accept(prompt("fails"))
        store.faults.fail_appends.clear()
        reads_before = store.faults.read_attempts
        result: dict[str, Any] = {}

        def later() -> None:
            try:
                result["outcome"] = s.accept(prompt("waits"))
            except BaseException as exc:  # pragma: no cover - reported below
                result["error"] = exc

        t = threading.Thread(target=later)
        t.start()
        # the actor retries its reload several times while the command waits
        wait_until(lambda: store.faults.read_attempts >= reads_before + 3, what="reload retries")
        assert t.is_alive() and not result
        store.faults.fail_reads.clear()
        t.join(WAIT)
        assert "error" not in result
        assert result["outcome"].kind == "accepted"
        assert s.active_input_ids() == [first, result["outcome"].input_id]


def test_reload_gives_up_after_recovery_timeout_then_recovers(store: Any) -> None:
    with open_on(store, recovery_timeout=0.2) as rt:
        s = rt.session("s-1")
        first = s.accept(prompt()).input_id
        store.faults.fail_appends.set()
        store.faults.fail_reads.set()
        with pytest.raises(StoreError):
            s.accept(prompt())
        with pytest.raises(StoreError, match="could not be loaded"):
            s.accept(prompt())
        with pytest.raises(StoreError):
            s.state()
        store.faults.fail_appends.clear()
        store.faults.fail_reads.clear()
        assert s.active_input_ids() == [first]
        assert s.accept(prompt("after")).kind == "accepted"


def test_store_failure_at_run_end_is_retried(store: Any) -> None:
    """A failed append of a run's completion must not strand the run's inputs."""
    with open_on(store, executor=EchoExecutor()) as rt:
        s = rt.session("s-1")
        store.faults.fail_topics = {"run.completed"}
        store.faults.fail_topic_budget = 1
        out = s.accept(prompt("finish me"))
        assert out.completion is not None
        outcome = out.completion.wait(WAIT)
        assert isinstance(outcome, Completed) and outcome.output == {"text": "finish me"}
        assert store.faults.append_failures == 1
        wait_until(lambda: s.state() is RuntimeState.ATTACHED)
        assert s.active_input_ids() == []


def test_store_failure_at_run_start_is_retried(store: Any) -> None:
    with open_on(store, executor=EchoExecutor()) as rt:
        s = rt.session("s-1")
        store.faults.fail_topics = {"run.started"}
        store.faults.fail_topic_budget = 2
        out = s.accept(prompt("start me"))
        assert out.kind == "accepted" and out.completion is not None
        assert isinstance(out.completion.wait(WAIT), Completed)
        assert store.faults.append_failures == 2


def hang_on(word: str) -> tuple[Any, threading.Event]:
    release = threading.Event()

    def executor(request: RunRequest) -> RunResult:
        text = request.primitive.extract_content()
        if text == word:
            # Hangs until released, or until the runtime tells this call to stop (a
            # timed-out run's inputs are never run again while its call still executes).
            while not (release.is_set() or request.cancel.wait(0.01)):
                pass
        return RunResult(output={"text": text})

    return executor, release


def test_run_timeout_fails_the_run_and_abandons_after_three_attempts(store: Any) -> None:
    executor, release = hang_on("hang")
    try:
        with open_on(store, executor=executor, run_timeout=0.2) as rt:
            s = rt.session("s-1")
            out = s.accept(prompt("hang"))
            assert out.completion is not None
            outcome = out.completion.wait(WAIT)
            assert isinstance(outcome, Abandoned)
            st = s.input_state(out.input_id)
            assert st is not None and st.current_state is L.ABANDONED
            assert abandon_reason(st) == InputAbandonReason.max_attempts_exhausted(3)
            failures = run_failures(s)
            assert [f.error.kind for f in failures] == ["time_budget_exceeded"] * 3
            # the actor lives on and runs the next input
            nxt = s.accept(prompt("fine"))
            assert nxt.completion is not None
            assert isinstance(nxt.completion.wait(WAIT), Completed)
    finally:
        release.set()


def test_late_result_after_timeout_is_ignored(store: Any) -> None:
    executor, release = hang_on("slow")
    with open_on(store, executor=executor, run_timeout=0.2) as rt:
        s = rt.session("s-1")
        out = s.accept(prompt("slow"))
        wait_until(lambda: "run.failed" in codes(s.events()))
        release.set()  # the hung run now returns, too late
        assert out.completion is not None
        outcome = out.completion.wait(WAIT)
        # the retry (not hanging any more) completes it, exactly once
        assert isinstance(outcome, Completed)
        assert codes(s.events()).count("input.consumed") == 1


def test_executor_that_raises_never_kills_the_actor(store: Any) -> None:
    calls: list[str] = []

    def executor(request: RunRequest) -> RunResult:
        text = request.primitive.extract_content()
        calls.append(str(text))
        if text == "bad":
            raise KeyError("no such thing")
        return RunResult(output=text)

    with open_on(store, executor=executor) as rt:
        s = rt.session("s-1")
        bad = s.accept(prompt("bad"))
        good = s.accept(prompt("good"))
        assert bad.completion is not None and good.completion is not None
        assert isinstance(bad.completion.wait(WAIT), Abandoned)
        assert isinstance(good.completion.wait(WAIT), Completed)
        failed = run_failures(s)
        assert len(failed) == 3
        assert all("KeyError" in (f.error.detail or "") for f in failed)
        assert calls.count("bad") == 3


def test_executor_returning_garbage_fails_the_run(store: Any) -> None:
    outputs = iter([object(), RunResult(output={"fine": True})])

    def executor(request: RunRequest) -> Any:
        return next(outputs)

    with open_on(store, executor=executor) as rt:
        s = rt.session("s-1")
        out = s.accept(prompt())
        assert out.completion is not None
        outcome = out.completion.wait(WAIT)
        assert isinstance(outcome, Completed) and outcome.output == {"fine": True}
        assert codes(s.events()).count("run.failed") == 1


def test_non_json_output_fails_the_run(store: Any) -> None:
    outputs = iter([RunResult(output={1, 2}), RunResult(output=[1, 2])])

    def executor(request: RunRequest) -> Any:
        return next(outputs)

    with open_on(store, executor=executor) as rt:
        s = rt.session("s-1")
        out = s.accept(prompt())
        assert out.completion is not None
        outcome = out.completion.wait(WAIT)
        assert isinstance(outcome, Completed) and outcome.output == [1, 2]


def test_work_resumes_by_itself_after_an_outage_longer_than_recovery_timeout(store: Any) -> None:
    """No host call is needed: the actor keeps reloading (with backoff) until the store is back."""
    with open_on(store, executor=EchoExecutor(), recovery_timeout=0.2) as rt:
        s = rt.create_session("s-1")
        assert s.state() is RuntimeState.ATTACHED  # loaded before the outage
        store.faults.fail_topics = {"run.started"}
        store.faults.fail_topic_budget = 1
        store.faults.fail_reads.set()
        out = s.accept(prompt("eventually"))
        assert out.kind == "accepted" and out.completion is not None
        # several reloads give up in turn while the store stays down
        wait_until(lambda: store.faults.read_attempts >= 8, what="repeated reloads")
        assert not out.completion.done()
        store.faults.fail_reads.clear()
        outcome = out.completion.wait(WAIT)
        assert isinstance(outcome, Completed) and outcome.output == {"text": "eventually"}
