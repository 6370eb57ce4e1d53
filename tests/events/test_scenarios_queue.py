"""RUNTIME_SPEC section 18, scenarios 34-50: the queue, coalescing and supersession,
wire round trips, waiters, lifecycle classification and run primitives.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from meerkat_runtime.errors import (
    InvalidInput,
)
from meerkat_runtime.events import (
    Abandoned,
    Accept,
    ApplyMode,
    BlocksRenderable,
    CoalescedOutcome,
    Completed,
    CompletedWithoutResult,
    CompleteRun,
    ConsumedOutcome,
    ConsumePoint,
    ConversationAppend,
    ConversationAppendRole,
    ConversationContextAppend,
    DefaultPolicyTable,
    DurabilityViolation,
    ExternalEventInput,
    ImmediateAppend,
    ImmediateContextAppend,
    InputKind,
    InputLifecycleState,
    InputQueue,
    InputState,
    InputTerminalOutcome,
    JsonRenderable,
    NotReady,
    PeerHandlingModeInvalid,
    PeerInput,
    PeerResponseTerminalInvalid,
    QueueMode,
    ReferenceRenderable,
    RejectReason,
    RunApplyBoundary,
    RunPrimitive,
    RuntimeState,
    StagedRunInput,
    Standalone,
    SupersededOutcome,
    Supersedes,
    TextRenderable,
    WakeMode,
    check_supersession,
    completion_outcome,
    create_aggregate_input,
    fold,
    generated_default_policy_version,
    is_coalescing_eligible,
    wire,
)

from ._scenario import L, S
from ._support import (
    NOW,
    SESSION,
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
