"""Every spec type through ``wire.decode`` / ``wire.encode``, against the JSON Rust's serde writes.

For each public wire type of ``meerkat_runtime.events`` (identifiers and
aliases included) there are:

* accepted cases: serde-shaped JSON (keys in the Rust struct's field order,
  compact as orjson writes it) that decodes as the type and re-encodes to the
  same bytes, written as that type (``encode(x, as_type=T)``);
* normalised cases: input serde accepts that is written back in canonical form
  (uuids in another case, defaults filled in, a tag that is an unknown key);
* refused cases: JSON serde refuses, which must raise :class:`InvalidInput`
  with the path of the offending field (empty for the value itself);
* a hypothesis round trip ``decode(T, encode(x, as_type=T)) == x`` and
  ``decode(type(x), encode(x)) == x`` over generated values.

The cases are built from the spec's tables and examples; where the spec left
the shape open, from the Rust crate (see docs/reference/wire-format.md).
:func:`test_every_public_spec_type_has_accepted_and_refused_cases` keeps the
table complete: a new public type without cases fails it.
"""

from __future__ import annotations

import dataclasses
import enum
import uuid
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import meerkat_runtime
import meerkat_runtime.events as ev
from meerkat_runtime.errors import InvalidInput
from meerkat_runtime.events import wire

from . import strategies as s

U1 = "01955b3c-7d1e-7c4a-9f00-3a2b1c0d4e5f"
U2 = "01955b3c-0000-7000-8000-000000000001"
U3 = "01955b3c-0000-7000-8000-000000000002"
TS = "2026-03-01T12:00:00Z"
TS2 = "2026-03-01T12:00:05.120Z"

VIS = {"transcript_eligible": True, "operator_eligible": True}
HEADER = {
    "id": U1,
    "timestamp": TS,
    "source": {"type": "operator"},
    "durability": "durable",
    "visibility": VIS,
}
FULL_HEADER = {
    "id": U1,
    "timestamp": TS2,
    "source": {
        "type": "peer",
        "peer_id": "peer-a",
        "display_identity": "Alice",
        "runtime_id": "rt-a",
    },
    "durability": "ephemeral",
    "visibility": {"transcript_eligible": False, "operator_eligible": True},
    "idempotency_key": "req-42",
    "supersession_key": "ci-status",
    "correlation_id": U2,
}
TEXT = {"type": "text", "text": "hello"}
APPEND = {"role": "user", "content": TEXT}
CONTEXT_APPEND = {"key": "peers", "content": {"type": "json", "value": ["peer1", "peer2"]}}
PROMPT = {"input_type": "prompt", "header": HEADER, "content": "Summarise the report"}
POLICY = {
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
SEMANTICS = {
    "boundary": "run_start",
    "execution_kind": "content_turn",
    "execution_handling_mode": "queue",
    "peer_response_terminal_apply_intent": "append_content_and_run",
    "live_interrupt_required": False,
}
ERROR = {
    "kind": "llm_failure",
    "terminal": True,
    "outcome": "failed",
    "detail": "rate limited",
    "provider": "anthropic",
    "model": "claude",
    "retryable": False,
}
SHORT_ERROR = {"kind": "unknown", "terminal": False}
STAGED = {
    "boundary": "run_start",
    "appends": [APPEND],
    "context_appends": [CONTEXT_APPEND],
    "contributing_input_ids": [U1],
    "turn_metadata": {"execution_kind": "content_turn"},
}
RECEIPT = {
    "run_id": U2,
    "boundary": "run_checkpoint",
    "contributing_input_ids": [U1],
    "conversation_digest": "sha256:abc",
    "message_count": 4,
    "sequence": 1,
}
STORED_ROW = {
    "stored_input_state_version": 5,
    "input_id": U1,
    "current_state": "queued",
    "policy": {"version": 1, "decision": POLICY},
    "runtime_semantics": SEMANTICS,
    "durability": "durable",
    "idempotency_key": "req-42",
    "attempt_count": 1,
    "recovery_count": 0,
    "history": [{"timestamp": TS, "from": "accepted", "to": "queued", "reason": "QueueAccepted"}],
    "persisted_input": PROMPT,
    "last_run_id": U2,
    "admission_sequence": 3,
    "recovery_lane": "queue",
    "created_at": TS,
    "updated_at": TS2,
}
ENVELOPE = {
    "id": U3,
    "timestamp": TS,
    "runtime_id": "rt:session:01955b3c-1111-7000-8000-000000000000",
    "event": {
        "category": "input_lifecycle",
        "data": {"code": "abandoned", "input_id": U2, "reason": "reset"},
    },
    "causation_id": U1,
    "correlation_id": U2,
}
NOT_JSON_NUMBER_2_64 = b"18446744073709551616"


@dataclasses.dataclass
class Cases:
    """The cases of one type: accepted JSON (re-encodes byte-equal), normalised (input, output),
    refused (JSON as a value or raw bytes, expected error path)."""

    accepted: list[Any]
    refused: list[tuple[Any, str]]
    normalised: list[tuple[Any, Any]] = dataclasses.field(default_factory=list)


def _uuid_cases() -> Cases:
    return Cases(
        accepted=[U1, U2],
        normalised=[
            (U1.upper(), U1),
            (U1.replace("-", ""), U1),
            (U1.replace("-", "").upper(), U1),
        ],
        refused=[
            ("01955b3c", ""),
            ("01955b3c-7d1e7c4a-9f00-3a2b1c0d4e5f", ""),  # hyphens all or nothing
            ("{" + U1 + "}", ""),
            ("urn:uuid:" + U1, ""),
            (5, ""),
            (None, ""),
            ([U1], ""),
        ],
    )


def _string_cases(*examples: str) -> Cases:
    return Cases(
        accepted=list(examples), refused=[(1, ""), (None, ""), ({"id": "x"}, ""), ([], "")]
    )


def _variant(tag_key: str, tag: str, **fields: Any) -> dict[str, Any]:
    return {tag_key: tag, **fields}


INPUT_EVENTS: dict[str, dict[str, Any]] = {
    "InputAccepted": {
        "code": "accepted",
        "input_id": U1,
        "input": PROMPT,
        "policy": {"version": 1, "decision": POLICY},
        "runtime_semantics": SEMANTICS,
    },
    "InputDeduplicated": {"code": "deduplicated", "input_id": U1, "existing_id": U2},
    "InputSuperseded": {"code": "superseded", "input_id": U1, "superseded_by": U2},
    "InputCoalesced": {"code": "coalesced", "input_id": U1, "aggregate_id": U2},
    "InputQueued": {"code": "queued", "input_id": U1, "lane": "steer"},
    "InputStaged": {"code": "staged", "input_id": U1, "run_id": U2},
    "InputApplied": {"code": "applied", "input_id": U1, "run_id": U2, "boundary_sequence": 2},
    "InputConsumed": {"code": "consumed", "input_id": U1, "run_id": U2},
    "InputAbandoned": {
        "code": "abandoned",
        "input_id": U1,
        "reason": {"max_attempts_exhausted": {"attempts": 3}},
    },
    "InputStateTransitioned": {
        "code": "state_transitioned",
        "input_id": U1,
        "from": "staged",
        "to": "queued",
        "reason": "ResolveStagedRollback",
    },
}
RUN_EVENTS: dict[str, dict[str, Any]] = {
    "RunStarted": {
        "code": "started",
        "run_id": U2,
        "primitive": {"primitive_type": "staged_input", **STAGED},
    },
    "RunCompleted": {
        "code": "completed",
        "run_id": U2,
        "output": {"text": "done"},
        "outcome": {"completion_type": "completed_without_result"},
    },
    "RunFailed": {"code": "failed", "run_id": U2, "error": ERROR},
    "RunCancelled": {"code": "cancelled", "run_id": U2},
    "RunCheckpointed": {"code": "checkpointed", "run_id": U2, "receipt": RECEIPT},
}
TOPOLOGY_EVENTS = {
    name: {"code": code, "runtime_id": "agent-1"}
    for name, code in (
        ("RuntimeCreated", "runtime_created"),
        ("RuntimeRetired", "runtime_retired"),
        ("RuntimeRecycled", "runtime_recycled"),
        ("RuntimeDestroyed", "runtime_destroyed"),
    )
}
STATE_CHANGE = {"from": "idle", "to": "running"}
PROJECTION = {"rule_id": "rule-1", "projected_input_id": U1, "source_event_id": U2}

# The spec's value lists of its string enums (and of core's turn error enums).
ENUM_VALUES: dict[str, list[str]] = {
    "InputKind": [
        "prompt", "peer_message", "peer_request", "peer_response_progress",
        "peer_response_terminal", "flow_step", "external_event", "continuation", "operation",
    ],
    "InputDurability": ["durable", "ephemeral", "derived"],
    "HandlingMode": ["queue", "steer"],
    "ResponseProgressPhase": ["accepted", "in_progress", "partial_result"],
    "ResponseTerminalStatus": ["completed", "failed", "cancelled"],
    "ContinuationKind": ["ordinary", "workgraph_attention"],
    "SenderTaint": ["clean", "tainted"],
    "RunApplyBoundary": ["immediate", "run_start", "run_checkpoint"],
    "ConversationAppendRole": ["user", "assistant", "system_notice", "tool"],
    "RuntimeExecutionKind": ["content_turn", "resume_pending"],
    "InputLifecycleState": [
        "accepted", "queued", "staged", "applied", "applied_pending_consumption",
        "consumed", "superseded", "coalesced", "abandoned",
    ],
    "AbandonKind": [
        "retired", "reset", "stopped", "destroyed", "cancelled", "max_attempts_exhausted",
    ],
    "ApplyMode": ["stage_run_start", "stage_run_boundary", "inject_now", "ignore"],
    "WakeMode": ["wake_if_idle", "interrupt_yielding", "none"],
    "QueueMode": ["none", "fifo", "coalesce", "supersede", "priority"],
    "ConsumePoint": ["on_accept", "on_apply", "on_run_start", "on_run_complete", "explicit_ack"],
    "DrainPolicy": ["queue_next_turn", "steer_batch", "immediate", "ignore"],
    "RoutingDisposition": ["queue", "steer", "immediate", "drop"],
    "PeerTerminalApplyIntent": ["append_content_and_run"],
    "PeerResponseTerminalApplyIntent": ["append_content_and_run"],
    "RuntimeState": [
        "initializing", "idle", "attached", "running", "retired", "stopped", "destroyed",
    ],
    "TurnTerminalCauseKind": [
        "unknown", "hook_denied", "hook_failure", "llm_failure", "tool_failure",
        "structured_output_validation_failed", "budget_exhausted", "time_budget_exceeded",
        "retry_exhausted", "turn_limit_reached", "runtime_apply_failure", "fatal_failure",
    ],
    "TurnTerminalOutcome": [
        "none", "completed", "failed", "cancelled", "budget_exhausted",
        "time_budget_exceeded", "structured_output_validation_failed",
    ],
}  # fmt: skip

CASES: dict[str, Cases] = {
    # ------------------------------------------------------------ identifiers and aliases
    **{
        name: _uuid_cases()
        for name in (
            "InputId",
            "RunId",
            "RuntimeEventId",
            "ConversationId",
            "CausationId",
            "CorrelationId",
        )
    },
    "LogicalRuntimeId": _string_cases("rt:session:" + U1, "agent-1", ""),
    "IdempotencyKey": _string_cases("req-42", ""),
    "SupersessionKey": _string_cases("ci-status"),
    "RequestId": _string_cases("r-7", ""),
    "ReservationKey": _string_cases("reservation-1"),
    "SchemaId": _string_cases("meerkat.input.v5"),
    "ProjectionRuleId": _string_cases("rule-1"),
    "EventCodeId": _string_cases("input.accepted", "topology.runtime_created"),
    "SessionId": Cases(
        accepted=["support-chat-42", U1],
        refused=[("", ""), ("a\nb", ""), ("x" * 257, ""), (7, ""), (None, "")],
    ),
    "PolicyVersion": Cases(
        accepted=[0, 1, 2**64 - 1],
        refused=[
            (-1, ""),
            ("1", ""),
            (1.5, ""),
            (1.0, ""),
            (NOT_JSON_NUMBER_2_64, ""),
            (None, ""),
            (True, ""),
        ],
    ),
    "KindId": Cases(
        accepted=list(ENUM_VALUES["InputKind"]),
        refused=[("system_generated", ""), ("Prompt", ""), (1, ""), (None, "")],
    ),
    "ContentInput": Cases(
        accepted=[
            "hi",
            "",
            [TEXT],
            [],
            [
                TEXT,
                {"type": "image", "media_type": "image/png", "source": "blob", "blob_id": "b-1"},
            ],
        ],
        refused=[
            (5, ""),
            ({"type": "text", "text": "x"}, ""),
            (None, ""),
            (True, ""),
            ([5], "[0]"),
            ([{"type": "text"}], "[0].text"),
            ([{"text": "x"}], "[0].type"),
        ],
    ),
    # ------------------------------------------------------------ inputs
    "Input": Cases(
        accepted=[
            PROMPT,
            {
                "input_type": "operation",
                "header": HEADER,
                "operation_id": "op-1",
                "event": {"type": "cancelled", "id": "op-1"},
            },
        ],
        refused=[
            ({"input_type": "telepathy", "header": HEADER}, "input_type"),
            ({"header": HEADER, "content": "x"}, "input_type"),
            ({**PROMPT, "header": {**HEADER, "id": "nope"}}, "header.id"),
            ("hi", ""),
        ],
    ),
    "PromptInput": Cases(
        accepted=[
            PROMPT,
            {
                "input_type": "prompt",
                "header": FULL_HEADER,
                "content": [TEXT],
                "typed_turn_appends": [APPEND],
                "injected_context": ["ctx", [TEXT]],
                "turn_metadata": {"handling_mode": "queue", "keep_alive": True},
            },
        ],
        refused=[
            ({"input_type": "prompt", "header": HEADER, "content": 5}, "content"),
            ({"input_type": "prompt", "header": HEADER}, "content"),
            ({"input_type": "peer", "header": HEADER, "content": "x"}, "input_type"),
            ({**PROMPT, "injected_context": [7]}, "injected_context[0]"),
        ],
    ),
    "PeerInput": Cases(
        accepted=[
            {
                "input_type": "peer",
                "header": FULL_HEADER,
                "convention": {
                    "convention_type": "request",
                    "request_id": "r-1",
                    "intent": "review",
                },
                "content": "please",
                "payload": {"a": 1},
                "handling_mode": "steer",
                "sender_taint": "tainted",
                "objective_id": "o-1",
                "system_prompts": ["s1", "s1"],
                "injected_context": ["c"],
            },
            {
                "input_type": "peer",
                "header": HEADER,
                "convention": {
                    "convention_type": "response_progress",
                    "request_id": "r-7",
                    "phase": "in_progress",
                },
                "content": "",
                "payload": {"pct": 40},
            },
        ],
        refused=[
            (
                {
                    "input_type": "peer",
                    "header": HEADER,
                    "content": "x",
                    "convention": {"convention_type": "shout"},
                },
                "convention.convention_type",
            ),
            (
                {"input_type": "peer", "header": HEADER, "content": "x", "sender_taint": "dirty"},
                "sender_taint",
            ),
        ],
    ),
    "FlowStepInput": Cases(
        accepted=[
            {
                "input_type": "flow_step",
                "header": {**HEADER, "source": {"type": "flow", "flow_id": "f-1", "step_index": 2}},
                "step_id": "s1",
                "content": "do it",
                "turn_metadata": {"execution_kind": "resume_pending"},
            }
        ],
        refused=[
            ({"input_type": "flow_step", "header": HEADER, "content": "x"}, "step_id"),
            (
                {
                    "input_type": "flow_step",
                    "header": HEADER,
                    "step_id": "s",
                    "content": "x",
                    "directed_interaction_id": "x",
                },
                "directed_interaction_id",
            ),
        ],
    ),
    "ExternalEventInput": Cases(
        accepted=[
            {
                "input_type": "external_event",
                "header": {
                    **HEADER,
                    "source": {"type": "external", "source_name": "github"},
                    "supersession_key": "ci-status",
                },
                "event_type": "ci.status",
                "payload": {"state": "green"},
                "handling_mode": "queue",
            },
            {
                "input_type": "external_event",
                "header": HEADER,
                "event_type": "e",
                "payload": None,
                "blocks": [TEXT],
                "handling_mode": "steer",
                "render_metadata": {"k": "v"},
                "objective_id": "o",
            },
        ],
        normalised=[
            (
                {"input_type": "external_event", "header": HEADER, "event_type": "e", "payload": 1},
                {
                    "input_type": "external_event",
                    "header": HEADER,
                    "event_type": "e",
                    "payload": 1,
                    "handling_mode": "queue",
                },
            )
        ],
        refused=[
            (
                {
                    "input_type": "external_event",
                    "header": HEADER,
                    "event_type": "e",
                    "payload": 1,
                    "handling_mode": None,
                },
                "handling_mode",
            ),
            ({"input_type": "external_event", "header": HEADER, "event_type": "e"}, "payload"),
        ],
    ),
    "ContinuationInput": Cases(
        accepted=[
            {
                "input_type": "continuation",
                "header": HEADER,
                "reason": "r",
                "continuation_kind": "workgraph_attention",
                "handling_mode": "steer",
                "request_id": "q",
                "turn_tool_overlay": {"allowed_tools": ["a"], "blocked_tools": None},
                "turn_append": {"role": "assistant", "content": TEXT},
            }
        ],
        normalised=[
            (
                {"input_type": "continuation", "header": HEADER, "reason": "r"},
                {
                    "input_type": "continuation",
                    "header": HEADER,
                    "reason": "r",
                    "continuation_kind": "ordinary",
                    "handling_mode": "queue",
                },
            )
        ],
        refused=[
            (
                {
                    "input_type": "continuation",
                    "header": HEADER,
                    "reason": "r",
                    "continuation_kind": "weird",
                },
                "continuation_kind",
            ),
            (
                {
                    "input_type": "continuation",
                    "header": HEADER,
                    "reason": "r",
                    "continuation_kind": None,
                },
                "continuation_kind",
            ),
        ],
    ),
    "OperationInput": Cases(
        accepted=[
            {
                "input_type": "operation",
                "header": HEADER,
                "operation_id": "op-1",
                "event": {"type": "progress", "id": "op-1", "message": "half", "percent": 50.0},
            }
        ],
        refused=[
            (
                {
                    "input_type": "operation",
                    "header": HEADER,
                    "operation_id": "op-1",
                    "event": {"type": "progress", "id": "x", "message": "m", "percent": "lots"},
                },
                "event.percent",
            ),
            (
                {
                    "input_type": "operation",
                    "header": HEADER,
                    "event": {"type": "cancelled", "id": "x"},
                },
                "operation_id",
            ),
        ],
    ),
    "InputHeader": Cases(
        accepted=[HEADER, FULL_HEADER],
        normalised=[
            ({**HEADER, "id": U1.upper(), "timestamp": "2026-03-01T13:00:00+01:00"}, HEADER)
        ],
        refused=[
            ({**HEADER, "timestamp": "2026-03-01T12:00:00"}, "timestamp"),
            ({**HEADER, "timestamp": 1}, "timestamp"),
            ({**HEADER, "durability": "forever"}, "durability"),
            ({**HEADER, "correlation_id": "c"}, "correlation_id"),
            ({k: v for k, v in HEADER.items() if k != "visibility"}, "visibility"),
        ],
    ),
    "InputVisibility": Cases(
        accepted=[VIS, {"transcript_eligible": False, "operator_eligible": False}],
        refused=[
            ({"transcript_eligible": True}, "operator_eligible"),
            ({"transcript_eligible": 1, "operator_eligible": True}, "transcript_eligible"),
        ],
    ),
    "InputOrigin": Cases(
        accepted=[{"type": "flow", "flow_id": "f", "step_index": 2}, {"type": "system"}],
        refused=[
            ({"type": "flow", "flow_id": "f", "step_index": -1}, "step_index"),
            ({"type": "robot"}, "type"),
            ({}, "type"),
            ("operator", ""),
        ],
    ),
    "OperatorOrigin": Cases(
        accepted=[{"type": "operator"}], refused=[({"type": "system"}, "type"), ([], "")]
    ),
    "PeerOrigin": Cases(
        accepted=[
            {"type": "peer", "peer_id": "p", "display_identity": "P", "runtime_id": "rt"},
            {"type": "peer", "peer_id": "p"},
        ],
        refused=[
            ({"type": "peer"}, "peer_id"),
            ({"type": "peer", "peer_id": "p", "runtime_id": 3}, "runtime_id"),
        ],
    ),
    "FlowOrigin": Cases(
        accepted=[{"type": "flow", "flow_id": "f", "step_index": 0}],
        refused=[
            ({"type": "flow", "flow_id": "f", "step_index": 1.5}, "step_index"),
            ({"type": "flow", "step_index": 0}, "flow_id"),
        ],
    ),
    "SystemOrigin": Cases(accepted=[{"type": "system"}], refused=[({"type": "operator"}, "type")]),
    "ExternalOrigin": Cases(
        accepted=[{"type": "external", "source_name": "github"}],
        refused=[({"type": "external", "source_name": 1}, "source_name")],
    ),
    "PeerConvention": Cases(
        accepted=[
            {"convention_type": "message"},
            {"convention_type": "response_terminal", "request_id": "r", "status": "failed"},
        ],
        refused=[
            ({"convention_type": "whisper"}, "convention_type"),
            ({"convention_type": "request", "request_id": "r"}, "intent"),
        ],
    ),
    "PeerMessage": Cases(
        accepted=[{"convention_type": "message"}],
        refused=[({"convention_type": "request"}, "convention_type")],
    ),
    "PeerRequest": Cases(
        accepted=[{"convention_type": "request", "request_id": "r", "intent": "mob.peer_added"}],
        refused=[({"convention_type": "request", "request_id": 1, "intent": "i"}, "request_id")],
    ),
    "PeerResponseProgress": Cases(
        accepted=[
            {"convention_type": "response_progress", "request_id": "r", "phase": p}
            for p in ENUM_VALUES["ResponseProgressPhase"]
        ],
        refused=[
            ({"convention_type": "response_progress", "request_id": "r", "phase": "done"}, "phase")
        ],
    ),
    "PeerResponseTerminal": Cases(
        accepted=[
            {"convention_type": "response_terminal", "request_id": "r", "status": "cancelled"}
        ],
        refused=[({"convention_type": "response_terminal", "request_id": "r"}, "status")],
    ),
    "OperationEvent": Cases(
        accepted=[
            {"type": "started", "id": "o", "kind": "k"},
            {"type": "completed", "id": "o", "result": None},
        ],
        refused=[({"type": "paused", "id": "o"}, "type"), ({"type": "started", "id": "o"}, "kind")],
    ),
    "OperationStarted": Cases(
        accepted=[{"type": "started", "id": "o", "kind": "k"}],
        refused=[({"type": "started", "kind": "k"}, "id")],
    ),
    "OperationProgress": Cases(
        accepted=[
            {"type": "progress", "id": "o", "message": "m", "percent": None},
            {"type": "progress", "id": "o", "message": "m", "percent": 12.5},
        ],
        normalised=[
            (
                {"type": "progress", "id": "o", "message": "m"},
                {"type": "progress", "id": "o", "message": "m", "percent": None},
            )
        ],
        refused=[
            ({"type": "progress", "id": "o", "message": "m", "percent": "x"}, "percent"),
            (b'{"type":"progress","id":"o","message":"m","percent":1e999}', ""),
        ],
    ),
    "OperationCompleted": Cases(
        accepted=[{"type": "completed", "id": "o", "result": {"r": [1, 2]}}],
        refused=[({"type": "completed", "id": "o"}, "result")],
    ),
    "OperationFailed": Cases(
        accepted=[{"type": "failed", "id": "o", "error": "boom"}],
        refused=[({"type": "failed", "id": "o", "error": 5}, "error")],
    ),
    "OperationCancelled": Cases(
        accepted=[{"type": "cancelled", "id": "o"}], refused=[({"type": "cancelled"}, "id")]
    ),
    # ------------------------------------------------------------ run primitives
    "RunPrimitive": Cases(
        accepted=[
            {"primitive_type": "staged_input", **STAGED},
            {
                "primitive_type": "immediate_append",
                "role": "system_notice",
                "content": {"type": "text", "text": "notice"},
            },
            {"primitive_type": "immediate_context_append", **CONTEXT_APPEND},
        ],
        refused=[
            ({"primitive_type": "staged_input"}, "boundary"),
            (STAGED, "primitive_type"),
            ({"primitive_type": "teleport"}, "primitive_type"),
        ],
    ),
    "StagedRunInput": Cases(
        accepted=[STAGED, {"boundary": "immediate", "context_appends": [CONTEXT_APPEND]}],
        normalised=[
            ({"primitive_type": "staged_input", **STAGED}, STAGED),
            (
                {"primitive_type": "immediate_append", "boundary": "run_start"},
                {"boundary": "run_start"},
            ),
        ],
        refused=[
            ({"boundary": "later"}, "boundary"),
            (
                {"boundary": "run_start", "contributing_input_ids": ["x"]},
                "contributing_input_ids[0]",
            ),
            ({"boundary": "run_start", "appends": None}, "appends"),
            ({}, "boundary"),
        ],
    ),
    "ImmediateAppend": Cases(
        accepted=[
            {
                "primitive_type": "immediate_append",
                "role": "system_notice",
                "content": {"type": "text", "text": "notice"},
            }
        ],
        refused=[
            ({"primitive_type": "immediate_append", "role": "god", "content": TEXT}, "role"),
            ({"primitive_type": "staged_input", **APPEND}, "primitive_type"),
        ],
    ),
    "ImmediateContextAppend": Cases(
        accepted=[{"primitive_type": "immediate_context_append", **CONTEXT_APPEND}],
        refused=[({"primitive_type": "immediate_context_append", "key": "k"}, "content")],
    ),
    "CoreRenderable": Cases(
        accepted=[TEXT, {"type": "json", "value": {"a": None}}],
        refused=[({"type": "html"}, "type"), ("text", "")],
    ),
    "TextRenderable": Cases(accepted=[TEXT], refused=[({"type": "text", "text": None}, "text")]),
    "BlocksRenderable": Cases(
        accepted=[
            {
                "type": "blocks",
                "blocks": [
                    {"type": "image", "media_type": "image/png", "source": "inline", "data": "AAAA"}
                ],
            }
        ],
        refused=[({"type": "blocks", "blocks": "x"}, "blocks")],
    ),
    "JsonRenderable": Cases(
        accepted=[{"type": "json", "value": None}, {"type": "json", "value": [1, "a"]}],
        refused=[({"type": "json"}, "value")],
    ),
    "ReferenceRenderable": Cases(
        accepted=[
            {"type": "reference", "uri": "file:///a", "label": None},
            {"type": "reference", "uri": "u", "label": "L"},
        ],
        normalised=[
            ({"type": "reference", "uri": "u"}, {"type": "reference", "uri": "u", "label": None})
        ],
        refused=[({"type": "reference", "label": "L"}, "uri")],
    ),
    "ConversationAppend": Cases(
        accepted=[
            APPEND,
            {"role": "tool", "content": {"type": "reference", "uri": "u", "label": None}},
        ],
        refused=[
            ({"role": "user", "content": {"type": "text"}}, "content.text"),
            ({"content": TEXT}, "role"),
        ],
    ),
    "ConversationContextAppend": Cases(
        accepted=[CONTEXT_APPEND], refused=[({"key": 1, "content": TEXT}, "key")]
    ),
    "RuntimeTurnMetadata": Cases(
        accepted=[
            {},
            {
                "handling_mode": "steer",
                "keep_alive": False,
                "skill_references": [{"id": "s"}],
                "flow_tool_overlay": {"allowed_tools": None, "blocked_tools": ["rm"]},
                "additional_instructions": ["be brief"],
                "model": "m",
                "provider": "p",
                "provider_params": {"t": 0.5},
                "render_metadata": {"k": "v"},
                "execution_kind": "content_turn",
            },
        ],
        normalised=[({"keep_alive": None, "model": None}, {})],
        refused=[
            ({"keep_alive": "yes"}, "keep_alive"),
            ({"additional_instructions": [1]}, "additional_instructions[0]"),
            ({"execution_kind": "dream"}, "execution_kind"),
        ],
    ),
    "TurnToolOverlay": Cases(
        accepted=[
            {"allowed_tools": ["a"], "blocked_tools": None},
            {"allowed_tools": None, "blocked_tools": None},
        ],
        normalised=[({}, {"allowed_tools": None, "blocked_tools": None})],
        refused=[({"allowed_tools": "a"}, "allowed_tools")],
    ),
    # ------------------------------------------------------------ input state
    "InputState": Cases(
        accepted=[
            STORED_ROW,
            {
                "stored_input_state_version": 5,
                "input_id": U1,
                "current_state": "abandoned",
                "terminal_outcome": {"outcome_type": "abandoned", "reason": "retired"},
                "attempt_count": 0,
                "recovery_count": 0,
                "terminal_completion": {
                    "completion_type": "abandoned",
                    "reason": "retired",
                    "error": SHORT_ERROR,
                },
                "created_at": TS,
                "updated_at": TS,
            },
        ],
        refused=[
            ({**STORED_ROW, "stored_input_state_version": 9}, "stored_input_state_version"),
            ({**STORED_ROW, "current_state": "limbo"}, "current_state"),
            ({**STORED_ROW, "history": [{"timestamp": TS, "from": "accepted"}]}, "history[0].to"),
        ],
    ),
    "InputStateHistoryEntry": Cases(
        accepted=[
            {"timestamp": TS, "from": "queued", "to": "staged", "reason": "StageForRun(x)"},
            {"timestamp": TS2, "from": "staged", "to": "queued"},
        ],
        refused=[({"timestamp": TS, "from": "queued", "to": "nowhere"}, "to")],
    ),
    "InputStateEvent": Cases(
        accepted=[
            {"timestamp": TS, "state": "applied", "detail": "d"},
            {"timestamp": TS, "state": "queued"},
        ],
        refused=[({"timestamp": TS}, "state")],
    ),
    "InputTerminalOutcome": Cases(
        accepted=[{"outcome_type": "consumed"}, {"outcome_type": "abandoned", "reason": "retired"}],
        refused=[
            ({"outcome_type": "vanished"}, "outcome_type"),
            ({"outcome_type": "abandoned", "reason": "bored"}, "reason"),
        ],
    ),
    "ConsumedOutcome": Cases(
        accepted=[{"outcome_type": "consumed"}],
        refused=[({"outcome_type": "coalesced"}, "outcome_type")],
    ),
    "SupersededOutcome": Cases(
        accepted=[{"outcome_type": "superseded", "superseded_by": U2}],
        refused=[({"outcome_type": "superseded", "superseded_by": "x"}, "superseded_by")],
    ),
    "CoalescedOutcome": Cases(
        accepted=[{"outcome_type": "coalesced", "aggregate_id": U2}],
        refused=[({"outcome_type": "coalesced"}, "aggregate_id")],
    ),
    "AbandonedOutcome": Cases(
        accepted=[
            {"outcome_type": "abandoned", "reason": {"max_attempts_exhausted": {"attempts": 3}}}
        ],
        refused=[
            (
                {"outcome_type": "abandoned", "reason": {"max_attempts_exhausted": {}}},
                "reason.max_attempts_exhausted.attempts",
            )
        ],
    ),
    "InputAbandonReason": Cases(
        accepted=[
            "retired",
            "reset",
            "stopped",
            "destroyed",
            "cancelled",
            {"max_attempts_exhausted": {"attempts": 3}},
        ],
        refused=[
            ("bored", ""),
            ("max_attempts_exhausted", ""),
            ({"max_attempts_exhausted": {"attempts": -1}}, "max_attempts_exhausted.attempts"),
            ({"reset": {}}, ""),
            (None, ""),
        ],
    ),
    "ReconstructionSource": Cases(
        accepted=[{"source_type": "projection", "rule_id": "r", "source_event_id": "e"}],
        refused=[({"source_type": "magic"}, "source_type")],
    ),
    "ProjectionSource": Cases(
        accepted=[{"source_type": "projection", "rule_id": "r", "source_event_id": "e"}],
        refused=[({"source_type": "projection", "rule_id": "r"}, "source_event_id")],
    ),
    "CoalescingSource": Cases(
        accepted=[{"source_type": "coalescing", "source_input_ids": [U1, U2]}],
        refused=[({"source_type": "coalescing", "source_input_ids": [1]}, "source_input_ids[0]")],
    ),
    # ------------------------------------------------------------ policy
    "PolicyDecision": Cases(
        accepted=[POLICY],
        normalised=[
            (
                {
                    k: v
                    for k, v in POLICY.items()
                    if k
                    not in (
                        "drain_policy",
                        "routing_disposition",
                        "record_transcript",
                        "emit_operator_content",
                    )
                },
                POLICY,
            )
        ],
        refused=[
            ({**POLICY, "policy_version": -1}, "policy_version"),
            ({**POLICY, "drain_policy": None}, "drain_policy"),
            ({**POLICY, "wake_mode": "snooze"}, "wake_mode"),
        ],
    ),
    "PolicySnapshot": Cases(
        accepted=[{"version": 1, "decision": POLICY}],
        refused=[({"version": "1", "decision": POLICY}, "version"), ({"version": 1}, "decision")],
    ),
    "RuntimeSemantics": Cases(
        accepted=[
            SEMANTICS,
            {
                "boundary": "run_checkpoint",
                "execution_kind": "resume_pending",
                "execution_handling_mode": None,
                "peer_response_terminal_apply_intent": None,
                "live_interrupt_required": True,
            },
        ],
        normalised=[
            (
                {"boundary": "immediate", "execution_kind": "content_turn"},
                {
                    "boundary": "immediate",
                    "execution_kind": "content_turn",
                    "execution_handling_mode": None,
                    "peer_response_terminal_apply_intent": None,
                    "live_interrupt_required": False,
                },
            )
        ],
        refused=[
            ({"execution_kind": "content_turn"}, "boundary"),
            ({**SEMANTICS, "execution_handling_mode": "shout"}, "execution_handling_mode"),
        ],
    ),
    # ------------------------------------------------------------ completion
    "CompletionOutcome": Cases(
        accepted=[
            {"completion_type": "completed", "run_id": U2, "output": "hi"},
            {
                "completion_type": "runtime_terminated",
                "reason": "runtime stopped",
                "error": SHORT_ERROR,
            },
        ],
        refused=[
            ({"completion_type": "maybe"}, "completion_type"),
            ({"completion_type": "abandoned", "reason": "reset", "error": "x"}, "error"),
        ],
    ),
    "Completed": Cases(
        accepted=[
            {"completion_type": "completed", "run_id": U2, "output": {"text": "hi"}},
            {"completion_type": "completed", "run_id": U2},
        ],
        refused=[({"completion_type": "completed"}, "run_id")],
    ),
    "CompletedWithoutResult": Cases(
        accepted=[{"completion_type": "completed_without_result"}],
        refused=[({"completion_type": "cancelled"}, "completion_type")],
    ),
    "CallbackPending": Cases(
        accepted=[
            {
                "completion_type": "callback_pending",
                "tool_use_id": "t",
                "tool_name": "n",
                "args": None,
            }
        ],
        refused=[
            ({"completion_type": "callback_pending", "tool_use_id": "t", "tool_name": "n"}, "args")
        ],
    ),
    "CallbackBatchPending": Cases(
        accepted=[
            {"completion_type": "callback_batch_pending", "pending_tool_calls": [{"id": "t"}]}
        ],
        refused=[
            (
                {"completion_type": "callback_batch_pending", "pending_tool_calls": {}},
                "pending_tool_calls",
            )
        ],
    ),
    "Cancelled": Cases(
        accepted=[{"completion_type": "cancelled"}],
        refused=[({"completion_type": "completed"}, "completion_type")],
    ),
    "Abandoned": Cases(
        accepted=[{"completion_type": "abandoned", "reason": "reset", "error": SHORT_ERROR}],
        refused=[
            ({"completion_type": "abandoned", "reason": "reset", "error": "x"}, "error"),
            ({"completion_type": "abandoned", "reason": "reset"}, "error"),
        ],
    ),
    "AbandonedWithError": Cases(
        accepted=[{"completion_type": "abandoned_with_error", "reason": "r", "error": ERROR}],
        refused=[
            (
                {
                    "completion_type": "abandoned_with_error",
                    "reason": "r",
                    "error": {"terminal": True},
                },
                "error.kind",
            )
        ],
    ),
    "CompletedWithFinalizationFailure": Cases(
        accepted=[
            {
                "completion_type": "completed_with_finalization_failure",
                "error": {"kind": "fatal_failure", "terminal": True, "detail": "d"},
            }
        ],
        refused=[
            (
                {
                    "completion_type": "completed_with_finalization_failure",
                    "error": {"kind": "meh"},
                },
                "error.kind",
            )
        ],
    ),
    "RuntimeTerminated": Cases(
        accepted=[
            {
                "completion_type": "runtime_terminated",
                "reason": "runtime stopped",
                "error": SHORT_ERROR,
            }
        ],
        refused=[
            (
                {"completion_type": "runtime_terminated", "reason": None, "error": SHORT_ERROR},
                "reason",
            )
        ],
    ),
    "TurnErrorMetadata": Cases(
        accepted=[ERROR, SHORT_ERROR],
        normalised=[
            ({"kind": "unknown"}, SHORT_ERROR),
            (
                {"kind": "unknown", "terminal": True, "detail": None},
                {"kind": "unknown", "terminal": True},
            ),
        ],
        refused=[
            ({"kind": "unknown", "terminal": None}, "terminal"),
            ({"kind": "unknown", "retryable": "no"}, "retryable"),
            ({"terminal": True}, "kind"),
            ({"kind": "unknown", "message": 5, "outcome": "meh"}, "outcome"),
        ],
    ),
    # ------------------------------------------------------------ reports, scopes, coalescing
    "RejectReason": Cases(
        accepted=[
            {"reject_type": "not_ready", "state": "retired"},
            {"reject_type": "durability_violation", "detail": "x"},
        ],
        refused=[
            ({"reject_type": "bad_mood"}, "reject_type"),
            ({"reject_type": "not_ready"}, "state"),
        ],
    ),
    "NotReady": Cases(
        accepted=[{"reject_type": "not_ready", "state": "stopped"}],
        refused=[({"reject_type": "not_ready", "state": "sleepy"}, "state")],
    ),
    "DurabilityViolation": Cases(
        accepted=[{"reject_type": "durability_violation", "detail": "d"}],
        refused=[({"reject_type": "durability_violation"}, "detail")],
    ),
    "PeerHandlingModeInvalid": Cases(
        accepted=[{"reject_type": "peer_handling_mode_invalid", "detail": "d"}],
        refused=[({"reject_type": "peer_handling_mode_invalid", "detail": 1}, "detail")],
    ),
    "PeerResponseTerminalInvalid": Cases(
        accepted=[{"reject_type": "peer_response_terminal_invalid", "detail": "d"}],
        refused=[({"reject_type": "not_ready", "detail": "d"}, "reject_type")],
    ),
    "RetireReport": Cases(
        accepted=[{"inputs_abandoned": 3, "inputs_pending_drain": 1}],
        normalised=[({"inputs_abandoned": 3}, {"inputs_abandoned": 3, "inputs_pending_drain": 0})],
        refused=[
            ({"inputs_abandoned": 3, "inputs_pending_drain": None}, "inputs_pending_drain"),
            ({}, "inputs_abandoned"),
        ],
    ),
    "ResetReport": Cases(
        accepted=[{"inputs_abandoned": 0}], refused=[({"inputs_abandoned": -1}, "inputs_abandoned")]
    ),
    "RecycleReport": Cases(
        accepted=[{"inputs_transferred": 2}],
        refused=[({"inputs_transferred": 2.5}, "inputs_transferred")],
    ),
    "DestroyReport": Cases(
        accepted=[{"inputs_abandoned": 1}],
        refused=[({"inputs_abandoned": "1"}, "inputs_abandoned")],
    ),
    "StopReport": Cases(accepted=[{"inputs_abandoned": 1}], refused=[({}, "inputs_abandoned")]),
    "RecoveryReport": Cases(
        accepted=[
            {"inputs_recovered": 1, "inputs_abandoned": 0, "inputs_requeued": 2, "details": ["x"]},
            {"inputs_recovered": 0, "inputs_abandoned": 0, "inputs_requeued": 0},
        ],
        refused=[
            (
                {
                    "inputs_recovered": 1,
                    "inputs_abandoned": 0,
                    "inputs_requeued": 2,
                    "details": None,
                },
                "details",
            )
        ],
    ),
    "InputScope": Cases(
        accepted=[{"scope_type": "specific", "input_id": U1}, {"scope_type": "all"}],
        refused=[({"scope_type": "some"}, "scope_type")],
    ),
    "RuntimeScope": Cases(
        accepted=[{"scope_type": "runtime", "runtime_id": "rt"}],
        refused=[({"scope_type": "runtime"}, "runtime_id")],
    ),
    "SpecificScope": Cases(
        accepted=[{"scope_type": "specific", "input_id": U1}],
        refused=[({"scope_type": "specific", "input_id": "x"}, "input_id")],
    ),
    "OperationScope": Cases(
        accepted=[{"scope_type": "operation", "operation_id": "op"}],
        refused=[({"scope_type": "operation", "operation_id": None}, "operation_id")],
    ),
    "AllScope": Cases(
        accepted=[{"scope_type": "all"}], refused=[({"scope_type": "specific"}, "scope_type")]
    ),
    "AggregateDescriptor": Cases(
        accepted=[
            {
                "aggregate_id": U1,
                "source_ids": [U2, U3],
                "summary": "2 coalesced inputs",
                "created_at": TS,
            }
        ],
        refused=[
            (
                {"aggregate_id": U1, "source_ids": "x", "summary": "s", "created_at": TS},
                "source_ids",
            )
        ],
    ),
    "SupersessionScope": Cases(
        accepted=[{"runtime_id": "rt", "kind": "peer_response_progress", "key": "k"}],
        refused=[({"runtime_id": "rt", "kind": "x", "key": "k"}, "kind")],
    ),
    # ------------------------------------------------------------ events
    "RuntimeEventEnvelope": Cases(
        accepted=[
            ENVELOPE,
            {k: v for k, v in ENVELOPE.items() if k not in ("causation_id", "correlation_id")},
        ],
        refused=[
            ({**ENVELOPE, "event": INPUT_EVENTS["InputQueued"]}, "event.category"),
            (
                {
                    **ENVELOPE,
                    "event": {"category": "topology", "data": {"code": "runtime_created"}},
                },
                "event.data.runtime_id",
            ),
        ],
    ),
    "RuntimeEvent": Cases(
        accepted=[
            {"category": "input_lifecycle", "data": INPUT_EVENTS["InputAccepted"]},
            {"category": "run_lifecycle", "data": RUN_EVENTS["RunStarted"]},
            {"category": "runtime_state_change", "data": STATE_CHANGE},
            {"category": "topology", "data": TOPOLOGY_EVENTS["RuntimeRetired"]},
            {"category": "projection", "data": PROJECTION},
        ],
        refused=[
            ({"category": "weather", "data": {}}, "category"),
            ({"category": "input_lifecycle"}, "data"),
            ({"category": "input_lifecycle", "data": {"code": "accepted"}}, "data.input_id"),
            (INPUT_EVENTS["InputQueued"], "category"),
        ],
    ),
    "InputLifecycleEvent": Cases(
        accepted=list(INPUT_EVENTS.values()),
        refused=[
            ({"category": "input_lifecycle", "data": INPUT_EVENTS["InputQueued"]}, "code"),
            ({"code": "evaporated", "input_id": U1}, "code"),
        ],
    ),
    **{
        name: Cases(
            accepted=[doc],
            refused=[
                ({**doc, "input_id": "x"}, "input_id"),
                ({"category": "input_lifecycle", "data": doc}, "input_id"),
            ],
        )
        for name, doc in INPUT_EVENTS.items()
    },
    "RunLifecycleEvent": Cases(
        accepted=list(RUN_EVENTS.values()),
        refused=[
            ({"code": "started", "run_id": U2, "primitive": STAGED}, "primitive.primitive_type"),
            ({"category": "run_lifecycle", "data": RUN_EVENTS["RunCancelled"]}, "code"),
        ],
    ),
    **{
        name: Cases(accepted=[doc], refused=[({**doc, "run_id": 1}, "run_id")])
        for name, doc in RUN_EVENTS.items()
    },
    "RunBoundaryReceipt": Cases(
        accepted=[RECEIPT],
        normalised=[
            (
                {"run_id": U2, "boundary": "run_start"},
                {
                    "run_id": U2,
                    "boundary": "run_start",
                    "contributing_input_ids": [],
                    "message_count": 0,
                    "sequence": 0,
                },
            )
        ],
        refused=[({**RECEIPT, "sequence": -1}, "sequence")],
    ),
    "RuntimeStateChangeEvent": Cases(
        accepted=[STATE_CHANGE],
        refused=[
            ({"category": "runtime_state_change", "data": STATE_CHANGE}, "from"),
            ({"from": "idle", "to": "sideways"}, "to"),
        ],
    ),
    "SilentIntentsSet": Cases(
        accepted=[{"intents": ["mob.peer_added", "probe.intent"]}, {"intents": []}],
        refused=[({}, "intents"), ({"intents": [1]}, "intents[0]"), ({"intents": "x"}, "intents")],
    ),
    "RuntimeTopologyEvent": Cases(
        accepted=list(TOPOLOGY_EVENTS.values()),
        refused=[({"code": "runtime_exploded", "runtime_id": "a"}, "code")],
    ),
    **{
        name: Cases(accepted=[doc], refused=[({"code": doc["code"]}, "runtime_id")])
        for name, doc in TOPOLOGY_EVENTS.items()
    },
    "RuntimeProjectionEvent": Cases(
        accepted=[PROJECTION],
        refused=[
            ({**PROJECTION, "source_event_id": "evt-1"}, "source_event_id"),
            ({"category": "projection", "data": PROJECTION}, "rule_id"),
        ],
    ),
    # ------------------------------------------------------------ enums
    **{
        name: Cases(accepted=list(values), refused=[("zz_not_a_value", ""), (1, ""), (None, "")])
        for name, values in ENUM_VALUES.items()
    },
}

#: Public names of ``meerkat_runtime.events`` that are not wire types, and why.
NOT_WIRE = {
    # The pure decider's commands, decisions and state: in-memory only.
    "Accept", "AcceptDecision", "ApplyBoundary", "CancelRun", "CompleteRun", "Decision",
    "Create", "DecisionContext", "Destroy", "FailRun", "Recover", "Recycle", "Reset", "Retire",
    "SessionState", "SetSilentIntents", "StartRun", "Stop",
    # Results of pure functions, with no wire form in the spec.
    "AdmissionPlan", "PostAdmissionSignal", "Standalone", "Supersedes",
    # Ingress metadata kept in memory: no serde in Rust, no form in the spec.
    "ContentShape",
    # The operations registry's read model and the user interrupt's results: folded or
    # returned in memory, not in the spec's wire (OperationRecord.to_json is our own).
    "CompletionBatch", "CompletionEntry", "CompletionFeedGap", "OperationPublicResultClass",
    "OperationRecord", "OperationStatus", "UserInterruptObservation", "UserInterruptOutcome",
    "UserInterruptPublicResult",
}  # fmt: skip
#: Public names that are other names of a type with cases.
ALIASES = {"RunError": "TurnErrorMetadata"}


def _spec_type(name: str) -> Any:
    return getattr(ev, name)


def _is_wire_type(obj: Any) -> bool:
    if isinstance(obj, type):
        return dataclasses.is_dataclass(obj) or issubclass(obj, enum.Enum)
    return hasattr(obj, "__supertype__") or obj is ev.ContentInput


def _raw(doc: Any) -> bytes:
    return doc if isinstance(doc, bytes) else orjson.dumps(doc)


ACCEPTED = [(n, i, doc) for n, c in CASES.items() for i, doc in enumerate(c.accepted)]
NORMALISED = [(n, i, pair) for n, c in CASES.items() for i, pair in enumerate(c.normalised)]
REFUSED = [(n, i, case) for n, c in CASES.items() for i, case in enumerate(c.refused)]


@pytest.mark.parametrize(("name", "i", "doc"), ACCEPTED, ids=[f"{n}-{i}" for n, i, _ in ACCEPTED])
def test_accepted_serde_json_re_encodes_byte_equal(name: str, i: int, doc: Any) -> None:
    cls = _spec_type(name)
    raw = _raw(doc)
    parsed = orjson.loads(raw)
    # bytes, text, and the parsed value (a Python str is JSON text, so not for a bare string)
    for form in [raw, raw.decode()] + ([] if isinstance(parsed, str) else [parsed]):
        assert wire.encode(wire.decode(cls, form), as_type=cls) == raw, name
    value = wire.decode(cls, raw)
    # Its own form reads back as its class too (and is the carried form less the carrier's tag).
    assert (
        wire.decode(type(value) if dataclasses.is_dataclass(value) else cls, wire.encode(value))
        == value
    )


@pytest.mark.parametrize(
    ("name", "i", "pair"), NORMALISED, ids=[f"{n}-{i}" for n, i, _ in NORMALISED]
)
def test_normalised_serde_json_is_written_canonically(
    name: str, i: int, pair: tuple[Any, Any]
) -> None:
    cls = _spec_type(name)
    source, written = pair
    value = wire.decode(cls, _raw(source))
    assert wire.encode(value, as_type=cls) == orjson.dumps(written)
    assert wire.decode(cls, orjson.dumps(written)) == value


@pytest.mark.parametrize(("name", "i", "case"), REFUSED, ids=[f"{n}-{i}" for n, i, _ in REFUSED])
def test_refused_serde_json_raises_invalid_input_naming_the_path(
    name: str, i: int, case: tuple[Any, str]
) -> None:
    cls = _spec_type(name)
    doc, path = case
    forms: list[Any] = [_raw(doc)]
    if isinstance(doc, (dict, list)):
        forms.append(doc)  # the parsed form is read alike
    for form in forms:
        with pytest.raises(InvalidInput) as info:
            wire.decode(cls, form)
        assert info.value.path == path, f"{name}: {info.value}"


def test_every_public_spec_type_has_accepted_and_refused_cases() -> None:
    public = {n for n in ev.__all__ if _is_wire_type(getattr(ev, n))}
    covered = set(CASES) | set(ALIASES)
    assert public - NOT_WIRE - covered == set(), "public wire types without cases"
    assert covered - public == set(), "cases for names the events package does not export"
    for name, cases in CASES.items():
        assert cases.accepted, f"{name} has no accepted case"
        assert cases.refused, f"{name} has no refused case"
    for alias, target in ALIASES.items():
        assert getattr(ev, alias) is getattr(ev, target)
    # The spec's names are re-exported from the package root too.
    missing = [n for n in public if getattr(meerkat_runtime, n, None) is not getattr(ev, n)]
    assert missing == []


def test_enums_hold_exactly_the_spec_values() -> None:
    for name, values in ENUM_VALUES.items():
        assert [m.value for m in _spec_type(name)] == values, name


# ---------------------------------------------------------------- generated values

_POLICY_KINDS = st.sampled_from(ev.InputKind)


def _of(strategy: st.SearchStrategy[Any], cls: type) -> st.SearchStrategy[Any]:
    return strategy.filter(lambda x: type(x) is cls)


_UNION_STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "Input": s.inputs,
    "InputOrigin": s.origins,
    "PeerConvention": s.conventions,
    "OperationEvent": s.operation_events,
    "RunPrimitive": s.run_primitives,
    "CoreRenderable": s.renderables,
    "InputTerminalOutcome": s.terminal_outcomes,
    "ReconstructionSource": s.reconstruction_sources,
    "CompletionOutcome": s.completion_outcomes,
    "RejectReason": s.reject_reasons,
    "InputScope": s.input_scopes,
    "InputLifecycleEvent": s.input_events,
    "RunLifecycleEvent": s.run_events,
    "RuntimeEvent": s.runtime_events,
    "RuntimeTopologyEvent": s.runtime_events.filter(
        lambda x: isinstance(x, ev.RuntimeTopologyEvent)
    ),
}
STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    **dict.fromkeys(
        ("InputId", "RunId", "RuntimeEventId", "ConversationId", "CausationId", "CorrelationId"),
        s.uuids,
    ),
    **dict.fromkeys(
        (
            "LogicalRuntimeId",
            "IdempotencyKey",
            "SupersessionKey",
            "SchemaId",
            "ProjectionRuleId",
            "EventCodeId",
            "RequestId",
            "ReservationKey",
        ),
        s.text,
    ),
    "SessionId": st.text(
        st.characters(codec="utf-8").filter(str.isprintable), min_size=1, max_size=20
    ),
    "PolicyVersion": s.u64,
    "KindId": _POLICY_KINDS,
    "ContentInput": s.content,
    **_UNION_STRATEGIES,
    "InputHeader": s.headers,
    "InputVisibility": s.visibilities,
    "ConversationAppend": s.appends,
    "ConversationContextAppend": s.context_appends,
    "RuntimeTurnMetadata": s.turn_metadata,
    "TurnToolOverlay": s.tool_overlays,
    "StagedRunInput": s.staged_inputs,
    "InputState": s.input_states,
    "InputStateHistoryEntry": s.history_entries,
    "InputStateEvent": s.input_state_events,
    "InputAbandonReason": s.abandon_reasons,
    "PolicyDecision": s.policy_decisions,
    "PolicySnapshot": s.policy_snapshots,
    "RuntimeSemantics": s.runtime_semantics,
    "TurnErrorMetadata": s.run_errors,
    "RuntimeEventEnvelope": s.envelopes,
    "RunBoundaryReceipt": _of(s.run_events, ev.RunCheckpointed).map(lambda e: e.receipt),
    "RuntimeStateChangeEvent": _of(s.runtime_events, ev.RuntimeStateChangeEvent),
    "RuntimeProjectionEvent": _of(s.runtime_events, ev.RuntimeProjectionEvent),
    "SilentIntentsSet": _of(s.runtime_events, ev.SilentIntentsSet),
    "AggregateDescriptor": st.builds(
        ev.AggregateDescriptor,
        aggregate_id=s.uuids,
        source_ids=st.lists(s.uuids, max_size=3).map(tuple),
        summary=s.text,
        created_at=s.timestamps,
    ),
    "SupersessionScope": st.builds(
        ev.SupersessionScope, runtime_id=s.text, kind=_POLICY_KINDS, key=s.text
    ),
    **{name: st.sampled_from(_spec_type(name)) for name in ENUM_VALUES},
}
# Each variant class: its union's values of that class.
for _union, _strategy in [*_UNION_STRATEGIES.items(), ("RetireReport", s.reports)]:
    for _name in CASES:
        _cls = _spec_type(_name)
        if _name not in STRATEGIES and isinstance(_cls, type) and dataclasses.is_dataclass(_cls):
            base = _spec_type(_union)
            if isinstance(base, type) and issubclass(_cls, base) and _cls is not base:
                STRATEGIES[_name] = _of(_strategy, _cls)
for _name in (
    "RetireReport",
    "ResetReport",
    "RecycleReport",
    "DestroyReport",
    "StopReport",
    "RecoveryReport",
):
    STRATEGIES.setdefault(_name, _of(s.reports, _spec_type(_name)))


def test_every_type_with_cases_has_a_strategy() -> None:
    assert set(CASES) - set(STRATEGIES) == set()


@pytest.mark.parametrize("name", sorted(CASES))
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_generated_values_round_trip(name: str, data: st.DataObject) -> None:
    cls = _spec_type(name)
    x = data.draw(STRATEGIES[name])
    assert wire.decode(cls, wire.encode(x, as_type=cls)) == x
    own = type(x) if dataclasses.is_dataclass(x) else cls
    back = wire.decode(own, wire.encode(x))
    assert back == x
    assert type(back) is type(x)
    # The generated encoders and the reference agree on key order: bytes are canonical.
    assert wire.encode(wire.decode(cls, wire.encode(x, as_type=cls)), as_type=cls) == wire.encode(
        x, as_type=cls
    )
    if isinstance(x, uuid.UUID):
        assert wire.encode(x) == orjson.dumps(str(x))
