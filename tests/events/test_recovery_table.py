"""The recovery table (RUNTIME_SPEC 16), every row, written out here from the spec."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest

from meerkat_runtime.events import (
    AbandonedOutcome,
    CompleteRun,
    HandlingMode,
    Input,
    InputAbandonReason,
    InputDurability,
    Recover,
    RecoveryReport,
    Retire,
    SessionState,
    SystemOrigin,
    fold,
)

from ._scenario import (
    AK,
    S,
    abandoned_with,
    accepted_only_log,
    assert_refused,
    driver_in,
    phase,
    state_change,
)
from ._support import (
    SESSION,
    Driver,
    continuation,
    peer,
    prompt,
)

# ================================================================ recovery table (section 16)


@dataclass
class Recovered:
    phase: str
    requeued: bool
    recovered: bool
    abandoned: bool = False


def _input_in(
    phase: str, *, durability: InputDurability = InputDurability.DURABLE
) -> tuple[Driver, uuid.UUID]:
    """A session whose one input (plus nothing else) sits in ``phase``, run still in flight."""
    d = Driver()
    p = prompt(durability=durability)
    if phase == "accepted":
        _, log = accepted_only_log(p)
        d.state = fold(log, session_id=SESSION)
        d.log = log
        return d, p.header.id
    d.accept(p)
    if phase == "queued":
        return d, p.header.id
    run_id = d.start()
    if phase == "staged":
        return d, p.header.id
    d.boundary(run_id)
    if phase == "applied_pending_consumption":
        return d, p.header.id
    d.run(CompleteRun(run_id))
    assert phase == "consumed"
    return d, p.header.id


RECOVERY_TABLE = [
    # persisted phase, cold?, expected
    ("accepted", True, Recovered("queued", requeued=True, recovered=True)),
    ("queued", True, Recovered("queued", requeued=False, recovered=True)),
    ("staged", True, Recovered("queued", requeued=True, recovered=True)),
    ("applied_pending_consumption", True, Recovered("consumed", requeued=False, recovered=True)),
    ("consumed", True, Recovered("consumed", requeued=False, recovered=False)),
    ("accepted", False, Recovered("queued", requeued=True, recovered=True)),
    ("queued", False, Recovered("queued", requeued=False, recovered=True)),
    ("consumed", False, Recovered("consumed", requeued=False, recovered=False)),
]


@pytest.mark.parametrize(("phase", "cold", "expected"), RECOVERY_TABLE, ids=str)
def test_recovery_table_16(phase: str, cold: bool, expected: Recovered) -> None:
    live, iid = _input_in(phase)
    d = Driver()
    d.state = fold(live.log, session_id=SESSION)  # the log a new process folds
    report = d.run(Recover(cold=cold)).reply
    assert isinstance(report, RecoveryReport)
    assert d.phase_of(iid) == expected.phase
    assert report.inputs_requeued == int(expected.requeued)
    assert report.inputs_recovered == int(expected.recovered)
    assert report.inputs_abandoned == int(expected.abandoned)
    if expected.phase == "queued":
        assert d.state.queue.input_ids() == [iid]
        assert d.state.inputs[iid].last_run_id is None


def test_recovery_16_applied_without_observation_unchanged_in_process() -> None:
    """In process (ephemeral driver / recycle) an applied input keeps its phase."""
    d, iid = _input_in("applied_pending_consumption")
    d.run(Retire(loop_attached=True))  # leaves running so an in-process recover is allowed
    report = d.run(Recover()).reply
    assert report == RecoveryReport(inputs_recovered=1, inputs_abandoned=0, inputs_requeued=0)
    assert d.phase_of(iid) == "applied_pending_consumption"


@pytest.mark.parametrize("phase", ["accepted", "queued", "staged", "applied_pending_consumption"])
def test_recovery_16_cold_abandons_ephemeral_inputs(phase: str) -> None:
    live, iid = _input_in(phase, durability=InputDurability.EPHEMERAL)
    d = Driver()
    d.state = fold(live.log, session_id=SESSION)
    report = d.run(Recover(cold=True)).reply
    assert report.inputs_abandoned == 1
    assert report.inputs_recovered == 0
    assert d.state.inputs[iid].terminal_outcome == abandoned_with(AK.CANCELLED)
    assert report.details  # the report says what happened


@pytest.mark.parametrize("durability", [InputDurability.DURABLE, InputDurability.DERIVED])
def test_recovery_16_cold_keeps_durable_and_derived(durability: InputDurability) -> None:
    if durability is InputDurability.DERIVED:
        inp: Input = continuation(source=SystemOrigin(), durability=durability)
    else:
        inp = prompt(durability=durability)
    live = Driver()
    live.accept(inp)
    d = Driver()
    d.state = fold(live.log, session_id=SESSION)
    report = d.run(Recover(cold=True)).reply
    assert (report.inputs_recovered, report.inputs_abandoned) == (1, 0)


def test_recovery_16_requeued_inputs_keep_admission_order_and_lane() -> None:
    live = Driver()
    a, b, c = prompt("a"), prompt("b"), prompt("c")
    s = peer(lane=HandlingMode.STEER)
    for p in (a, b, c, s):
        live.accept(p)
    live.start()  # stages a (queue head) and s (steer queue)
    d = Driver()
    d.state = fold(live.log, session_id=SESSION)
    d.run(Recover(cold=True))
    assert d.state.queue.input_ids() == [a.header.id, b.header.id, c.header.id]
    assert d.state.steer_queue.input_ids() == [s.header.id]


def test_recovery_16_cold_max_attempts_rule_for_crash_loops() -> None:
    """Design choice: an input that was staged three times when its process died is abandoned."""
    live = Driver()
    p = prompt()
    live.accept(p)
    log = list(live.log)
    for _ in range(4):  # three attempts die with their process; the fourth start sees it
        d = Driver()
        d.state = fold(log, session_id=SESSION)
        d.log = log
        d.run(Recover(cold=True))
        if d.phase_of(p.header.id) == "abandoned":
            break
        d.start()
        log = d.log
    assert d.state.inputs[p.header.id].terminal_outcome == AbandonedOutcome(
        reason=InputAbandonReason.max_attempts_exhausted(3)
    )


def test_recovery_16_recovery_count_is_left_unchanged() -> None:
    live, iid = _input_in("staged")
    d = Driver()
    d.state = fold(live.log, session_id=SESSION)
    d.run(Recover(cold=True))
    assert d.state.inputs[iid].recovery_count == 0


@pytest.mark.parametrize("phase", ["retired", "stopped"])
def test_recovery_16_coarse_state_survives_a_restart(phase: str) -> None:
    live = driver_in(phase)
    d = Driver()
    d.state = fold(live.log, session_id=SESSION)
    d.run(Recover(cold=True))
    assert d.state.phase.value == phase


def test_recovery_16_destroyed_stays_destroyed() -> None:
    live = driver_in("destroyed")
    d = Driver()
    d.state = fold(live.log, session_id=SESSION)
    assert_refused(d, Recover(cold=True), "destroyed", "idle")
    assert_refused(d, Recover(cold=True, reregister=True), "destroyed", "idle")


@pytest.mark.parametrize("attached", [False, True])
def test_recovery_16_stopped_reregistered_only_explicitly(attached: bool) -> None:
    d = driver_in("stopped")
    d.attached = attached
    d.run(Recover(cold=True))
    assert d.state.phase is S.STOPPED
    decision = d.run(Recover(reregister=True))
    assert d.state.observed_state(attached) is (S.ATTACHED if attached else S.IDLE)
    assert [state_change(e.event).to for e in decision.events] == [
        S.ATTACHED if attached else S.IDLE
    ]
    assert d.accept(prompt()).kind == "accepted"


def test_recovery_16_running_recovers_as_pre_run_phase_and_persisted_state_never_attached() -> None:
    live = Driver(attached=True)
    live.accept(prompt())
    live.start()
    d = Driver()
    d.state = fold(live.log, session_id=SESSION)
    assert phase(d) is S.RUNNING
    d.run(Recover(cold=True))
    assert phase(d) is S.IDLE
    folded = fold(live.log, session_id=SESSION)
    assert folded.phase is not S.ATTACHED


def test_in_process_recover_refused_while_running() -> None:
    d = driver_in("running")
    assert_refused(d, Recover(), "running", "idle")


def test_empty_session_has_no_created_event_until_something_happens() -> None:
    d = Driver()
    assert d.run(Recover()).events == []
    assert not d.state.created
    fresh = SessionState(session_id=SESSION)
    assert fresh.phase is S.IDLE and fresh.version == 0
