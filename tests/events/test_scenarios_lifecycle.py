"""RUNTIME_SPEC section 18, scenarios 14-33: retire, reset, destroy, stop, runs, recovery,
failed attempts and forbidden lifecycle moves.

Where a scenario needs a real actor (waiters, services), the pure part is tested: the
completion outcome a waiter would receive is ``completion_outcome(state, id)``.
"""

from __future__ import annotations

import json

import pytest

from meerkat_runtime.errors import (
    RuntimeStateTransitionError,
)
from meerkat_runtime.events import (
    Abandoned,
    AbandonedOutcome,
    Completed,
    CompleteRun,
    ConsumedOutcome,
    Destroy,
    DestroyReport,
    FailRun,
    HandlingMode,
    InputAbandonReason,
    InputDurability,
    InputTransitionError,
    Recover,
    RecoveryReport,
    Recycle,
    Reset,
    ResetReport,
    Retire,
    RetireReport,
    RunError,
    RuntimeTerminated,
    Stop,
    StopReport,
    completion_outcome,
    evolve,
    fold,
    wants_run,
    wire,
)
from meerkat_runtime.events.completion import TurnTerminalCauseKind
from meerkat_runtime.events.runtime_event import (
    InputStaged,
    RuntimeEventEnvelope,
)
from meerkat_runtime.events.session import state_to_snapshot

from ._scenario import AK, L, S, abandoned_with, accepted_only_log, assert_refused, phase
from ._support import (
    NOW,
    SESSION,
    Driver,
    continuation,
    external,
    fixed_uuid,
    next_run_id,
    peer_progress,
    prompt,
)


def test_scenario_14_retire_without_loop_abandons_queued() -> None:
    d = Driver()
    a, b = prompt("a"), prompt("b")
    d.accept(a)
    d.accept(b)
    decision = d.run(Retire(loop_attached=False))
    assert decision.reply == RetireReport(inputs_abandoned=2, inputs_pending_drain=0)
    assert d.state.phase is S.RETIRED
    assert d.state.non_terminal_ids() == []
    assert not d.state.queue and not d.state.steer_queue
    for p in (a, b):
        assert d.state.inputs[p.header.id].terminal_outcome == abandoned_with(AK.RETIRED)
        outcome = completion_outcome(d.state, p.header.id)
        assert isinstance(outcome, RuntimeTerminated)
        assert outcome.reason == "retired"
    assert "topology.runtime_retired" in d.codes(decision)


def test_scenario_15_reset_abandons_queued() -> None:
    d = Driver()
    p = prompt()
    d.accept(p)
    decision = d.run(Reset())
    assert decision.reply == ResetReport(inputs_abandoned=1)
    assert d.state.non_terminal_ids() == []
    assert d.state.inputs[p.header.id].terminal_outcome == abandoned_with(AK.RESET)
    assert not d.state.queue
    assert not d.state.wake_pending  # the pending wake signal is cleared
    assert not wants_run(d.state)


def test_scenario_16_reset_retired_returns_to_idle_and_accepts() -> None:
    d = Driver()
    d.run(Retire(loop_attached=True))
    decision = d.run(Reset())
    assert decision.reply == ResetReport(inputs_abandoned=0)
    assert d.state.phase is S.IDLE
    assert d.codes(decision) == ["runtime.state_changed"]
    assert d.accept(prompt()).kind == "accepted"


def test_scenario_17_destroy_abandons_queued() -> None:
    d = Driver()
    p = prompt()
    d.accept(p)
    decision = d.run(Destroy())
    assert decision.reply == DestroyReport(inputs_abandoned=1)
    assert d.state.phase is S.DESTROYED
    assert d.state.inputs[p.header.id].terminal_outcome == abandoned_with(AK.DESTROYED)
    assert d.codes(decision) == [
        "input.abandoned",
        "runtime.state_changed",
        "topology.runtime_destroyed",
    ]


def test_scenario_18_destroy_retired() -> None:
    d = Driver()
    d.run(Retire(loop_attached=True))
    assert d.run(Destroy()).reply == DestroyReport(inputs_abandoned=0)
    assert d.state.phase is S.DESTROYED
    for command in (Destroy(), Reset(), Stop(), Recycle(), Retire(loop_attached=True), Recover()):
        with pytest.raises(RuntimeStateTransitionError):
            d.run(command)


def test_scenario_19_stop_abandons_and_terminates_waiters() -> None:
    d = Driver()
    p = prompt("stop me")
    d.accept(p)
    decision = d.run(Stop())
    assert d.state.phase is S.STOPPED
    assert d.state.inputs[p.header.id].terminal_outcome == abandoned_with(AK.STOPPED)
    outcome = completion_outcome(d.state, p.header.id)
    assert isinstance(outcome, RuntimeTerminated)
    assert outcome.reason == "stopped"
    assert decision.reply == StopReport(inputs_abandoned=1)


def test_scenario_20_bind_run_gives_running_and_reset_refused() -> None:
    d = Driver()
    d.accept(prompt())
    d.start()
    assert d.state.phase is S.RUNNING
    assert_refused(d, Reset(), "running", "idle")
    assert_refused(d, Reset(), "running", "attached", attached=True)
    assert_refused(d, Recycle(), "running", "idle")


def test_scenario_21_retire_with_executor_drains() -> None:
    d = Driver(attached=True)
    p = prompt("waited work")
    d.accept(p)
    assert d.state.observed_state(True) is S.ATTACHED
    decision = d.run(Retire(loop_attached=True))
    assert decision.reply == RetireReport(inputs_abandoned=0, inputs_pending_drain=1)
    assert phase(d) is S.RETIRED
    assert d.phase_of(p.header.id) == "queued"
    assert wants_run(d.state)  # a retired runtime may still start runs for queued work
    run_id = d.start()
    assert phase(d) is S.RUNNING
    d.run(CompleteRun(run_id))
    assert phase(d) is S.RETIRED  # run end returns to the pre-run phase
    assert d.phase_of(p.header.id) == "consumed"
    applied = [h for h in d.state.inputs[p.header.id].history if h.to is L.APPLIED]
    assert len(applied) == 1  # applied once
    outcome = completion_outcome(d.state, p.header.id)
    # The port resolves a completed run as ``completed`` with its run id (API.md).
    assert outcome == Completed(run_id=run_id)
    assert json.loads(wire.encode(outcome)) == {
        "completion_type": "completed",
        "run_id": str(run_id),
    }
    assert not wants_run(d.state)


def test_scenario_21_retired_session_drains_steer_only_work() -> None:
    d = Driver(attached=True)
    p = peer_progress()
    d.accept(p)
    assert not wants_run(d.state)
    d.run(Retire(loop_attached=True))
    assert wants_run(d.state)  # nothing can wake a retired session: it drains everything
    run_id = d.start()
    d.run(CompleteRun(run_id))
    assert d.phase_of(p.header.id) == "consumed"


def test_scenario_22_reset_with_executor_terminates_waiter() -> None:
    d = Driver(attached=True)
    p = prompt()
    d.accept(p)
    decision = d.run(Reset())
    assert decision.reply == ResetReport(inputs_abandoned=1)
    outcome = completion_outcome(d.state, p.header.id)
    assert isinstance(outcome, RuntimeTerminated)
    assert outcome.reason == "reset"
    assert all(h.to is not L.APPLIED for h in d.state.inputs[p.header.id].history)
    assert d.state.observed_state(True) is S.ATTACHED  # API: after a reset it is attached
    assert d.state.observed_state(False) is S.IDLE
    assert d.state.inputs[p.header.id].terminal_outcome == abandoned_with(AK.RESET)


def test_scenario_23_in_process_recover_keeps_queue() -> None:
    d = Driver()
    p = prompt()
    d.accept(p)
    decision = d.run(Recover())
    assert decision.reply == RecoveryReport(
        inputs_recovered=1, inputs_abandoned=0, inputs_requeued=0
    )
    assert d.state.queue.input_ids() == [p.header.id]
    assert d.phase_of(p.header.id) == "queued"


def test_scenario_24_cold_recover_accepted_row_queued() -> None:
    p = prompt()
    _, log = accepted_only_log(p)
    d = Driver()
    d.state = fold(log, session_id=SESSION)
    assert d.phase_of(p.header.id) == "accepted"
    assert p.header.id not in d.state.queue
    decision = d.run(Recover(cold=True))
    assert decision.reply == RecoveryReport(
        inputs_recovered=1, inputs_abandoned=0, inputs_requeued=1
    )
    assert d.phase_of(p.header.id) == "queued"
    assert d.state.non_terminal_ids() == [p.header.id]
    assert d.state.queue.input_ids() == [p.header.id]
    assert d.state.inputs[p.header.id].history[-1].reason == "Recovery"


def test_scenario_25_recover_staged_row_requeued_run_cleared() -> None:
    d = Driver()
    p = prompt()
    d.accept(p)
    run_id = d.start()
    assert d.state.inputs[p.header.id].last_run_id == run_id
    # The process dies: a new one folds the log and recovers cold.
    cold = Driver()
    cold.state = fold(d.log, session_id=SESSION)
    decision = cold.run(Recover(cold=True))
    assert decision.reply.inputs_requeued == 1
    assert decision.reply.inputs_recovered == 1
    st = cold.state.inputs[p.header.id]
    assert st.current_state is L.QUEUED
    assert st.last_run_id is None  # run association cleared
    assert cold.state.queue.input_ids() == [p.header.id]
    assert cold.state.run is None
    assert cold.state.phase is S.IDLE  # running is recovered as the pre-run phase
    assert "run.failed" in cold.codes(decision)  # the interrupted run is closed


def test_scenario_26_recover_applied_with_receipt_consumed() -> None:
    d = Driver()
    p = prompt()
    d.accept(p)
    run_id = d.start()
    d.boundary(run_id)
    assert d.phase_of(p.header.id) == "applied_pending_consumption"
    cold = Driver()
    cold.state = fold(d.log, session_id=SESSION)
    decision = cold.run(Recover(cold=True))
    assert decision.reply == RecoveryReport(
        inputs_recovered=1, inputs_abandoned=0, inputs_requeued=0, details=decision.reply.details
    )
    assert cold.phase_of(p.header.id) == "consumed"
    assert cold.state.inputs[p.header.id].terminal_outcome == ConsumedOutcome()
    assert cold.state.inputs[p.header.id].history[-1].reason == "RecoveryReceiptFound"


def test_scenario_26b_recover_applied_with_receipt_proven_missing_requeued() -> None:
    """Spec 16: an applied input whose boundary has no receipt in the log goes back to
    queued (recovered, not requeued), e.g. a log written before receipts existed."""
    d = Driver()
    p = prompt()
    d.accept(p)
    run_id = d.start()
    d.boundary(run_id)
    without_receipt = [e for e in d.log if e.event.event_code != "run.checkpointed"]
    assert len(without_receipt) == len(d.log) - 1
    cold = Driver()
    cold.state = fold(without_receipt, session_id=SESSION)
    decision = cold.run(Recover(cold=True))
    assert decision.reply.inputs_recovered == 1
    assert decision.reply.inputs_requeued == 0
    assert cold.phase_of(p.header.id) == "queued"
    assert cold.state.inputs[p.header.id].history[-1].reason == "RecoveryReceiptMissing"
    assert list(cold.state.queue) == [p.header.id]


def test_scenario_27_in_process_recover_keeps_applied() -> None:
    d = Driver(attached=True)
    p = prompt()
    d.accept(p)
    run_id = d.start()
    d.boundary(run_id)
    d.run(Retire(loop_attached=True))  # the run goes on in a retired runtime
    decision = d.run(Recover())
    assert decision.reply == RecoveryReport(
        inputs_recovered=1, inputs_abandoned=0, inputs_requeued=0
    )
    assert decision.events == []
    assert d.phase_of(p.header.id) == "applied_pending_consumption"
    d.run(CompleteRun(run_id))
    assert d.phase_of(p.header.id) == "consumed"


def test_scenario_28_cold_recover_ephemeral_row_abandoned() -> None:
    e = external(durability=InputDurability.EPHEMERAL)
    _, log = accepted_only_log(e)
    d = Driver()
    d.state = fold(log, session_id=SESSION)
    decision = d.run(Recover(cold=True))
    # The port abandons it visibly (reason cancelled) instead of erasing it (spec 16).
    assert decision.reply.inputs_abandoned == 1
    assert decision.reply.inputs_recovered == 0
    assert d.state.non_terminal_ids() == []
    assert d.state.inputs[e.header.id].terminal_outcome == abandoned_with(AK.CANCELLED)
    assert not d.state.queue


def test_scenario_29_third_failed_attempt_abandons() -> None:
    d = Driver()
    p = prompt()
    d.accept(p)
    err = RunError(kind=TurnTerminalCauseKind.LLM_FAILURE, terminal=False)
    for attempt in (1, 2):
        run_id = d.start()
        assert d.state.inputs[p.header.id].attempt_count == attempt
        d.run(FailRun(run_id, err))
        assert d.phase_of(p.header.id) == "queued"
        assert completion_outcome(d.state, p.header.id) is None
    run_id = d.start()
    decision = d.run(FailRun(run_id, err))
    st = d.state.inputs[p.header.id]
    assert st.current_state is L.ABANDONED
    assert st.terminal_outcome == AbandonedOutcome(
        reason=InputAbandonReason.max_attempts_exhausted(3)
    )
    assert json.loads(wire.encode(st.terminal_outcome)) == {
        "outcome_type": "abandoned",
        "reason": {"max_attempts_exhausted": {"attempts": 3}},
    }
    assert "input.abandoned" in d.codes(decision)
    assert p.header.id not in d.state.queue
    assert isinstance(completion_outcome(d.state, p.header.id), Abandoned)


def test_scenario_30_failed_run_requeues_with_history_reason() -> None:
    d = Driver()
    p = prompt()
    d.accept(p)
    run_id = d.start()
    d.run(FailRun(run_id, RunError(kind=TurnTerminalCauseKind.TIME_BUDGET_EXCEEDED)))
    st = d.state.inputs[p.header.id]
    assert st.current_state is L.QUEUED
    assert st.history[-1].reason == "ResolveStagedRollback"
    assert (st.history[-1].from_state, st.history[-1].to) == (L.STAGED, L.QUEUED)
    assert st.last_run_id is None
    assert d.state.queue.input_ids() == [p.header.id]


@pytest.mark.parametrize("how", ["failed run", "cold recovery"])
def test_steer_input_back_in_its_queue_wakes_the_session_again(how: str) -> None:
    # The run that staged it cleared the wake; without a new one the input would
    # wait in the steer queue until some later input happened to arrive.
    d = Driver()
    c = continuation(lane=HandlingMode.STEER)
    d.accept(c)
    assert wants_run(d.state)
    run_id = d.start()
    assert not wants_run(d.state)
    if how == "failed run":
        d.run(
            FailRun(
                run_id, RunError(kind=TurnTerminalCauseKind.RUNTIME_APPLY_FAILURE, retryable=True)
            )
        )
    else:
        d.state = fold(d.log, session_id=SESSION)
        d.run(Recover(cold=True))
    assert d.phase_of(c.header.id) == "queued"
    assert d.state.steer_queue.input_ids() == [c.header.id]
    assert wants_run(d.state)
    assert fold(d.log, session_id=SESSION).wake_pending  # the log says so too


def test_steer_input_that_never_wakes_stays_asleep_after_a_failed_run() -> None:
    d = Driver()
    sleeper = peer_progress()  # wake mode none
    d.accept(sleeper)
    assert not wants_run(d.state)
    d.run(Retire(loop_attached=True))  # a retired session drains even sleepers
    run_id = d.start()
    d.run(
        FailRun(run_id, RunError(kind=TurnTerminalCauseKind.RUNTIME_APPLY_FAILURE, retryable=True))
    )
    assert d.state.steer_queue.input_ids() == [sleeper.header.id]
    assert not d.state.wake_pending


def test_scenario_31_stop_abandons_one_queued_input() -> None:
    d = Driver()
    p = prompt()
    d.accept(p)
    assert d.run(Stop()).reply == StopReport(inputs_abandoned=1)
    assert d.state.inputs[p.header.id].terminal_outcome == abandoned_with(AK.STOPPED)


def test_scenario_32_staging_accepted_input_refused() -> None:
    p = prompt()
    _, log = accepted_only_log(p)
    state = fold(log, session_id=SESSION)
    row = state.inputs[p.header.id]
    with pytest.raises(InputTransitionError):
        row.transition(L.STAGED, NOW)
    assert state.inputs[p.header.id] is row
    # Folding a staged event for it fails too and leaves the session as it was.
    before = state_to_snapshot(state)
    bad = RuntimeEventEnvelope(
        id=fixed_uuid(1, 0xBAD0),
        timestamp=NOW,
        runtime_id=SESSION,
        event=InputStaged(input_id=p.header.id, run_id=next_run_id()),
    )
    with pytest.raises(InputTransitionError):
        evolve(state, bad)
    assert state_to_snapshot(state) == before


def test_scenario_33_consumed_input_cannot_move() -> None:
    d = Driver()
    p = prompt()
    d.accept(p)
    run_id = d.start()
    d.run(CompleteRun(run_id))
    row = d.state.inputs[p.header.id]
    assert row.current_state is L.CONSUMED
    for to in L:
        with pytest.raises(InputTransitionError):
            row.transition(to, NOW)
        with pytest.raises(InputTransitionError):
            row.transition(to, NOW, recovery=True)
