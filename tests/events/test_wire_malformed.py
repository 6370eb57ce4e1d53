"""Malformed wire input (and fuzzing) raises ``InvalidInput`` whose ``path`` names the
offending field, never a ``KeyError``/``TypeError``/``OverflowError``; section 2's
identifiers.
"""

import contextlib
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meerkat_runtime.errors import InvalidInput
from meerkat_runtime.events import (
    AbandonedOutcome,
    AbandonKind,
    CallbackPending,
    CompletionOutcome,
    Input,
    InputAbandonReason,
    InputHeader,
    InputScope,
    InputState,
    InputTerminalOutcome,
    PolicyDecision,
    PromptInput,
    RecoveryReport,
    RejectReason,
    RetireReport,
    RunFailed,
    RunPrimitive,
    RuntimeEvent,
    RuntimeEventEnvelope,
    RuntimeState,
    RuntimeStateChangeEvent,
    StagedRunInput,
    TextRenderable,
    wire,
)
from meerkat_runtime.events.ids import session_id_from_runtime_id, uuid7, validate_session_id

from . import strategies as s
from ._wire import (
    ALL_EXAMPLES,
    ENVELOPE_EXAMPLE,
    EXTERNAL_EXAMPLE,
    HEADER,
    IMMEDIATE_APPEND_EXAMPLE,
    PEER_EXAMPLE,
    POLICY_EXAMPLE,
    PROMPT_EXAMPLE,
    RECOVERY,
    STAGED_EXAMPLE,
    STORED_ROW_EXAMPLE,
    U1,
    U2,
    header_at,
    roundtrip,
)

# ---------------------------------------------------------------- malformed input

MALFORMED = [
    # wrong types
    (Input, {**PROMPT_EXAMPLE, "header": header_at(1772366400)}, "header.timestamp"),
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
    (InputState, {**STORED_ROW_EXAMPLE, "persisted_input": {**PROMPT_EXAMPLE, "header": header_at("x")}},
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
    (RecoveryReport, {**RECOVERY, "details": "one"}, "details"),
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
        wire.decode(Input, {**PROMPT_EXAMPLE, "header": header_at("yesterday")})
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


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_fuzz_decode_raises_only_invalid_input_and_results_reencode(data: st.DataObject) -> None:
    """Replace any node of a spec example with anything: decode succeeds or raises InvalidInput,
    and whatever it accepts can be written again and reads back equal."""
    cls, example = data.draw(st.sampled_from(ALL_EXAMPLES))
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
