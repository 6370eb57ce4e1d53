"""Round trips of every wire type: ``wire.decode(type(x), wire.encode(x)) == x``.

Tagged unions are also decoded through their base class (the tag picks the
variant), and every value goes through the three accepted inputs of
``decode``: bytes, str and an already-parsed dict.
"""

from __future__ import annotations

import enum
import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meerkat_runtime.errors import InvalidInput
from meerkat_runtime.events import (
    AbandonKind,
    ApplyMode,
    CompletionOutcome,
    ConsumePoint,
    ContinuationKind,
    ConversationAppendRole,
    CoreRenderable,
    DrainPolicy,
    HandlingMode,
    Input,
    InputAbandonReason,
    InputDurability,
    InputKind,
    InputLifecycleState,
    InputOrigin,
    InputScope,
    InputTerminalOutcome,
    OperationEvent,
    PeerConvention,
    QueueMode,
    ReconstructionSource,
    RejectReason,
    ResponseProgressPhase,
    ResponseTerminalStatus,
    RoutingDisposition,
    RunApplyBoundary,
    RunPrimitive,
    RuntimeEvent,
    RuntimeEventEnvelope,
    RuntimeExecutionKind,
    RuntimeState,
    SenderTaint,
    WakeMode,
    wire,
)
from meerkat_runtime.events.runtime_event import InputLifecycleEvent, RunLifecycleEvent

from . import strategies as s

RT = settings(max_examples=60, deadline=None)


def _all_forms(x: Any, as_type: Any = None) -> list[Any]:
    """The encoded value (as ``as_type``, else its own form) as bytes, str and (for objects)
    parsed dict: what ``decode`` takes.

    A ``str`` is always JSON text, so a bare string value (an enum, a unit abandon
    reason) is only given as bytes and str.
    """
    raw = wire.encode(x, as_type)
    parsed = orjson.loads(raw)
    return [raw, raw.decode()] + ([parsed] if isinstance(parsed, dict) else [])


def check_roundtrip(x: Any, *bases: type[Any]) -> None:
    """Its own form reads back as its class; its form as each base (a union or a carrier,
    written with ``as_type``) reads back as that base, to an equal value of its class."""
    for form in _all_forms(x):
        back = wire.decode(type(x), form)
        assert back == x
        assert type(back) is type(x)
    for base in bases:
        for form in _all_forms(x, base):
            via_base = wire.decode(base, form)
            assert via_base == x
            assert type(via_base) is type(x)
    # Encoding is canonical: what was decoded encodes to the same bytes.
    assert wire.encode(wire.decode(type(x), wire.encode(x))) == wire.encode(x)


@RT
@given(s.inputs)
def test_inputs_roundtrip(x: Input) -> None:
    check_roundtrip(x, Input)


@RT
@given(s.headers)
def test_headers_roundtrip(x: Any) -> None:
    check_roundtrip(x)


@RT
@given(s.origins)
def test_origins_roundtrip(x: Any) -> None:
    check_roundtrip(x, InputOrigin)


@RT
@given(s.conventions)
def test_peer_conventions_roundtrip(x: Any) -> None:
    check_roundtrip(x, PeerConvention)


@RT
@given(s.operation_events)
def test_operation_events_roundtrip(x: Any) -> None:
    check_roundtrip(x, OperationEvent)


@RT
@given(s.turn_metadata)
def test_turn_metadata_roundtrip(x: Any) -> None:
    check_roundtrip(x)


@RT
@given(s.tool_overlays)
def test_tool_overlays_roundtrip(x: Any) -> None:
    check_roundtrip(x)


@RT
@given(s.renderables)
def test_renderables_roundtrip(x: Any) -> None:
    check_roundtrip(x, CoreRenderable)


@RT
@given(s.appends | s.context_appends)
def test_appends_roundtrip(x: Any) -> None:
    check_roundtrip(x)


@RT
@given(s.run_primitives)
def test_run_primitives_roundtrip(x: Any) -> None:
    check_roundtrip(x, RunPrimitive)


@RT
@given(s.policy_decisions | s.policy_snapshots | s.runtime_semantics)
def test_policy_roundtrip(x: Any) -> None:
    check_roundtrip(x)


@RT
@given(s.input_states)
def test_input_state_rows_roundtrip(x: Any) -> None:
    check_roundtrip(x)
    assert orjson.loads(wire.encode(x))["stored_input_state_version"] == 5


@RT
@given(s.history_entries | s.input_state_events)
def test_history_and_state_events_roundtrip(x: Any) -> None:
    check_roundtrip(x)


@RT
@given(s.terminal_outcomes)
def test_terminal_outcomes_roundtrip(x: Any) -> None:
    check_roundtrip(x, InputTerminalOutcome)


@RT
@given(s.abandon_reasons)
def test_abandon_reasons_roundtrip(x: InputAbandonReason) -> None:
    check_roundtrip(x)
    encoded = orjson.loads(wire.encode(x))
    if x.kind is AbandonKind.MAX_ATTEMPTS_EXHAUSTED:
        assert encoded == {"max_attempts_exhausted": {"attempts": x.attempts}}
    else:
        assert encoded == x.kind.value


@RT
@given(s.reconstruction_sources)
def test_reconstruction_sources_roundtrip(x: Any) -> None:
    check_roundtrip(x, ReconstructionSource)


@RT
@given(s.completion_outcomes)
def test_completion_outcomes_roundtrip(x: Any) -> None:
    check_roundtrip(x, CompletionOutcome)


@RT
@given(s.run_errors)
def test_run_errors_roundtrip(x: Any) -> None:
    check_roundtrip(x)
    assert "terminal" in orjson.loads(wire.encode(x))


@RT
@given(s.input_events)
def test_input_lifecycle_events_roundtrip(x: Any) -> None:
    check_roundtrip(x, InputLifecycleEvent, RuntimeEvent)


@RT
@given(s.run_events)
def test_run_lifecycle_events_roundtrip(x: Any) -> None:
    check_roundtrip(x, RunLifecycleEvent, RuntimeEvent)


@RT
@given(s.runtime_events)
def test_runtime_events_roundtrip_via_base(x: RuntimeEvent) -> None:
    carried = wire.encode(x, as_type=RuntimeEvent)
    back = wire.decode(RuntimeEvent, carried)
    assert back == x
    assert type(back) is type(x)
    assert back.event_code == x.event_code
    doc = orjson.loads(carried)
    assert set(doc) == {"category", "data"}
    assert doc["data"] == orjson.loads(wire.encode(x))  # the carrier holds the family's own form


@RT
@given(s.envelopes)
def test_envelopes_roundtrip(x: RuntimeEventEnvelope) -> None:
    check_roundtrip(x)


@RT
@given(s.reject_reasons)
def test_reject_reasons_roundtrip(x: Any) -> None:
    check_roundtrip(x, RejectReason)


@RT
@given(s.reports)
def test_reports_roundtrip(x: Any) -> None:
    check_roundtrip(x)


@RT
@given(s.input_scopes)
def test_input_scopes_roundtrip(x: Any) -> None:
    check_roundtrip(x, InputScope)


ENUMS: list[type[enum.Enum]] = [
    InputKind,
    InputDurability,
    HandlingMode,
    ContinuationKind,
    ResponseProgressPhase,
    ResponseTerminalStatus,
    SenderTaint,
    RunApplyBoundary,
    ConversationAppendRole,
    RuntimeExecutionKind,
    InputLifecycleState,
    ApplyMode,
    WakeMode,
    QueueMode,
    ConsumePoint,
    DrainPolicy,
    RoutingDisposition,
    RuntimeState,
]


@pytest.mark.parametrize("cls", ENUMS, ids=lambda c: c.__name__)
def test_enums_roundtrip_as_bare_snake_case_strings(cls: type[enum.Enum]) -> None:
    for member in cls:
        raw = wire.encode(member)
        assert json.loads(raw) == member.value
        assert member.value == member.value.lower()
        assert " " not in member.value
        assert str(member) == member.value  # StrEnum: display equals wire
        assert wire.decode(cls, raw) is member


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_union_variant_decoded_through_wrong_variant_is_refused(data: st.DataObject) -> None:
    """Decoding straight into a variant refuses another variant's tag (no silent re-typing)."""
    x = data.draw(s.inputs)
    raw = orjson.loads(wire.encode(x))
    others = [c for c in wire_variants(Input) if c is not type(x)]
    other = data.draw(st.sampled_from(others))
    with pytest.raises(InvalidInput) as info:
        wire.decode(other, raw)
    assert info.value.path == "input_type"


def wire_variants(base: type) -> list[type]:
    from meerkat_runtime.events._codec import variants_of

    return list(variants_of(base).values())
