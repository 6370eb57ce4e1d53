"""Silent intents and the admission overrides of RUNTIME_SPEC 6.2 (without wake, active
turn boundary, silent intent match), the pluggable policy, and reset clearing silent
intents (spec 14), on the pure decider. Cases from the Rust module ``silent_intent.rs``
and the machine tests ``meerkat_{reset,destroy,stop_runtime_executor}_clears_silent_intent_overrides``
and ``set_silent_intents_rejects_destroyed_session_with_machine_verdict`` (v0.8.18).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from meerkat_runtime.errors import RuntimeControlPlaneError
from meerkat_runtime.events import (
    AdmissionPlan,
    ApplyMode,
    ContinuationKind,
    DefaultPolicyTable,
    Destroy,
    HandlingMode,
    Input,
    InputKind,
    Policy,
    PolicySnapshot,
    PostAdmissionSignal,
    Reset,
    RetireReport,
    RoutingDisposition,
    RunApplyBoundary,
    SetSilentIntents,
    SilentIntentsSet,
    Stop,
    WakeMode,
    fold,
    matches_silent_intent,
    wants_run,
)
from meerkat_runtime.events.inputs import PeerMessage
from meerkat_runtime.events.session import (
    Accept,
    CompleteRun,
    Recover,
    Recycle,
    Retire,
    state_from_snapshot,
    state_to_snapshot,
)

from ._support import (
    Driver,
    continuation,
    external,
    flow_step,
    operation,
    peer,
    peer_progress,
    peer_request,
    peer_terminal,
    prompt,
)

Q, ST = HandlingMode.QUEUE, HandlingMode.STEER
SILENT = frozenset({"mob.peer_added", "probe.intent"})  # the Rust parity fixture's intents
TABLE = DefaultPolicyTable()


def every_input() -> list[Input]:
    """One input per row and requested lane of the table."""
    return [
        prompt(),
        prompt(lane=Q),
        prompt(lane=ST),
        flow_step(),
        flow_step(lane=ST),
        external(lane=Q),
        external(lane=ST),
        peer(PeerMessage()),
        peer(PeerMessage(), lane=ST),
        peer_request(),
        peer_request(lane=Q),
        peer_request(lane=ST),
        peer_progress(),
        peer_terminal(),
        peer_terminal(lane=Q),
        peer_terminal(lane=ST),
        continuation(lane=Q),
        continuation(lane=ST),
        continuation(kind=ContinuationKind.WORKGRAPH_ATTENTION),
        operation(),
    ]


def ids(inputs: list[Input]) -> list[str]:
    return [f"{i.kind}-{i.requested_handling_mode()}" for i in inputs]


# ================================================================ matches_silent_intent (silent_intent.rs)


def test_silent_intent_matches_request_intent() -> None:
    assert matches_silent_intent(
        peer_request("mob.peer_added"), ["mob.peer_added", "mob.peer_retired"]
    )


def test_non_matching_intent_not_silent() -> None:
    assert not matches_silent_intent(peer_request("custom.action"), ["mob.peer_added"])


def test_peer_message_not_silent() -> None:
    assert not matches_silent_intent(peer(PeerMessage()), ["mob.peer_added"])


def test_empty_silent_list_not_silent() -> None:
    assert not matches_silent_intent(peer_request("mob.peer_added"), [])


def test_prompt_input_not_silent() -> None:
    assert not matches_silent_intent(prompt("mob.peer_added"), ["mob.peer_added"])


def test_only_the_request_convention_carries_an_intent() -> None:
    # A progress or terminal response to a request never matches, whatever its text.
    for inp in (peer_progress(), peer_terminal(), peer(None)):
        assert not matches_silent_intent(inp, ["r-7", "hi", "mob.peer_added"])


def test_the_table_alone_knows_no_intent() -> None:
    """Rust regression_comms_runtime ``silent_intent_maps_to_request_with_wake`` and
    ``non_silent_intent_triggers_wake``: an intent is silent only through the session's
    set; resolved without the fact, a ``mob.peer_added`` request is an ordinary one."""
    for intent in ("mob.peer_added", "custom.action"):
        plan = TABLE.resolve(peer_request(intent), True)
        assert plan.decision.apply_mode is ApplyMode.STAGE_RUN_START
        assert plan.decision.wake_mode is WakeMode.WAKE_IF_IDLE
        assert plan.signal is PostAdmissionSignal.WAKE_LOOP


# ================================================================ overrides (6.2), every row


@pytest.mark.parametrize("inp", every_input(), ids=ids(every_input()))
@pytest.mark.parametrize("idle", [True, False], ids=["idle", "running"])
def test_without_wake_makes_the_wake_none_in_every_row(inp: Input, idle: bool) -> None:
    """6.2 "Without wake: wake becomes none in every row"; nothing else changes, and only a
    steer lane still requests immediate processing (the machine's ``request_immediate_processing``)."""
    plain = TABLE.resolve(inp, idle)
    quiet = TABLE.resolve(inp, idle, without_wake=True)
    assert quiet.decision == replace(plain.decision, wake_mode=WakeMode.NONE)
    assert quiet.semantics == plain.semantics
    steer = plain.signal is PostAdmissionSignal.REQUEST_IMMEDIATE_PROCESSING
    assert quiet.signal is (
        PostAdmissionSignal.REQUEST_IMMEDIATE_PROCESSING if steer else PostAdmissionSignal.NONE
    )


@pytest.mark.parametrize("inp", every_input(), ids=ids(every_input()))
def test_an_active_turn_boundary_counts_as_running_for_the_wake(inp: Input) -> None:
    """6.2 "Active turn boundary available counts as running for wake selection"."""
    running = TABLE.resolve(inp, False)
    assert TABLE.resolve(inp, True, active_turn_boundary=True) == running
    assert TABLE.resolve(inp, False, active_turn_boundary=True) == running


def test_the_active_boundary_changes_the_wake_of_the_rows_that_differ() -> None:
    """The cells where idle and running differ: the boundary picks the running one."""
    cases = {
        prompt(): (WakeMode.WAKE_IF_IDLE, WakeMode.NONE),
        peer(PeerMessage()): (WakeMode.WAKE_IF_IDLE, WakeMode.INTERRUPT_YIELDING),
        peer_request(): (WakeMode.WAKE_IF_IDLE, WakeMode.INTERRUPT_YIELDING),
        prompt(lane=ST): (WakeMode.WAKE_IF_IDLE, WakeMode.INTERRUPT_YIELDING),
        peer_terminal(lane=ST): (WakeMode.WAKE_IF_IDLE, WakeMode.INTERRUPT_YIELDING),
        continuation(kind=ContinuationKind.WORKGRAPH_ATTENTION): (
            WakeMode.WAKE_IF_IDLE,
            WakeMode.NONE,
        ),
        # A peer terminal response on its own row wakes even while running (6.1).
        peer_terminal(): (WakeMode.WAKE_IF_IDLE, WakeMode.WAKE_IF_IDLE),
    }
    for inp, (idle_wake, boundary_wake) in cases.items():
        assert TABLE.resolve(inp, True).decision.wake_mode is idle_wake, inp.kind
        got = TABLE.resolve(inp, True, active_turn_boundary=True).decision.wake_mode
        assert got is boundary_wake, inp.kind


@pytest.mark.parametrize("idle", [True, False], ids=["idle", "running"])
@pytest.mark.parametrize("lane", [None, Q], ids=["no-lane", "queue"])
def test_a_silent_request_on_the_queue_lane_wakes_nothing(
    idle: bool, lane: HandlingMode | None
) -> None:
    """6.2 "Silent intent match": wake none and no wake/interrupt signal."""
    inp = peer_request("mob.peer_added", lane=lane)
    plain = TABLE.resolve(inp, idle)
    silent = TABLE.resolve(inp, idle, silent_intent=True)
    assert silent.decision == replace(plain.decision, wake_mode=WakeMode.NONE)
    assert silent.semantics == plain.semantics
    assert silent.signal is PostAdmissionSignal.NONE
    assert silent.decision.apply_mode is ApplyMode.STAGE_RUN_START


@pytest.mark.parametrize("idle", [True, False], ids=["idle", "running"])
def test_a_silent_steer_request_falls_back_to_run_start(idle: bool) -> None:
    """6.2: with a steer lane the apply mode falls back to stage_run_start and the boundary
    to run_start; routing stays steer and immediate processing is still requested."""
    inp = peer_request("mob.peer_added", lane=ST)
    plain = TABLE.resolve(inp, idle)
    assert plain.decision.apply_mode is ApplyMode.STAGE_RUN_BOUNDARY  # what silence changes
    silent = TABLE.resolve(inp, idle, silent_intent=True)
    d, sem = silent.decision, silent.semantics
    assert d.apply_mode is ApplyMode.STAGE_RUN_START
    assert d.wake_mode is WakeMode.NONE
    assert d.routing_disposition is RoutingDisposition.STEER
    assert d == replace(
        plain.decision, apply_mode=ApplyMode.STAGE_RUN_START, wake_mode=WakeMode.NONE
    )
    assert sem is not None and plain.semantics is not None
    assert sem.boundary is RunApplyBoundary.RUN_START
    assert sem == replace(plain.semantics, boundary=RunApplyBoundary.RUN_START)
    assert silent.signal is PostAdmissionSignal.REQUEST_IMMEDIATE_PROCESSING
    assert silent.lane is ST


@pytest.mark.parametrize(
    "inp",
    [i for i in every_input() if i.kind is not InputKind.PEER_REQUEST],
    ids=ids([i for i in every_input() if i.kind is not InputKind.PEER_REQUEST]),
)
def test_a_silent_match_on_any_other_kind_matches_no_admission_rule(inp: Input) -> None:
    """6.2: "A silent match for any other kind matches no admission rule, so admission
    fails with an internal error"."""
    with pytest.raises(RuntimeControlPlaneError) as info:
        TABLE.resolve(inp, True, silent_intent=True)
    assert info.value.kind == "internal"


def test_the_defaults_are_the_plain_table() -> None:
    """6.2: resolve assumes no silent match, no active boundary and wake allowed."""
    for inp in every_input():
        for idle in (True, False):
            assert TABLE.resolve(inp, idle) == TABLE.resolve(
                inp, idle, silent_intent=False, without_wake=False, active_turn_boundary=False
            )


def test_the_default_table_is_a_policy() -> None:
    assert isinstance(TABLE, Policy)
    assert TABLE.version == 1


# ================================================================ on the decider


def silent_driver(**kw: Any) -> Driver:
    d = Driver(**kw)
    d.run(SetSilentIntents(SILENT))
    return d


def test_set_silent_intents_is_recorded_and_folded() -> None:
    d = Driver()
    d.accept(prompt())  # the session exists
    decision = d.run(SetSilentIntents(SILENT))
    assert d.codes(decision) == ["runtime.silent_intents_set"]
    ev = decision.events[0].event
    assert isinstance(ev, SilentIntentsSet) and ev.intents == ("mob.peer_added", "probe.intent")
    assert d.state.silent_intents == SILENT
    assert fold(d.log, session_id=d.session_id).silent_intents == SILENT
    # The same set again writes nothing; an empty one clears.
    assert d.run(SetSilentIntents(SILENT)).events == []
    d.run(SetSilentIntents(frozenset()))
    assert d.state.silent_intents == frozenset()
    assert fold(d.log, session_id=d.session_id).silent_intents == frozenset()


def test_a_silent_request_is_recorded_with_wake_none_and_starts_no_run() -> None:
    d = silent_driver()
    out = d.accept(peer_request("mob.peer_added"))
    st = d.state.inputs[out.input_id]
    assert st.policy is not None and st.policy.decision.wake_mode is WakeMode.NONE
    assert d.phase_of(out.input_id) == "queued"
    assert not d.state.wake_pending
    assert not wants_run(d.state)
    # The same request with another intent wakes the session as any peer request does.
    loud = d.accept(peer_request("custom.action"))
    lst = d.state.inputs[loud.input_id]
    assert lst.policy is not None and lst.policy.decision.wake_mode is WakeMode.WAKE_IF_IDLE
    assert wants_run(d.state)


def test_the_next_wake_drains_the_silent_request_first() -> None:
    """A silent request waits in its queue; the run something else wakes takes it (FIFO),
    and the waking input runs next (the loop drains its queue once woken)."""
    d = silent_driver()
    silent = d.accept(peer_request("mob.peer_added")).input_id
    loud = d.accept(prompt("wake up")).input_id
    run1 = d.start()
    assert d.state.inputs[silent].last_run_id == run1
    assert d.phase_of(loud) == "queued"
    d.run(CompleteRun(run1))
    assert wants_run(d.state)
    run2 = d.start()
    assert d.state.inputs[loud].last_run_id == run2


def test_a_silent_request_accepted_during_a_run_is_drained_after_it() -> None:
    d = silent_driver()
    d.accept(prompt())
    run = d.start()
    silent = d.accept(peer_request("mob.peer_added")).input_id
    rec = d.state.inputs[silent].policy
    assert rec is not None and rec.decision.wake_mode is WakeMode.NONE
    d.run(CompleteRun(run))
    assert wants_run(d.state)  # the loop keeps draining, as for a prompt queued during a run


def test_a_silent_steer_request_waits_in_the_steer_lane() -> None:
    d = silent_driver()
    out = d.accept(peer_request("mob.peer_added", lane=ST))
    assert out.input_id in d.state.steer_queue
    assert not wants_run(d.state)


def test_without_wake_on_the_decider() -> None:
    d = Driver()
    out = d.run(Accept(prompt(), wake=False)).reply
    rec = d.state.inputs[out.input_id].policy
    assert rec is not None and rec.decision.wake_mode is WakeMode.NONE
    assert not wants_run(d.state)
    d.accept(prompt("now"))
    assert wants_run(d.state)


def test_the_unwoken_queue_survives_a_snapshot_and_a_fold() -> None:
    d = silent_driver()
    silent = d.accept(peer_request("mob.peer_added")).input_id
    restored = state_from_snapshot(state_to_snapshot(d.state))
    assert restored.silent_intents == SILENT
    assert restored.unwoken == {silent}
    assert not wants_run(restored)
    folded = fold(d.log, session_id=d.session_id)
    assert folded.unwoken == {silent} and folded.silent_intents == SILENT
    assert state_to_snapshot(folded) == state_to_snapshot(d.state)


def test_a_snapshot_written_before_silent_intents_reads_as_none() -> None:
    d = Driver()
    d.accept(prompt())
    snap = state_to_snapshot(d.state)
    del snap["silent_intents"], snap["unwoken"]
    st = state_from_snapshot(snap)
    assert st.silent_intents == frozenset() and st.unwoken == set()


def test_a_cold_recovery_leaves_a_silent_request_waiting() -> None:
    d = silent_driver()
    d.accept(peer_request("mob.peer_added"))
    d.run(Recover(cold=True))
    assert not wants_run(d.state)


def test_reset_clears_silent_intents() -> None:
    """Spec 14 reset row: "idle; silent intents cleared" (meerkat_reset_clears_silent_intent_overrides)."""
    d = silent_driver()
    decision = d.run(Reset())
    assert "runtime.silent_intents_set" in d.codes(decision)
    assert d.state.silent_intents == frozenset()
    assert fold(d.log, session_id=d.session_id).silent_intents == frozenset()
    # Cleared, a request with that intent wakes the session again.
    out = d.accept(peer_request("mob.peer_added"))
    rec = d.state.inputs[out.input_id].policy
    assert rec is not None and rec.decision.wake_mode is WakeMode.WAKE_IF_IDLE


def test_reset_without_silent_intents_writes_no_clearing_event() -> None:
    d = Driver()
    d.accept(prompt())
    assert "runtime.silent_intents_set" not in d.codes(d.run(Reset()))


@pytest.mark.parametrize("command", [Stop(), Destroy()], ids=["stop", "destroy"])
def test_stop_and_destroy_clear_silent_intents(command: Any) -> None:
    """The Rust machine clears them on stop and destroy too (its parity tests)."""
    d = silent_driver()
    d.run(command)
    assert d.state.silent_intents == frozenset()
    assert fold(d.log, session_id=d.session_id).silent_intents == frozenset()


@pytest.mark.parametrize("command", [Stop(), Destroy()], ids=["stopped", "destroyed"])
def test_silent_intents_are_refused_on_a_stopped_or_destroyed_session(command: Any) -> None:
    """set_silent_intents_rejects_destroyed_session_with_machine_verdict; the machine has
    no SetSilentIntents transition from stopped either."""
    d = Driver()
    d.accept(prompt())
    d.run(command)
    before = len(d.log)
    with pytest.raises(RuntimeControlPlaneError) as info:
        d.run(SetSilentIntents(SILENT))
    assert info.value.kind == "invalid_state"
    assert len(d.log) == before


def test_silent_intents_may_be_set_while_running_or_retired() -> None:
    d = Driver()
    d.accept(prompt())
    d.start()
    d.run(SetSilentIntents(SILENT))
    assert d.state.silent_intents == SILENT
    r = Driver()
    r.accept(prompt())
    assert isinstance(r.run(Retire(loop_attached=True)).reply, RetireReport)
    r.run(SetSilentIntents(SILENT))
    assert r.state.silent_intents == SILENT


# ================================================================ a pluggable policy


class QuietPrompts(DefaultPolicyTable):
    """A policy of version 7: prompts never wake (they wait for something else)."""

    version = 7

    def resolve(self, input: Input, runtime_idle: bool, **facts: bool) -> AdmissionPlan:
        plan = super().resolve(input, runtime_idle, **facts)
        if input.kind is InputKind.PROMPT:
            return replace(
                plan,
                decision=replace(plan.decision, wake_mode=WakeMode.NONE),
                signal=PostAdmissionSignal.NONE,
            )
        return plan


def test_the_policy_version_is_recorded_with_each_decision() -> None:
    d = Driver(policy=QuietPrompts())
    out = d.accept(prompt())
    snap = d.state.inputs[out.input_id].policy
    assert isinstance(snap, PolicySnapshot)
    assert snap.version == 7 and snap.decision.policy_version == 7
    assert snap.decision.wake_mode is WakeMode.NONE
    assert not wants_run(d.state)


class Delegating:
    """A policy that is no DefaultPolicyTable: it hands the table's plans on unchanged,
    so its decisions say version 1 while it is version 9."""

    version = 9

    def __init__(self) -> None:
        self.table = DefaultPolicyTable()

    def resolve(
        self,
        input: Input,
        runtime_idle: bool,
        *,
        silent_intent: bool = False,
        without_wake: bool = False,
        active_turn_boundary: bool = False,
    ) -> AdmissionPlan:
        return self.table.resolve(
            input,
            runtime_idle,
            silent_intent=silent_intent,
            without_wake=without_wake,
            active_turn_boundary=active_turn_boundary,
        )


def test_the_runtime_stamps_the_policy_version_whatever_the_decision_says() -> None:
    policy = Delegating()
    assert isinstance(policy, Policy)
    assert policy.resolve(prompt(), True).decision.policy_version == 1
    d = Driver(policy=policy)
    out = d.accept(prompt())
    snap = d.state.inputs[out.input_id].policy
    assert snap is not None and snap.version == 9 and snap.decision.policy_version == 9
    assert out.plan is not None and out.plan.decision.policy_version == 9


def test_a_subclass_of_the_table_stamps_its_own_version() -> None:
    plan = QuietPrompts().resolve(peer_request(), True)
    assert plan.decision.policy_version == 7
    assert TABLE.resolve(peer_request(), True).decision.policy_version == 1


def test_folding_never_asks_the_policy_again() -> None:
    """A log decided under one policy folds to the same state whatever the runtime's
    policy is now: the recorded decisions stay as recorded, and only new accepts use the
    new policy."""
    d = Driver(policy=QuietPrompts())
    first = d.accept(prompt()).input_id
    folded = fold(d.log, session_id=d.session_id)
    assert state_to_snapshot(folded) == state_to_snapshot(d.state)
    later = Driver(policy=DefaultPolicyTable(), ids=d.ids, now=d.now)
    later.state, later.log = folded, list(d.log)
    second = later.accept(prompt()).input_id
    old, new = later.state.inputs[first].policy, later.state.inputs[second].policy
    assert old is not None and new is not None
    assert (old.version, old.decision.wake_mode) == (7, WakeMode.NONE)
    assert (new.version, new.decision.wake_mode) == (1, WakeMode.WAKE_IF_IDLE)
    # Re-queued by a cold recovery, the first input keeps its recorded lane and wake.
    later.run(Recover(cold=True))
    assert later.state.inputs[first].policy == old


def test_a_policy_that_raises_fails_the_accept_and_writes_nothing() -> None:
    class Broken(DefaultPolicyTable):
        def resolve(self, input: Input, runtime_idle: bool, **facts: bool) -> AdmissionPlan:
            raise RuntimeControlPlaneError("internal", "no rule")

    d = Driver(policy=Broken())
    with pytest.raises(RuntimeControlPlaneError):
        d.accept(prompt())
    assert d.log == [] and d.state.inputs == {}


def test_recycle_wakes_the_loop_for_inputs_waiting_for_a_wake() -> None:
    """Spec 14 recycle row: "fresh driver, same runtime id; loop woken"."""
    d = silent_driver()
    silent = d.accept(peer_request("mob.peer_added")).input_id
    assert not wants_run(d.state)
    d.run(Recycle())
    assert d.state.unwoken == set() and wants_run(d.state)
    assert fold(d.log, session_id=d.session_id).unwoken == set()
    assert d.phase_of(silent) == "queued"
