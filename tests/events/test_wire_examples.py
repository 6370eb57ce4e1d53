"""The JSON examples of RUNTIME_SPEC.md and the wire rules of its section 1.1.

Every example decodes with ``wire.decode(cls, example)`` and re-encodes to
the same JSON (``json.loads(wire.encode(obj)) == example``). Malformed input
raises ``InvalidInput`` whose ``path`` names the offending field, never a
``KeyError``/``TypeError``/``OverflowError``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meerkat_runtime.errors import InvalidInput
from meerkat_runtime.events import (
    AbandonedOutcome,
    AbandonKind,
    AllScope,
    BlocksRenderable,
    CallbackPending,
    CompletionOutcome,
    ConsumedOutcome,
    ContinuationInput,
    ConversationAppendRole,
    CoreRenderable,
    DurabilityViolation,
    ExternalEventInput,
    ImmediateAppend,
    ImmediateContextAppend,
    Input,
    InputAbandoned,
    InputAbandonReason,
    InputHeader,
    InputLifecycleState,
    InputScope,
    InputState,
    InputTerminalOutcome,
    InputVisibility,
    JsonRenderable,
    NotReady,
    OperationInput,
    OperationProgress,
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
    RunError,
    RunFailed,
    RunPrimitive,
    RunStarted,
    RuntimeEvent,
    RuntimeEventEnvelope,
    RuntimeRetired,
    RuntimeState,
    RuntimeStateChangeEvent,
    RuntimeTerminated,
    RuntimeTurnMetadata,
    SenderTaint,
    SpecificScope,
    StagedRunInput,
    TextRenderable,
    TurnErrorMetadata,
    TurnTerminalCauseKind,
    TurnTerminalOutcome,
    TurnToolOverlay,
    wire,
)
from meerkat_runtime.events.ids import session_id_from_runtime_id, uuid7, validate_session_id

from . import strategies as s

U1 = "01955b3c-7d1e-7c4a-9f00-3a2b1c0d4e5f"
U2 = "01955b3c-0000-7000-8000-000000000001"
U3 = "01955b3c-0000-7000-8000-000000000002"
VIS = {"transcript_eligible": True, "operator_eligible": True}
HEADER = {
    "id": U1,
    "timestamp": "2026-03-01T12:00:00Z",
    "source": {"type": "operator"},
    "durability": "durable",
    "visibility": VIS,
}


def roundtrip(cls: type[Any], example: Any) -> Any:
    """Decode ``example`` (dict and JSON text) as ``cls``, check it re-encodes as ``cls`` equal
    as JSON; return the object."""
    obj = wire.decode(cls, copy.deepcopy(example))
    assert json.loads(wire.encode(obj, as_type=cls)) == example
    again = wire.decode(cls, json.dumps(example))
    assert again == obj
    return obj


# ---------------------------------------------------------------- section 3.4


PROMPT_EXAMPLE = {
    "input_type": "prompt",
    "header": {
        "id": U1,
        "timestamp": "2026-03-01T12:00:00Z",
        "source": {"type": "operator"},
        "durability": "durable",
        "visibility": VIS,
        "idempotency_key": "req-42",
    },
    "content": "Summarise the report",
    "turn_metadata": {"handling_mode": "queue", "keep_alive": True},
}
PEER_EXAMPLE = {
    "input_type": "peer",
    "header": {
        "id": U2,
        "timestamp": "2026-03-01T12:00:01Z",
        "source": {"type": "peer", "peer_id": "peer-a", "display_identity": "Alice"},
        "durability": "durable",
        "visibility": VIS,
    },
    "convention": {
        "convention_type": "response_progress",
        "request_id": "r-7",
        "phase": "in_progress",
    },
    "content": "",
    "payload": {"pct": 40},
}
EXTERNAL_EXAMPLE = {
    "input_type": "external_event",
    "header": {
        "id": U3,
        "timestamp": "2026-03-01T12:00:02Z",
        "source": {"type": "external", "source_name": "github"},
        "durability": "ephemeral",
        "visibility": VIS,
        "supersession_key": "ci-status",
    },
    "event_type": "ci.status",
    "payload": {"state": "green"},
    "handling_mode": "queue",
}


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

STAGED_EXAMPLE = {
    "primitive_type": "staged_input",
    "boundary": "run_start",
    "appends": [{"role": "user", "content": {"type": "text", "text": "hello"}}],
    "contributing_input_ids": [U1],
    "turn_metadata": {"execution_kind": "content_turn"},
}
IMMEDIATE_APPEND_EXAMPLE = {
    "primitive_type": "immediate_append",
    "role": "system_notice",
    "content": {"type": "text", "text": "notice"},
}
CONTEXT_APPEND_EXAMPLE = {
    "primitive_type": "immediate_context_append",
    "key": "peers",
    "content": {"type": "json", "value": ["peer1", "peer2"]},
}


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


STORED_ROW_EXAMPLE = {
    "stored_input_state_version": 5,
    "input_id": U1,
    "current_state": "consumed",
    "policy": {
        "version": 1,
        "decision": {
            "apply_mode": "stage_run_start",
            "wake_mode": "wake_if_idle",
            "queue_mode": "fifo",
            "consume_point": "on_run_complete",
            "drain_policy": "queue_next_turn",
            "routing_disposition": "queue",
            "record_transcript": True,
            "emit_operator_content": True,
            "policy_version": 1,
        },
    },
    "runtime_semantics": {
        "boundary": "run_start",
        "execution_kind": "content_turn",
        "execution_handling_mode": "queue",
        "peer_response_terminal_apply_intent": None,
        "live_interrupt_required": False,
    },
    "terminal_outcome": {"outcome_type": "consumed"},
    "durability": "durable",
    "idempotency_key": "req-42",
    "attempt_count": 1,
    "recovery_count": 0,
    "history": [
        {
            "timestamp": "2026-03-01T12:00:00Z",
            "from": "accepted",
            "to": "queued",
            "reason": "QueueAccepted",
        },
        {"timestamp": "2026-03-01T12:00:00.120Z", "from": "queued", "to": "staged"},
    ],
    "reconstruction_source": {"source_type": "coalescing", "source_input_ids": [U2, U3]},
    "terminal_completion": {"completion_type": "completed_without_result"},
    "terminal_completion_unavailable": True,
    "persisted_input": PROMPT_EXAMPLE,
    "last_run_id": U2,
    "last_boundary_sequence": 1,
    "admission_sequence": 7,
    "recovery_lane": "queue",
    "created_at": "2026-03-01T12:00:00Z",
    "updated_at": "2026-03-01T12:00:00.000001Z",
}


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

POLICY_EXAMPLE = {
    "apply_mode": "stage_run_start",
    "wake_mode": "wake_if_idle",
    "queue_mode": "fifo",
    "consume_point": "on_run_complete",
    "drain_policy": "queue_next_turn",
    "routing_disposition": "queue",
    "record_transcript": True,
    "emit_operator_content": True,
    "policy_version": 1,
}


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


COMPLETION_EXAMPLES: list[dict[str, Any]] = [
    {
        "completion_type": "runtime_terminated",
        "reason": "runtime stopped",
        "error": {
            "kind": "fatal_failure",
            "terminal": True,
            "outcome": "failed",
            "detail": "runtime stopped",
        },
    },
    {"completion_type": "completed", "run_id": U2},
    {"completion_type": "completed", "run_id": U2, "output": {"text": "done"}},
    {"completion_type": "completed_without_result"},
    {
        "completion_type": "callback_pending",
        "tool_use_id": "t1",
        "tool_name": "search",
        "args": {"q": "x"},
    },
    {
        "completion_type": "callback_pending",
        "tool_use_id": "t1",
        "tool_name": "search",
        "args": None,
    },
    {"completion_type": "callback_batch_pending", "pending_tool_calls": [{"id": "a"}, {"id": "b"}]},
    {"completion_type": "cancelled"},
    {
        "completion_type": "abandoned",
        "reason": "retired",
        "error": {"kind": "unknown", "terminal": False},
    },
    {
        "completion_type": "abandoned_with_error",
        "reason": "run failed",
        "error": {"kind": "llm_failure", "terminal": False},
    },
    {
        "completion_type": "completed_with_finalization_failure",
        "error": {"kind": "runtime_apply_failure", "terminal": True, "detail": "commit failed"},
    },
]


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

ENVELOPE_EXAMPLE = {
    "id": "01955b3d-0000-7000-8000-0000000000aa",
    "timestamp": "2026-03-01T12:00:05Z",
    "runtime_id": "rt:session:01955b3c-1111-7000-8000-000000000000",
    "event": {
        "category": "input_lifecycle",
        "data": {"code": "abandoned", "input_id": U2, "reason": "reset"},
    },
}


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
RUN_EVENT_EXAMPLES = [
    ({"code": "started", "run_id": U2}, "run.started"),
    ({"code": "completed", "run_id": U2}, "run.completed"),
    (
        {
            "code": "failed",
            "run_id": U2,
            "error": {
                "kind": "llm_failure",
                "terminal": True,
                "outcome": "failed",
                "detail": "rate limited",
                "provider": "anthropic",
                "model": "claude",
                "retryable": False,
            },
        },
        "run.failed",
    ),
    (
        {
            "code": "failed",
            "run_id": U2,
            "error": {"kind": "time_budget_exceeded", "terminal": False},
        },
        "run.failed",
    ),
    ({"code": "cancelled", "run_id": U2}, "run.cancelled"),
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


# ---------------------------------------------------------------- section 1.1 shapes


def test_1_1_run_failed_error_terminal_defaults_false_and_is_always_written() -> None:
    data = {"code": "failed", "run_id": U2, "error": {"kind": "unknown"}}
    obj = wire.decode(RuntimeEvent, {"category": "run_lifecycle", "data": data})
    assert isinstance(obj, RunFailed)
    assert obj.error == RunError(kind=TurnTerminalCauseKind.UNKNOWN, terminal=False)
    assert json.loads(wire.encode(obj.error)) == {"kind": "unknown", "terminal": False}
    error = RunError(kind=TurnTerminalCauseKind.FATAL_FAILURE, terminal=True)
    assert json.loads(wire.encode(error)) == {"kind": "fatal_failure", "terminal": True}


def test_1_1_tool_overlays_write_nulls() -> None:
    assert json.loads(wire.encode(TurnToolOverlay())) == {
        "allowed_tools": None,
        "blocked_tools": None,
    }
    example = {
        "input_type": "continuation",
        "header": HEADER,
        "reason": "resume",
        "continuation_kind": "ordinary",
        "handling_mode": "steer",
        "turn_tool_overlay": {"allowed_tools": ["search"], "blocked_tools": None},
    }
    obj = roundtrip(Input, example)
    assert isinstance(obj, ContinuationInput)
    assert obj.turn_tool_overlay == TurnToolOverlay(allowed_tools=("search",), blocked_tools=None)
    meta = {"flow_tool_overlay": {"allowed_tools": None, "blocked_tools": ["rm"]}}
    assert roundtrip(RuntimeTurnMetadata, meta).flow_tool_overlay == TurnToolOverlay(
        blocked_tools=("rm",)
    )


@pytest.mark.parametrize("taint", ["clean", "tainted"])
def test_1_1_sender_taint(taint: str) -> None:
    example = {"input_type": "peer", "header": HEADER, "content": "x", "sender_taint": taint}
    obj = roundtrip(Input, example)
    assert isinstance(obj, PeerInput)
    assert obj.sender_taint is SenderTaint(taint)


OPERATION_EVENTS = [
    {"type": "started", "id": "op-1", "kind": "shell"},
    {"type": "progress", "id": "op-1", "message": "half", "percent": 50.0},
    {"type": "progress", "id": "op-1", "message": "?", "percent": None},
    {"type": "completed", "id": "op-1", "result": {"exit": 0}},
    {"type": "completed", "id": "op-1", "result": None},
    {"type": "failed", "id": "op-1", "error": "boom"},
    {"type": "cancelled", "id": "op-1"},
]


@pytest.mark.parametrize("event", OPERATION_EVENTS, ids=lambda e: f"{e['type']}")
def test_1_1_operation_input_events(event: dict[str, Any]) -> None:
    example = {"input_type": "operation", "header": HEADER, "operation_id": "op-1", "event": event}
    obj = roundtrip(Input, example)
    assert isinstance(obj, OperationInput)
    assert obj.kind == "operation"
    assert obj.requested_handling_mode() is None


def test_1_1_operation_progress_percent_written_as_null_when_absent() -> None:
    ev = wire.decode(OperationInput, {"input_type": "operation", "header": HEADER, "operation_id": "o",
                                      "event": {"type": "progress", "id": "o", "message": "m"}}).event  # fmt: skip
    assert ev == OperationProgress(id="o", message="m", percent=None)
    assert json.loads(wire.encode(ev)) == {
        "type": "progress",
        "id": "o",
        "message": "m",
        "percent": None,
    }


IMAGE_INLINE = {
    "type": "image",
    "media_type": "image/png",
    "source": "inline",
    "data": "iVBORw0KGgo=",
}
IMAGE_BLOB = {"type": "image", "media_type": "image/jpeg", "source": "blob", "blob_id": "blob-1"}


def test_1_1_image_blocks_in_prompt_content() -> None:
    example = {
        "input_type": "prompt",
        "header": HEADER,
        "content": [{"type": "text", "text": "look"}, IMAGE_INLINE, IMAGE_BLOB],
    }
    obj = roundtrip(Input, example)
    assert isinstance(obj, PromptInput)
    assert obj.content[1] == IMAGE_INLINE


def test_1_1_image_blocks_in_external_event_and_renderables() -> None:
    ext = {**EXTERNAL_EXAMPLE, "blocks": [IMAGE_BLOB]}
    assert roundtrip(Input, ext).blocks == (IMAGE_BLOB,)
    assert roundtrip(
        CoreRenderable, {"type": "blocks", "blocks": [IMAGE_INLINE]}
    ) == BlocksRenderable(blocks=(IMAGE_INLINE,))


def test_1_1_every_input_variant_with_every_optional_field() -> None:
    flow = {
        "input_type": "flow_step",
        "header": {**HEADER, "source": {"type": "flow", "flow_id": "f", "step_index": 0},
                   "correlation_id": U1, "idempotency_key": U1},
        "step_id": "s",
        "content": "do",
        "directed_interaction_id": U1,
        "turn_metadata": {
            "handling_mode": "steer",
            "keep_alive": False,
            "skill_references": ["a", {"b": 1}],
            "flow_tool_overlay": {"allowed_tools": None, "blocked_tools": None},
            "additional_instructions": ["be brief"],
            "model": "m",
            "provider": "p",
            "provider_params": {"t": 0.5},
            "render_metadata": {"r": 1},
            "execution_kind": "resume_pending",
        },
    }  # fmt: skip
    peer_full = {
        "input_type": "peer",
        "header": {**HEADER, "source": {"type": "peer", "peer_id": "p", "display_identity": "P",
                                        "runtime_id": "rt:session:" + U2}},
        "directed_interaction_id": U1,
        "convention": {"convention_type": "request", "request_id": "r", "intent": "review"},
        "content": [{"type": "text", "text": "t"}],
        "payload": [1, 2],
        "handling_mode": "queue",
        "sender_taint": "clean",
        "objective_id": "obj",
        "system_prompts": ["a", "a"],
        "injected_context": ["ctx", [{"type": "text", "text": "c"}]],
    }  # fmt: skip
    prompt_full = {
        "input_type": "prompt",
        "header": {**HEADER, "source": {"type": "system"}, "durability": "derived",
                   "supersession_key": "s", "visibility": {"transcript_eligible": False,
                                                           "operator_eligible": True}},
        "content": "x",
        "typed_turn_appends": [{"role": "assistant", "content": {"type": "text", "text": "a"}}],
        "injected_context": ["c"],
    }  # fmt: skip
    ext_full = {
        **EXTERNAL_EXAMPLE,
        "blocks": [{"type": "text", "text": "b"}],
        "handling_mode": "steer",
        "render_metadata": {"x": 1},
        "objective_id": "o",
    }
    cont_full = {
        "input_type": "continuation",
        "header": HEADER,
        "reason": "detached_background_op_completed",
        "continuation_kind": "workgraph_attention",
        "handling_mode": "queue",
        "request_id": "r",
        "turn_tool_overlay": {"allowed_tools": [], "blocked_tools": ["x"]},
        "turn_append": {"role": "tool", "content": {"type": "json", "value": None}},
    }
    for example in (flow, peer_full, prompt_full, ext_full, cont_full):
        roundtrip(Input, example)
    assert roundtrip(Input, peer_full).system_prompts == ("a", "a")


# ---------------------------------------------------------------- 1.1: timestamps


def _header_at(ts: Any) -> dict[str, Any]:
    return {**HEADER, "timestamp": ts}


@pytest.mark.parametrize(
    ("micros", "written"),
    [
        (0, "2026-03-01T12:00:00Z"),
        (120_000, "2026-03-01T12:00:00.120Z"),
        (1_000, "2026-03-01T12:00:00.001Z"),
        (1, "2026-03-01T12:00:00.000001Z"),
        (100, "2026-03-01T12:00:00.000100Z"),
        (123_456, "2026-03-01T12:00:00.123456Z"),
        (999_999, "2026-03-01T12:00:00.999999Z"),
    ],
)
def test_1_1_timestamps_written_with_0_3_or_6_digits(micros: int, written: str) -> None:
    h = InputHeader(timestamp=datetime(2026, 3, 1, 12, 0, 0, micros, tzinfo=UTC))
    assert json.loads(wire.encode(h))["timestamp"] == written
    assert wire.decode(InputHeader, wire.encode(h)).timestamp == h.timestamp


@settings(max_examples=200, deadline=None)
@given(s.timestamps)
def test_1_1_timestamp_fraction_uses_the_fewest_digits(ts: datetime) -> None:
    written = json.loads(wire.encode(InputHeader(timestamp=ts)))["timestamp"]
    assert written.endswith("Z")
    frac = written[20:-1] if "." in written else ""
    assert len(frac) in (0, 3, 6)
    if ts.microsecond == 0:
        assert frac == ""
    elif ts.microsecond % 1000 == 0:
        assert len(frac) == 3
    else:
        assert len(frac) == 6
    assert wire.decode(InputHeader, _header_at(written)).timestamp == ts


def test_1_1_timestamp_written_in_utc_from_any_aware_datetime() -> None:
    ts = datetime(2026, 3, 1, 13, 30, tzinfo=timezone(timedelta(hours=1, minutes=30)))
    assert json.loads(wire.encode(InputHeader(timestamp=ts)))["timestamp"] == "2026-03-01T12:00:00Z"


@pytest.mark.parametrize(
    ("given_ts", "written"),
    [
        ("2026-03-01T13:30:00+01:30", "2026-03-01T12:00:00Z"),
        ("2026-03-01T07:00:00-05:00", "2026-03-01T12:00:00Z"),
        ("2026-03-01T12:00:00+00:00", "2026-03-01T12:00:00Z"),
        ("2026-03-01T12:00:00-00:00", "2026-03-01T12:00:00Z"),
        ("2026-03-01T12:00:00z", "2026-03-01T12:00:00Z"),
        ("2026-03-02T00:30:00.5+12:30", "2026-03-01T12:00:00.500Z"),
        ("2026-03-01T12:00:00.123456789Z", "2026-03-01T12:00:00.123456Z"),
        ("2026-03-01T12:00:00.999999999Z", "2026-03-01T12:00:00.999999Z"),  # truncated, not rounded
        ("2026-03-01T12:00:00.1234567-01:00", "2026-03-01T13:00:00.123456Z"),
        ("2026-03-01T12:00:00.000000001Z", "2026-03-01T12:00:00Z"),
        ("2026-03-01T12:00:00.12Z", "2026-03-01T12:00:00.120Z"),
    ],
)
def test_1_1_timestamp_offsets_normalised_and_nanos_truncated(given_ts: str, written: str) -> None:
    h = wire.decode(InputHeader, _header_at(given_ts))
    assert h.timestamp.tzinfo is UTC
    assert json.loads(wire.encode(h))["timestamp"] == written


@pytest.mark.parametrize(
    "bad",
    [
        "2026-03-01T12:00:00",  # no offset
        "2026-03-01T12:00:00.123",  # no offset
        "2026-03-01",
        "12:00:00Z",
        1772366400,
        1772366400.5,
        None,
        True,
        ["2026-03-01T12:00:00Z"],
        "",
        "2026-03-01T12:00:00.1234567891Z",  # ten fraction digits
        "2026-03-01T12:00:00.Z",
        "2026-02-30T12:00:00Z",
        "2026-13-01T12:00:00Z",
        "2026-03-01T24:00:00Z",
        "2026-03-01T12:60:00Z",
        "2026-03-01T12:00:00+24:00",
        "2026-03-01T12:00:00+05:60",  # offset minutes out of range
        "2026-03-01T12:00:00+05:99",
        "2026-03-01T12:00:00+0100",
        "2026-03-01T12:00:00 Z",
        "+2026-03-01T12:00:00Z",
        "9999-12-31T23:59:59-01:00",  # UTC instant past year 9999
        "0001-01-01T00:00:00+01:00",  # UTC instant before year 1
        "0000-01-01T00:00:00Z",
        "2026-03-01T12:00:00\u00a0Z",
        "2026-03-01T12:00:00Z\n",
    ],
)
def test_1_1_bad_timestamps_refused_with_path(bad: Any) -> None:
    with pytest.raises(InvalidInput) as info:
        wire.decode(Input, {**PROMPT_EXAMPLE, "header": _header_at(bad)})
    assert info.value.path == "header.timestamp"


def test_1_1_extreme_but_valid_timestamps_are_accepted() -> None:
    lo = wire.decode(InputHeader, _header_at("0001-01-01T00:00:00Z")).timestamp
    hi = wire.decode(InputHeader, _header_at("9999-12-31T23:59:59.999999+00:00")).timestamp
    assert lo == datetime(1, 1, 1, tzinfo=UTC)
    assert hi == datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    shifted = wire.decode(InputHeader, _header_at("0001-01-01T01:00:00+01:00")).timestamp
    assert shifted == lo


# ---------------------------------------------------------------- 1.1: uuids


@pytest.mark.parametrize(
    "given_id",
    [
        U1,
        U1.upper(),
        U1.replace("-", ""),
        U1.replace("-", "").upper(),
        "01955B3C-7d1e-7C4A-9f00-3A2B1C0D4E5F",
    ],
)
def test_1_1_uuids_any_case_with_or_without_hyphens(given_id: str) -> None:
    h = wire.decode(InputHeader, {**HEADER, "id": given_id, "correlation_id": given_id})
    assert h.id == uuid.UUID(U1)
    doc = json.loads(wire.encode(h))
    assert doc["id"] == U1
    assert doc["correlation_id"] == U1


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "not-a-uuid",
        U1[:-1],
        U1 + "0",
        U1.replace("f", "g"),
        "0195_b3c7d1e7c4a9f003a2b1c0d4e5f",  # underscores are not hex digits
        " 1955b3c-7d1e-7c4a-9f00-3a2b1c0d4e5f",  # leading blank is not a hex digit
        "+1955b3c7d1e7c4a9f003a2b1c0d4e5f",
        "0-1955b3c7d1e7c4a9f003a2b1c0d4e5f",  # misplaced hyphen
        "01955b3c7d1e-7c4a-9f00-3a2b-1c0d4e5f",
        12345,
        None,
        ["x"],
    ],
)
def test_1_1_bad_uuids_refused_with_path(bad: Any) -> None:
    with pytest.raises(InvalidInput) as info:
        wire.decode(Input, {**PROMPT_EXAMPLE, "header": {**HEADER, "id": bad}})
    assert info.value.path == "header.id"


@settings(max_examples=100, deadline=None)
@given(st.uuids(), st.booleans(), st.booleans())
def test_1_1_any_uuid_in_any_spelling_reads_back_canonical(
    u: uuid.UUID, upper: bool, hyphens: bool
) -> None:
    spelled = str(u) if hyphens else u.hex
    spelled = spelled.upper() if upper else spelled
    doc = {"scope_type": "specific", "input_id": spelled}
    obj = wire.decode(InputScope, doc)
    assert obj == SpecificScope(input_id=u)
    assert json.loads(wire.encode(obj))["input_id"] == str(u)


# ---------------------------------------------------------------- 1.1: nulls and defaults

_CONT = {"input_type": "continuation", "header": HEADER, "reason": "r"}
_STAGED = {"primitive_type": "staged_input", "boundary": "run_start"}
_RECOVERY = {"inputs_recovered": 0, "inputs_abandoned": 0, "inputs_requeued": 0}

NULL_REFUSED = [
    (Input, {**EXTERNAL_EXAMPLE, "handling_mode": None}, "handling_mode"),
    (Input, {**_CONT, "handling_mode": None}, "handling_mode"),
    (Input, {**_CONT, "continuation_kind": None}, "continuation_kind"),
    (PolicyDecision, {**POLICY_EXAMPLE, "drain_policy": None}, "drain_policy"),
    (PolicyDecision, {**POLICY_EXAMPLE, "routing_disposition": None}, "routing_disposition"),
    (PolicyDecision, {**POLICY_EXAMPLE, "record_transcript": None}, "record_transcript"),
    (PolicyDecision, {**POLICY_EXAMPLE, "emit_operator_content": None}, "emit_operator_content"),
    (RetireReport, {"inputs_abandoned": 0, "inputs_pending_drain": None}, "inputs_pending_drain"),
    (RecoveryReport, {**_RECOVERY, "details": None}, "details"),
    (RunPrimitive, {**_STAGED, "appends": None}, "appends"),
    (RunError, {"kind": "unknown", "terminal": None}, "terminal"),
    (Input, {**PROMPT_EXAMPLE, "typed_turn_appends": None}, "typed_turn_appends"),
    (
        Input,
        {**PROMPT_EXAMPLE, "header": {**HEADER, "visibility": {"transcript_eligible": None,
                                                                "operator_eligible": True}}},
        "header.visibility.transcript_eligible",
    ),
    (
        RuntimeEventEnvelope,
        {**ENVELOPE_EXAMPLE, "event": {"category": "run_lifecycle",
                                       "data": {"code": "failed", "run_id": U2,
                                                "error": {"kind": "unknown", "terminal": None}}}},
        "event.data.error.terminal",
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("cls", "doc", "path"), NULL_REFUSED, ids=lambda v: v if isinstance(v, str) else ""
)
def test_1_1_null_for_non_optional_defaulted_field_refused(
    cls: type[Any], doc: dict[str, Any], path: str
) -> None:
    with pytest.raises(InvalidInput) as info:
        wire.decode(cls, doc)
    assert info.value.path == path


def test_1_1_missing_defaulted_fields_take_their_defaults() -> None:
    ext = {k: v for k, v in EXTERNAL_EXAMPLE.items() if k != "handling_mode"}
    assert wire.decode(Input, ext).handling_mode == "queue"  # type: ignore[attr-defined]
    cont = wire.decode(Input, _CONT)
    assert isinstance(cont, ContinuationInput)
    assert (cont.continuation_kind, cont.handling_mode) == ("ordinary", "queue")
    staged = wire.decode(RunPrimitive, _STAGED)
    assert staged == StagedRunInput(boundary=RunApplyBoundary.RUN_START)


NULL_ACCEPTED = [
    (Input, {**PROMPT_EXAMPLE, "turn_metadata": None}, ("turn_metadata",)),
    (Input, {**PROMPT_EXAMPLE, "header": {**HEADER, "idempotency_key": None}}, ("header", "idempotency_key")),
    (Input, {**PROMPT_EXAMPLE, "header": {**HEADER, "supersession_key": None}}, ("header", "supersession_key")),
    (Input, {**PROMPT_EXAMPLE, "header": {**HEADER, "correlation_id": None}}, ("header", "correlation_id")),
    (Input, {**PEER_EXAMPLE, "convention": None}, ("convention",)),
    (Input, {**PEER_EXAMPLE, "handling_mode": None}, ("handling_mode",)),
    (Input, {**PEER_EXAMPLE, "sender_taint": None}, ("sender_taint",)),
    (Input, {**PEER_EXAMPLE, "directed_interaction_id": None}, ("directed_interaction_id",)),
    (Input, {**PEER_EXAMPLE, "objective_id": None}, ("objective_id",)),
    (
        Input,
        {**PEER_EXAMPLE, "header": {**PEER_EXAMPLE["header"],  # type: ignore[dict-item]
                                    "source": {"type": "peer", "peer_id": "p", "display_identity": None,
                                               "runtime_id": None}}},
        ("header", "source", "display_identity"),
    ),
    (Input, {**EXTERNAL_EXAMPLE, "blocks": None}, ("blocks",)),
    (Input, {**EXTERNAL_EXAMPLE, "render_metadata": None}, ("render_metadata",)),
    (Input, {**_CONT, "request_id": None}, ("request_id",)),
    (Input, {**_CONT, "turn_tool_overlay": None}, ("turn_tool_overlay",)),
    (Input, {**_CONT, "turn_append": None}, ("turn_append",)),
    (RunPrimitive, {**_STAGED, "turn_metadata": None}, ("turn_metadata",)),
    (RuntimeTurnMetadata, {"model": None, "handling_mode": None, "execution_kind": None}, ("model",)),
    (RunError, {"kind": "unknown", "terminal": False, "detail": None, "retryable": None}, ("detail",)),
    (RuntimeEventEnvelope, {**ENVELOPE_EXAMPLE, "causation_id": None}, ("causation_id",)),
    (InputState, {**STORED_ROW_EXAMPLE, "last_run_id": None, "policy": None}, ("last_run_id",)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("cls", "doc", "key_path"),
    NULL_ACCEPTED,
    ids=lambda v: ".".join(v) if isinstance(v, tuple) else "",
)
def test_1_1_null_for_optional_field_accepted_then_omitted(
    cls: type[Any], doc: dict[str, Any], key_path: tuple[str, ...]
) -> None:
    out = json.loads(wire.encode(wire.decode(cls, doc)))
    *parents, key = key_path
    for p in parents:
        out = out[p]
    assert key not in out


@pytest.mark.parametrize(
    ("cls", "doc", "key"),
    [
        (Input, EXTERNAL_EXAMPLE, "payload"),
        (CoreRenderable, {"type": "json", "value": 1}, "value"),
        (CompletionOutcome, COMPLETION_EXAMPLES[4], "args"),
    ],
)
def test_1_1_required_json_fields_must_be_present_but_may_be_null(
    cls: type[Any], doc: dict[str, Any], key: str
) -> None:
    missing = {k: v for k, v in doc.items() if k != key}
    with pytest.raises(InvalidInput) as info:
        wire.decode(cls, missing)
    assert info.value.path == key
    with_null = {**doc, key: None}
    obj = wire.decode(cls, with_null)
    assert json.loads(wire.encode(obj)) == with_null  # written as null, not omitted


def test_1_1_input_visibility_requires_both_keys() -> None:
    for missing in ("transcript_eligible", "operator_eligible"):
        vis = {k: v for k, v in VIS.items() if k != missing}
        with pytest.raises(InvalidInput) as info:
            wire.decode(Input, {**PROMPT_EXAMPLE, "header": {**HEADER, "visibility": vis}})
        assert info.value.path == f"header.visibility.{missing}"
    with pytest.raises(InvalidInput) as info:
        wire.decode(InputVisibility, {})
    assert info.value.path in ("transcript_eligible", "operator_eligible")
    # Constructed without values, both default to true and both keys are written.
    assert json.loads(wire.encode(InputVisibility())) == VIS
    both_false = {"transcript_eligible": False, "operator_eligible": False}
    assert roundtrip(InputVisibility, both_false) == InputVisibility(False, False)


@pytest.mark.parametrize("key", ["id", "timestamp", "source", "durability", "visibility"])
def test_1_1_every_header_key_is_required_on_the_wire(key: str) -> None:
    h = {k: v for k, v in HEADER.items() if k != key}
    with pytest.raises(InvalidInput) as info:
        wire.decode(Input, {**PROMPT_EXAMPLE, "header": h})
    assert info.value.path == f"header.{key}"


def test_1_1_header_itself_is_required() -> None:
    doc = {k: v for k, v in PROMPT_EXAMPLE.items() if k != "header"}
    with pytest.raises(InvalidInput) as info:
        wire.decode(Input, doc)
    assert info.value.path == "header"


# ---------------------------------------------------------------- 1.1: unknown keys

#: Values under these keys are opaque JSON (kept as is), so unknown keys are not added inside them.
_OPAQUE = {"payload", "value", "provider_params", "render_metadata", "error", "output", "args",
           "result", "content", "blocks", "injected_context", "pending_tool_calls",
           "skill_references", "directed_run_started_attribution"}  # fmt: skip


def _with_unknown_keys(doc: Any, key: str | None = None) -> Any:
    if key in _OPAQUE:
        if key == "content" and isinstance(
            doc, dict
        ):  # a CoreRenderable (struct), not ContentInput
            return _with_unknown_keys(doc)
        if key == "error" and isinstance(doc, dict) and "kind" in doc and "terminal" in doc:
            return _with_unknown_keys(doc)  # a RunError struct
        return doc
    if isinstance(doc, dict):
        out = {k: _with_unknown_keys(v, k) for k, v in doc.items()}
        out["zz_future_field"] = {"nested": [1, "two", None]}
        return out
    if isinstance(doc, list):
        return [_with_unknown_keys(v, key) for v in doc]
    return doc


UNKNOWN_KEY_CASES = [
    (Input, PROMPT_EXAMPLE),
    (Input, PEER_EXAMPLE),
    (Input, EXTERNAL_EXAMPLE),
    (RunPrimitive, STAGED_EXAMPLE),
    (RunPrimitive, IMMEDIATE_APPEND_EXAMPLE),
    (RunPrimitive, CONTEXT_APPEND_EXAMPLE),
    (PolicyDecision, POLICY_EXAMPLE),
    (InputState, STORED_ROW_EXAMPLE),
    (RuntimeEventEnvelope, ENVELOPE_EXAMPLE),
    (RuntimeEvent, {"category": "run_lifecycle", "data": RUN_EVENT_EXAMPLES[2][0]}),
    (RejectReason, {"reject_type": "not_ready", "state": "retired"}),
    (CompletionOutcome, COMPLETION_EXAMPLES[0]),
    (InputTerminalOutcome, {"outcome_type": "abandoned", "reason": "retired"}),
    (InputScope, {"scope_type": "specific", "input_id": U1}),
    (RecoveryReport, _RECOVERY),
]


@pytest.mark.parametrize(
    ("cls", "example"), UNKNOWN_KEY_CASES, ids=lambda v: getattr(v, "__name__", "")
)
def test_1_1_unknown_keys_are_ignored_at_every_level(
    cls: type[Any], example: dict[str, Any]
) -> None:
    noisy = _with_unknown_keys(example)
    assert noisy != example
    obj = wire.decode(cls, noisy)
    assert obj == wire.decode(cls, example)
    assert json.loads(wire.encode(obj, as_type=cls)) == example


def test_1_1_unknown_keys_inside_opaque_json_are_kept() -> None:
    doc = {**EXTERNAL_EXAMPLE, "payload": {"state": "green", "zz": 1}}
    assert json.loads(wire.encode(wire.decode(Input, doc)))["payload"] == {
        "state": "green",
        "zz": 1,
    }


def test_1_1_legacy_shape_refused_only_for_a_missing_required_key() -> None:
    legacy = {"input_type": "prompt", "header": HEADER, "text": "old field name"}
    with pytest.raises(InvalidInput) as info:
        wire.decode(Input, legacy)
    assert info.value.path == "content"
    legacy_ext = {"input_type": "external_event", "header": HEADER, "event_type": "e", "data": {}}
    with pytest.raises(InvalidInput) as info:
        wire.decode(Input, legacy_ext)
    assert info.value.path == "payload"


_FLOW = {"input_type": "flow_step", "header": HEADER, "step_id": "s", "content": "c"}
_PEER_MIN = {"input_type": "peer", "header": HEADER, "content": "c"}


@pytest.mark.parametrize(
    ("cls", "doc", "key"),
    [
        (Input, PROMPT_EXAMPLE, "content"),
        (Input, _PEER_MIN, "content"),
        (Input, _FLOW, "step_id"),
        (Input, _FLOW, "content"),
        (Input, EXTERNAL_EXAMPLE, "event_type"),
        (Input, EXTERNAL_EXAMPLE, "header"),
        (Input, _CONT, "reason"),
        (CompletionOutcome, COMPLETION_EXAMPLES[6], "pending_tool_calls"),
        (InputState, STORED_ROW_EXAMPLE, "stored_input_state_version"),
        (InputState, STORED_ROW_EXAMPLE, "created_at"),
        (InputState, {**STORED_ROW_EXAMPLE, "reconstruction_source": {"source_type": "coalescing"}},
         "reconstruction_source.source_input_ids"),
    ],
)  # fmt: skip
def test_3_3_fields_without_a_default_are_required_on_the_wire(
    cls: type[Any], doc: dict[str, Any], key: str
) -> None:
    """Spec 3.3 gives these no serde default: a document without them is refused, although
    Python code may leave them out when constructing (``PromptInput(content="hi")``)."""
    *parents, last = key.split(".")
    broken = copy.deepcopy(doc)
    target = broken
    for p in parents:
        target = target[p]
    if last in target:
        del target[last]
    with pytest.raises(InvalidInput) as info:
        wire.decode(cls, broken)
    assert info.value.path == key


# ---------------------------------------------------------------- malformed input

MALFORMED = [
    # wrong types
    (Input, {**PROMPT_EXAMPLE, "header": _header_at(1772366400)}, "header.timestamp"),
    (Input, {**PROMPT_EXAMPLE, "header": {**HEADER, "id": 7}}, "header.id"),
    (Input, {**PROMPT_EXAMPLE, "header": "h"}, "header"),
    (Input, {**PROMPT_EXAMPLE, "header": {**HEADER, "source": "operator"}}, "header.source"),
    (Input, {**PROMPT_EXAMPLE, "header": {**HEADER, "durability": "forever"}}, "header.durability"),
    (Input, {**PROMPT_EXAMPLE, "header": {**HEADER, "durability": 1}}, "header.durability"),
    (Input, {**PROMPT_EXAMPLE, "header": {**HEADER, "idempotency_key": 42}}, "header.idempotency_key"),
    (Input, {**PROMPT_EXAMPLE, "header": {**HEADER, "visibility": {"transcript_eligible": "yes", "operator_eligible": True}}},
     "header.visibility.transcript_eligible"),
    (Input, {**PROMPT_EXAMPLE, "header": {**HEADER, "visibility": {"transcript_eligible": 1, "operator_eligible": True}}},
     "header.visibility.transcript_eligible"),
    (Input, {**PROMPT_EXAMPLE, "header": {**HEADER, "source": {"type": "flow", "flow_id": "f", "step_index": "0"}}},
     "header.source.step_index"),
    (Input, {**PROMPT_EXAMPLE, "header": {**HEADER, "source": {"type": "flow", "flow_id": "f", "step_index": -1}}},
     "header.source.step_index"),
    (Input, {**PROMPT_EXAMPLE, "header": {**HEADER, "source": {"type": "flow", "flow_id": "f", "step_index": 1.5}}},
     "header.source.step_index"),
    (Input, {**PROMPT_EXAMPLE, "header": {**HEADER, "source": {"type": "flow", "flow_id": "f", "step_index": True}}},
     "header.source.step_index"),
    (Input, {**PROMPT_EXAMPLE, "content": 5}, "content"),
    (Input, {**PROMPT_EXAMPLE, "content": {"type": "text", "text": "x"}}, "content"),
    (Input, {**PROMPT_EXAMPLE, "content": ["plain string is not a block"]}, "content[0]"),
    (Input, {**PROMPT_EXAMPLE, "content": [{"text": "no type"}]}, "content[0].type"),
    (Input, {**PROMPT_EXAMPLE, "content": [{"type": "text"}]}, "content[0].text"),
    (Input, {**PROMPT_EXAMPLE, "turn_metadata": {"keep_alive": "yes"}}, "turn_metadata.keep_alive"),
    (Input, {**PROMPT_EXAMPLE, "turn_metadata": {"handling_mode": "later"}}, "turn_metadata.handling_mode"),
    (Input, {**PROMPT_EXAMPLE, "turn_metadata": []}, "turn_metadata"),
    (Input, {**PROMPT_EXAMPLE, "typed_turn_appends": [{"role": "user", "content": {"type": "text", "text": 1}}]},
     "typed_turn_appends[0].content.text"),
    (Input, {**PROMPT_EXAMPLE, "typed_turn_appends": [{"role": "robot", "content": {"type": "text", "text": "x"}}]},
     "typed_turn_appends[0].role"),
    (Input, {**PROMPT_EXAMPLE, "typed_turn_appends": {"role": "user"}}, "typed_turn_appends"),
    (Input, {**PEER_EXAMPLE, "system_prompts": ["ok", 2]}, "system_prompts[1]"),
    (Input, {**PEER_EXAMPLE, "sender_taint": "dirty"}, "sender_taint"),
    (Input, {**EXTERNAL_EXAMPLE, "event_type": None}, "event_type"),
    (Input, {**EXTERNAL_EXAMPLE, "blocks": {"type": "text", "text": "x"}}, "blocks"),
    (Input, {"input_type": "operation", "header": HEADER, "operation_id": "o",
             "event": {"type": "progress", "id": "o", "message": "m", "percent": "half"}}, "event.percent"),
    (Input, {"input_type": "operation", "header": HEADER, "operation_id": "o"}, "event"),
    (RunPrimitive, {**STAGED_EXAMPLE, "contributing_input_ids": [U1, "nope"]}, "contributing_input_ids[1]"),
    (RunPrimitive, {**STAGED_EXAMPLE, "boundary": "whenever"}, "boundary"),
    (RunPrimitive, {"primitive_type": "staged_input"}, "boundary"),
    (PolicyDecision, {**POLICY_EXAMPLE, "policy_version": -1}, "policy_version"),
    (PolicyDecision, {**POLICY_EXAMPLE, "policy_version": "1"}, "policy_version"),
    (PolicyDecision, {**POLICY_EXAMPLE, "policy_version": 1.0}, "policy_version"),
    (PolicyDecision, {k: v for k, v in POLICY_EXAMPLE.items() if k != "policy_version"}, "policy_version"),
    (PolicyDecision, {k: v for k, v in POLICY_EXAMPLE.items() if k != "apply_mode"}, "apply_mode"),
    (InputState, {**STORED_ROW_EXAMPLE, "attempt_count": -1}, "attempt_count"),
    (InputState, {**STORED_ROW_EXAMPLE, "history": [{"timestamp": "2026-03-01T12:00:00Z", "to": "queued"}]},
     "history[0].from"),
    (InputState, {**STORED_ROW_EXAMPLE, "current_state": "finished"}, "current_state"),
    (InputState, {**STORED_ROW_EXAMPLE, "stored_input_state_version": "5"}, "stored_input_state_version"),
    (InputState, {**STORED_ROW_EXAMPLE, "persisted_input": {**PROMPT_EXAMPLE, "header": _header_at("x")}},
     "persisted_input.header.timestamp"),
    (RuntimeEventEnvelope, {**ENVELOPE_EXAMPLE, "event": {"category": "input_lifecycle",
                                                          "data": {"code": "abandoned", "input_id": U2,
                                                                   "reason": "bored"}}},
     "event.data.reason"),
    (RuntimeEventEnvelope, {**ENVELOPE_EXAMPLE, "event": {"category": "input_lifecycle",
                                                          "data": {"code": "abandoned", "input_id": U2,
                                                                   "reason": {"max_attempts_exhausted": {}}}}},
     "event.data.reason.max_attempts_exhausted.attempts"),
    (RuntimeEventEnvelope, {**ENVELOPE_EXAMPLE, "event": {"category": "input_lifecycle",
                                                          "data": {"code": "abandoned", "input_id": U2,
                                                                   "reason": {"max_attempts_exhausted": {"attempts": -3}}}}},
     "event.data.reason.max_attempts_exhausted.attempts"),
    (RuntimeEventEnvelope, {**ENVELOPE_EXAMPLE, "event": "input.abandoned"}, "event"),
    (RuntimeEventEnvelope, {**ENVELOPE_EXAMPLE, "event": {"category": "run_lifecycle", "data": None}}, "event.data"),
    (RuntimeEventEnvelope, {**ENVELOPE_EXAMPLE, "event": {"category": "run_lifecycle", "data": []}}, "event.data"),
    (RuntimeEventEnvelope, {**ENVELOPE_EXAMPLE, "event": {"category": "runtime_state_change",
                                                          "data": {"from": "idle", "to": "asleep"}}},
     "event.data.to"),
    (RuntimeEventEnvelope, {**ENVELOPE_EXAMPLE, "runtime_id": 5}, "runtime_id"),
    (CompletionOutcome, {"completion_type": "completed", "run_id": None}, "run_id"),
    (RetireReport, {"inputs_abandoned": -1}, "inputs_abandoned"),
    (RecoveryReport, {**_RECOVERY, "details": "one"}, "details"),
    (InputScope, {"scope_type": "specific"}, "input_id"),
]  # fmt: skip

UNKNOWN_TAGS = [
    (Input, {**PROMPT_EXAMPLE, "input_type": "telegram"}, "input_type"),
    (Input, {**PROMPT_EXAMPLE, "header": {**HEADER, "source": {"type": "satellite"}}}, "header.source.type"),
    (Input, {**PEER_EXAMPLE, "convention": {"convention_type": "gossip"}}, "convention.convention_type"),
    (Input, {"input_type": "operation", "header": HEADER, "operation_id": "o", "event": {"type": "paused", "id": "o"}},
     "event.type"),
    (RunPrimitive, {**STAGED_EXAMPLE, "primitive_type": "deferred"}, "primitive_type"),
    (RunPrimitive, {**IMMEDIATE_APPEND_EXAMPLE, "content": {"type": "hologram"}}, "content.type"),
    (RuntimeEvent, {"category": "weather", "data": {}}, "category"),
    (RuntimeEvent, {"category": "input_lifecycle", "data": {"code": "teleported", "input_id": U1}}, "data.code"),
    (RuntimeEvent, {"category": "run_lifecycle", "data": {"code": "paused", "run_id": U1}}, "data.code"),
    (RuntimeEvent, {"category": "topology", "data": {"code": "runtime_exploded", "runtime_id": "r"}}, "data.code"),
    (InputTerminalOutcome, {"outcome_type": "vanished"}, "outcome_type"),
    (RejectReason, {"reject_type": "grumpy", "detail": "x"}, "reject_type"),
    (InputScope, {"scope_type": "galaxy"}, "scope_type"),
    (CompletionOutcome, {"completion_type": "exploded"}, "completion_type"),
    (InputState, {**STORED_ROW_EXAMPLE, "reconstruction_source": {"source_type": "memory"}},
     "reconstruction_source.source_type"),
    (Input, {**PROMPT_EXAMPLE, "input_type": 7}, "input_type"),
    (Input, {**PROMPT_EXAMPLE, "input_type": None}, "input_type"),
    (RuntimeEvent, {"category": None, "data": {}}, "category"),
    (RuntimeEvent, {"category": ["input_lifecycle"], "data": {}}, "category"),
    (RuntimeEvent, {"category": "input_lifecycle", "data": {"code": {"a": 1}, "input_id": U1}}, "data.code"),
]  # fmt: skip

MISSING_TAGS = [
    (Input, {k: v for k, v in PROMPT_EXAMPLE.items() if k != "input_type"}, "input_type"),
    (Input, {**PROMPT_EXAMPLE, "header": {**HEADER, "source": {}}}, "header.source.type"),
    (Input, {**PEER_EXAMPLE, "convention": {"request_id": "r"}}, "convention.convention_type"),
    (RunPrimitive, {k: v for k, v in STAGED_EXAMPLE.items() if k != "primitive_type"}, "primitive_type"),
    (RunPrimitive, {**IMMEDIATE_APPEND_EXAMPLE, "content": {"text": "x"}}, "content.type"),
    (RuntimeEvent, {"data": {"code": "queued", "input_id": U1}}, "category"),
    (RuntimeEvent, {"category": "input_lifecycle"}, "data"),
    (RuntimeEvent, {"category": "input_lifecycle", "data": {"input_id": U1}}, "data.code"),
    (RuntimeEventEnvelope, {**ENVELOPE_EXAMPLE, "event": {"data": {}}}, "event.category"),
    (InputTerminalOutcome, {"reason": "retired"}, "outcome_type"),
    (RejectReason, {"state": "retired"}, "reject_type"),
    (InputScope, {"input_id": U1}, "scope_type"),
    (CompletionOutcome, {"reason": "x", "error": None}, "completion_type"),
]  # fmt: skip


def _case_id(v: Any) -> str:
    return v if isinstance(v, str) else ""


@pytest.mark.parametrize(("cls", "doc", "path"), MALFORMED, ids=_case_id)
def test_malformed_wrong_types_name_the_field(cls: type[Any], doc: Any, path: str) -> None:
    with pytest.raises(InvalidInput) as info:
        wire.decode(cls, doc)
    assert info.value.path == path
    with pytest.raises(InvalidInput) as info2:  # same answer through JSON text
        wire.decode(cls, json.dumps(doc))
    assert info2.value.path == path


@pytest.mark.parametrize(("cls", "doc", "path"), UNKNOWN_TAGS, ids=_case_id)
def test_malformed_unknown_tags_name_the_tag(cls: type[Any], doc: Any, path: str) -> None:
    with pytest.raises(InvalidInput) as info:
        wire.decode(cls, doc)
    assert info.value.path == path


@pytest.mark.parametrize(("cls", "doc", "path"), MISSING_TAGS, ids=_case_id)
def test_malformed_missing_tags_name_the_tag(cls: type[Any], doc: Any, path: str) -> None:
    with pytest.raises(InvalidInput) as info:
        wire.decode(cls, doc)
    assert info.value.path == path
    assert "missing" in str(info.value)


@pytest.mark.parametrize(
    ("doc", "path"),
    [
        ({**EXTERNAL_EXAMPLE, "payload": {"x": float("nan")}}, "payload.x"),
        ({**EXTERNAL_EXAMPLE, "payload": {"x": [1, float("inf")]}}, "payload.x[1]"),
        ({**EXTERNAL_EXAMPLE, "payload": float("-inf")}, "payload"),
        ({**PEER_EXAMPLE, "payload": {"pct": float("nan")}}, "payload.pct"),
        ({**EXTERNAL_EXAMPLE, "render_metadata": {"a": {"b": float("nan")}}}, "render_metadata.a.b"),
        ({"input_type": "operation", "header": HEADER, "operation_id": "o",
          "event": {"type": "progress", "id": "o", "message": "m", "percent": float("nan")}}, "event.percent"),
        ({"input_type": "operation", "header": HEADER, "operation_id": "o",
          "event": {"type": "completed", "id": "o", "result": {"v": float("nan")}}}, "event.result.v"),
        ({**PROMPT_EXAMPLE, "content": [{"type": "image", "data": float("nan")}]}, "content[0].data"),
    ],
)  # fmt: skip
def test_malformed_nan_as_a_dict_value_refused(doc: dict[str, Any], path: str) -> None:
    with pytest.raises(InvalidInput) as info:
        wire.decode(Input, doc)
    assert info.value.path == path


def test_malformed_nan_in_json_text_refused() -> None:
    text = json.dumps({**EXTERNAL_EXAMPLE, "payload": {"x": float("nan")}})
    assert "NaN" in text
    with pytest.raises(InvalidInput):
        wire.decode(Input, text)
    with pytest.raises(InvalidInput):
        wire.decode(Input, text.encode())


@pytest.mark.parametrize(
    ("doc", "path"),
    [
        ({**EXTERNAL_EXAMPLE, "payload": {"n": 2**64}}, "payload.n"),
        ({**EXTERNAL_EXAMPLE, "payload": [-(2**63) - 1]}, "payload[0]"),
        ({**PROMPT_EXAMPLE, "header": {**HEADER, "source": {"type": "flow", "flow_id": "f", "step_index": 2**64}}},
         "header.source.step_index"),
        ({"input_type": "operation", "header": HEADER, "operation_id": "o",
          "event": {"type": "completed", "id": "o", "result": [2**70]}}, "event.result[0]"),
    ],
)  # fmt: skip
def test_malformed_integers_outside_the_64_bit_range_refused(
    doc: dict[str, Any], path: str
) -> None:
    """A decoded object must be writable again: orjson writes only 64-bit integers."""
    with pytest.raises(InvalidInput) as info:
        wire.decode(Input, doc)
    assert info.value.path == path


def test_abandon_reason_attempts_outside_the_64_bit_range_refused() -> None:
    doc = {"max_attempts_exhausted": {"attempts": 2**64}}
    with pytest.raises(InvalidInput) as info:
        wire.decode(InputTerminalOutcome, {"outcome_type": "abandoned", "reason": doc})
    assert info.value.path == "reason.max_attempts_exhausted.attempts"


def test_integers_at_the_64_bit_bounds_accepted() -> None:
    doc = {**EXTERNAL_EXAMPLE, "payload": {"max": 2**64 - 1, "min": -(2**63)}}
    assert roundtrip(Input, doc).payload == {"max": 2**64 - 1, "min": -(2**63)}


@pytest.mark.parametrize(
    ("doc", "path"),
    [
        ({**PROMPT_EXAMPLE, "content": "lone \ud800 surrogate"}, "content"),
        (
            {**PROMPT_EXAMPLE, "header": {**HEADER, "idempotency_key": "\udfff"}},
            "header.idempotency_key",
        ),
        ({**EXTERNAL_EXAMPLE, "payload": {"k": "\ud83d"}}, "payload.k"),
        ({**EXTERNAL_EXAMPLE, "payload": {"\ud83d": 1}}, "payload"),
        ({**PROMPT_EXAMPLE, "content": [{"type": "text", "text": "\ud800"}]}, "content[0].text"),
    ],
)
def test_malformed_lone_surrogates_refused(doc: dict[str, Any], path: str) -> None:
    """A lone surrogate is not Unicode text; JSON text cannot carry it (orjson refuses to write it)."""
    with pytest.raises(InvalidInput) as info:
        wire.decode(Input, doc)
    assert info.value.path == path


NON_DICT_DOCUMENTS: list[Any] = [[], [PROMPT_EXAMPLE], 1, 1.5, True, None, "prompt"]
ALL_CLASSES: list[type] = [
    Input,
    PromptInput,
    InputHeader,
    RunPrimitive,
    StagedRunInput,
    PolicyDecision,
    InputState,
    RuntimeEventEnvelope,
    RuntimeEvent,
    RunFailed,
    CompletionOutcome,
    CallbackPending,
    RejectReason,
    InputScope,
    InputTerminalOutcome,
    RetireReport,
    RecoveryReport,
    TextRenderable,
]


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("doc", NON_DICT_DOCUMENTS, ids=repr)
def test_malformed_non_dict_documents_refused(cls: type[Any], doc: Any) -> None:
    with pytest.raises(InvalidInput) as info:
        wire.decode(cls, doc)
    assert info.value.path == ""
    with pytest.raises(InvalidInput) as info:
        wire.decode(cls, json.dumps(doc))
    assert info.value.path == ""


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{",
        b"{bad json}",
        b'{"input_type": "prompt",}',
        b"[1, 2",
        b"nul",
        b'{"a": NaN}',
        b'{"a": Infinity}',
        b"\xef\xbb\xbf{}",  # BOM
        "{'single': 'quotes'}",
        '{"a": 1} trailing',
    ],
)
def test_malformed_invalid_json_refused(raw: bytes | str) -> None:
    for cls in (Input, RuntimeEventEnvelope, PolicyDecision):
        with pytest.raises(InvalidInput) as info:
            wire.decode(cls, raw)
        assert info.value.path == ""
        assert "JSON" in str(info.value)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"input_type": "prompt", "content": "\xff"}',
        b'{"input_type": "\xc3\x28"}',
        b"\xff\xfe{\x00}\x00",
        b'{"a": "\xed\xa0\x80"}',  # an encoded surrogate is not UTF-8
        bytearray(b'"\x80"'),
        memoryview(b'{"k": "\xe2\x82"}'),
    ],
)
def test_malformed_invalid_utf8_refused(raw: bytes | bytearray | memoryview) -> None:
    with pytest.raises(InvalidInput) as info:
        wire.decode(Input, raw)
    assert info.value.path == ""


def test_malformed_oversized_document_refused() -> None:
    big = b'{"input_type": "prompt", "content": "' + b"x" * (16 * 1024 * 1024) + b'"}'
    with pytest.raises(InvalidInput):
        wire.decode(Input, big)


def test_malformed_deeply_nested_json_refused() -> None:
    deep: Any = "leaf"
    for _ in range(100):
        deep = {"d": deep}
    with pytest.raises(InvalidInput):
        wire.decode(Input, {**EXTERNAL_EXAMPLE, "payload": deep})


def test_invalid_input_is_a_value_error_with_detail() -> None:
    with pytest.raises(ValueError, match=r"header\.timestamp") as info:
        wire.decode(Input, {**PROMPT_EXAMPLE, "header": _header_at("yesterday")})
    assert isinstance(info.value, InvalidInput)
    assert "yesterday" in info.value.detail


@pytest.mark.parametrize("raw", [b'"idle"', '"stopped"'])
def test_enum_documents_decode_from_json_text(raw: bytes | str) -> None:
    assert wire.decode(RuntimeState, raw) in (RuntimeState.IDLE, RuntimeState.STOPPED)


@pytest.mark.parametrize("raw", [b'"sleeping"', b"3", b"null", b'["idle"]', b"{"])
def test_enum_documents_refuse_unknown_values(raw: bytes) -> None:
    with pytest.raises(InvalidInput):
        wire.decode(RuntimeState, raw)


# ---------------------------------------------------------------- fuzz: never anything but InvalidInput

_EXAMPLES: list[tuple[type, Any]] = [
    (Input, PROMPT_EXAMPLE),
    (Input, PEER_EXAMPLE),
    (Input, EXTERNAL_EXAMPLE),
    (RunPrimitive, STAGED_EXAMPLE),
    (PolicyDecision, POLICY_EXAMPLE),
    (InputState, STORED_ROW_EXAMPLE),
    (RuntimeEventEnvelope, ENVELOPE_EXAMPLE),
    (RuntimeEvent, {"category": "run_lifecycle", "data": RUN_EVENT_EXAMPLES[2][0]}),
    (CompletionOutcome, COMPLETION_EXAMPLES[0]),
]


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_fuzz_decode_raises_only_invalid_input_and_results_reencode(data: st.DataObject) -> None:
    """Replace any node of a spec example with anything: decode succeeds or raises InvalidInput,
    and whatever it accepts can be written again and reads back equal."""
    cls, example = data.draw(st.sampled_from(_EXAMPLES))
    path = data.draw(st.sampled_from(s.json_paths(example)))
    mutated = s.replace_at(example, path, data.draw(s.wild_json))
    try:
        obj = wire.decode(cls, mutated)
    except InvalidInput:
        return
    raw = wire.encode(obj, as_type=cls)  # must not raise (orjson refuses huge ints and surrogates)
    assert wire.decode(cls, raw) == obj


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64) | st.text(max_size=64).map(lambda t: t.encode()))
def test_fuzz_arbitrary_bytes_raise_only_invalid_input(raw: bytes) -> None:
    for cls in (Input, RuntimeEventEnvelope):
        with contextlib.suppress(InvalidInput):
            wire.decode(cls, raw)


def test_json_value_round_trip_through_orjson_bytes() -> None:
    obj = wire.decode(Input, EXTERNAL_EXAMPLE)
    assert orjson.loads(wire.encode(obj)) == EXTERNAL_EXAMPLE


def test_state_change_event_decoded_directly_keeps_from_key() -> None:
    ev = RuntimeStateChangeEvent(from_state=RuntimeState.STOPPED, to=RuntimeState.IDLE)
    assert json.loads(wire.encode(ev)) == {"from": "stopped", "to": "idle"}
    assert json.loads(wire.encode(ev, as_type=RuntimeEvent)) == {
        "category": "runtime_state_change",
        "data": {"from": "stopped", "to": "idle"},
    }


def test_callback_pending_args_null_is_kept() -> None:
    obj = CallbackPending(tool_use_id="t", tool_name="n", args=None)
    assert json.loads(wire.encode(obj))["args"] is None


def test_abandoned_outcome_examples_decode_to_their_kind() -> None:
    reason = wire.decode(InputTerminalOutcome, {"outcome_type": "abandoned", "reason": "stopped"})
    assert reason == AbandonedOutcome(reason=InputAbandonReason(AbandonKind.STOPPED))
    assert str(InputAbandonReason.max_attempts_exhausted(3)) != str(
        InputAbandonReason(AbandonKind.RESET)
    )


def test_text_renderable_is_refused_without_text() -> None:
    with pytest.raises(InvalidInput) as info:
        wire.decode(TextRenderable, {"type": "text"})
    assert info.value.path == "text"


# ---------------------------------------------------------------- section 2: identifiers


def test_2_uuid7_is_version_7_time_ordered_and_unique() -> None:
    before = datetime.now(UTC)
    ids = [uuid7() for _ in range(5000)]
    after = datetime.now(UTC)
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in ids)
    assert ids == sorted(ids)  # strictly increasing, also within one millisecond
    assert len(set(ids)) == len(ids)
    millis = ids[0].int >> 80
    lo = int(before.timestamp() * 1000) - 1
    hi = int(after.timestamp() * 1000) + 1
    assert lo <= millis <= hi
    assert str(ids[0]) == str(ids[0]).lower()
    assert len(str(ids[0])) == 36


@pytest.mark.parametrize(
    "runtime_id",
    ["rt:session:" + U1, U1, "rt:session:" + U1.upper(), "rt:session:" + U1.replace("-", "")],
)
def test_2_session_id_from_logical_runtime_id(runtime_id: str) -> None:
    assert session_id_from_runtime_id(runtime_id) == uuid.UUID(U1)


@pytest.mark.parametrize(
    "runtime_id", ["rt:session:", "rt:session:agent-1", "agent-1", "rt:sess:" + U1]
)
def test_2_runtime_id_without_a_session_uuid_is_refused(runtime_id: str) -> None:
    with pytest.raises(InvalidInput):
        session_id_from_runtime_id(runtime_id)


@pytest.mark.parametrize("sid", ["x", "s-1", "y" * 256, "rt:session:" + U1, "ünï cödé"])
def test_2_valid_session_ids(sid: str) -> None:
    assert validate_session_id(sid) == sid


@pytest.mark.parametrize("sid", ["", "y" * 257, "tab\there", "new\nline", "\x00", 5, None, b"s"])
def test_2_invalid_session_ids(sid: Any) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_session_id(sid)
    assert info.value.path == "session_id"
