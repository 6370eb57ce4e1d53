"""Hypothesis strategies for every wire type of the pure core.

Values follow the codec's domain: timestamps are aware UTC datetimes with
microsecond precision, JSON values are JSON-native (finite floats, string
keys, integers within the 64-bit range orjson writes), sequences the codec
decodes as tuples are generated as tuples.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from hypothesis import strategies as st

from meerkat_runtime.events import (
    Abandoned,
    AbandonedOutcome,
    AbandonedWithError,
    AbandonKind,
    AllScope,
    ApplyMode,
    BlocksRenderable,
    CallbackBatchPending,
    CallbackPending,
    Cancelled,
    CoalescedOutcome,
    CoalescingSource,
    Completed,
    CompletedWithFinalizationFailure,
    CompletedWithoutResult,
    ConsumedOutcome,
    ConsumePoint,
    ContinuationInput,
    ContinuationKind,
    ConversationAppend,
    ConversationAppendRole,
    ConversationContextAppend,
    DestroyReport,
    DrainPolicy,
    DurabilityViolation,
    ExternalEventInput,
    ExternalOrigin,
    FlowOrigin,
    FlowStepInput,
    HandlingMode,
    ImmediateAppend,
    ImmediateContextAppend,
    InputAbandoned,
    InputAbandonReason,
    InputAccepted,
    InputApplied,
    InputCoalesced,
    InputConsumed,
    InputDeduplicated,
    InputDurability,
    InputHeader,
    InputLifecycleState,
    InputQueued,
    InputStaged,
    InputState,
    InputStateEvent,
    InputStateHistoryEntry,
    InputStateTransitioned,
    InputSuperseded,
    InputVisibility,
    JsonRenderable,
    NotReady,
    OperationCancelled,
    OperationCompleted,
    OperationFailed,
    OperationInput,
    OperationProgress,
    OperationScope,
    OperationStarted,
    OperatorOrigin,
    PeerHandlingModeInvalid,
    PeerInput,
    PeerMessage,
    PeerOrigin,
    PeerRequest,
    PeerResponseProgress,
    PeerResponseTerminal,
    PeerResponseTerminalInvalid,
    PolicyDecision,
    PolicySnapshot,
    ProjectionSource,
    PromptInput,
    QueueMode,
    RecoveryReport,
    RecycleReport,
    ReferenceRenderable,
    ResetReport,
    ResponseProgressPhase,
    ResponseTerminalStatus,
    RetireReport,
    RoutingDisposition,
    RunApplyBoundary,
    RunBoundaryReceipt,
    RunCancelled,
    RunCheckpointed,
    RunCompleted,
    RunFailed,
    RunStarted,
    RuntimeCreated,
    RuntimeDestroyed,
    RuntimeEventEnvelope,
    RuntimeExecutionKind,
    RuntimeProjectionEvent,
    RuntimeRecycled,
    RuntimeRetired,
    RuntimeScope,
    RuntimeSemantics,
    RuntimeState,
    RuntimeStateChangeEvent,
    RuntimeTerminated,
    RuntimeTurnMetadata,
    SenderTaint,
    SilentIntentsSet,
    SpecificScope,
    StagedRunInput,
    StopReport,
    SupersededOutcome,
    SystemOrigin,
    TextRenderable,
    TurnErrorMetadata,
    TurnTerminalCauseKind,
    TurnTerminalOutcome,
    TurnToolOverlay,
    WakeMode,
)
from meerkat_runtime.events.policy import PeerTerminalApplyIntent

U64_MAX = 2**64 - 1
I64_MIN = -(2**63)

text = st.text(max_size=12)
uuids = st.uuids()
timestamps = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999999)
).map(lambda d: d.replace(tzinfo=UTC))
u64 = st.integers(min_value=0, max_value=U64_MAX)
small_u = st.integers(min_value=0, max_value=10)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=I64_MIN, max_value=U64_MAX)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text
)
#: A JSON-native value, as ``orjson.loads`` would return it (lists, str-keyed dicts).
json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=6,
)
json_objects = st.dictionaries(text, json_values, max_size=3)


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


# ---------------------------------------------------------------- content

text_block = st.builds(lambda t: {"type": "text", "text": t}, text)
image_block = st.one_of(
    st.builds(
        lambda m, d: {"type": "image", "media_type": m, "source": "inline", "data": d}, text, text
    ),
    st.builds(
        lambda m, b: {"type": "image", "media_type": m, "source": "blob", "blob_id": b}, text, text
    ),
)
other_block = st.builds(
    lambda t, extra: {**extra, "type": t},
    st.sampled_from(["tool_result", "audio", "x-custom"]),
    json_objects,
)
content_blocks = st.lists(text_block | image_block | other_block, max_size=3).map(tuple)
content = text | content_blocks

# ---------------------------------------------------------------- run primitives

renderables = st.one_of(
    st.builds(TextRenderable, text=text),
    st.builds(BlocksRenderable, blocks=content_blocks),
    st.builds(JsonRenderable, value=json_values),
    st.builds(ReferenceRenderable, uri=text, label=optional(text)),
)
appends = st.builds(
    ConversationAppend, role=st.sampled_from(ConversationAppendRole), content=renderables
)
context_appends = st.builds(ConversationContextAppend, key=text, content=renderables)
tool_overlays = st.builds(
    TurnToolOverlay,
    allowed_tools=optional(st.lists(text, max_size=3).map(tuple)),
    blocked_tools=optional(st.lists(text, max_size=3).map(tuple)),
)
turn_metadata = st.builds(
    RuntimeTurnMetadata,
    handling_mode=optional(st.sampled_from(HandlingMode)),
    keep_alive=optional(st.booleans()),
    skill_references=optional(st.lists(json_values, max_size=2).map(tuple)),
    flow_tool_overlay=optional(tool_overlays),
    additional_instructions=optional(st.lists(text, max_size=2).map(tuple)),
    model=optional(text),
    provider=optional(text),
    provider_params=json_values,
    render_metadata=json_values,
    execution_kind=optional(st.sampled_from(RuntimeExecutionKind)),
)
staged_inputs = st.builds(
    StagedRunInput,
    boundary=st.sampled_from(RunApplyBoundary),
    appends=st.lists(appends, max_size=3).map(tuple),
    context_appends=st.lists(context_appends, max_size=2).map(tuple),
    contributing_input_ids=st.lists(uuids, max_size=3).map(tuple),
    turn_metadata=optional(turn_metadata),
)
run_primitives = st.one_of(
    staged_inputs,
    st.builds(ImmediateAppend, role=st.sampled_from(ConversationAppendRole), content=renderables),
    st.builds(ImmediateContextAppend, key=text, content=renderables),
)

# ---------------------------------------------------------------- inputs

origins = st.one_of(
    st.just(OperatorOrigin()),
    st.builds(PeerOrigin, peer_id=text, display_identity=optional(text), runtime_id=optional(text)),
    st.builds(FlowOrigin, flow_id=text, step_index=u64),
    st.just(SystemOrigin()),
    st.builds(ExternalOrigin, source_name=text),
)
visibilities = st.builds(
    InputVisibility, transcript_eligible=st.booleans(), operator_eligible=st.booleans()
)
headers = st.builds(
    InputHeader,
    id=uuids,
    timestamp=timestamps,
    source=origins,
    durability=st.sampled_from(InputDurability),
    visibility=visibilities,
    idempotency_key=optional(text),
    supersession_key=optional(text),
    correlation_id=optional(uuids),
)
conventions = st.one_of(
    st.just(PeerMessage()),
    st.builds(PeerRequest, request_id=text, intent=text),
    st.builds(PeerResponseProgress, request_id=text, phase=st.sampled_from(ResponseProgressPhase)),
    st.builds(
        PeerResponseTerminal, request_id=text, status=st.sampled_from(ResponseTerminalStatus)
    ),
)
operation_events = st.one_of(
    st.builds(OperationStarted, id=text, kind=text),
    st.builds(
        OperationProgress,
        id=text,
        message=text,
        percent=optional(st.floats(allow_nan=False, allow_infinity=False)),
    ),
    st.builds(OperationCompleted, id=text, result=json_values),
    st.builds(OperationFailed, id=text, error=text),
    st.builds(OperationCancelled, id=text),
)
prompt_inputs = st.builds(
    PromptInput,
    content=content,
    header=headers,
    typed_turn_appends=st.lists(appends, max_size=2).map(tuple),
    injected_context=st.lists(content, max_size=2).map(tuple),
    turn_metadata=optional(turn_metadata),
)
peer_inputs = st.builds(
    PeerInput,
    content=content,
    header=headers,
    directed_interaction_id=optional(uuids),
    convention=optional(conventions),
    payload=json_values,
    handling_mode=optional(st.sampled_from(HandlingMode)),
    sender_taint=optional(st.sampled_from(SenderTaint)),
    objective_id=optional(text),
    system_prompts=st.lists(text, max_size=3).map(tuple),
    injected_context=st.lists(content, max_size=2).map(tuple),
)
flow_step_inputs = st.builds(
    FlowStepInput,
    step_id=text,
    content=content,
    header=headers,
    directed_interaction_id=optional(uuids),
    turn_metadata=optional(turn_metadata),
)
external_inputs = st.builds(
    ExternalEventInput,
    event_type=text,
    payload=json_values,
    header=headers,
    blocks=optional(content_blocks),
    handling_mode=st.sampled_from(HandlingMode),
    render_metadata=json_values,
    objective_id=optional(text),
)
continuation_inputs = st.builds(
    ContinuationInput,
    reason=text,
    header=headers,
    continuation_kind=st.sampled_from(ContinuationKind),
    handling_mode=st.sampled_from(HandlingMode),
    request_id=optional(text),
    turn_tool_overlay=optional(tool_overlays),
    turn_append=optional(appends),
)
operation_inputs = st.builds(
    OperationInput, operation_id=text, event=operation_events, header=headers
)
inputs = st.one_of(
    prompt_inputs,
    peer_inputs,
    flow_step_inputs,
    external_inputs,
    continuation_inputs,
    operation_inputs,
)

# ---------------------------------------------------------------- policy

policy_decisions = st.builds(
    PolicyDecision,
    apply_mode=st.sampled_from(ApplyMode),
    wake_mode=st.sampled_from(WakeMode),
    queue_mode=st.sampled_from(QueueMode),
    consume_point=st.sampled_from(ConsumePoint),
    drain_policy=st.sampled_from(DrainPolicy),
    routing_disposition=st.sampled_from(RoutingDisposition),
    record_transcript=st.booleans(),
    emit_operator_content=st.booleans(),
    policy_version=u64,
)
policy_snapshots = st.builds(PolicySnapshot, version=u64, decision=policy_decisions)
runtime_semantics = st.builds(
    RuntimeSemantics,
    boundary=st.sampled_from(RunApplyBoundary),
    execution_kind=st.sampled_from(RuntimeExecutionKind),
    execution_handling_mode=optional(st.sampled_from(HandlingMode)),
    peer_response_terminal_apply_intent=optional(st.sampled_from(PeerTerminalApplyIntent)),
    live_interrupt_required=st.booleans(),
)

# ---------------------------------------------------------------- input state

abandon_reasons = st.one_of(
    st.sampled_from([k for k in AbandonKind if k is not AbandonKind.MAX_ATTEMPTS_EXHAUSTED]).map(
        InputAbandonReason
    ),
    u64.map(InputAbandonReason.max_attempts_exhausted),
)
terminal_outcomes = st.one_of(
    st.just(ConsumedOutcome()),
    st.builds(SupersededOutcome, superseded_by=uuids),
    st.builds(CoalescedOutcome, aggregate_id=uuids),
    st.builds(AbandonedOutcome, reason=abandon_reasons),
)
lifecycle_states = st.sampled_from(InputLifecycleState)
history_entries = st.builds(
    InputStateHistoryEntry,
    timestamp=timestamps,
    from_state=lifecycle_states,
    to=lifecycle_states,
    reason=optional(text),
)
input_state_events = st.builds(
    InputStateEvent, timestamp=timestamps, state=lifecycle_states, detail=optional(text)
)
reconstruction_sources = st.one_of(
    st.builds(ProjectionSource, rule_id=text, source_event_id=text),
    st.builds(CoalescingSource, source_input_ids=st.lists(uuids, max_size=3).map(tuple)),
)
run_errors = st.builds(
    TurnErrorMetadata,
    kind=st.sampled_from(TurnTerminalCauseKind),
    terminal=st.booleans(),
    outcome=optional(st.sampled_from(TurnTerminalOutcome)),
    detail=optional(text),
    provider=optional(text),
    model=optional(text),
    retryable=optional(st.booleans()),
)
completion_outcomes = st.one_of(
    st.builds(Completed, run_id=uuids, output=json_values),
    st.just(CompletedWithoutResult()),
    st.builds(CallbackPending, tool_use_id=text, tool_name=text, args=json_values),
    st.builds(
        CallbackBatchPending, pending_tool_calls=st.lists(json_values, max_size=2).map(tuple)
    ),
    st.just(Cancelled()),
    st.builds(Abandoned, reason=text, error=run_errors),
    st.builds(AbandonedWithError, reason=text, error=run_errors),
    st.builds(CompletedWithFinalizationFailure, error=run_errors),
    st.builds(RuntimeTerminated, reason=text, error=run_errors),
)
input_states = st.builds(
    InputState,
    input_id=uuids,
    current_state=lifecycle_states,
    created_at=timestamps,
    updated_at=timestamps,
    policy=optional(policy_snapshots),
    runtime_semantics=optional(runtime_semantics),
    directed_run_started_attribution=json_values,
    terminal_outcome=optional(terminal_outcomes),
    durability=optional(st.sampled_from(InputDurability)),
    idempotency_key=optional(text),
    attempt_count=u64,
    recovery_count=u64,
    history=st.lists(history_entries, max_size=3).map(tuple),
    reconstruction_source=optional(reconstruction_sources),
    terminal_completion=optional(completion_outcomes),
    terminal_completion_unavailable=st.booleans(),
    interaction_terminal_outbox=json_values,
    persisted_input=optional(inputs),
    last_run_id=optional(uuids),
    last_boundary_sequence=optional(u64),
    admission_sequence=optional(u64),
    recovery_lane=optional(st.sampled_from(HandlingMode)),
)

# ---------------------------------------------------------------- runtime events

input_events = st.one_of(
    st.builds(
        InputAccepted,
        input_id=uuids,
        input=optional(inputs),
        policy=optional(policy_snapshots),
        runtime_semantics=optional(runtime_semantics),
    ),
    st.builds(InputDeduplicated, input_id=uuids, existing_id=uuids),
    st.builds(InputSuperseded, input_id=uuids, superseded_by=uuids),
    st.builds(InputCoalesced, input_id=uuids, aggregate_id=uuids),
    st.builds(InputQueued, input_id=uuids, lane=optional(st.sampled_from(HandlingMode))),
    st.builds(InputStaged, input_id=uuids, run_id=uuids),
    st.builds(InputApplied, input_id=uuids, run_id=uuids, boundary_sequence=optional(u64)),
    st.builds(InputConsumed, input_id=uuids, run_id=uuids),
    st.builds(InputAbandoned, input_id=uuids, reason=abandon_reasons),
    st.builds(
        InputStateTransitioned,
        input_id=uuids,
        from_state=lifecycle_states,
        to=lifecycle_states,
        reason=optional(text),
    ),
)
run_events = st.one_of(
    st.builds(RunStarted, run_id=uuids, primitive=optional(run_primitives)),
    st.builds(
        RunCompleted, run_id=uuids, output=json_values, outcome=optional(completion_outcomes)
    ),
    st.builds(
        RunCheckpointed,
        run_id=uuids,
        receipt=st.builds(
            RunBoundaryReceipt,
            run_id=uuids,
            boundary=st.sampled_from(RunApplyBoundary),
            contributing_input_ids=st.lists(uuids, max_size=3).map(tuple),
            conversation_digest=optional(st.text(max_size=20)),
            message_count=st.integers(min_value=0, max_value=10_000),
            sequence=st.integers(min_value=0, max_value=10_000),
        ),
    ),
    st.builds(RunFailed, run_id=uuids, error=run_errors),
    st.builds(RunCancelled, run_id=uuids),
)
runtime_states = st.sampled_from(RuntimeState)
runtime_events = st.one_of(
    input_events,
    run_events,
    st.builds(RuntimeStateChangeEvent, from_state=runtime_states, to=runtime_states),
    st.builds(RuntimeCreated, runtime_id=text),
    st.builds(RuntimeRetired, runtime_id=text),
    st.builds(RuntimeRecycled, runtime_id=text),
    st.builds(RuntimeDestroyed, runtime_id=text),
    st.builds(
        RuntimeProjectionEvent, rule_id=text, projected_input_id=uuids, source_event_id=uuids
    ),
    st.builds(SilentIntentsSet, intents=st.lists(text, max_size=3).map(tuple)),
)
envelopes = st.builds(
    RuntimeEventEnvelope,
    id=uuids,
    timestamp=timestamps,
    runtime_id=text,
    event=runtime_events,
    causation_id=optional(uuids),
    correlation_id=optional(uuids),
)

# ---------------------------------------------------------------- reasons, reports, scopes

reject_reasons = st.one_of(
    st.builds(NotReady, state=runtime_states),
    st.builds(DurabilityViolation, detail=text),
    st.builds(PeerHandlingModeInvalid, detail=text),
    st.builds(PeerResponseTerminalInvalid, detail=text),
)
reports = st.one_of(
    st.builds(RetireReport, inputs_abandoned=u64, inputs_pending_drain=u64),
    st.builds(ResetReport, inputs_abandoned=u64),
    st.builds(RecycleReport, inputs_transferred=u64),
    st.builds(DestroyReport, inputs_abandoned=u64),
    st.builds(StopReport, inputs_abandoned=u64),
    st.builds(
        RecoveryReport,
        inputs_recovered=u64,
        inputs_abandoned=u64,
        inputs_requeued=u64,
        details=st.lists(text, max_size=3).map(tuple),
    ),
)
input_scopes = st.one_of(
    st.builds(RuntimeScope, runtime_id=text),
    st.builds(SpecificScope, input_id=uuids),
    st.builds(OperationScope, operation_id=text),
    st.just(AllScope()),
)

# ---------------------------------------------------------------- fuzzing

_U = "01955b3c-7d1e-7c4a-9f00-3a2b1c0d4e5f"
# Anything JSON-ish, including what the codec must refuse: huge integers, NaN,
# lone surrogates, timestamp- and uuid-like strings.
wild_strings = st.one_of(
    st.text(st.characters(codec=None, exclude_categories=()), max_size=8),
    st.sampled_from([
        "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00", "2026-03-01T12:00:00+05:99",
        "2026-03-01T12:00:00.123456789Z", _U.upper(), _U.replace("-", "_"), "retired",
        "max_attempts_exhausted", "prompt", "input_lifecycle", "consumed", "-1",
    ]),
)  # fmt: skip
wild_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    wild_strings,
    st.sampled_from(
        [2**64, 2**64 - 1, -(2**63) - 1, "\ud800", "a\udfffb", float("nan"), float("inf"), -0.0]
    ),
)
wild_json = st.recursive(
    wild_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(wild_strings, inner, max_size=3),
    max_leaves=6,
)


def json_paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every node of a JSON document, as a path of keys and indexes (the root is ``()``)."""
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.extend(json_paths(v, (*prefix, k)))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.extend(json_paths(v, (*prefix, i)))
    return out


def replace_at(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    """A copy of ``doc`` with the node at ``path`` replaced by ``value`` (``doc`` is untouched)."""
    if not path:
        return value
    doc = copy.copy(doc)
    doc[path[0]] = replace_at(doc[path[0]], path[1:], value)
    return doc
