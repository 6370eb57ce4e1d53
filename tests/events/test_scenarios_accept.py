"""RUNTIME_SPEC section 18, scenarios 1-13: accepting inputs (policy, validation, readiness).

Driven through ``meerkat_runtime.events.session`` with a fixed clock and deterministic
ids (see ``_support.Driver``).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from meerkat_runtime.events import (
    Accept,
    ApplyMode,
    CompleteRun,
    ContinuationKind,
    Destroy,
    DurabilityViolation,
    HandlingMode,
    Input,
    InputDurability,
    InputKind,
    NotReady,
    PeerHandlingModeInvalid,
    PeerOrigin,
    PeerResponseTerminalInvalid,
    PostAdmissionSignal,
    ResponseTerminalStatus,
    Retire,
    RoutingDisposition,
    RunApplyBoundary,
    RuntimeExecutionKind,
    RuntimeState,
    StagedRunInput,
    Stop,
    SystemOrigin,
    WakeMode,
    detached_background_op_completed,
    peer_terminal_response,
    wants_run,
)
from meerkat_runtime.events.policy import PeerTerminalApplyIntent
from meerkat_runtime.events.session import state_to_snapshot

from ._scenario import S, wake_pending
from ._support import (
    PEER_UUID,
    Driver,
    continuation,
    external,
    fixed_uuid,
    flow_step,
    operation,
    peer,
    peer_progress,
    peer_request,
    peer_terminal,
    prompt,
)

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
