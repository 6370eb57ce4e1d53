"""The JSON examples of RUNTIME_SPEC.md (sections 3.4 to 14), each decoded and re-encoded.

Every example decodes with ``wire.decode(cls, example)`` and re-encodes to the same JSON
(``json.loads(wire.encode(obj)) == example``).
"""

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from meerkat_runtime.errors import InvalidInput
from meerkat_runtime.events import (
    AbandonedOutcome,
    AbandonKind,
    AllScope,
    CompletionOutcome,
    ConsumedOutcome,
    ConversationAppendRole,
    CoreRenderable,
    DurabilityViolation,
    ExternalEventInput,
    ImmediateAppend,
    ImmediateContextAppend,
    Input,
    InputAbandoned,
    InputAbandonReason,
    InputLifecycleState,
    InputScope,
    InputState,
    InputTerminalOutcome,
    JsonRenderable,
    NotReady,
    PeerHandlingModeInvalid,
    PeerInput,
    PeerResponseProgress,
    PeerResponseTerminalInvalid,
    PolicyDecision,
    PromptInput,
    RecoveryReport,
    ReferenceRenderable,
    RejectReason,
    RetireReport,
    RunApplyBoundary,
    RunCancelled,
    RunPrimitive,
    RunStarted,
    RuntimeEvent,
    RuntimeEventEnvelope,
    RuntimeRetired,
    RuntimeState,
    RuntimeStateChangeEvent,
    RuntimeTerminated,
    RuntimeTurnMetadata,
    SpecificScope,
    StagedRunInput,
    TurnErrorMetadata,
    TurnTerminalCauseKind,
    TurnTerminalOutcome,
    wire,
)

from ._wire import (
    COMPLETION_EXAMPLES,
    CONTEXT_APPEND_EXAMPLE,
    ENVELOPE_EXAMPLE,
    EXTERNAL_EXAMPLE,
    IMMEDIATE_APPEND_EXAMPLE,
    PEER_EXAMPLE,
    POLICY_EXAMPLE,
    PROMPT_EXAMPLE,
    RUN_EVENT_EXAMPLES,
    STAGED_EXAMPLE,
    STORED_ROW_EXAMPLE,
    U1,
    U2,
    U3,
    roundtrip,
)

# ---------------------------------------------------------------- section 3.4


def test_section_3_4_prompt_example() -> None:
    obj = roundtrip(Input, PROMPT_EXAMPLE)
    assert isinstance(obj, PromptInput)
    assert obj.content == "Summarise the report"
    assert obj.header.idempotency_key == "req-42"
    assert obj.header.timestamp == datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert obj.turn_metadata == RuntimeTurnMetadata(handling_mode="queue", keep_alive=True)  # type: ignore[arg-type]
    assert obj.kind == "prompt"
    assert roundtrip(PromptInput, PROMPT_EXAMPLE) == obj


def test_section_3_4_peer_progress_example() -> None:
    obj = roundtrip(Input, PEER_EXAMPLE)
    assert isinstance(obj, PeerInput)
    assert isinstance(obj.convention, PeerResponseProgress)
    assert obj.convention.phase == "in_progress"
    assert obj.payload == {"pct": 40}
    assert obj.kind == "peer_response_progress"
    assert obj.sender_taint is None  # absent is its own state, not "clean"


def test_section_3_4_external_event_example() -> None:
    obj = roundtrip(Input, EXTERNAL_EXAMPLE)
    assert isinstance(obj, ExternalEventInput)
    assert obj.header.supersession_key == "ci-status"
    assert obj.header.durability == "ephemeral"
    assert obj.kind == "external_event"


# ---------------------------------------------------------------- section 4


def test_section_4_staged_input_example() -> None:
    obj = roundtrip(RunPrimitive, STAGED_EXAMPLE)
    assert isinstance(obj, StagedRunInput)
    assert obj.primitive_input_ids() == (uuid.UUID(U1),)
    assert obj.apply_boundary() is RunApplyBoundary.RUN_START
    assert obj.extract_content() == "hello"
    # On its own a StagedRunInput has no tag (the RunPrimitive carrier adds it).
    own = {k: v for k, v in STAGED_EXAMPLE.items() if k != "primitive_type"}
    assert roundtrip(StagedRunInput, own) == obj
    assert json.loads(wire.encode(obj)) == own
    assert wire.decode(StagedRunInput, STAGED_EXAMPLE) == obj  # the tag is an unknown key there


def test_section_4_immediate_append_example() -> None:
    obj = roundtrip(RunPrimitive, IMMEDIATE_APPEND_EXAMPLE)
    assert isinstance(obj, ImmediateAppend)
    assert obj.role is ConversationAppendRole.SYSTEM_NOTICE
    assert obj.primitive_input_ids() == ()
    assert obj.primitive_turn_metadata() is None
    assert obj.apply_boundary() is RunApplyBoundary.IMMEDIATE
    assert obj.extract_content() == "notice"


def test_section_4_immediate_context_append_example() -> None:
    obj = roundtrip(RunPrimitive, CONTEXT_APPEND_EXAMPLE)
    assert isinstance(obj, ImmediateContextAppend)
    assert obj.content == JsonRenderable(value=["peer1", "peer2"])
    assert obj.apply_boundary() is RunApplyBoundary.IMMEDIATE
    assert obj.extract_content() == ""


def test_section_4_reference_label_is_written_as_null_when_absent() -> None:
    assert json.loads(wire.encode(ReferenceRenderable(uri="file:///a"))) == {
        "type": "reference",
        "uri": "file:///a",
        "label": None,
    }
    # A missing label is read as absent too (serde: a missing Option is None).
    obj = wire.decode(CoreRenderable, {"type": "reference", "uri": "u"})
    assert obj == ReferenceRenderable(uri="u", label=None)
    roundtrip(CoreRenderable, {"type": "reference", "uri": "u", "label": "doc"})


def test_section_4_empty_turn_metadata_is_valid() -> None:
    assert roundtrip(RuntimeTurnMetadata, {}) == RuntimeTurnMetadata()


def test_section_4_every_renderable_shape() -> None:
    roundtrip(CoreRenderable, {"type": "text", "text": "t"})
    roundtrip(CoreRenderable, {"type": "blocks", "blocks": [{"type": "text", "text": "a"}]})
    roundtrip(CoreRenderable, {"type": "json", "value": {"k": [1, 2.5, None, True]}})


# ---------------------------------------------------------------- section 5


@pytest.mark.parametrize("reason", ["retired", "reset", "stopped", "destroyed", "cancelled"])
def test_section_5_unit_abandon_reasons_are_bare_strings(reason: str) -> None:
    obj = wire.decode(InputAbandonReason, json.dumps(reason))
    assert obj == InputAbandonReason(AbandonKind(reason))
    assert json.loads(wire.encode(obj)) == reason


def test_section_5_max_attempts_exhausted_is_externally_tagged() -> None:
    example = {"max_attempts_exhausted": {"attempts": 3}}
    obj = roundtrip(InputAbandonReason, example)
    assert obj == InputAbandonReason.max_attempts_exhausted(3)


@pytest.mark.parametrize(
    ("example", "expected"),
    [
        ({"outcome_type": "consumed"}, ConsumedOutcome()),
        (
            {"outcome_type": "abandoned", "reason": "retired"},
            AbandonedOutcome(reason=InputAbandonReason(AbandonKind.RETIRED)),
        ),
        (
            {"outcome_type": "abandoned", "reason": {"max_attempts_exhausted": {"attempts": 3}}},
            AbandonedOutcome(reason=InputAbandonReason.max_attempts_exhausted(3)),
        ),
        ({"outcome_type": "superseded", "superseded_by": U1}, None),
        ({"outcome_type": "coalesced", "aggregate_id": U2}, None),
    ],
)
def test_section_5_terminal_outcome_examples(
    example: dict[str, Any], expected: InputTerminalOutcome | None
) -> None:
    obj = roundtrip(InputTerminalOutcome, example)
    if expected is not None:
        assert obj == expected


def test_section_5_stored_row_v5() -> None:
    obj = roundtrip(InputState, STORED_ROW_EXAMPLE)
    assert obj.current_state is InputLifecycleState.CONSUMED
    assert obj.history[1].from_state is InputLifecycleState.QUEUED
    assert obj.history[1].reason is None
    assert isinstance(obj.persisted_input, PromptInput)


def test_section_5_stored_row_minimal_omits_empty_fields() -> None:
    minimal = {
        "stored_input_state_version": 5,
        "input_id": U1,
        "current_state": "queued",
        "attempt_count": 0,
        "recovery_count": 0,
        "created_at": "2026-03-01T12:00:00Z",
        "updated_at": "2026-03-01T12:00:00Z",
    }
    obj = roundtrip(InputState, minimal)
    assert obj.history == ()
    assert obj.terminal_completion_unavailable is False


@pytest.mark.parametrize("version", [0, 1, 2, 6, 99])
def test_section_5_unknown_stored_row_versions_are_refused(version: int) -> None:
    row = {**STORED_ROW_EXAMPLE, "stored_input_state_version": version}
    with pytest.raises(InvalidInput) as info:
        wire.decode(InputState, row)
    assert info.value.path == "stored_input_state_version"
    assert "expected current 5" in str(info.value)


@pytest.mark.parametrize("version", [3, 4])
def test_section_5_v3_and_v4_rows_migrate(version: int) -> None:
    terminal = {
        k: v
        for k, v in STORED_ROW_EXAMPLE.items()
        if k not in ("terminal_completion", "terminal_completion_unavailable")
    }
    obj = wire.decode(InputState, {**terminal, "stored_input_state_version": version})
    assert obj.stored_input_state_version == 5
    assert obj.terminal_completion_unavailable is True  # a terminal old row has no completion
    doc = json.loads(wire.encode(obj))
    assert doc["stored_input_state_version"] == 5
    queued = {**terminal, "current_state": "queued", "stored_input_state_version": version}
    assert wire.decode(InputState, queued).terminal_completion_unavailable is False


# ---------------------------------------------------------------- section 6


def test_section_6_policy_decision_example() -> None:
    obj = roundtrip(PolicyDecision, POLICY_EXAMPLE)
    assert obj.policy_version == 1
    assert obj.apply_mode == "stage_run_start"


def test_section_6_policy_decision_defaults_on_read() -> None:
    required_only = {
        k: POLICY_EXAMPLE[k]
        for k in ("apply_mode", "wake_mode", "queue_mode", "consume_point", "policy_version")
    }
    obj = wire.decode(PolicyDecision, required_only)
    assert obj.drain_policy == "queue_next_turn"
    assert obj.routing_disposition == "queue"
    assert obj.record_transcript is True
    assert obj.emit_operator_content is True
    assert json.loads(wire.encode(obj)) == POLICY_EXAMPLE


# ---------------------------------------------------------------- sections 7, 9, 10, 14


@pytest.mark.parametrize(
    ("example", "display"),
    [
        (
            {"reject_type": "not_ready", "state": "retired"},
            "runtime not accepting input while in state: retired",
        ),
        ({"reject_type": "durability_violation", "detail": "d1"}, "d1"),
        ({"reject_type": "peer_handling_mode_invalid", "detail": "d2"}, "d2"),
        ({"reject_type": "peer_response_terminal_invalid", "detail": "d3"}, "d3"),
    ],
)
def test_section_7_reject_reason_examples(example: dict[str, Any], display: str) -> None:
    obj = roundtrip(RejectReason, example)
    assert str(obj) == display


def test_section_7_not_ready_example_decodes_to_not_ready() -> None:
    obj = wire.decode(RejectReason, {"reject_type": "not_ready", "state": "retired"})
    assert obj == NotReady(state=RuntimeState.RETIRED)
    assert type(
        wire.decode(RejectReason, {"reject_type": "durability_violation", "detail": "x"})
    ) is (DurabilityViolation)
    mode_invalid: RejectReason = PeerHandlingModeInvalid(detail="a")
    assert mode_invalid != PeerResponseTerminalInvalid(detail="a")


@pytest.mark.parametrize(
    "example",
    [
        {"scope_type": "specific", "input_id": U1},
        {"scope_type": "runtime", "runtime_id": "rt:session:" + U2},
        {"scope_type": "operation", "operation_id": "op-9"},
        {"scope_type": "all"},
    ],
)
def test_section_9_input_scope_examples(example: dict[str, Any]) -> None:
    obj = roundtrip(InputScope, example)
    if example["scope_type"] == "specific":
        assert obj == SpecificScope(input_id=uuid.UUID(U1))
    if example["scope_type"] == "all":
        assert obj == AllScope()


@pytest.mark.parametrize("example", COMPLETION_EXAMPLES, ids=lambda e: e["completion_type"])
def test_section_10_completion_outcome_examples(example: dict[str, Any]) -> None:
    obj = roundtrip(CompletionOutcome, example)
    assert obj.__tag__ == example["completion_type"]


def test_section_10_runtime_terminated_decodes_reason_and_error() -> None:
    obj = wire.decode(CompletionOutcome, COMPLETION_EXAMPLES[0])
    assert obj == RuntimeTerminated(
        reason="runtime stopped",
        error=TurnErrorMetadata(
            kind=TurnTerminalCauseKind.FATAL_FAILURE,
            terminal=True,
            outcome=TurnTerminalOutcome.FAILED,
            detail="runtime stopped",
        ),
    )


@pytest.mark.parametrize(
    ("cls", "example"),
    [
        (RetireReport, {"inputs_abandoned": 2, "inputs_pending_drain": 0}),
        (RetireReport, {"inputs_abandoned": 0, "inputs_pending_drain": 1}),
        (RecoveryReport, {"inputs_recovered": 1, "inputs_abandoned": 0, "inputs_requeued": 0}),
        (
            RecoveryReport,
            {"inputs_recovered": 2, "inputs_abandoned": 1, "inputs_requeued": 1, "details": ["a"]},
        ),
    ],
)
def test_section_14_report_examples(cls: type[Any], example: dict[str, Any]) -> None:
    roundtrip(cls, example)


def test_section_14_report_defaults_on_read() -> None:
    assert wire.decode(RetireReport, {"inputs_abandoned": 3}) == RetireReport(3, 0)
    obj = wire.decode(
        RecoveryReport, {"inputs_recovered": 0, "inputs_abandoned": 0, "inputs_requeued": 0}
    )
    assert obj.details == ()
    assert "details" not in json.loads(wire.encode(obj))


# ---------------------------------------------------------------- section 12


def test_section_12_envelope_example() -> None:
    obj = roundtrip(RuntimeEventEnvelope, ENVELOPE_EXAMPLE)
    assert obj.event == InputAbandoned(
        input_id=uuid.UUID(U2), reason=InputAbandonReason(AbandonKind.RESET)
    )
    assert obj.event.event_code == "input.abandoned"
    assert obj.causation_id is None


def test_section_12_state_change_example() -> None:
    example = {"category": "runtime_state_change", "data": {"from": "idle", "to": "running"}}
    obj = roundtrip(RuntimeEvent, example)
    assert obj == RuntimeStateChangeEvent(from_state=RuntimeState.IDLE, to=RuntimeState.RUNNING)
    assert obj.event_code == "runtime.state_changed"
    assert roundtrip(RuntimeStateChangeEvent, example["data"]) == obj
    assert json.loads(wire.encode(obj)) == example["data"]


def test_section_12_topology_example() -> None:
    example = {"category": "topology", "data": {"code": "runtime_retired", "runtime_id": "agent-1"}}
    obj = roundtrip(RuntimeEvent, example)
    assert obj == RuntimeRetired(runtime_id="agent-1")
    assert obj.event_code == "topology.runtime_retired"


INPUT_EVENT_EXAMPLES = [
    ({"code": "accepted", "input_id": U1}, "input.accepted"),
    ({"code": "deduplicated", "input_id": U1, "existing_id": U2}, "input.deduplicated"),
    ({"code": "superseded", "input_id": U1, "superseded_by": U2}, "input.superseded"),
    ({"code": "coalesced", "input_id": U1, "aggregate_id": U2}, "input.coalesced"),
    ({"code": "queued", "input_id": U1}, "input.queued"),
    ({"code": "staged", "input_id": U1, "run_id": U2}, "input.staged"),
    ({"code": "applied", "input_id": U1, "run_id": U2}, "input.applied"),
    ({"code": "consumed", "input_id": U1, "run_id": U2}, "input.consumed"),
    (
        {
            "code": "abandoned",
            "input_id": U1,
            "reason": {"max_attempts_exhausted": {"attempts": 3}},
        },
        "input.abandoned",
    ),
    (
        {"code": "state_transitioned", "input_id": U1, "from": "staged", "to": "queued"},
        "input.state_transitioned",
    ),
]
OTHER_EVENT_EXAMPLES = [
    ({"code": c, "runtime_id": "agent-1"}, f"topology.{c}")
    for c in ("runtime_created", "runtime_retired", "runtime_recycled", "runtime_destroyed")
]


@pytest.mark.parametrize(("data", "code"), INPUT_EVENT_EXAMPLES, ids=str)
def test_section_12_input_lifecycle_events(data: dict[str, Any], code: str) -> None:
    obj = roundtrip(RuntimeEvent, {"category": "input_lifecycle", "data": data})
    assert obj.event_code == code


@pytest.mark.parametrize(("data", "code"), RUN_EVENT_EXAMPLES, ids=str)
def test_section_12_run_lifecycle_events(data: dict[str, Any], code: str) -> None:
    obj = roundtrip(RuntimeEvent, {"category": "run_lifecycle", "data": data})
    assert obj.event_code == code


@pytest.mark.parametrize(("data", "code"), OTHER_EVENT_EXAMPLES, ids=str)
def test_section_12_topology_events(data: dict[str, Any], code: str) -> None:
    obj = roundtrip(RuntimeEvent, {"category": "topology", "data": data})
    assert obj.event_code == code


def test_section_12_projection_event() -> None:
    example = {
        "category": "projection",
        "data": {"rule_id": "rule-1", "projected_input_id": U1, "source_event_id": U2},
    }
    obj = roundtrip(RuntimeEvent, example)
    assert obj.event_code == "runtime.projection_emitted"


def test_section_12_envelope_with_causation_and_correlation() -> None:
    example = {**ENVELOPE_EXAMPLE, "causation_id": U1, "correlation_id": U3}
    obj = roundtrip(RuntimeEventEnvelope, example)
    assert obj.causation_id == uuid.UUID(U1)


def test_decoding_an_event_class_reads_its_own_form() -> None:
    """``decode(type(x), encode(x)) == x`` holds for event classes, and the class is checked."""
    run_id = uuid.UUID(U2)
    ev = RunCancelled(run_id=run_id)
    assert wire.decode(RunCancelled, wire.encode(ev)) == ev
    with pytest.raises(InvalidInput):
        wire.decode(RunStarted, wire.encode(ev))
    with pytest.raises(InvalidInput):
        wire.decode(RuntimeStateChangeEvent, wire.encode(ev))
