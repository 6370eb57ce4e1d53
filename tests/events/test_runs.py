"""Runs: lowering the queue into a run, the run boundary, completion, failure and cancel."""

from __future__ import annotations

import pytest

from meerkat_runtime.errors import (
    RuntimeControlPlaneError,
)
from meerkat_runtime.events import (
    AbandonedWithError,
    CancelRun,
    Completed,
    CompleteRun,
    FailRun,
    HandlingMode,
    RunApplyBoundary,
    RunError,
    StagedRunInput,
    StartRun,
    TextRenderable,
    completion_outcome,
)
from meerkat_runtime.events.completion import TurnTerminalCauseKind

from ._scenario import AK, L, S, abandoned_with, state_change
from ._support import (
    Driver,
    next_run_id,
    peer,
    prompt,
)

# ================================================================ runs: boundary, completion, failure, cancel


def test_run_lowering_stages_queue_head_plus_whole_steer_queue() -> None:
    d = Driver()
    a, b = prompt("a"), prompt("b")
    s1, s2 = peer(lane=HandlingMode.STEER, text="s1"), peer(lane=HandlingMode.STEER, text="s2")
    for p in (a, b, s1, s2):
        d.accept(p)
    run_id = d.start()
    assert d.state.run is not None
    assert d.state.run.input_ids == [a.header.id, s1.header.id, s2.header.id]
    prim = d.state.run.primitive
    assert isinstance(prim, StagedRunInput)
    assert prim.contributing_input_ids == (a.header.id, s1.header.id, s2.header.id)
    assert prim.boundary is RunApplyBoundary.RUN_START
    assert [ap.content for ap in prim.appends] == [
        TextRenderable("a"),
        TextRenderable("s1"),
        TextRenderable("s2"),
    ]
    assert d.state.queue.input_ids() == [b.header.id]
    assert not d.state.steer_queue
    assert all(d.state.inputs[p.header.id].last_run_id == run_id for p in (a, s1, s2))


def test_start_run_refusals() -> None:
    d = Driver()
    with pytest.raises(RuntimeControlPlaneError, match="no queued input"):
        d.run(StartRun(next_run_id()))
    d.accept(prompt())
    d.accept(prompt())
    d.start()
    before = d.snapshot()
    with pytest.raises(RuntimeControlPlaneError, match="already in flight"):
        d.run(StartRun(next_run_id()))
    assert d.snapshot() == before


def test_boundary_then_complete_consumes_in_order() -> None:
    d = Driver()
    p = prompt()
    d.accept(p)
    run_id = d.start()
    decision = d.boundary(run_id)
    assert d.codes(decision) == ["input.applied", "run.checkpointed"]
    assert decision.reply.sequence == 1
    assert decision.reply.contributing_input_ids == (p.header.id,)
    st = d.state.inputs[p.header.id]
    assert [h.to for h in st.history[-2:]] == [L.APPLIED, L.APPLIED_PENDING_CONSUMPTION]
    assert [h.reason for h in st.history[-2:]] == [
        f"MarkApplied({run_id})",
        "MarkAppliedPendingConsumption(boundary_sequence=1)",
    ]
    assert st.last_boundary_sequence == 1
    # nothing left staged: a boundary with no new contributor still gets its receipt
    again = d.boundary(run_id)
    assert d.codes(again) == ["run.checkpointed"]
    assert again.reply.sequence == 2 and again.reply.contributing_input_ids == ()
    decision = d.run(CompleteRun(run_id))
    assert d.codes(decision) == ["input.consumed", "run.completed", "runtime.state_changed"]
    assert d.phase_of(p.header.id) == "consumed"
    assert d.state.phase is S.IDLE


def test_complete_without_boundary_applies_then_consumes() -> None:
    d = Driver(attached=True)
    p = prompt()
    d.accept(p)
    run_id = d.start()
    decision = d.run(CompleteRun(run_id, output="out"))
    assert d.codes(decision) == [
        "input.applied",
        "input.consumed",
        "run.completed",
        "runtime.state_changed",
    ]
    assert state_change(decision.events[-1].event).to is S.ATTACHED
    assert completion_outcome(d.state, p.header.id) == Completed(run_id=run_id, output="out")


def test_late_results_of_a_finished_run_are_ignored() -> None:
    d = Driver()
    d.accept(prompt())
    run_id = d.start()
    d.run(CompleteRun(run_id))
    before = d.snapshot()
    for command in (
        CompleteRun(run_id),
        FailRun(run_id, RunError(TurnTerminalCauseKind.UNKNOWN)),
        CancelRun(run_id),
        CompleteRun(next_run_id()),
    ):
        assert d.run(command).events == []
    assert d.snapshot() == before


def test_non_recoverable_failure_consumes_contributors() -> None:
    d = Driver()
    p = prompt()
    d.accept(p)
    run_id = d.start()
    d.run(FailRun(run_id, RunError(kind=TurnTerminalCauseKind.FATAL_FAILURE, terminal=True)))
    st = d.state.inputs[p.header.id]
    assert st.current_state is L.CONSUMED
    assert [h.to for h in st.history[-2:]] == [L.APPLIED_PENDING_CONSUMPTION, L.CONSUMED]
    assert st.last_boundary_sequence == 0
    outcome = completion_outcome(d.state, p.header.id)
    assert isinstance(outcome, AbandonedWithError)
    assert d.state.phase is S.IDLE


def test_failure_after_boundary_consumes_applied_inputs() -> None:
    d = Driver()
    p = prompt()
    d.accept(p)
    run_id = d.start()
    d.boundary(run_id)
    d.run(FailRun(run_id, RunError(kind=TurnTerminalCauseKind.UNKNOWN)))
    assert d.phase_of(p.header.id) == "consumed"


def test_cancel_run_abandons_staged_and_returns_to_pre_run_phase() -> None:
    d = Driver(attached=True)
    a, b = prompt("a"), prompt("b")
    d.accept(a)
    d.accept(b)
    run_id = d.start()
    decision = d.run(CancelRun(run_id))
    assert d.state.inputs[a.header.id].terminal_outcome == abandoned_with(AK.CANCELLED)
    assert d.phase_of(b.header.id) == "queued"  # queued inputs untouched
    assert d.state.observed_state(True) is S.ATTACHED
    assert d.codes(decision) == ["input.abandoned", "run.cancelled", "runtime.state_changed"]


def test_cancel_run_with_rollback_requeues() -> None:
    d = Driver()
    a, b = prompt("a"), prompt("b")
    d.accept(a)
    d.accept(b)
    run_id = d.start()
    d.run(CancelRun(run_id, rollback=True))
    assert d.state.queue.input_ids() == [a.header.id, b.header.id]  # back in admission order
