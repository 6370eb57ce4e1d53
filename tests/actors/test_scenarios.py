"""RUNTIME_SPEC section 18 scenarios that need the actor/runtime layer, on memory:// and SQLite.

Each test names its scenario number. Everything goes through the public API.
"""

from __future__ import annotations

import uuid

import pytest

from meerkat_runtime import (
    Abandoned,
    AbandonKind,
    ApplyMode,
    Completed,
    CompletedWithoutResult,
    DurabilityViolation,
    EchoExecutor,
    HandlingMode,
    InputAbandonReason,
    InputDeduplicated,
    InputLifecycleState,
    NotReady,
    PeerHandlingModeInvalid,
    PeerResponseTerminalInvalid,
    RecoveryReport,
    RecycleReport,
    ResetReport,
    RetireReport,
    RoutingDisposition,
    RuntimeState,
    RuntimeStateTransitionError,
    RuntimeTerminated,
    WakeMode,
    detached_background_op_completed,
)

from ..waiting import WAIT, wait_until
from ._support import (
    FlakyExecutor,
    GatedExecutor,
    abandon_reason,
    coalesced_into,
    codes,
    external_event,
    last_sequence,
    operation,
    peer_message,
    peer_progress,
    peer_terminal,
    phase,
    prompt,
    superseded_by,
)
from .conftest import OpenRuntime

L = InputLifecycleState
S = RuntimeState


# ---------------------------------------------------------------- accept (1-12, 39a, 41)


def test_01_idle_accept_prompt_queues_and_wakes(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    s = rt.session("s-1")
    out = s.accept(prompt("hello"))
    assert out.kind == "accepted" and out.is_accepted
    assert out.state is not None and out.state.current_state is L.QUEUED
    assert out.state.policy is not None
    assert out.state.policy.decision.wake_mode is WakeMode.WAKE_IF_IDLE
    assert out.completion is not None and not out.completion.done()
    assert phase(s, out.input_id) is L.QUEUED
    assert s.active_input_ids() == [out.input_id]
    assert codes(s.events()) == ["topology.runtime_created", "input.accepted", "input.queued"]
    assert s.state() is S.IDLE


def test_02_running_accept_prompt_queues_without_interrupting(open_runtime: OpenRuntime) -> None:
    ex = GatedExecutor()
    rt = open_runtime(executor=ex)
    s = rt.session("s-1")
    first = s.accept(prompt("one"))
    req = ex.wait_started()
    assert req.contributing_input_ids == (first.input_id,)
    assert s.state() is S.RUNNING
    second = s.accept(prompt("two"))
    assert second.kind == "accepted"
    assert second.state is not None and second.state.current_state is L.QUEUED
    assert second.state.policy is not None
    assert second.state.policy.decision.wake_mode is WakeMode.NONE
    # the run in flight is untouched
    assert phase(s, first.input_id) is L.STAGED
    assert s.state() is S.RUNNING
    ex.release()
    assert first.completion is not None and second.completion is not None
    assert isinstance(first.completion.wait(WAIT), Completed)
    assert isinstance(second.completion.wait(WAIT), Completed)
    assert [r.contributing_input_ids for r in ex.requests] == [
        (first.input_id,),
        (second.input_id,),
    ]
    wait_until(lambda: s.state() is S.ATTACHED)


def test_03_idle_accept_peer_response_terminal_wakes(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    s = rt.session("s-1")
    out = s.accept(peer_terminal())
    assert out.kind == "accepted"
    assert out.state is not None and out.state.current_state is L.QUEUED
    assert out.state.policy is not None
    assert out.state.policy.decision.wake_mode is WakeMode.WAKE_IF_IDLE


def test_04_running_accept_peer_response_terminal_runs_after_current(
    open_runtime: OpenRuntime,
) -> None:
    ex = GatedExecutor()
    rt = open_runtime(executor=ex)
    s = rt.session("s-1")
    first = s.accept(prompt("one"))
    ex.wait_started()
    term = s.accept(peer_terminal())
    assert term.kind == "accepted"
    assert term.state is not None and term.state.policy is not None
    assert term.state.policy.decision.wake_mode is WakeMode.WAKE_IF_IDLE
    ex.release()
    assert term.completion is not None and first.completion is not None
    assert isinstance(first.completion.wait(WAIT), Completed)
    assert isinstance(term.completion.wait(WAIT), Completed)
    assert len(ex.requests) == 2


def test_05_peer_response_progress_never_wakes(open_runtime: OpenRuntime) -> None:
    ex = EchoExecutor()
    rt = open_runtime(executor=ex)
    s = rt.session("s-1")
    out = s.accept(peer_progress())
    assert out.kind == "accepted"
    assert out.state is not None and out.state.policy is not None
    decision = out.state.policy.decision
    assert decision.wake_mode is WakeMode.NONE
    assert decision.apply_mode is ApplyMode.STAGE_RUN_BOUNDARY
    # an executor is bound, yet no run starts for it on its own
    assert s.state() is S.ATTACHED
    assert "run.started" not in codes(s.events())
    assert phase(s, out.input_id) is L.QUEUED
    # ... it joins the next run that starts
    p = s.accept(prompt("go"))
    assert p.completion is not None and out.completion is not None
    assert isinstance(p.completion.wait(WAIT), Completed)
    assert isinstance(out.completion.wait(WAIT), Completed)


def test_06_detached_continuation_steers_and_runs_at_once(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    s = rt.session("s-1")
    out = s.accept(detached_background_op_completed())
    assert out.kind == "accepted"
    assert out.state is not None
    assert out.state.recovery_lane is HandlingMode.STEER
    assert out.state.policy is not None
    assert out.state.policy.decision.routing_disposition is RoutingDisposition.STEER

    rt.close()
    rt2 = open_runtime(executor=EchoExecutor())
    s2 = rt2.session("s-2")
    out2 = s2.accept(detached_background_op_completed())
    assert out2.completion is not None
    assert isinstance(out2.completion.wait(WAIT), Completed)


def test_07_idempotency_key_deduplicates(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    s = rt.session("s-1")
    first = s.accept(prompt("a", idempotency_key="req-42"))
    second = s.accept(prompt("b", idempotency_key="req-42"))
    assert first.kind == "accepted"
    assert second.kind == "deduplicated" and second.is_deduplicated
    assert second.input_id != first.input_id
    assert second.existing_id == first.input_id
    assert s.input_state(second.input_id) is None
    assert s.active_input_ids() == [first.input_id]
    dedup = [e.event for e in s.events() if isinstance(e.event, InputDeduplicated)]
    assert [(d.input_id, d.existing_id) for d in dedup] == [(second.input_id, first.input_id)]
    # the completion handle waits on the existing input
    assert second.completion is not None and second.completion.input_id == first.input_id
    assert not second.completion.done()
    # the key stays bound to the first input, also once it is terminal
    s.reset()
    outcome = second.completion.wait(WAIT)
    assert isinstance(outcome, RuntimeTerminated) and outcome.reason == "reset"
    third = s.accept(prompt("c", idempotency_key="req-42"))
    assert third.kind == "deduplicated" and third.existing_id == first.input_id
    # the existing input is terminal and out of the session's state: its outcome is read
    # from the log (off the session's thread), so the handle resolves soon, not at once
    assert third.completion is not None and third.completion.wait(WAIT) == outcome


def test_07_idempotency_index_is_rebuilt_after_reopen(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    first = rt.session("s-1").accept(prompt("a", idempotency_key="req-1"))
    rt.close()
    rt2 = open_runtime()
    again = rt2.session("s-1").accept(prompt("a", idempotency_key="req-1"))
    assert again.kind == "deduplicated" and again.existing_id == first.input_id
    # keys are per session
    assert rt2.session("s-2").accept(prompt("a", idempotency_key="req-1")).kind == "accepted"


def test_07_dedup_with_executor_resolves_on_the_existing_input(open_runtime: OpenRuntime) -> None:
    ex = GatedExecutor(output={"n": 1})
    rt = open_runtime(executor=ex)
    s = rt.session("s-1")
    first = s.accept(prompt("a", idempotency_key="k"))
    ex.wait_started()
    dup = s.accept(prompt("a again", idempotency_key="k"))
    assert dup.kind == "deduplicated" and dup.existing_id == first.input_id
    ex.release()
    assert dup.completion is not None and first.completion is not None
    assert dup.completion.wait(WAIT) == first.completion.wait(WAIT)
    assert len(ex.requests) == 1


def test_07_same_input_presented_twice_is_deduplicated(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    s = rt.session("s-1")
    doc = prompt("x", id=str(uuid.uuid4()))
    a = s.accept(doc)
    b = s.accept(doc)
    assert a.kind == "accepted"
    assert b.kind == "deduplicated" and b.existing_id == a.input_id == b.input_id


@pytest.mark.parametrize(
    ("doc", "reason_type", "detail"),
    [
        (  # 8
            prompt("x", source={"type": "system"}, durability="derived"),
            DurabilityViolation,
            "Derived durability forbidden for prompt",
        ),
        (
            prompt("x", durability="derived"),
            DurabilityViolation,
            "External ingress cannot submit derived inputs",
        ),
        (  # 9
            peer_progress(handling_mode="queue"),
            PeerHandlingModeInvalid,
            "handling_mode is forbidden on ResponseProgress peer inputs",
        ),
        (  # 11
            peer_terminal(request_id=" "),
            PeerResponseTerminalInvalid,
            "correlation id cannot be empty",
        ),
        (
            peer_terminal(status="cancelled"),
            PeerResponseTerminalInvalid,
            "peer response terminal status rejected by generated authority: cancelled",
        ),
    ],
    ids=["08-derived-system", "derived-operator", "09-progress-queue", "11-blank", "cancelled"],
)
def test_08_09_11_rejected_inputs_write_nothing(
    open_runtime: OpenRuntime, doc: dict[str, object], reason_type: type, detail: str
) -> None:
    rt = open_runtime()
    s = rt.session("s-1")
    s.accept(prompt("before"))
    before = last_sequence(s)
    out = s.accept(doc)
    assert out.kind == "rejected" and out.is_rejected
    assert isinstance(out.reason, reason_type)
    assert str(out.reason) == detail
    assert out.completion is None and out.state is None
    assert s.input_state(out.input_id) is None
    assert last_sequence(s) == before


def test_rejected_input_on_fresh_session_creates_nothing(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    out = rt.session("fresh").accept(peer_progress(handling_mode="steer"))
    assert out.kind == "rejected"
    assert rt.sessions() == []


@pytest.mark.parametrize(
    "doc", [peer_terminal(handling_mode="steer"), peer_message(handling_mode="steer")]
)
def test_10_12_steer_peer_inputs_are_accepted(
    open_runtime: OpenRuntime, doc: dict[str, object]
) -> None:
    rt = open_runtime()
    s = rt.session("s-1")
    out = s.accept(doc)
    assert out.kind == "accepted"
    assert out.state is not None and out.state.policy is not None
    assert out.state.policy.decision.routing_disposition is RoutingDisposition.STEER
    assert out.state.recovery_lane is HandlingMode.STEER


def test_39a_progress_inputs_coalesce_by_supersession_key(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    s = rt.session("s-1")
    older = s.accept(peer_progress(supersession_key="progress-r7"))
    newer = s.accept(peer_progress(supersession_key="progress-r7"))
    other = s.accept(peer_progress(supersession_key="another"))
    st = s.input_state(older.input_id)
    assert st is not None and st.current_state is L.COALESCED
    assert coalesced_into(st) == newer.input_id
    assert phase(s, newer.input_id) is L.QUEUED
    assert phase(s, other.input_id) is L.QUEUED
    assert set(s.active_input_ids()) == {newer.input_id, other.input_id}
    assert older.completion is not None
    outcome = older.completion.wait(WAIT)
    assert isinstance(outcome, Abandoned)
    assert outcome.reason == f"coalesced into {newer.input_id}"
    assert "input.coalesced" in codes(s.events())


def test_supersession_by_key_same_kind_only(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    s = rt.session("s-1")
    old = s.accept(external_event(payload={"state": "red"}, supersession_key="ci"))
    new = s.accept(external_event(payload={"state": "green"}, supersession_key="ci"))
    cross = s.accept(prompt("same key, other kind", supersession_key="ci"))
    keyless = s.accept(external_event())
    keyless2 = s.accept(external_event())
    st = s.input_state(old.input_id)
    assert st is not None and st.current_state is L.SUPERSEDED
    assert superseded_by(st) == new.input_id
    assert old.completion is not None
    outcome = old.completion.wait(WAIT)
    assert isinstance(outcome, Abandoned) and outcome.reason == f"superseded by {new.input_id}"
    for out in (new, cross, keyless, keyless2):
        assert phase(s, out.input_id) is L.QUEUED
    assert "input.superseded" in codes(s.events())


def test_staged_input_is_not_superseded(open_runtime: OpenRuntime) -> None:
    ex = GatedExecutor()
    rt = open_runtime(executor=ex)
    s = rt.session("s-1")
    old = s.accept(external_event(supersession_key="ci"))
    ex.wait_started()
    new = s.accept(external_event(supersession_key="ci"))
    assert phase(s, old.input_id) is L.STAGED
    ex.release()
    assert old.completion is not None and new.completion is not None
    assert isinstance(old.completion.wait(WAIT), Completed)
    assert isinstance(new.completion.wait(WAIT), Completed)


def test_41_operation_is_consumed_on_accept(open_runtime: OpenRuntime) -> None:
    rt = open_runtime(executor=EchoExecutor())
    s = rt.session("s-1")
    out = s.accept(operation())
    assert out.kind == "accepted"
    assert out.state is not None and out.state.current_state is L.CONSUMED
    assert out.completion is not None and out.completion.done()
    assert isinstance(out.completion.wait(0), CompletedWithoutResult)
    assert codes(s.events()) == ["topology.runtime_created", "input.accepted"]
    assert s.active_input_ids() == []
    assert s.state() is S.ATTACHED


# ---------------------------------------------------------------- lifecycle (13-22, 31)


def test_13_retired_runtime_rejects_with_not_ready(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    s = rt.session("s-1")
    s.accept(prompt())
    s.retire()
    before = last_sequence(s)
    out = s.accept(prompt("late"))
    assert out.kind == "rejected"
    assert out.reason == NotReady(state=S.RETIRED)
    assert str(out.reason) == "runtime not accepting input while in state: retired"
    assert last_sequence(s) == before


def test_14_retire_without_loop_abandons_everything(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    s = rt.session("s-1")
    a = s.accept(prompt("a"))
    b = s.accept(prompt("b"))
    report = s.retire()
    assert report == RetireReport(inputs_abandoned=2, inputs_pending_drain=0)
    assert s.state() is S.RETIRED
    assert s.active_input_ids() == []
    for out in (a, b):
        assert out.completion is not None
        outcome = out.completion.wait(WAIT)
        assert isinstance(outcome, RuntimeTerminated) and outcome.reason == "retired"
        st = s.input_state(out.input_id)
        assert st is not None and st.terminal_outcome is not None
        assert abandon_reason(st) == InputAbandonReason(AbandonKind.RETIRED)
    assert s.retire() == RetireReport(inputs_abandoned=0, inputs_pending_drain=0)  # idempotent


def test_15_reset_abandons_queued(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    s = rt.session("s-1")
    a = s.accept(prompt())
    assert s.reset() == ResetReport(inputs_abandoned=1)
    assert s.active_input_ids() == []
    assert s.state() is S.IDLE
    assert a.completion is not None
    outcome = a.completion.wait(WAIT)
    assert isinstance(outcome, RuntimeTerminated) and outcome.reason == "reset"


def test_16_reset_of_retired_runtime_returns_to_idle(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    s = rt.session("s-1")
    s.accept(prompt())
    s.retire()
    assert s.reset() == ResetReport(inputs_abandoned=0)
    assert s.state() is S.IDLE
    assert s.accept(prompt("again")).kind == "accepted"


def test_17_destroy_abandons_and_is_terminal(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    s = rt.session("s-1")
    a = s.accept(prompt())
    report = s.destroy()
    assert report.inputs_abandoned == 1
    assert s.state() is S.DESTROYED
    st = s.input_state(a.input_id)
    assert st is not None and st.current_state is L.ABANDONED
    assert abandon_reason(st) == InputAbandonReason(AbandonKind.DESTROYED)
    assert a.completion is not None
    outcome = a.completion.wait(WAIT)
    assert isinstance(outcome, RuntimeTerminated) and outcome.reason == "destroyed"


def test_18_retired_runtime_can_be_destroyed(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    s = rt.session("s-1")
    s.accept(prompt())
    s.retire()
    s.destroy()
    assert s.state() is S.DESTROYED


def test_destroyed_session_rejects_forever_and_allows_no_operation(
    open_runtime: OpenRuntime,
) -> None:
    rt = open_runtime()
    s = rt.session("s-1")
    s.accept(prompt())
    s.destroy()
    before = last_sequence(s)
    out = s.accept(prompt("late"))
    assert out.kind == "rejected" and out.reason == NotReady(state=S.DESTROYED)
    for op in (s.retire, s.reset, s.stop, s.recycle, s.recover, s.destroy):
        with pytest.raises(RuntimeStateTransitionError):
            op()
    assert last_sequence(s) == before
    rt.close()
    rt2 = open_runtime()
    s2 = rt2.session("s-1")
    assert s2.state() is S.DESTROYED
    assert s2.accept(prompt()).kind == "rejected"
    assert rt2.recover() == []  # destroyed sessions are skipped
    with pytest.raises(RuntimeStateTransitionError):
        s2.recover()


def test_19_31_stop_abandons_and_terminates_waiters(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    s = rt.session("s-1")
    a = s.accept(prompt("stop me"))
    report = s.stop()
    assert report.inputs_abandoned == 1
    assert s.state() is S.STOPPED
    st = s.input_state(a.input_id)
    assert st is not None
    assert abandon_reason(st) == InputAbandonReason(AbandonKind.STOPPED)
    assert a.completion is not None
    outcome = a.completion.wait(WAIT)
    assert isinstance(outcome, RuntimeTerminated) and outcome.reason == "stopped"


def test_stopped_session_rejects_until_recover(open_runtime: OpenRuntime) -> None:
    rt = open_runtime(executor=EchoExecutor())
    s = rt.create_session("s-1")
    s.stop()
    assert s.state() is S.STOPPED
    out = s.accept(prompt())
    assert out.kind == "rejected" and out.reason == NotReady(state=S.STOPPED)
    with pytest.raises(RuntimeStateTransitionError):
        s.reset()
    with pytest.raises(RuntimeStateTransitionError):
        s.recycle()
    rt.close()
    # the stopped state survives a restart, and rt.recover() does not re-register it
    rt2 = open_runtime(executor=EchoExecutor())
    s2 = rt2.session("s-1")
    assert s2.state() is S.STOPPED
    assert len(rt2.recover()) == 1
    assert s2.state() is S.STOPPED
    assert s2.accept(prompt()).kind == "rejected"
    report = s2.recover()
    assert isinstance(report, RecoveryReport)
    assert s2.state() is S.ATTACHED
    out2 = s2.accept(prompt("back"))
    assert out2.kind == "accepted" and out2.completion is not None
    assert isinstance(out2.completion.wait(WAIT), Completed)


def test_stopped_session_may_be_retired_or_destroyed(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    a, b = rt.session("a"), rt.session("b")
    for s in (a, b):
        s.accept(prompt())
        s.stop()
    a.retire()
    assert a.state() is S.RETIRED
    b.destroy()
    assert b.state() is S.DESTROYED


def test_stop_during_run_cancels_it(open_runtime: OpenRuntime) -> None:
    ex = GatedExecutor()
    rt = open_runtime(executor=ex)
    s = rt.session("s-1")
    a = s.accept(prompt("running"))
    ex.wait_started()
    b = s.accept(prompt("queued"))
    s.stop()
    assert s.state() is S.STOPPED
    for out in (a, b):
        assert out.completion is not None
        outcome = out.completion.wait(WAIT)
        assert isinstance(outcome, RuntimeTerminated) and outcome.reason == "stopped"
    ex.release()  # the late result is ignored
    s.accept(prompt("ignored")) if False else None
    wait_until(lambda: "run.cancelled" in codes(s.events()))
    assert s.state() is S.STOPPED
    assert "run.completed" not in codes(s.events())


def test_20_binding_a_run_is_running_and_reset_is_refused(open_runtime: OpenRuntime) -> None:
    ex = GatedExecutor()
    rt = open_runtime(executor=ex)
    s = rt.session("s-1")
    a = s.accept(prompt())
    ex.wait_started()
    assert s.state() is S.RUNNING
    before = last_sequence(s)
    with pytest.raises(RuntimeStateTransitionError):
        s.reset()
    with pytest.raises(RuntimeStateTransitionError):
        s.recycle()
    assert last_sequence(s) == before
    ex.release()
    assert a.completion is not None and isinstance(a.completion.wait(WAIT), Completed)


def test_21_retire_with_executor_drains_queued_work(open_runtime: OpenRuntime) -> None:
    ex = GatedExecutor(output={"ok": True})
    rt = open_runtime(executor=ex)
    s = rt.session("s-1")
    a = s.accept(prompt("running"))
    ex.wait_started()
    b = s.accept(prompt("queued"))
    report = s.retire()
    assert report == RetireReport(inputs_abandoned=0, inputs_pending_drain=2)
    assert s.state() is S.RETIRED
    assert s.accept(prompt("late")).reason == NotReady(state=S.RETIRED)
    ex.release()
    for out in (a, b):
        assert out.completion is not None
        outcome = out.completion.wait(WAIT)
        assert isinstance(outcome, Completed) and outcome.output == {"ok": True}
        assert phase(s, out.input_id) is L.CONSUMED
    assert len(ex.requests) == 2  # each applied once
    assert s.state() is S.RETIRED
    assert s.active_input_ids() == []


def test_21_retire_from_attached_with_queued_work(open_runtime: OpenRuntime) -> None:
    rt = open_runtime(executor=EchoExecutor())
    s = rt.session("s-1")
    progress = s.accept(peer_progress())  # wake none: stays queued while attached
    report = s.retire()
    assert report == RetireReport(inputs_abandoned=0, inputs_pending_drain=1)
    assert progress.completion is not None
    assert isinstance(progress.completion.wait(WAIT), Completed)
    assert s.state() is S.RETIRED


def test_22_reset_with_executor_terminates_waiters(open_runtime: OpenRuntime) -> None:
    ex = GatedExecutor()
    rt = open_runtime(executor=ex)
    s = rt.session("s-1")
    progress = s.accept(peer_progress())
    assert s.state() is S.ATTACHED
    assert s.reset() == ResetReport(inputs_abandoned=1)
    assert progress.completion is not None
    outcome = progress.completion.wait(WAIT)
    assert isinstance(outcome, RuntimeTerminated) and outcome.reason == "reset"
    st = s.input_state(progress.input_id)
    assert st is not None and st.current_state is L.ABANDONED
    assert abandon_reason(st) == InputAbandonReason(AbandonKind.RESET)
    assert ex.requests == []  # never applied
    assert s.state() is S.ATTACHED


def test_23_in_process_recover_keeps_the_queue(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    s = rt.session("s-1")
    a = s.accept(prompt())
    report = s.recover()
    assert report.inputs_recovered == 1 and report.inputs_requeued == 0
    assert report.inputs_abandoned == 0
    assert s.active_input_ids() == [a.input_id]
    assert phase(s, a.input_id) is L.QUEUED
    assert s.state() is S.IDLE


def test_recycle_preserves_non_terminal_work(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    s = rt.session("s-1")
    a = s.accept(prompt("a"))
    b = s.accept(prompt("b"))
    assert s.recycle() == RecycleReport(inputs_transferred=2)
    assert s.active_input_ids() == [a.input_id, b.input_id]
    assert s.state() is S.IDLE


# ---------------------------------------------------------------- runs (29, 30) and waiters (46)


def test_30_failed_run_rolls_back_and_retries(open_runtime: OpenRuntime) -> None:
    ex = FlakyExecutor(failures=1)
    rt = open_runtime(executor=ex)
    s = rt.session("s-1")
    a = s.accept(prompt())
    assert a.completion is not None
    outcome = a.completion.wait(WAIT)
    assert isinstance(outcome, Completed) and outcome.output == {"attempt": 2}
    st = s.input_state(a.input_id)
    assert st is not None and st.current_state is L.CONSUMED
    reasons = [h.reason for h in st.history]
    assert reasons.count("ResolveStagedRollback") == 1
    assert st.attempt_count == 2
    assert codes(s.events()).count("run.failed") == 1


@pytest.mark.parametrize("raises", [False, True], ids=["failed-result", "raises"])
def test_29_third_failed_attempt_abandons(open_runtime: OpenRuntime, raises: bool) -> None:
    ex = FlakyExecutor(failures=3, raises=raises)
    rt = open_runtime(executor=ex)
    s = rt.session("s-1")
    a = s.accept(prompt())
    assert a.completion is not None
    outcome = a.completion.wait(WAIT)
    assert isinstance(outcome, Abandoned)
    st = s.input_state(a.input_id)
    assert st is not None and st.current_state is L.ABANDONED
    assert abandon_reason(st) == InputAbandonReason.max_attempts_exhausted(3)
    assert [h.reason for h in st.history].count("ResolveStagedRollback") == 2
    assert len(ex.calls) == 3
    assert s.state() is S.ATTACHED
    # the actor survived: the session still works
    b = s.accept(prompt("next"))
    assert b.completion is not None and isinstance(b.completion.wait(WAIT), Completed)


def test_46_two_waiters_get_the_same_outcome(open_runtime: OpenRuntime) -> None:
    ex = GatedExecutor(output="same")
    rt = open_runtime(executor=ex)
    s = rt.session("s-1")
    a = s.accept(prompt())
    ex.wait_started()
    h1 = a.completion
    h2 = s.completion(a.input_id)
    assert h1 is not None and h2 is not None
    ex.release()
    o1, o2 = h1.wait(WAIT), h2.wait(WAIT)
    assert o1 == o2 and isinstance(o1, Completed) and o1.output == "same"
    f = h2.future
    assert f.result(0) == o1
    assert s.completion(uuid.uuid4()) is None  # an unknown id


# ---------------------------------------------------------------- recovery (23-28) across reopen


def test_recovery_after_reopen_keeps_queued_inputs(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    s = rt.session("s-1")
    ids = [s.accept(prompt(f"p{n}")).input_id for n in range(3)]
    rt.close()
    rt2 = open_runtime(executor=None)
    s2 = rt2.session("s-1")
    assert s2.active_input_ids() == ids
    assert [phase(s2, i) for i in ids] == [L.QUEUED] * 3
    reports = rt2.recover()
    assert len(reports) == 1
    assert reports[0].inputs_recovered == 3
    assert reports[0].inputs_requeued == 0
    rt2.close()
    rt3 = open_runtime(executor=EchoExecutor())
    s3 = rt3.session("s-1")
    handles = [s3.completion(i) for i in ids]
    outs = [h.wait(WAIT) for h in handles if h is not None]
    assert len(outs) == 3 and all(isinstance(o, Completed) for o in outs)
    assert s3.active_input_ids() == []


def test_28_ephemeral_inputs_are_abandoned_at_restart(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    s = rt.session("s-1")
    eph = s.accept(prompt("fleeting", durability="ephemeral"))
    dur = s.accept(prompt("lasting"))
    assert phase(s, eph.input_id) is L.QUEUED
    rt.close()
    rt2 = open_runtime()
    reports = rt2.recover()
    assert len(reports) == 1
    assert reports[0].inputs_abandoned == 1
    assert reports[0].inputs_recovered == 1
    s2 = rt2.session("s-1")
    st = s2.input_state(eph.input_id)
    assert st is not None and st.current_state is L.ABANDONED
    assert abandon_reason(st) == InputAbandonReason(AbandonKind.CANCELLED)
    assert s2.active_input_ids() == [dur.input_id]
    handle = s2.completion(eph.input_id)
    assert handle is not None and handle.done()
    assert isinstance(handle.wait(0), Abandoned)


def test_lifecycle_states_survive_reopen(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    rt.session("retired").accept(prompt())
    rt.session("retired").retire()
    rt.create_session("stopped").stop()
    rt.create_session("destroyed").destroy()
    rt.session("idle").accept(prompt())
    rt.close()
    rt2 = open_runtime()
    assert {sid: rt2.session(sid).state() for sid in rt2.sessions()} == {
        "retired": S.RETIRED,
        "stopped": S.STOPPED,
        "destroyed": S.DESTROYED,
        "idle": S.IDLE,
    }


def test_retired_session_drains_after_restart(open_runtime: OpenRuntime) -> None:
    ex = GatedExecutor()
    rt = open_runtime(executor=ex, close_timeout=0.1)
    s = rt.session("s-1")
    a = s.accept(prompt("in flight"))
    ex.wait_started()
    b = s.accept(prompt("queued"))
    s.retire()
    rt.close()  # the run is still held: the log has it started, never ended
    ex.release()
    rt2 = open_runtime(executor=EchoExecutor())
    s2 = rt2.session("s-1")
    for out in (a, b):
        h = s2.completion(out.input_id)
        assert h is not None
        outcome = h.wait(WAIT)
        assert isinstance(outcome, Completed), outcome
    assert s2.state() is S.RETIRED
    assert s2.accept(prompt("late")).reason == NotReady(state=S.RETIRED)
