"""The spec's JSON examples and the helpers shared by the wire tests (examples, rules,
malformed input, code generation): example ids and header, the decode/re-encode round trip.
"""

import copy
import json
from typing import Any

from meerkat_runtime.events import (
    CompletionOutcome,
    Input,
    InputState,
    PolicyDecision,
    RunPrimitive,
    RuntimeEvent,
    RuntimeEventEnvelope,
    wire,
)

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


ENVELOPE_EXAMPLE = {
    "id": "01955b3d-0000-7000-8000-0000000000aa",
    "timestamp": "2026-03-01T12:00:05Z",
    "runtime_id": "rt:session:01955b3c-1111-7000-8000-000000000000",
    "event": {
        "category": "input_lifecycle",
        "data": {"code": "abandoned", "input_id": U2, "reason": "reset"},
    },
}


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


def header_at(ts: Any) -> dict[str, Any]:
    return {**HEADER, "timestamp": ts}


RECOVERY = {"inputs_recovered": 0, "inputs_abandoned": 0, "inputs_requeued": 0}


ALL_EXAMPLES: list[tuple[type, Any]] = [
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
