"""The host API around sessions: events, completions after restart, ids, close, executors."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from meerkat_runtime import (
    Completed,
    CompletionWaitError,
    EchoExecutor,
    InputLifecycleState,
    InvalidInput,
    MeerkatRuntimeError,
    RunRequest,
    RunResult,
    RunStarted,
    Runtime,
    RuntimeState,
    RuntimeStateTransitionError,
    RuntimeTerminated,
    SessionNotFound,
    StagedRunInput,
)

from ..waiting import WAIT, wait_until
from ._support import FlakyExecutor, GatedExecutor, codes, events_of, peer_progress, phase, prompt
from .conftest import OpenRuntime

L = InputLifecycleState
S = RuntimeState


def test_events_after_pages_and_sequences(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    s = rt.session("s-1")
    for n in range(260):  # 1 + 2 * 260 events: more than one page of the store read
        s.accept(prompt(f"p{n}"))
    evs = events_of(s)
    assert [e.sequence for e in evs] == list(range(1, 522))
    assert all(e.runtime_id == "s-1" for e in evs)
    assert [e.sequence for e in s.events(after=500)] == list(range(501, 522))
    assert list(s.events(after=521)) == []
    assert events_of(s, after=7) == evs[7:]  # equality ignores nothing but sequence
    assert len({e.id for e in evs}) == len(evs)
    assert list(rt.session("never-used").events()) == []


def test_events_is_a_snapshot_not_a_wait(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    s = rt.session("s-1")
    s.accept(prompt())
    it = s.events()
    assert len(list(it)) == 3  # finite: it returns instead of waiting for more


def test_completion_after_restart(open_runtime: OpenRuntime) -> None:
    rt = open_runtime(executor=EchoExecutor())
    s = rt.session("s-1")
    done = s.accept(prompt("done before"))
    assert done.completion is not None
    first = done.completion.wait(WAIT)
    assert isinstance(first, Completed)
    rt.close()
    rt2 = open_runtime()  # no executor: nothing runs
    s2 = rt2.session("s-1")
    pending = s2.accept(prompt("after restart"))
    handle = s2.completion(done.input_id)
    assert handle is not None and handle.done()
    assert handle.wait(0) == first  # same run id and output as before the restart
    assert s2.completion(str(done.input_id)) is not None  # ids as strings too
    assert s2.completion(uuid.uuid4()) is None
    rt2.close()
    rt3 = open_runtime(executor=EchoExecutor())
    h = rt3.session("s-1").completion(pending.input_id)
    assert h is not None
    outcome = h.wait(WAIT)
    assert isinstance(outcome, Completed) and outcome.output == {"text": "after restart"}


def test_sessions_and_new_session(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    assert rt.sessions() == []
    for sid in ("b", "a", "c"):
        rt.session(sid).accept(prompt())
    with pytest.raises(SessionNotFound):
        rt.session("only-read").state()  # a never-used session: reading writes nothing
    assert rt.sessions() == ["b", "a", "c"]  # by first appearance
    fresh = rt.new_session()
    other = rt.new_session()
    assert fresh.id != other.id
    assert uuid.UUID(fresh.id).version == 7 and str(uuid.UUID(fresh.id)) == fresh.id
    assert fresh.accept(prompt()).kind == "accepted"
    assert rt.sessions() == ["b", "a", "c", fresh.id]
    assert rt.session(fresh.id).state() is S.IDLE


@pytest.mark.parametrize("bad", ["", "x" * 257, "tab\there", "new\nline", 42, None])
def test_invalid_session_ids_raise_invalid_input(open_runtime: OpenRuntime, bad: Any) -> None:
    rt = open_runtime()
    with pytest.raises(InvalidInput):
        rt.session(bad)
    assert rt.live_session_count() == 0


def test_session_id_limits(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    for sid in ("x", "y" * 256, "rt:session:01955b3c-1111-7000-8000-000000000000", "ünï cödé"):
        assert rt.session(sid).accept(prompt()).kind == "accepted"


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"input_type": "prompt"}, "content"),
        ({"input_type": "external_event", "payload": None}, "event_type"),
        ({"input_type": "external_event", "event_type": "x"}, "payload"),
        ({"input_type": "nonsense", "content": "x"}, "input_type"),
        ({"input_type": "prompt", "content": 5}, "content"),
        ({"input_type": "prompt", "content": "x", "header": {"timestamp": 1}}, "timestamp"),
        ('{"input_type": "prompt", "content": ', ""),
        ("[1, 2]", ""),
        (b"\xff\xfe", ""),
    ],
)
def test_malformed_input_raises_and_writes_nothing(
    open_runtime: OpenRuntime, doc: Any, field: str
) -> None:
    rt = open_runtime()
    s = rt.session("s-1")
    with pytest.raises(InvalidInput) as err:
        s.accept(doc)
    assert isinstance(err.value, ValueError)
    assert field in str(err.value)
    assert rt.sessions() == []


def test_accept_json_text_and_bytes(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    s = rt.session("s-1")
    a = s.accept('{"input_type": "prompt", "content": "from str"}')
    b = s.accept(b'{"input_type": "prompt", "content": "from bytes"}')
    assert a.kind == b.kind == "accepted"
    assert s.active_input_ids() == [a.input_id, b.input_id]


class HoldsOne:
    """Holds runs whose content is "held" until released; completes the others."""

    def __init__(self) -> None:
        self.gate = GatedExecutor()

    def run(self, request: RunRequest) -> RunResult:
        if request.primitive.extract_content() == "held":
            return self.gate.run(request)
        return RunResult(output="quick")

    def wait_started(self) -> None:
        self.gate.wait_started()

    def release(self) -> None:
        self.gate.release()


def test_close_is_not_a_stop(open_runtime: OpenRuntime) -> None:
    ex = HoldsOne()
    rt = open_runtime(executor=ex, close_timeout=0.2)
    busy = rt.session("busy")
    held = busy.accept(prompt("held"))
    ex.wait_started()
    queued = busy.accept(prompt("queued"))
    retired = rt.session("retired")
    retired.accept(prompt())
    retired.retire()
    wait_until(lambda: retired.active_input_ids() == [])
    before = {sid: codes(rt.session(sid).events()) for sid in rt.sessions()}
    rt.close()  # the held run does not finish within close_timeout
    assert held.completion is not None
    with pytest.raises(CompletionWaitError) as err:
        held.completion.wait(WAIT)
    assert err.value.kind == "channel_closed"
    with pytest.raises(MeerkatRuntimeError):
        rt.session("busy")
    with pytest.raises(MeerkatRuntimeError):
        busy.accept(prompt("after close"))  # a handle from before close
    rt.close()  # idempotent
    ex.release()

    rt2 = open_runtime()
    after = {sid: codes(rt2.session(sid).events()) for sid in rt2.sessions()}
    assert after["retired"] == before["retired"]
    assert rt2.session("retired").state() is S.RETIRED
    # reading the busy session ran its (cold) recovery: the interrupted run is
    # closed and its input re-queued; nothing was abandoned by close()
    b = rt2.session("busy")
    assert b.state() is S.IDLE
    assert b.active_input_ids() == [held.input_id, queued.input_id]
    assert phase(b, held.input_id) is L.QUEUED
    assert "input.abandoned" not in codes(b.events())


def test_eager_recovery_starts_queued_work_without_a_call(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    ids = [rt.session(f"s-{n}").accept(prompt(f"p{n}")).input_id for n in range(3)]
    rt.close()
    rt2 = open_runtime(executor=EchoExecutor(), recover="eager")
    assert rt2.last_recovery is not None and len(rt2.last_recovery) == 3

    def consumed() -> bool:
        return all("input.consumed" in codes(rt2.session(f"s-{n}").events()) for n in range(3))

    wait_until(consumed, what="eager recovery to run the queued inputs")
    for n, iid in enumerate(ids):
        assert phase(rt2.session(f"s-{n}"), iid) is L.CONSUMED


def test_executor_request_and_plain_callable(open_runtime: OpenRuntime) -> None:
    seen: list[RunRequest] = []

    def executor(request: RunRequest) -> None:
        seen.append(request)
        return None  # completed, no output

    rt = open_runtime(executor=executor)
    s = rt.session("s-1")
    out = s.accept(prompt("look at me"))
    assert out.completion is not None
    outcome = out.completion.wait(WAIT)
    assert isinstance(outcome, Completed) and outcome.output is None
    [req] = seen
    assert req.session_id == "s-1"
    assert req.contributing_input_ids == (out.input_id,)
    assert isinstance(req.primitive, StagedRunInput)
    assert req.primitive.extract_content() == "look at me"
    started = [e.event for e in s.events() if isinstance(e.event, RunStarted)]
    assert [r.run_id for r in started] == [req.run_id] == [outcome.run_id]


def test_executor_cancelled_result_rolls_back_and_retries(open_runtime: OpenRuntime) -> None:
    results = iter([RunResult(status="cancelled"), RunResult(output="second time")])
    rt = open_runtime(executor=lambda request: next(results))
    s = rt.session("s-1")
    out = s.accept(prompt())
    assert out.completion is not None
    outcome = out.completion.wait(WAIT)
    assert isinstance(outcome, Completed) and outcome.output == "second time"
    assert codes(s.events()).count("run.cancelled") == 1


def test_wait_timeout_and_future(open_runtime: OpenRuntime) -> None:
    ex = GatedExecutor(output=7)
    rt = open_runtime(executor=ex)
    out = rt.session("s-1").accept(prompt())
    assert out.completion is not None
    with pytest.raises(CompletionWaitError) as err:
        out.completion.wait(0.01)
    assert isinstance(err.value, TimeoutError) and err.value.kind == "timeout"

    async def via_asyncio() -> Any:
        assert out.completion is not None
        return await asyncio.wait_for(asyncio.wrap_future(out.completion.future), WAIT)

    ex.release()
    outcome = asyncio.run(via_asyncio())
    assert isinstance(outcome, Completed) and outcome.output == 7


def test_state_of_a_passive_session_loads_without_changing_it(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    rt.session("s-1").accept(prompt())
    rt.session("s-1").retire()
    rt.close()
    rt2 = open_runtime(executor=EchoExecutor())
    s = rt2.session("s-1")
    before = codes(s.events())
    assert s.state() is S.RETIRED
    assert codes(s.events()) == before


def test_state_is_the_same_from_snapshot_and_from_full_fold(open_runtime: OpenRuntime) -> None:
    rt = open_runtime(executor=FlakyExecutor(failures=2))
    s = rt.session("s-1")
    outs = [s.accept(prompt(f"p{n}")) for n in range(40)]  # several snapshots' worth of events
    for out in outs:
        assert out.completion is not None
        out.completion.wait(WAIT)
    s.accept(peer_progress())  # one left queued
    expected = {out.input_id: s.input_state(out.input_id) for out in outs}
    n_events = len(events_of(s))
    assert n_events > 250
    rt.close()
    for full_fold in (False, True):
        rt2 = open_runtime(snapshot_interval=0) if full_fold else open_runtime()
        s2 = rt2.session("s-1")
        assert {i: s2.input_state(i) for i in expected} == expected
        assert len(s2.active_input_ids()) == 1
        assert s2.state() is S.IDLE
        assert len(events_of(s2)) == n_events  # loading wrote nothing
        rt2.close()


def test_destroy_during_a_run(open_runtime: OpenRuntime) -> None:
    ex = GatedExecutor()
    rt = open_runtime(executor=ex)
    s = rt.session("s-1")
    out = s.accept(prompt())
    ex.wait_started()
    assert s.destroy().inputs_abandoned == 1
    assert out.completion is not None
    outcome = out.completion.wait(WAIT)
    assert isinstance(outcome, RuntimeTerminated) and outcome.reason == "destroyed"
    ex.release()
    wait_until(lambda: rt.live_session_count() >= 0 and s.state() is S.DESTROYED)
    assert "run.completed" not in codes(s.events())


def test_runtime_recover_during_a_run_leaves_it_alone(open_runtime: OpenRuntime) -> None:
    ex = GatedExecutor()
    rt = open_runtime(executor=ex)
    s = rt.session("s-1")
    out = s.accept(prompt())
    ex.wait_started()
    [report] = rt.recover()
    assert report.inputs_requeued == 0 and report.inputs_abandoned == 0
    assert phase(s, out.input_id) is L.STAGED
    with pytest.raises(RuntimeStateTransitionError):
        s.recover()  # an in-process recover is refused while running
    ex.release()
    assert out.completion is not None and isinstance(out.completion.wait(WAIT), Completed)


def test_directed_input_checks_raise_invalid_input(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    s = rt.session("s-1")
    doc = {
        "input_type": "flow_step",
        "step_id": "step-1",
        "content": "go",
        "directed_interaction_id": str(uuid.uuid4()),  # not the header id
        "header": {"source": {"type": "flow", "flow_id": "f", "step_index": 0}},
    }
    with pytest.raises(InvalidInput, match="directed"):
        s.accept(doc)
    assert rt.sessions() == []
    iid = str(uuid.uuid4())
    good = {
        **doc,
        "directed_interaction_id": iid,
        "header": {
            "id": iid,
            "correlation_id": iid,
            "idempotency_key": iid,
            "source": {"type": "flow", "flow_id": "f", "step_index": 0},
        },
    }
    assert s.accept(good).kind == "accepted"


def test_input_size_limit(open_runtime: OpenRuntime) -> None:
    rt = open_runtime(max_input_bytes=1000)
    s = rt.session("s-1")
    big = '{"input_type": "prompt", "content": "' + "x" * 2000 + '"}'
    with pytest.raises(InvalidInput):
        s.accept(big)
    assert s.accept('{"input_type": "prompt", "content": "small"}').kind == "accepted"


@pytest.mark.parametrize(
    "options",
    [
        {"max_live_sessions": 0},
        {"run_timeout": -1},
        {"idle_timeout": "soon"},
        {"retry_backoff": True},
    ],
)
def test_bad_runtime_options(store_url: str, options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Runtime.open(store_url, **options)


def test_activity_tells_live_sessions_runs_and_queued_inputs(open_runtime: OpenRuntime) -> None:
    gated = GatedExecutor()
    rt = open_runtime(executor=gated)
    s = rt.session("a")
    s.accept(prompt("one"))
    gated.started.get(timeout=WAIT)
    assert s.accept(prompt("two")).kind == "accepted"  # queued behind the run
    act = rt.activity()
    assert (act.live_sessions, act.active_runs, act.queued_inputs, act.retries_pending) == (
        1,
        1,
        1,
        0,
    )
    assert rt.live_session_ids() == ["a"]
    gated.release()
    wait_until(
        lambda: (a := rt.activity()).active_runs == 0 and a.queued_inputs == 0,
        what="both inputs to run",
    )


def test_activity_counts_a_scheduled_retry_until_it_has_run(open_runtime: OpenRuntime) -> None:
    flaky = FlakyExecutor(failures=1)
    rt = open_runtime(executor=flaky, retry_backoff=0.5)
    rt.session("a").accept(prompt("one"))
    wait_until(lambda: rt.activity().retries_pending == 1, what="the retry to be scheduled")
    wait_until(lambda: len(flaky.calls) == 2, what="the retry to run")
    wait_until(
        lambda: (a := rt.activity()).retries_pending == 0 and a.active_runs == 0,
        what="the retry and its run to be done",
    )
