"""RUNTIME_SPEC section 18 scenarios (pure-core part) and the spec's tables.

Scenarios are driven through ``meerkat_runtime.events.session`` with a fixed
clock and deterministic ids (see ``_support.Driver``). Where a scenario needs
a real actor (waiters, services), the pure part is tested: the completion
outcome a waiter would receive is ``completion_outcome(state, id)``.

The tables (policy 6.1/6.2, input lifecycle 5, runtime states 11, lifecycle
operations 14, recovery 16) are written out here from the spec, independently
of the tables in the package, and every cell is checked.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from meerkat_runtime.errors import (
    InvalidInput,
    RuntimeControlPlaneError,
    RuntimeStateTransitionError,
)
from meerkat_runtime.events import (
    INPUT_TRANSITIONS,
    TRANSITIONS,
    Abandoned,
    AbandonedOutcome,
    AbandonedWithError,
    AbandonKind,
    Accept,
    ApplyMode,
    BlocksRenderable,
    CancelRun,
    CoalescedOutcome,
    Completed,
    CompletedWithoutResult,
    CompleteRun,
    ConsumedOutcome,
    ConsumePoint,
    ContinuationKind,
    ConversationAppend,
    ConversationAppendRole,
    ConversationContextAppend,
    DefaultPolicyTable,
    Destroy,
    DestroyReport,
    DurabilityViolation,
    ExternalEventInput,
    ExternalOrigin,
    FailRun,
    FlowOrigin,
    FlowStepInput,
    HandlingMode,
    ImmediateAppend,
    ImmediateContextAppend,
    Input,
    InputAbandonReason,
    InputDurability,
    InputKind,
    InputLifecycleState,
    InputQueue,
    InputState,
    InputTerminalOutcome,
    InputTransitionError,
    JsonRenderable,
    NotReady,
    OperatorOrigin,
    PeerHandlingModeInvalid,
    PeerInput,
    PeerMessage,
    PeerOrigin,
    PeerRequest,
    PeerResponseTerminalInvalid,
    PostAdmissionSignal,
    PromptInput,
    QueueMode,
    Recover,
    RecoveryReport,
    Recycle,
    RecycleReport,
    ReferenceRenderable,
    RejectReason,
    Reset,
    ResetReport,
    ResponseTerminalStatus,
    Retire,
    RetireReport,
    RoutingDisposition,
    RunApplyBoundary,
    RunError,
    RunPrimitive,
    RuntimeExecutionKind,
    RuntimeState,
    RuntimeStateChangeEvent,
    RuntimeTerminated,
    RuntimeTurnMetadata,
    SenderTaint,
    SessionState,
    StagedRunInput,
    Standalone,
    StartRun,
    Stop,
    StopReport,
    SupersededOutcome,
    Supersedes,
    SystemOrigin,
    TextRenderable,
    WakeMode,
    check_supersession,
    check_transition,
    completion_outcome,
    create_aggregate_input,
    detached_background_op_completed,
    evolve,
    fold,
    generated_default_policy_version,
    is_coalescing_eligible,
    peer_terminal_response,
    wants_run,
    wire,
)
from meerkat_runtime.events.completion import TurnTerminalCauseKind
from meerkat_runtime.events.policy import PeerTerminalApplyIntent
from meerkat_runtime.events.runtime_event import (
    InputQueued,
    InputStaged,
    RuntimeEvent,
    RuntimeEventEnvelope,
)
from meerkat_runtime.events.session import state_to_snapshot

from ._support import (
    NOW,
    PEER_UUID,
    SESSION,
    Driver,
    continuation,
    external,
    fixed_uuid,
    flow_step,
    header,
    next_run_id,
    operation,
    peer,
    peer_progress,
    peer_request,
    peer_terminal,
    prompt,
)

L = InputLifecycleState
S = RuntimeState
AK = AbandonKind


def abandoned_with(kind: AbandonKind) -> AbandonedOutcome:
    return AbandonedOutcome(reason=InputAbandonReason(kind))


def phase(d: Driver) -> RuntimeState:
    """``d.state.phase``, read through a call: mypy would keep an earlier
    ``assert d.state.phase is X`` narrowing across the commands that move the phase."""
    return d.state.phase


def wake_pending(d: Driver) -> bool:
    """``d.state.wake_pending``, read through a call (see ``phase``)."""
    return d.state.wake_pending


def state_change(event: RuntimeEvent) -> RuntimeStateChangeEvent:
    """The event, which must be a ``runtime.state_changed`` one."""
    assert isinstance(event, RuntimeStateChangeEvent), event
    return event


def assert_refused(
    d: Driver, command: Any, frm: str, to: str, *, attached: bool | None = None
) -> None:
    """The command raises the runtime-state error, emits nothing and changes nothing."""
    before = d.snapshot()
    log_len = len(d.log)
    with pytest.raises(RuntimeStateTransitionError) as info:
        d.run(command, attached=attached)
    assert str(info.value) == f"Invalid runtime state transition: {frm} -> {to}"
    assert (info.value.from_state, info.value.to_state) == (frm, to)
    assert d.snapshot() == before
    assert len(d.log) == log_len


# ================================================================ section 18 scenarios


def test_scenario_01_idle_accept_prompt_queues_and_wakes() -> None:
    d = Driver()
    p = prompt("hello")
    decision = d.run(Accept(p))
    reply = decision.reply
    assert reply.kind == "accepted"
    assert reply.input_id == p.header.id
    assert d.phase_of(p.header.id) == "queued"
    assert reply.plan.decision.wake_mode is WakeMode.WAKE_IF_IDLE
    assert reply.plan.signal is PostAdmissionSignal.WAKE_LOOP
    assert d.codes(decision) == ["topology.runtime_created", "input.accepted", "input.queued"]
    assert d.state.queue.input_ids() == [p.header.id]
    assert wants_run(d.state)
    # A second accept is not the session's first event: no runtime_created again.
    assert d.codes(d.run(Accept(prompt("again")))) == ["input.accepted", "input.queued"]


def test_scenario_02_running_accept_prompt_queues_without_wake() -> None:
    d = Driver()
    d.accept(prompt("first"))
    run_id = d.start()
    run_before = state_to_snapshot(d.state)["run"]
    p = prompt("second")
    decision = d.run(Accept(p))
    assert decision.reply.kind == "accepted"
    assert d.phase_of(p.header.id) == "queued"
    assert decision.reply.plan.decision.wake_mode is WakeMode.NONE
    assert decision.reply.plan.signal is PostAdmissionSignal.NONE
    assert d.codes(decision) == ["input.accepted", "input.queued"]  # the run is not touched
    assert d.state.phase is S.RUNNING
    assert d.state.run is not None and d.state.run.run_id == run_id
    assert state_to_snapshot(d.state)["run"] == run_before
    assert not d.state.wake_pending


def test_scenario_03_idle_accept_peer_terminal_wakes() -> None:
    d = Driver()
    t = peer_terminal()
    reply = d.accept(t)
    assert reply.kind == "accepted"
    assert reply.plan is not None and reply.plan.semantics is not None
    assert d.phase_of(t.header.id) == "queued"
    assert reply.plan.decision.wake_mode is WakeMode.WAKE_IF_IDLE
    assert (
        reply.plan.semantics.peer_response_terminal_apply_intent
        is PeerTerminalApplyIntent.APPEND_CONTENT_AND_RUN
    )
    assert d.state.queue.input_ids() == [t.header.id]
    assert d.state.wake_pending


def test_scenario_04_running_accept_peer_terminal_raises_wake_flag() -> None:
    d = Driver()
    d.accept(prompt())
    run_id = d.start()
    assert not wake_pending(d)  # a run start consumes the pending wake
    t = peer_terminal()
    reply = d.accept(t)
    assert reply.kind == "accepted"
    assert reply.plan is not None
    assert reply.plan.decision.wake_mode is WakeMode.WAKE_IF_IDLE
    assert wake_pending(d)  # raised even though a run is active
    d.run(CompleteRun(run_id))
    assert wants_run(d.state)  # the loop runs it after the current run


def test_scenario_05_idle_accept_peer_progress_does_not_wake() -> None:
    d = Driver()
    p = peer_progress()
    reply = d.accept(p)
    assert reply.kind == "accepted"
    assert reply.plan is not None
    assert reply.plan.decision.wake_mode is WakeMode.NONE
    assert reply.plan.decision.apply_mode is ApplyMode.STAGE_RUN_BOUNDARY
    assert reply.plan.signal is PostAdmissionSignal.NONE
    assert d.state.steer_queue.input_ids() == [p.header.id]
    assert not d.state.wake_pending
    assert not wants_run(d.state)  # never starts a run on its own
    # ... but it joins the next run that starts.
    d.accept(prompt())
    run_id = d.start()
    assert d.phase_of(p.header.id) == "staged"
    assert d.state.inputs[p.header.id].last_run_id == run_id


def test_scenario_06_idle_accept_detached_continuation_requests_immediate_processing() -> None:
    d = Driver()
    c = detached_background_op_completed()
    assert c.header.source == SystemOrigin()
    assert c.header.durability is InputDurability.DERIVED
    assert (c.header.visibility.transcript_eligible, c.header.visibility.operator_eligible) == (
        False,
        False,
    )
    assert (c.reason, c.continuation_kind, c.handling_mode) == (
        "detached_background_op_completed",
        ContinuationKind.ORDINARY,
        HandlingMode.STEER,
    )
    reply = d.accept(c)
    assert reply.kind == "accepted"
    assert reply.plan is not None
    assert reply.plan.signal is PostAdmissionSignal.REQUEST_IMMEDIATE_PROCESSING
    assert len(d.state.steer_queue) == 1
    assert len(d.state.queue) == 0
    assert wants_run(d.state)
    run_id = d.start()
    primitive = d.state.run.primitive if d.state.run else None
    assert isinstance(primitive, StagedRunInput)
    assert primitive.boundary is RunApplyBoundary.RUN_CHECKPOINT  # no queue head: a checkpoint
    assert primitive.turn_metadata is not None
    assert primitive.turn_metadata.execution_kind is RuntimeExecutionKind.RESUME_PENDING
    assert d.state.inputs[c.header.id].last_run_id == run_id


def test_scenario_07_same_idempotency_key_deduplicates() -> None:
    d = Driver()
    first = prompt("one", key="dup")
    second = prompt("two", key="dup")
    r1 = d.accept(first)
    decision = d.run(Accept(second))
    r2 = decision.reply
    assert r1.kind == "accepted"
    assert r2.kind == "deduplicated"
    assert r2.input_id == second.header.id
    assert r2.existing_id == first.header.id
    assert d.codes(decision) == ["input.deduplicated"]
    assert second.header.id not in d.state.inputs
    assert d.state.idempotency["dup"] == first.header.id
    assert d.state.queue.input_ids() == [first.header.id]
    # The key survives terminal states: a completed input still deduplicates.
    run_id = d.start()
    d.run(CompleteRun(run_id))
    assert d.phase_of(first.header.id) == "consumed"
    third = prompt("three", key="dup")
    r3 = d.accept(third)
    assert (r3.kind, r3.existing_id) == ("deduplicated", first.header.id)
    assert d.state.idempotency["dup"] == first.header.id


def test_scenario_07_same_input_presented_twice_never_overwrites_the_ledger() -> None:
    d = Driver()
    p = prompt("once")
    d.accept(p)
    before = d.state.inputs[p.header.id]
    reply = d.accept(p)
    assert (reply.kind, reply.existing_id) == ("deduplicated", p.header.id)
    assert d.state.inputs[p.header.id] == before


def test_scenario_08_prompt_with_system_origin_derived_rejected() -> None:
    d = Driver()
    decision = d.run(Accept(prompt(source=SystemOrigin(), durability=InputDurability.DERIVED)))
    assert decision.reply.kind == "rejected"
    assert decision.reply.reason == DurabilityViolation(
        detail="Derived durability forbidden for prompt"
    )
    assert decision.events == []
    assert d.state.inputs == {}


@pytest.mark.parametrize(
    ("make", "detail"),
    [
        (
            lambda: prompt(durability=InputDurability.DERIVED),
            "External ingress cannot submit derived inputs",
        ),
        (
            lambda: peer(durability=InputDurability.DERIVED),
            "External ingress cannot submit derived inputs",
        ),
        (
            lambda: external(durability=InputDurability.DERIVED),
            "External ingress cannot submit derived inputs",
        ),
        (
            lambda: flow_step(durability=InputDurability.DERIVED),
            "Derived durability forbidden for flow_step",
        ),
        (
            lambda: peer_request(source=SystemOrigin(), durability=InputDurability.DERIVED),
            "Derived durability forbidden for peer_request",
        ),
        (
            lambda: peer(source=SystemOrigin(), durability=InputDurability.DERIVED),
            "Derived durability forbidden for peer_message",
        ),
        (
            lambda: peer_terminal(source=SystemOrigin(), durability=InputDurability.DERIVED),
            "Derived durability forbidden for peer_response_terminal",
        ),
    ],
)
def test_scenario_08_durability_rules(make: Callable[[], Input], detail: str) -> None:
    reply = Driver().accept(make())
    assert reply.kind == "rejected"
    assert reply.reason == DurabilityViolation(detail=detail)


@pytest.mark.parametrize(
    "make",
    [
        lambda: external(source=SystemOrigin(), durability=InputDurability.DERIVED),
        lambda: peer_progress(source=SystemOrigin(), durability=InputDurability.DERIVED),
        lambda: continuation(source=SystemOrigin(), durability=InputDurability.DERIVED),
        lambda: operation(source=SystemOrigin(), durability=InputDurability.DERIVED),
        lambda: external(durability=InputDurability.EPHEMERAL),
        lambda: prompt(durability=InputDurability.EPHEMERAL),
    ],
)
def test_scenario_08_allowed_durabilities(make: Callable[[], Input]) -> None:
    assert Driver().accept(make()).kind == "accepted"


def test_scenario_09_peer_progress_with_handling_mode_rejected() -> None:
    for lane in HandlingMode:
        reply = Driver().accept(peer_progress(lane=lane))
        assert reply.kind == "rejected"
        assert reply.reason == PeerHandlingModeInvalid(
            detail="handling_mode is forbidden on ResponseProgress peer inputs"
        )


def test_scenario_09_steer_peer_with_injected_context_rejected_first() -> None:
    reply = Driver().accept(peer(lane=HandlingMode.STEER, injected=("ctx",)))
    assert reply.reason == PeerHandlingModeInvalid(
        detail="steer handling_mode cannot carry injected context on peer inputs"
    )
    assert Driver().accept(peer(lane=HandlingMode.QUEUE, injected=("ctx",))).kind == "accepted"


def test_scenario_10_peer_terminal_with_steer_accepted() -> None:
    d = Driver()
    t = peer_terminal(lane=HandlingMode.STEER)
    reply = d.accept(t)
    assert reply.kind == "accepted"
    assert reply.plan is not None
    assert reply.plan.decision.routing_disposition is RoutingDisposition.STEER
    assert reply.plan.signal is PostAdmissionSignal.REQUEST_IMMEDIATE_PROCESSING
    assert d.state.steer_queue.input_ids() == [t.header.id]


@pytest.mark.parametrize(
    ("make", "detail"),
    [
        (lambda: peer_terminal(request_id=" "), "correlation id cannot be empty"),
        (lambda: peer_terminal(request_id=""), "correlation id cannot be empty"),
        (lambda: peer_terminal(request_id="r-1"), "correlation id must be a UUID: r-1"),
        (
            lambda: peer_terminal(source=PeerOrigin(peer_id="peer-a", display_identity="A")),
            "peer id must be a UUID: peer-a",
        ),
        (
            lambda: peer_terminal(source=PeerOrigin(peer_id=PEER_UUID)),
            "display identity cannot be empty",
        ),
        (
            lambda: peer_terminal(source=PeerOrigin(peer_id=PEER_UUID, display_identity="  ")),
            "display identity cannot be empty",
        ),
        (
            lambda: peer_terminal(source=PeerOrigin(peer_id=PEER_UUID, display_identity="A\nB")),
            "display identity cannot contain control characters",
        ),
        (
            lambda: peer_terminal(
                source=PeerOrigin(peer_id=PEER_UUID, display_identity="A", runtime_id=" ")
            ),
            "runtime id cannot be blank",
        ),
        (
            lambda: peer_terminal(status=ResponseTerminalStatus.CANCELLED),
            "peer response terminal status rejected by generated authority: cancelled",
        ),
    ],
)
def test_scenario_11_peer_terminal_structural_checks(
    make: Callable[[], Input], detail: str
) -> None:
    d = Driver()
    decision = d.run(Accept(make()))
    assert decision.reply.kind == "rejected"
    assert decision.reply.reason == PeerResponseTerminalInvalid(detail=detail)
    assert decision.events == []


def test_scenario_11_terminal_checks_apply_only_to_peer_origin() -> None:
    # A response-terminal convention from a non-peer origin is not structurally checked.
    assert Driver().accept(peer_terminal(request_id=" ", source=SystemOrigin())).kind == "accepted"
    for status in (ResponseTerminalStatus.COMPLETED, ResponseTerminalStatus.FAILED):
        assert Driver().accept(peer_terminal(status=status)).kind == "accepted"


def test_scenario_11_stock_peer_terminal_response_helper() -> None:
    request = fixed_uuid(0x77, 0x0300)
    t = peer_terminal_response(peer_id=PEER_UUID, request_id=request, result={"ok": True})
    assert t.kind is InputKind.PEER_RESPONSE_TERMINAL
    assert t.header.source == PeerOrigin(peer_id=PEER_UUID, display_identity=PEER_UUID)
    assert t.header.correlation_id == request
    assert t.header.durability is InputDurability.DURABLE
    assert t.payload == {"ok": True}
    assert t.content == ""
    again = peer_terminal_response(peer_id=PEER_UUID, request_id=request, result={"ok": True})
    assert again.header.idempotency_key == t.header.idempotency_key  # redelivery deduplicates
    other = peer_terminal_response(peer_id=PEER_UUID, request_id=fixed_uuid(0x78), result=None)
    assert other.header.idempotency_key != t.header.idempotency_key
    named = peer_terminal_response(
        peer_id=PEER_UUID, request_id=request, result=1, display_name="Bo"
    )
    assert isinstance(named.header.source, PeerOrigin)
    assert named.header.source.display_identity == "Bo"
    d = Driver()
    assert d.accept(t).kind == "accepted"
    assert d.accept(again).kind == "deduplicated"


def test_scenario_12_peer_message_steer_accepted_routing_steer() -> None:
    d = Driver()
    m = peer(lane=HandlingMode.STEER)
    reply = d.accept(m)
    assert reply.kind == "accepted"
    assert reply.plan is not None
    assert reply.plan.decision.routing_disposition is RoutingDisposition.STEER
    assert d.state.steer_queue.input_ids() == [m.header.id]
    assert d.state.inputs[m.header.id].recovery_lane is HandlingMode.STEER


def test_scenario_13_retired_accept_rejected_not_ready() -> None:
    d = Driver()
    d.run(Retire(loop_attached=True))
    decision = d.run(Accept(prompt()))
    assert decision.reply.kind == "rejected"
    assert decision.reply.reason == NotReady(state=S.RETIRED)
    assert str(decision.reply.reason) == "runtime not accepting input while in state: retired"
    assert decision.events == []  # nothing is written


@pytest.mark.parametrize("target", ["stopped", "destroyed", "initializing"])
def test_scenario_13_every_non_accepting_state_rejects_not_ready(target: str) -> None:
    d = Driver()
    if target == "stopped":
        d.run(Stop())
    elif target == "destroyed":
        d.run(Destroy())
    else:
        d.state.phase = S.INITIALIZING
    before = d.snapshot()
    decision = d.run(Accept(prompt()))
    assert decision.reply.reason == NotReady(state=RuntimeState(target))
    assert decision.events == []
    assert d.snapshot() == before


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


def _accepted_only_log(inp: Input) -> tuple[Driver, list[RuntimeEventEnvelope]]:
    """A log where ``inp`` was accepted but never queued (a row persisted in ``accepted``)."""
    d = Driver()
    d.run(Accept(inp))
    log = [env for env in d.log if not isinstance(env.event, InputQueued)]
    return d, log


def test_scenario_24_cold_recover_accepted_row_queued() -> None:
    p = prompt()
    _, log = _accepted_only_log(p)
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
    _, log = _accepted_only_log(e)
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
    _, log = _accepted_only_log(p)
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


def test_scenario_34_queue_fifo_and_enqueue_front() -> None:
    a, b, c, x = (fixed_uuid(n) for n in (1, 2, 3, 4))
    q = InputQueue()
    for i in (a, b, c):
        q.enqueue(i)
    assert [q.dequeue(), q.dequeue(), q.dequeue()] == [a, b, c]
    assert q.dequeue() is None
    q.enqueue(a)
    q.enqueue_front(x)
    assert q.dequeue() == x
    assert q.dequeue() == a


def test_scenario_35_queue_peek_remove_drain() -> None:
    a, b, c = (fixed_uuid(n) for n in (1, 2, 3))
    q = InputQueue([a])
    assert q.peek() == a
    assert len(q) == 1
    assert q.remove(fixed_uuid(99)) is None
    assert len(q) == 1
    q.enqueue(b)
    q.enqueue(c)
    q.enqueue(b)
    assert q.remove(b) == b  # first match only
    assert q.input_ids() == [a, c, b]
    assert q.drain() == [a, c, b]
    assert len(q) == 0
    assert q.peek() is None
    assert q.drain() == []


def test_scenario_35_queue_dequeue_exact_prefix() -> None:
    a, b, c = (fixed_uuid(n) for n in (1, 2, 3))
    q = InputQueue([a, b, c])
    assert not q.dequeue_exact_prefix([b])
    assert not q.dequeue_exact_prefix([a, c])
    assert not q.dequeue_exact_prefix([a, b, c, a])
    assert q.input_ids() == [a, b, c]
    assert q.dequeue_exact_prefix([a, b])
    assert q.input_ids() == [c]
    assert q.dequeue_exact_prefix([])
    assert q.input_ids() == [c]
    assert b not in q
    assert c in q
    copy_ = q.copy()
    copy_.enqueue(a)
    assert q.input_ids() == [c]


def test_scenario_36_coalescing_eligibility() -> None:
    assert is_coalescing_eligible(external())
    assert is_coalescing_eligible(peer_progress())
    assert not is_coalescing_eligible(prompt())
    assert not is_coalescing_eligible(peer())
    assert not is_coalescing_eligible(peer_request())
    assert not is_coalescing_eligible(peer_terminal())
    assert not is_coalescing_eligible(flow_step())
    assert not is_coalescing_eligible(continuation())
    assert not is_coalescing_eligible(operation())


def test_scenario_37_same_key_external_events_supersede() -> None:
    older = external(supersession="k")
    newer = external(supersession="k")
    assert check_supersession(newer, older, SESSION) == Supersedes(superseded_id=older.header.id)


def test_scenario_38_cross_kind_or_keyless_standalone() -> None:
    ext = external(supersession="k")
    assert check_supersession(prompt(supersession="k"), ext, SESSION) == Standalone()
    assert check_supersession(ext, prompt(supersession="k"), SESSION) == Standalone()
    assert check_supersession(external(supersession="other"), ext, SESSION) == Standalone()
    assert check_supersession(external(), ext, SESSION) == Standalone()
    assert check_supersession(ext, external(), SESSION) == Standalone()
    assert check_supersession(external(), external(), SESSION) == Standalone()
    # Peer kinds split by convention: a request never supersedes a message of the same key.
    assert (
        check_supersession(peer_request(supersession="k"), peer(supersession="k"), SESSION)
        == Standalone()
    )


def test_scenario_39_aggregate_descriptor() -> None:
    sources: list[ExternalEventInput | PeerInput] = [external(), external(), peer_progress()]
    agg_id = fixed_uuid(0xA66)
    agg = create_aggregate_input(sources, agg_id, NOW)
    assert agg is not None
    assert agg.aggregate_id == agg_id
    assert agg.source_ids == tuple(s.header.id for s in sources)
    assert len(agg.source_ids) == 3
    assert agg.summary == "3 coalesced inputs"
    assert agg.created_at == NOW
    assert create_aggregate_input([], agg_id, NOW) is None


def test_scenario_39a_progress_inputs_coalesce() -> None:
    d = Driver()
    first = peer_progress(supersession="req-7")
    second = peer_progress(supersession="req-7")
    d.accept(first)
    decision = d.run(Accept(second))
    assert d.codes(decision) == ["input.accepted", "input.coalesced", "input.queued"]
    st = d.state.inputs[first.header.id]
    assert st.current_state is L.COALESCED
    assert st.terminal_outcome == CoalescedOutcome(aggregate_id=second.header.id)
    assert first.header.id not in d.state.steer_queue
    assert first.header.id not in d.state.queue
    assert d.phase_of(second.header.id) == "queued"
    assert d.state.steer_queue.input_ids() == [second.header.id]
    outcome = completion_outcome(d.state, first.header.id)
    assert isinstance(outcome, Abandoned)
    assert outcome.reason == f"coalesced into {second.header.id}"


def test_scenario_39a_progress_without_key_or_other_key_never_coalesces() -> None:
    d = Driver()
    a, b, c = peer_progress(), peer_progress(), peer_progress(supersession="x")
    d_ = peer_progress(supersession="y")
    for p in (a, b, c, d_):
        d.accept(p)
    assert all(d.phase_of(p.header.id) == "queued" for p in (a, b, c, d_))


def test_supersession_at_accept_design_choice() -> None:
    """Port design (spec 8): a newer same-scope input supersedes an older *queued* one."""
    d = Driver()
    old = external(supersession="ci")
    new = external(supersession="ci")
    d.accept(old)
    decision = d.run(Accept(new))
    assert d.codes(decision) == ["input.accepted", "input.superseded", "input.queued"]
    row = d.state.inputs[old.header.id]
    assert row.terminal_outcome == SupersededOutcome(superseded_by=new.header.id)
    assert d.state.queue.input_ids() == [new.header.id]
    outcome = completion_outcome(d.state, old.header.id)
    assert isinstance(outcome, Abandoned)
    assert outcome.reason == f"superseded by {new.header.id}"
    # Staged (or later) inputs are never superseded.
    run_id = d.start()
    newest = external(supersession="ci")
    d.accept(newest)
    assert d.phase_of(new.header.id) == "staged"
    assert d.state.inputs[new.header.id].last_run_id == run_id
    # Other kinds with the same key do not supersede each other.
    p = prompt(supersession="ci")
    d.accept(p)
    assert d.phase_of(newest.header.id) == "queued"


def test_scenario_40_peer_message_policy_idle_vs_running() -> None:
    table = DefaultPolicyTable()
    idle = table.resolve_by_kind(InputKind.PEER_MESSAGE, runtime_idle=True).decision
    running = table.resolve_by_kind(InputKind.PEER_MESSAGE, runtime_idle=False).decision
    assert idle.apply_mode is running.apply_mode is ApplyMode.STAGE_RUN_START
    assert idle.wake_mode is WakeMode.WAKE_IF_IDLE
    assert running.wake_mode is WakeMode.INTERRUPT_YIELDING
    assert idle.policy_version == running.policy_version == generated_default_policy_version() == 1


def test_scenario_41_operation_consumed_on_accept() -> None:
    d = Driver()
    op = operation()
    decision = d.run(Accept(op))
    reply = decision.reply
    assert reply.kind == "accepted"
    assert (
        reply.plan.decision.apply_mode,
        reply.plan.decision.consume_point,
        reply.plan.decision.queue_mode,
    ) == (
        ApplyMode.IGNORE,
        ConsumePoint.ON_ACCEPT,
        QueueMode.PRIORITY,
    )
    assert d.codes(decision) == ["topology.runtime_created", "input.accepted"]  # no input.queued
    st = d.state.inputs[op.header.id]
    assert st.current_state is L.CONSUMED
    assert st.terminal_outcome == ConsumedOutcome()
    assert st.history[-1].reason == "ConsumeOnAccept (Ignore+OnAccept)"
    assert not d.state.queue and not d.state.steer_queue
    assert not d.state.wake_pending
    assert completion_outcome(d.state, op.header.id) == CompletedWithoutResult()


def test_scenario_42_reject_reason_display_and_roundtrip() -> None:
    reasons: list[RejectReason] = [
        NotReady(state=S.STOPPED),
        DurabilityViolation(detail="d"),
        PeerHandlingModeInvalid(detail="h"),
        PeerResponseTerminalInvalid(detail="t"),
    ]
    assert str(reasons[0]) == "runtime not accepting input while in state: stopped"
    assert [str(r) for r in reasons[1:]] == ["d", "h", "t"]
    for r in reasons:
        assert wire.decode(RejectReason, wire.encode(r)) == r
    assert json.loads(wire.encode(reasons[0])) == {"reject_type": "not_ready", "state": "stopped"}


def test_scenario_43_consumed_outcome_json() -> None:
    assert json.loads(wire.encode(ConsumedOutcome())) == {"outcome_type": "consumed"}
    assert wire.decode(InputTerminalOutcome, b'{"outcome_type":"consumed"}') == ConsumedOutcome()


def test_scenario_44_lifecycle_states_roundtrip() -> None:
    names = [
        "accepted",
        "queued",
        "staged",
        "applied",
        "applied_pending_consumption",
        "consumed",
        "superseded",
        "coalesced",
        "abandoned",
    ]
    assert [s.value for s in L] == names
    for name in names:
        state = wire.decode(InputLifecycleState, json.dumps(name))
        assert json.loads(wire.encode(state)) == name
    assert {s.value for s in L if s.is_terminal} == {
        "consumed",
        "superseded",
        "coalesced",
        "abandoned",
    }


def test_scenario_45_stored_row_versions() -> None:
    row = {
        "input_id": str(fixed_uuid(1)),
        "current_state": "queued",
        "created_at": "2026-03-01T12:00:00Z",
        "updated_at": "2026-03-01T12:00:00Z",
    }
    for version in (2, 6):
        with pytest.raises(InvalidInput, match="expected current 5"):
            wire.decode(InputState, {**row, "stored_input_state_version": version})
    loaded = wire.decode(InputState, {**row, "stored_input_state_version": 3})
    assert loaded.current_state is L.QUEUED
    assert loaded.stored_input_state_version == 5


def test_scenario_46_waiters_pure_part() -> None:
    d = Driver()
    p = prompt()
    d.accept(p)
    assert completion_outcome(d.state, p.header.id) is None  # not terminal yet: still waiting
    run_id = d.start()
    d.run(CompleteRun(run_id, output={"text": "hi"}))
    first = completion_outcome(d.state, p.header.id)
    second = completion_outcome(d.state, p.header.id)
    assert first == second == Completed(run_id=run_id, output={"text": "hi"})
    assert completion_outcome(d.state, fixed_uuid(0xDEAD)) is None  # unknown id: no-op
    # Folding the log again gives a waiter registered after a restart the same outcome.
    again = fold(d.log, session_id=SESSION)
    assert completion_outcome(again, p.header.id) == first


@pytest.mark.parametrize(
    ("state", "terminal", "accepts", "prepare", "process", "process_bound"),
    [
        ("initializing", False, False, False, False, False),
        ("idle", False, True, True, True, True),
        ("attached", False, True, True, True, True),
        ("running", False, True, False, False, True),
        ("retired", False, False, False, True, True),
        ("stopped", False, False, False, False, False),
        ("destroyed", True, False, False, False, False),
    ],
)
def test_scenario_47_lifecycle_classification(
    state: str, terminal: bool, accepts: bool, prepare: bool, process: bool, process_bound: bool
) -> None:
    s = RuntimeState(state)
    assert s.is_terminal is terminal
    assert s.accepts_input is accepts
    assert s.may_prepare_run is prepare
    assert s.may_process_queue() is process
    assert s.may_process_queue(run_bound=True) is process_bound
    assert str(s) == state


def test_scenario_48_run_primitive_tags() -> None:
    staged = StagedRunInput(boundary=RunApplyBoundary.RUN_START)
    # The tag is the RunPrimitive's: a StagedRunInput on its own has none (as in Rust).
    assert json.loads(wire.encode(staged, as_type=RunPrimitive)) == {
        "primitive_type": "staged_input",
        "boundary": "run_start",
    }
    assert json.loads(wire.encode(staged)) == {"boundary": "run_start"}
    imm = ImmediateAppend(role=ConversationAppendRole.USER, content=TextRenderable("x"))
    assert json.loads(wire.encode(imm))["primitive_type"] == "immediate_append"
    ctx = ImmediateContextAppend(key="k", content=TextRenderable("x"))
    assert json.loads(wire.encode(ctx))["primitive_type"] == "immediate_context_append"
    for p in (imm, ctx):
        assert p.primitive_input_ids() == ()
        assert p.primitive_turn_metadata() is None
        assert p.apply_boundary() is RunApplyBoundary.IMMEDIATE
        assert not p.is_context_only_immediate()


def test_scenario_49_context_only_immediate() -> None:
    ctx = (ConversationContextAppend(key="k", content=TextRenderable("c")),)
    user = (ConversationAppend(role=ConversationAppendRole.USER, content=TextRenderable("u")),)
    assert StagedRunInput(
        boundary=RunApplyBoundary.IMMEDIATE, context_appends=ctx
    ).is_context_only_immediate()
    assert not StagedRunInput(
        boundary=RunApplyBoundary.IMMEDIATE, appends=user, context_appends=ctx
    ).is_context_only_immediate()
    assert not StagedRunInput(
        boundary=RunApplyBoundary.RUN_CHECKPOINT, context_appends=ctx
    ).is_context_only_immediate()
    assert not StagedRunInput(boundary=RunApplyBoundary.IMMEDIATE).is_context_only_immediate()


def test_scenario_50_extract_single_text_block() -> None:
    one = ConversationAppend(
        role=ConversationAppendRole.USER,
        content=BlocksRenderable(blocks=({"type": "text", "text": "single"},)),
    )
    assert (
        StagedRunInput(boundary=RunApplyBoundary.RUN_START, appends=(one,)).extract_content()
        == "single"
    )


def test_scenario_50_extract_content_rules() -> None:
    def staged(*contents: Any) -> StagedRunInput:
        return StagedRunInput(
            boundary=RunApplyBoundary.RUN_START,
            appends=tuple(
                ConversationAppend(role=ConversationAppendRole.USER, content=c) for c in contents
            ),
        )

    image = {"type": "image", "media_type": "image/png", "source": "blob", "blob_id": "b"}
    assert staged().extract_content() == ""
    assert staged(JsonRenderable({"a": 1}), ReferenceRenderable(uri="u")).extract_content() == ""
    assert staged(TextRenderable("a")).extract_content() == "a"
    assert staged(TextRenderable("a"), TextRenderable("b")).extract_content() == (
        {"type": "text", "text": "a"},
        {"type": "text", "text": "b"},
    )
    assert staged(
        TextRenderable("a"), BlocksRenderable((image,)), JsonRenderable(1)
    ).extract_content() == (
        {"type": "text", "text": "a"},
        image,
    )
    assert staged(BlocksRenderable((image,))).extract_content() == (image,)
    role = ConversationAppendRole.ASSISTANT
    assert ImmediateAppend(role=role, content=TextRenderable("t")).extract_content() == "t"
    assert ImmediateAppend(role=role, content=BlocksRenderable((image,))).extract_content() == (
        image,
    )
    assert ImmediateAppend(role=role, content=JsonRenderable(1)).extract_content() == ""
    assert ImmediateContextAppend(key="k", content=TextRenderable("t")).extract_content() == ""


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


# ================================================================ policy table (6.1) and overrides (6.2)


@dataclass(frozen=True)
class Row:
    apply: str
    wake: str
    queue: str
    consume: str
    drain: str
    routing: str
    transcript: bool
    boundary: str | None
    exec_kind: str | None
    signal: str = ""
    intent: str | None = None


def _row_of(plan: Any) -> Row:
    d, sem = plan.decision, plan.semantics
    assert d.emit_operator_content == d.record_transcript
    assert d.policy_version == 1
    return Row(
        apply=d.apply_mode.value,
        wake=d.wake_mode.value,
        queue=d.queue_mode.value,
        consume=d.consume_point.value,
        drain=d.drain_policy.value,
        routing=d.routing_disposition.value,
        transcript=d.record_transcript,
        boundary=sem.boundary.value if sem and sem.boundary else None,
        exec_kind=sem.execution_kind.value if sem and sem.execution_kind else None,
        signal=plan.signal.value,
        intent=sem.peer_response_terminal_apply_intent.value
        if sem and sem.peer_response_terminal_apply_intent
        else None,
    )


CONTENT_IDLE = Row(
    "stage_run_start",
    "wake_if_idle",
    "fifo",
    "on_run_complete",
    "queue_next_turn",
    "queue",
    True,
    "run_start",
    "content_turn",
    "wake_loop",
)
CONTENT_RUNNING = Row(
    "stage_run_start",
    "none",
    "fifo",
    "on_run_complete",
    "queue_next_turn",
    "queue",
    True,
    "run_start",
    "content_turn",
    "none",
)
PEER_IDLE = CONTENT_IDLE
PEER_RUNNING = Row(
    "stage_run_start",
    "interrupt_yielding",
    "fifo",
    "on_run_complete",
    "queue_next_turn",
    "queue",
    True,
    "run_start",
    "content_turn",
    "interrupt_yielding",
)
PROGRESS = Row(
    "stage_run_boundary",
    "none",
    "coalesce",
    "on_run_complete",
    "steer_batch",
    "steer",
    True,
    "run_checkpoint",
    "content_turn",
    "none",
)
TERMINAL = Row(
    "stage_run_start",
    "wake_if_idle",
    "fifo",
    "on_run_complete",
    "queue_next_turn",
    "queue",
    True,
    "run_start",
    "content_turn",
    "wake_loop",
    "append_content_and_run",
)
CONT_IDLE = Row(
    "stage_run_boundary",
    "wake_if_idle",
    "fifo",
    "on_run_complete",
    "steer_batch",
    "steer",
    False,
    "run_checkpoint",
    "resume_pending",
    "wake_loop",
)
CONT_RUNNING = Row(
    "stage_run_boundary",
    "interrupt_yielding",
    "fifo",
    "on_run_complete",
    "steer_batch",
    "steer",
    False,
    "run_checkpoint",
    "resume_pending",
    "interrupt_yielding",
)
WORKGRAPH_IDLE = Row(
    "stage_run_start",
    "wake_if_idle",
    "fifo",
    "on_run_complete",
    "queue_next_turn",
    "queue",
    False,
    "run_start",
    "content_turn",
    "wake_loop",
)
WORKGRAPH_RUNNING = Row(
    "stage_run_start",
    "none",
    "fifo",
    "on_run_complete",
    "queue_next_turn",
    "queue",
    False,
    "run_start",
    "content_turn",
    "none",
)
OPERATION = Row("ignore", "none", "priority", "on_accept", "ignore", "drop", False, None, None, "none")  # fmt: skip

DEFAULT_TABLE = [
    (InputKind.PROMPT, True, CONTENT_IDLE),
    (InputKind.PROMPT, False, CONTENT_RUNNING),
    (InputKind.FLOW_STEP, True, CONTENT_IDLE),
    (InputKind.FLOW_STEP, False, CONTENT_RUNNING),
    (InputKind.EXTERNAL_EVENT, True, CONTENT_IDLE),
    (InputKind.EXTERNAL_EVENT, False, CONTENT_RUNNING),
    (InputKind.PEER_MESSAGE, True, PEER_IDLE),
    (InputKind.PEER_MESSAGE, False, PEER_RUNNING),
    (InputKind.PEER_REQUEST, True, PEER_IDLE),
    (InputKind.PEER_REQUEST, False, PEER_RUNNING),
    (InputKind.PEER_RESPONSE_PROGRESS, True, PROGRESS),
    (InputKind.PEER_RESPONSE_PROGRESS, False, PROGRESS),
    (InputKind.PEER_RESPONSE_TERMINAL, True, TERMINAL),
    (InputKind.PEER_RESPONSE_TERMINAL, False, TERMINAL),
    (InputKind.CONTINUATION, True, CONT_IDLE),
    (InputKind.CONTINUATION, False, CONT_RUNNING),
    (InputKind.OPERATION, True, OPERATION),
    (InputKind.OPERATION, False, OPERATION),
]


@pytest.mark.parametrize(("kind", "idle", "expected"), DEFAULT_TABLE, ids=str)
def test_policy_table_6_1_resolve_by_kind(kind: InputKind, idle: bool, expected: Row) -> None:
    plan = DefaultPolicyTable().resolve_by_kind(kind, runtime_idle=idle)
    assert _row_of(plan) == expected
    if kind is InputKind.OPERATION:
        assert plan.semantics is None  # consumed on accept, never queued
        assert plan.consume_on_accept


def test_policy_table_6_1_covers_every_kind() -> None:
    assert {k for k, _, _ in DEFAULT_TABLE} == set(InputKind)
    assert generated_default_policy_version() == 1


def _steer(base: Row, idle: bool, transcript: bool, exec_kind: str) -> Row:
    return Row("stage_run_boundary", "wake_if_idle" if idle else "interrupt_yielding", "fifo",
               "on_run_complete", "steer_batch", "steer", transcript, "run_checkpoint", exec_kind,
               "request_immediate_processing", base.intent)  # fmt: skip


def _queue(idle: bool, transcript: bool, exec_kind: str) -> Row:
    return Row("stage_run_start", "wake_if_idle" if idle else "none", "fifo", "on_run_complete",
               "queue_next_turn", "queue", transcript, "run_start", exec_kind,
               "wake_loop" if idle else "none")  # fmt: skip


Q, ST = HandlingMode.QUEUE, HandlingMode.STEER
OVERRIDES: list[tuple[str, Callable[[], Input], bool, Row]] = [
    # requested queue lane: like the prompt row
    ("prompt+queue idle", lambda: prompt(lane=Q), True, _queue(True, True, "content_turn")),
    ("prompt+queue running", lambda: prompt(lane=Q), False, _queue(False, True, "content_turn")),
    ("flow+queue running", lambda: flow_step(lane=Q), False, _queue(False, True, "content_turn")),
    ("external+queue idle", lambda: external(lane=Q), True, CONTENT_IDLE),
    ("external+queue running", lambda: external(lane=Q), False, CONTENT_RUNNING),
    ("peer msg+queue idle", lambda: peer(lane=Q), True, _queue(True, True, "content_turn")),
    ("peer msg+queue running", lambda: peer(lane=Q), False, _queue(False, True, "content_turn")),
    ("peer req+queue running", lambda: peer_request(lane=Q), False, _queue(False, True, "content_turn")),
    ("continuation+queue idle", lambda: continuation(lane=Q), True, _queue(True, False, "resume_pending")),
    ("continuation+queue running", lambda: continuation(lane=Q), False, _queue(False, False, "resume_pending")),
    # requested steer lane
    ("prompt+steer idle", lambda: prompt(lane=ST), True, _steer(CONTENT_IDLE, True, True, "content_turn")),
    ("prompt+steer running", lambda: prompt(lane=ST), False, _steer(CONTENT_IDLE, False, True, "content_turn")),
    ("flow+steer idle", lambda: flow_step(lane=ST), True, _steer(CONTENT_IDLE, True, True, "content_turn")),
    ("external+steer running", lambda: external(lane=ST), False, _steer(CONTENT_IDLE, False, True, "content_turn")),
    ("peer msg+steer running", lambda: peer(lane=ST), False, _steer(PEER_IDLE, False, True, "content_turn")),
    ("peer req+steer idle", lambda: peer_request(lane=ST), True, _steer(PEER_IDLE, True, True, "content_turn")),
    ("continuation+steer idle", lambda: continuation(lane=ST), True, _steer(CONT_IDLE, True, False, "resume_pending")),
    ("continuation+steer running", lambda: continuation(lane=ST), False, _steer(CONT_IDLE, False, False, "resume_pending")),
    ("detached continuation idle", detached_background_op_completed, True, _steer(CONT_IDLE, True, False, "resume_pending")),
    # peer terminal: queue = default row; steer re-routes only
    ("terminal+queue running", lambda: peer_terminal(lane=Q), False, TERMINAL),
    ("terminal+steer idle", lambda: peer_terminal(lane=ST), True,
     Row("stage_run_start", "wake_if_idle", "fifo", "on_run_complete", "steer_batch", "steer", True,
         "run_start", "content_turn", "request_immediate_processing", "append_content_and_run")),
    ("terminal+steer running", lambda: peer_terminal(lane=ST), False,
     Row("stage_run_start", "interrupt_yielding", "fifo", "on_run_complete", "steer_batch", "steer", True,
         "run_start", "content_turn", "request_immediate_processing", "append_content_and_run")),
    # no lane: the default rows
    ("prompt no lane running", prompt, False, CONTENT_RUNNING),
    ("peer msg no lane running", peer, False, PEER_RUNNING),
    ("progress no lane", peer_progress, True, PROGRESS),
    ("progress ignores a lane", lambda: peer_progress(lane=ST), False, PROGRESS),
    # workgraph attention ignores the lane
    ("workgraph+steer idle", lambda: continuation(lane=ST, kind=ContinuationKind.WORKGRAPH_ATTENTION), True, WORKGRAPH_IDLE),
    ("workgraph+queue running", lambda: continuation(lane=Q, kind=ContinuationKind.WORKGRAPH_ATTENTION), False, WORKGRAPH_RUNNING),
    ("operation", operation, True, OPERATION),
    ("operation running", operation, False, OPERATION),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "make", "idle", "expected"), OVERRIDES, ids=[o[0] for o in OVERRIDES]
)
def test_policy_overrides_6_2_resolve(
    name: str, make: Callable[[], Input], idle: bool, expected: Row
) -> None:
    plan = DefaultPolicyTable().resolve(make(), runtime_idle=idle)
    assert _row_of(plan) == expected
    lane = "steer" if expected.routing in ("steer", "immediate") else "queue"
    assert plan.lane.value == lane
    if plan.semantics is not None:
        assert plan.semantics.execution_handling_mode is not None
        assert plan.semantics.execution_handling_mode.value == lane


@pytest.mark.parametrize("idle", [True, False])
def test_policy_accept_uses_runtime_idle(idle: bool) -> None:
    """Accept resolves with ``runtime_idle`` false only while a run is active."""
    d = Driver()
    if not idle:
        d.accept(prompt())
        d.start()
    reply = d.accept(peer())
    assert reply.plan is not None
    expected = PEER_IDLE if idle else PEER_RUNNING
    assert _row_of(reply.plan) == expected
    row = d.state.inputs[reply.input_id]
    assert row.policy is not None
    assert row.policy.version == 1
    assert row.policy.decision == reply.plan.decision
    assert row.runtime_semantics == reply.plan.semantics


def test_signal_strength_order() -> None:
    order = [PostAdmissionSignal.NONE, PostAdmissionSignal.WAKE_LOOP,
             PostAdmissionSignal.INTERRUPT_YIELDING, PostAdmissionSignal.REQUEST_IMMEDIATE_PROCESSING]  # fmt: skip
    assert [s.strength for s in order] == sorted(s.strength for s in order)
    assert len({s.strength for s in order}) == 4


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


def _make(state: str) -> Driver:
    """A session in ``state`` holding some inputs (the state it is observed in)."""
    d = Driver(attached=state == "attached")
    if state == "initializing":
        d.state.phase = S.INITIALIZING
        return d
    d.accept(prompt("q1"))
    d.accept(prompt("q2"))
    if state == "running":
        d.start()  # q1 staged, q2 queued
    elif state == "retired":
        d.run(Retire(loop_attached=True))
    elif state == "stopped":
        d.run(Stop())
    elif state == "destroyed":
        d.run(Destroy())
    assert d.state.observed_state(d.attached).value == state
    return d


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
    d = _make(start)
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
    d = _make("retired")
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
    d = _make("retired")
    decision = d.run(Retire(loop_attached=True))
    assert d.codes(decision) == []
    assert decision.reply == RetireReport(inputs_abandoned=0, inputs_pending_drain=2)


def test_retire_while_running_lets_the_run_finish() -> None:
    d = _make("running")
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
    d = _make("running")
    decision = d.run(Retire(loop_attached=False))
    assert d.codes(decision)[0] == "run.cancelled"
    assert d.state.run is None
    for row in d.state.inputs.values():
        assert row.terminal_outcome == abandoned_with(AK.RETIRED)


def test_stop_while_running_cancels_run_and_abandons_everything() -> None:
    d = _make("running")
    decision = d.run(Stop())
    assert d.codes(decision)[0] == "run.cancelled"
    assert decision.reply == StopReport(inputs_abandoned=2)
    assert d.state.phase is S.STOPPED
    assert all(r.terminal_outcome == abandoned_with(AK.STOPPED) for r in d.state.inputs.values())


def test_recycle_requeues_staged_and_reports_transferred() -> None:
    d = _make("retired")
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
        _, log = _accepted_only_log(p)
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
    live = _make(phase)
    d = Driver()
    d.state = fold(live.log, session_id=SESSION)
    d.run(Recover(cold=True))
    assert d.state.phase.value == phase


def test_recovery_16_destroyed_stays_destroyed() -> None:
    live = _make("destroyed")
    d = Driver()
    d.state = fold(live.log, session_id=SESSION)
    assert_refused(d, Recover(cold=True), "destroyed", "idle")
    assert_refused(d, Recover(cold=True, reregister=True), "destroyed", "idle")


@pytest.mark.parametrize("attached", [False, True])
def test_recovery_16_stopped_reregistered_only_explicitly(attached: bool) -> None:
    d = _make("stopped")
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
    d = _make("running")
    assert_refused(d, Recover(), "running", "idle")


def test_empty_session_has_no_created_event_until_something_happens() -> None:
    d = Driver()
    assert d.run(Recover()).events == []
    assert not d.state.created
    fresh = SessionState(session_id=SESSION)
    assert fresh.phase is S.IDLE and fresh.version == 0


# ================================================================ directed inputs (spec 3.3)

DID = fixed_uuid(0x77, 0x0CCC)


def _directed_flow(**over: Any) -> Any:
    kw: dict[str, Any] = {"input_id": DID, "correlation": DID, "key": str(DID),
                          "source": FlowOrigin(flow_id="flow", step_index=0)}  # fmt: skip
    kw.update(over)
    return FlowStepInput(step_id="s", content="c", directed_interaction_id=DID, header=header(**kw))


def _directed_peer(
    convention: Any = None, payload: Any = None, taint: Any = None, **over: Any
) -> Any:
    kw: dict[str, Any] = {"input_id": DID, "correlation": DID, "key": str(DID),
                          "source": PeerOrigin(peer_id="p", runtime_id="rt:session:x")}  # fmt: skip
    kw.update(over)
    return PeerInput(content="c", directed_interaction_id=DID, convention=convention, payload=payload,
                     sender_taint=taint, header=header(**kw))  # fmt: skip


def test_directed_inputs_that_follow_the_rules_are_accepted() -> None:
    assert Driver().accept(_directed_flow()).kind == "accepted"
    assert Driver().accept(_directed_peer()).kind == "accepted"
    assert Driver().accept(_directed_peer(convention=PeerMessage())).kind == "accepted"


@pytest.mark.parametrize(
    "make",
    [
        lambda: _directed_flow(input_id=fixed_uuid(1, 0x0CCD)),
        lambda: _directed_flow(correlation=None),
        lambda: _directed_flow(correlation=fixed_uuid(2)),
        lambda: _directed_flow(key=None),
        lambda: _directed_flow(key=str(DID).upper()),
        lambda: _directed_flow(durability=InputDurability.EPHEMERAL),
        lambda: _directed_flow(durability=InputDurability.DERIVED, source=SystemOrigin()),
        lambda: _directed_flow(source=FlowOrigin(flow_id="", step_index=0)),
        lambda: _directed_flow(source=FlowOrigin(flow_id="flow", step_index=1)),
        lambda: _directed_flow(source=OperatorOrigin()),
        lambda: _directed_peer(source=PeerOrigin(peer_id="", runtime_id="rt")),
        lambda: _directed_peer(source=PeerOrigin(peer_id="p")),
        lambda: _directed_peer(source=PeerOrigin(peer_id="p", runtime_id="")),
        lambda: _directed_peer(source=SystemOrigin()),
        lambda: _directed_peer(convention=PeerRequest(request_id="r", intent="i")),
        lambda: _directed_peer(payload={"x": 1}),
        lambda: _directed_peer(taint=SenderTaint.CLEAN),
        lambda: _directed_peer(supersession="s"),
    ],
)
def test_directed_input_violations_are_malformed_and_write_nothing(
    make: Callable[[], Input],
) -> None:
    d = Driver()
    d.accept(prompt())
    before, log_len = d.snapshot(), len(d.log)
    with pytest.raises(InvalidInput) as info:
        d.run(Accept(make()))
    assert info.value.path == "directed_interaction_id"
    assert d.snapshot() == before
    assert len(d.log) == log_len


def test_directed_checks_run_before_validation_rules() -> None:
    # Derived from an operator would be a durability rejection; the directed check comes first.
    with pytest.raises(InvalidInput):
        Driver().accept(_directed_flow(durability=InputDurability.DERIVED))


# ================================================================ peer terminal ids and uuid spellings


@pytest.mark.parametrize(
    ("request_id", "kind"),
    [
        (str(fixed_uuid(9, 0x0300)), "accepted"),
        (str(fixed_uuid(9, 0x0300)).upper(), "accepted"),
        (fixed_uuid(9, 0x0300).hex, "accepted"),
        (f" {fixed_uuid(9, 0x0300)} ", "accepted"),  # blank-trimmed like the blank check
        ("0195_b3c7d1e7c4a9f003a2b1c0d4e5f", "rejected"),  # int() would read this as hex
        ("+1955b3c7d1e7c4a9f003a2b1c0d4e5f", "rejected"),
        ("01955b3c7d1e7c4a9f003a2b1c0d4e5", "rejected"),
    ],
)
def test_peer_terminal_request_id_must_be_a_uuid(request_id: str, kind: str) -> None:
    reply = Driver().accept(peer_terminal(request_id=request_id))
    assert reply.kind == kind
    if kind == "rejected":
        assert reply.reason == PeerResponseTerminalInvalid(
            detail=f"correlation id must be a UUID: {request_id}"
        )


# ================================================================ lowering inputs into a run primitive


def _primitive(d: Driver) -> StagedRunInput:
    assert d.state.run is not None
    prim = d.state.run.primitive
    assert isinstance(prim, StagedRunInput)
    return prim


def test_lowering_prompt_appends_context_and_metadata() -> None:
    d = Driver()
    user = ConversationAppendRole.USER
    typed = ConversationAppend(
        role=ConversationAppendRole.ASSISTANT, content=TextRenderable("earlier")
    )
    p = PromptInput(
        content="question",
        typed_turn_appends=(typed,),
        injected_context=("background", ""),
        turn_metadata=RuntimeTurnMetadata(model="m", keep_alive=True),
        header=header(),
    )
    d.accept(p)
    run_id = d.start()
    prim = _primitive(d)
    assert d.state.run is not None and d.state.run.run_id == run_id
    assert prim.contributing_input_ids == (p.header.id,)
    assert prim.appends == (
        typed,
        ConversationAppend(role=user, content=TextRenderable("question")),
    )
    assert [c.content for c in prim.context_appends] == [
        TextRenderable("background")
    ]  # empty skipped
    assert prim.turn_metadata == RuntimeTurnMetadata(
        model="m", keep_alive=True, execution_kind=RuntimeExecutionKind.CONTENT_TURN
    )
    assert prim.extract_content() == (
        {"type": "text", "text": "earlier"},
        {"type": "text", "text": "question"},
    )


def test_lowering_external_event_and_peer_payload() -> None:
    d = Driver()
    image = {"type": "image", "media_type": "image/png", "source": "blob", "blob_id": "b"}
    ext = ExternalEventInput(
        event_type="ci", payload={"s": 1}, header=header(source=ExternalOrigin(source_name="gh"))
    )
    ext_blocks = ExternalEventInput(event_type="ci", payload=None, blocks=(image,),
                                    header=header(source=ExternalOrigin(source_name="gh")))  # fmt: skip
    msg = peer(lane=HandlingMode.STEER, text="hi")
    req = PeerInput(content="", convention=PeerRequest(request_id="r", intent="i"), payload={"q": 2},
                    handling_mode=HandlingMode.STEER, header=header(source=PeerOrigin(peer_id="p")))  # fmt: skip
    for inp in (ext, ext_blocks, msg, req):
        d.accept(inp)
    d.start()
    prim = _primitive(d)
    assert prim.contributing_input_ids == (ext.header.id, msg.header.id, req.header.id)
    assert [a.content for a in prim.appends] == [
        JsonRenderable({"event_type": "ci", "payload": {"s": 1}}),
        TextRenderable("hi"),
        JsonRenderable({"q": 2}),
    ]
    assert d.state.queue.input_ids() == [ext_blocks.header.id]
    assert d.state.run is not None
    d.run(CompleteRun(d.state.run.run_id))
    d.start()
    assert [a.content for a in _primitive(d).appends] == [BlocksRenderable((image,))]


def test_lowering_execution_kind_and_boundary() -> None:
    # Only continuations (resume_pending) in the batch: the run resumes pending work at a checkpoint.
    d = Driver()
    c = continuation(lane=HandlingMode.STEER)
    d.accept(c)
    d.start()
    prim = _primitive(d)
    assert prim.boundary is RunApplyBoundary.RUN_CHECKPOINT
    assert prim.turn_metadata is not None
    assert prim.turn_metadata.execution_kind is RuntimeExecutionKind.RESUME_PENDING
    assert prim.appends == ()
    # Mixed with a content turn: an ordinary turn at run start.
    d2 = Driver()
    d2.accept(prompt("p"))
    d2.accept(continuation(lane=HandlingMode.STEER))
    d2.start()
    prim2 = _primitive(d2)
    assert prim2.boundary is RunApplyBoundary.RUN_START
    assert prim2.turn_metadata is not None
    assert prim2.turn_metadata.execution_kind is RuntimeExecutionKind.CONTENT_TURN
