"""The wire rules of RUNTIME_SPEC section 1.1: shapes, timestamps, uuids, nulls and
defaults, unknown keys.
"""

import copy
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meerkat_runtime.errors import InvalidInput
from meerkat_runtime.events import (
    BlocksRenderable,
    CompletionOutcome,
    ContinuationInput,
    CoreRenderable,
    Input,
    InputHeader,
    InputScope,
    InputState,
    InputTerminalOutcome,
    InputVisibility,
    OperationInput,
    OperationProgress,
    PeerInput,
    PolicyDecision,
    PromptInput,
    RecoveryReport,
    RejectReason,
    RetireReport,
    RunApplyBoundary,
    RunError,
    RunFailed,
    RunPrimitive,
    RuntimeEvent,
    RuntimeEventEnvelope,
    RuntimeTurnMetadata,
    SenderTaint,
    SpecificScope,
    StagedRunInput,
    TurnTerminalCauseKind,
    TurnToolOverlay,
    wire,
)

from . import strategies as s
from ._wire import (
    COMPLETION_EXAMPLES,
    CONTEXT_APPEND_EXAMPLE,
    ENVELOPE_EXAMPLE,
    EXTERNAL_EXAMPLE,
    HEADER,
    IMMEDIATE_APPEND_EXAMPLE,
    PEER_EXAMPLE,
    POLICY_EXAMPLE,
    PROMPT_EXAMPLE,
    RECOVERY,
    RUN_EVENT_EXAMPLES,
    STAGED_EXAMPLE,
    STORED_ROW_EXAMPLE,
    U1,
    U2,
    VIS,
    header_at,
    roundtrip,
)

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
    assert wire.decode(InputHeader, header_at(written)).timestamp == ts


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
    h = wire.decode(InputHeader, header_at(given_ts))
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
        wire.decode(Input, {**PROMPT_EXAMPLE, "header": header_at(bad)})
    assert info.value.path == "header.timestamp"


def test_1_1_extreme_but_valid_timestamps_are_accepted() -> None:
    lo = wire.decode(InputHeader, header_at("0001-01-01T00:00:00Z")).timestamp
    hi = wire.decode(InputHeader, header_at("9999-12-31T23:59:59.999999+00:00")).timestamp
    assert lo == datetime(1, 1, 1, tzinfo=UTC)
    assert hi == datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    shifted = wire.decode(InputHeader, header_at("0001-01-01T01:00:00+01:00")).timestamp
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

NULL_REFUSED = [
    (Input, {**EXTERNAL_EXAMPLE, "handling_mode": None}, "handling_mode"),
    (Input, {**_CONT, "handling_mode": None}, "handling_mode"),
    (Input, {**_CONT, "continuation_kind": None}, "continuation_kind"),
    (PolicyDecision, {**POLICY_EXAMPLE, "drain_policy": None}, "drain_policy"),
    (PolicyDecision, {**POLICY_EXAMPLE, "routing_disposition": None}, "routing_disposition"),
    (PolicyDecision, {**POLICY_EXAMPLE, "record_transcript": None}, "record_transcript"),
    (PolicyDecision, {**POLICY_EXAMPLE, "emit_operator_content": None}, "emit_operator_content"),
    (RetireReport, {"inputs_abandoned": 0, "inputs_pending_drain": None}, "inputs_pending_drain"),
    (RecoveryReport, {**RECOVERY, "details": None}, "details"),
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
    (RecoveryReport, RECOVERY),
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
