"""The runtime state table (RUNTIME_SPEC 11), the input lifecycle table (5) and the
lifecycle operations table (14), every cell, written out here from the spec.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from meerkat_runtime.errors import (
    RuntimeStateTransitionError,
)
from meerkat_runtime.events import (
    INPUT_TRANSITIONS,
    TRANSITIONS,
    CompletedWithoutResult,
    CompleteRun,
    Destroy,
    DestroyReport,
    HandlingMode,
    InputState,
    InputTransitionError,
    Recover,
    Recycle,
    RecycleReport,
    Reset,
    ResetReport,
    Retire,
    RetireReport,
    RuntimeState,
    Stop,
    StopReport,
    check_transition,
    completion_outcome,
    fold,
    wants_run,
)

from ._scenario import (
    AK,
    L,
    S,
    abandoned_with,
    assert_refused,
    driver_in,
    state_change,
)
from ._support import (
    NOW,
    SESSION,
    Driver,
    fixed_uuid,
    next_run_id,
    peer,
    prompt,
)

# ================================================================ runtime state table (section 11)

_SPEC_RUNTIME_TABLE = {
    "initializing": {"idle", "destroyed", "stopped"},  # stopped: port design choice (spec 11 notes)
    "idle": {"idle", "attached", "running", "retired", "stopped", "destroyed"},
    "attached": {"idle", "attached", "running", "retired", "stopped", "destroyed"},
    "running": {"idle", "attached", "retired", "stopped", "destroyed"},
    "retired": {"idle", "running", "retired", "destroyed"},
    "stopped": {"idle", "attached", "retired", "destroyed"},
    "destroyed": set(),
}
_STATES = [s.value for s in RuntimeState]


@pytest.mark.parametrize("frm", _STATES)
@pytest.mark.parametrize("to", _STATES)
def test_runtime_state_transition_table(frm: str, to: str) -> None:
    legal = to in _SPEC_RUNTIME_TABLE[frm]
    assert ((RuntimeState(frm), RuntimeState(to)) in TRANSITIONS) is legal
    if legal:
        assert check_transition(RuntimeState(frm), RuntimeState(to)) is RuntimeState(to)
    else:
        with pytest.raises(RuntimeStateTransitionError) as info:
            check_transition(RuntimeState(frm), RuntimeState(to))
        assert str(info.value) == f"Invalid runtime state transition: {frm} -> {to}"


def test_runtime_state_table_is_complete() -> None:
    assert set(_SPEC_RUNTIME_TABLE) == set(_STATES)
    assert len(TRANSITIONS) == sum(len(v) for v in _SPEC_RUNTIME_TABLE.values())


# ================================================================ input lifecycle table (section 5)

_NON_TERMINAL = ["accepted", "queued", "staged", "applied", "applied_pending_consumption"]
_SPEC_INPUT_TABLE = {
    ("accepted", "queued"),
    ("accepted", "consumed"),
    ("queued", "staged"),
    ("staged", "queued"),
    ("staged", "applied"),
    ("applied", "applied_pending_consumption"),
    ("applied_pending_consumption", "consumed"),
    ("staged", "applied_pending_consumption"),
    ("queued", "superseded"),
    ("queued", "coalesced"),
} | {(s, "abandoned") for s in _NON_TERMINAL}
_RECOVERY_ONLY = {
    ("applied", "consumed"),
    ("applied_pending_consumption", "consumed"),
    ("applied", "queued"),
    ("applied_pending_consumption", "queued"),
}
_INPUT_STATES = [s.value for s in L]


def _row(state: str) -> InputState:
    return InputState(
        input_id=fixed_uuid(5), current_state=L(state), created_at=NOW, updated_at=NOW
    )


@pytest.mark.parametrize("frm", _INPUT_STATES)
@pytest.mark.parametrize("to", _INPUT_STATES)
def test_input_lifecycle_transition_table(frm: str, to: str) -> None:
    row = _row(frm)
    later = NOW + timedelta(seconds=5)
    legal = (frm, to) in _SPEC_INPUT_TABLE
    assert ((L(frm), L(to)) in INPUT_TRANSITIONS) is legal
    if legal:
        new = row.transition(L(to), later, "why")
        assert new.current_state is L(to)
        assert new.updated_at == later
        assert len(new.history) == 1
        entry = new.history[0]
        assert (entry.from_state, entry.to, entry.reason, entry.timestamp) == (
            L(frm),
            L(to),
            "why",
            later,
        )
    else:
        with pytest.raises(InputTransitionError):
            row.transition(L(to), later, "why")
    assert row == _row(frm)  # the original is never changed
    recovery_legal = legal or (frm, to) in _RECOVERY_ONLY
    if recovery_legal:
        assert row.transition(L(to), later, recovery=True).current_state is L(to)
    else:
        with pytest.raises(InputTransitionError):
            row.transition(L(to), later, recovery=True)


def test_input_transition_keeps_other_fields_and_applies_changes() -> None:
    row = _row("queued")
    run_id = next_run_id()
    new = row.transition(L.STAGED, NOW, "StageForRun", last_run_id=run_id, attempt_count=1)
    assert (new.last_run_id, new.attempt_count, new.input_id, new.created_at) == (
        run_id,
        1,
        row.input_id,
        NOW,
    )
    newer = new.transition(L.QUEUED, NOW, "ResolveStagedRollback")
    assert [h.to for h in newer.history] == [L.STAGED, L.QUEUED]


# ================================================================ lifecycle operations table (section 14)


@dataclass(frozen=True)
class Op:
    name: str
    command: Any
    allowed: frozenset[str]
    result: Callable[[str], str]  # resulting observed state from the starting one
    report: Callable[[int], Any] | None  # expected reply from the non-terminal count before


_ALL = frozenset(_STATES)
OPERATIONS = [
    Op("retire_loop", Retire(loop_attached=True), frozenset({"idle", "attached", "running", "stopped", "retired"}),
       lambda s: "retired", lambda n: RetireReport(inputs_abandoned=0, inputs_pending_drain=n)),
    Op("retire_no_loop", Retire(loop_attached=False), frozenset({"idle", "attached", "running", "stopped", "retired"}),
       lambda s: "retired", lambda n: RetireReport(inputs_abandoned=n, inputs_pending_drain=0)),
    Op("reset", Reset(), frozenset({"initializing", "idle", "attached", "retired"}),
       lambda s: "attached" if s == "attached" else "idle", lambda n: ResetReport(inputs_abandoned=n)),
    Op("stop", Stop(), frozenset({"initializing", "idle", "attached", "running", "retired"}),
       lambda s: "retired" if s == "retired" else "stopped", lambda n: StopReport(inputs_abandoned=n)),
    Op("destroy", Destroy(), _ALL - {"destroyed"}, lambda s: "destroyed", lambda n: DestroyReport(inputs_abandoned=n)),
    Op("recycle", Recycle(), frozenset({"idle", "attached", "retired"}),
       lambda s: "attached" if s == "attached" else "idle", lambda n: RecycleReport(inputs_transferred=n)),
    Op("recover", Recover(), frozenset({"initializing", "idle", "attached", "retired", "stopped"}),
       lambda s: s, None),
]  # fmt: skip
_REFUSED_TARGET: dict[str, Callable[[str], str]] = {
    "retire_loop": lambda s: "retired",
    "retire_no_loop": lambda s: "retired",
    "reset": lambda s: "idle",
    "stop": lambda s: "stopped",
    "destroy": lambda s: "destroyed",
    "recycle": lambda s: "attached" if s == "attached" else "idle",
    "recover": lambda s: "idle",
}


@pytest.mark.parametrize("op", OPERATIONS, ids=lambda o: o.name)
@pytest.mark.parametrize("start", _STATES)
def test_lifecycle_operations_table(op: Op, start: str) -> None:
    d = driver_in(start)
    if start not in op.allowed:
        assert_refused(d, op.command, start, _REFUSED_TARGET[op.name](start))
        return
    non_terminal = len(d.state.non_terminal_ids())
    decision = d.run(op.command)
    assert d.state.observed_state(d.attached).value == op.result(start)
    if op.report is not None:
        assert decision.reply == op.report(non_terminal)
    # Every state change the operation emitted is a legal move of the table.
    for env in decision.events:
        ev = env.event
        if ev.event_code == "runtime.state_changed":
            change = state_change(ev)
            assert change.to.value in _SPEC_RUNTIME_TABLE[change.from_state.value]
    abandon_kind = {
        "retire_no_loop": AK.RETIRED,
        "reset": AK.RESET,
        "stop": AK.STOPPED,
        "destroy": AK.DESTROYED,
    }
    if op.name in abandon_kind:
        assert d.state.non_terminal_ids() == []
        assert not d.state.queue and not d.state.steer_queue
        assert d.state.run is None
    if op.name == "retire_loop":
        assert len(d.state.non_terminal_ids()) == non_terminal  # nothing abandoned, work drains


@pytest.mark.parametrize("command", [Reset(), Recycle()], ids=["reset", "recycle"])
def test_reset_and_recycle_from_retired_with_an_executor_take_legal_moves(command: Any) -> None:
    """The table has no retired -> attached: the session passes through idle, and the last
    event names the state the host then sees (attached, API.md)."""
    d = driver_in("retired")
    d.attached = True
    decision = d.run(command)
    changes = [
        state_change(e.event)
        for e in decision.events
        if e.event.event_code == "runtime.state_changed"
    ]
    moves = [(ev.from_state, ev.to) for ev in changes]
    assert moves == [(S.RETIRED, S.IDLE), (S.IDLE, S.ATTACHED)]
    assert d.state.observed_state(True) is S.ATTACHED
    assert d.state.phase is S.IDLE  # the persisted phase never records attached
    assert fold(d.log, session_id=SESSION) == d.state


def test_retire_is_idempotent_from_retired() -> None:
    d = driver_in("retired")
    decision = d.run(Retire(loop_attached=True))
    assert d.codes(decision) == []
    assert decision.reply == RetireReport(inputs_abandoned=0, inputs_pending_drain=2)


def test_retire_while_running_lets_the_run_finish() -> None:
    d = driver_in("running")
    assert d.state.run is not None
    run_id = d.state.run.run_id
    d.run(Retire(loop_attached=True))
    assert d.state.phase is S.RETIRED
    assert d.state.run is not None  # current run continues to completion
    decision = d.run(CompleteRun(run_id))
    assert "runtime.state_changed" not in d.codes(decision)  # stays retired
    assert d.state.phase is S.RETIRED
    assert wants_run(d.state)  # q2 still drains


def test_retire_no_loop_while_running_cancels_the_run() -> None:
    d = driver_in("running")
    decision = d.run(Retire(loop_attached=False))
    assert d.codes(decision)[0] == "run.cancelled"
    assert d.state.run is None
    for row in d.state.inputs.values():
        assert row.terminal_outcome == abandoned_with(AK.RETIRED)


def test_stop_while_running_cancels_run_and_abandons_everything() -> None:
    d = driver_in("running")
    decision = d.run(Stop())
    assert d.codes(decision)[0] == "run.cancelled"
    assert decision.reply == StopReport(inputs_abandoned=2)
    assert d.state.phase is S.STOPPED
    assert all(r.terminal_outcome == abandoned_with(AK.STOPPED) for r in d.state.inputs.values())


def test_recycle_requeues_staged_and_reports_transferred() -> None:
    d = driver_in("retired")
    decision = d.run(Recycle())
    assert decision.reply == RecycleReport(inputs_transferred=2)
    assert d.state.phase is S.IDLE
    assert "topology.runtime_recycled" in d.codes(decision)
    assert len(d.state.queue) == 2


def test_recycle_of_a_retired_session_draining_a_run() -> None:
    """Recycle cancels the draining run: staged inputs go back to the queue, applied ones
    (their boundary receipt is in the log) are consumed instead of being left with no run."""
    d = Driver()
    applied, steer, queued = prompt("a"), peer(lane=HandlingMode.STEER), prompt("q")
    d.accept(applied)
    run_id = d.start()
    d.boundary(run_id)
    d.accept(steer)  # accepted during the run: queued, not staged
    d.accept(queued)
    d.run(Retire(loop_attached=True))
    decision = d.run(Recycle())
    assert decision.reply == RecycleReport(inputs_transferred=3)
    assert d.phase_of(applied.header.id) == "consumed"
    assert completion_outcome(d.state, applied.header.id) == CompletedWithoutResult()
    assert d.phase_of(queued.header.id) == "queued"
    assert d.state.run is None
    assert d.state.phase is S.IDLE
    assert d.codes(decision)[:2] == ["input.consumed", "run.cancelled"]
    late = d.run(CompleteRun(run_id))  # the cancelled run's late result is ignored
    assert late.events == []
    assert sorted(d.state.non_terminal_ids()) == sorted([steer.header.id, queued.header.id])
