"""Bad input never gets in: it ends in ``InvalidInput`` or a ``rejected`` outcome with a
reason, and the store's row count does not move.

Three sources of bad input:

* a corpus of hand-written nasty cases (wrong types, huge strings, deep
  nesting, invalid UTF-8, lone surrogates, unknown tags, NaN/Infinity, negative
  numbers where unsigned ones belong, ids in wrong formats, documents beyond
  ``max_input_bytes`` in every form a host can hand over, rule violations that
  are outcomes rather than errors), presented to ``session.accept`` as a dict
  and as JSON bytes and str;
* hypothesis-generated garbage for ``wire.decode`` of every wire type;
* hypothesis mutations of valid inputs (a key dropped, a value replaced by
  junk, a key added) presented to ``session.accept``: whatever happens is one of
  the documented results, and only an acceptance writes anything;
* typed objects (``PromptInput(content=None)`` and the like: Python dataclasses
  do not check their fields), hand-written and hypothesis-generated: each is
  refused exactly as its wire form would be, with ``InvalidInput`` naming the
  field and no row written in any of the store's tables, or accepted and read
  back equal from a fresh process's view of the store.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from meerkat_runtime import InvalidInput, Runtime
from meerkat_runtime.events import wire
from meerkat_runtime.events.catalogue import envelope_from_record
from meerkat_runtime.events.completion import CompletionOutcome
from meerkat_runtime.events.input_state import InputState, InputTerminalOutcome
from meerkat_runtime.events.inputs import (
    ContinuationInput,
    ExternalEventInput,
    FlowOrigin,
    FlowStepInput,
    Input,
    InputDurability,
    InputHeader,
    InputVisibility,
    OperationInput,
    PeerInput,
    PromptInput,
)
from meerkat_runtime.events.policy import PolicyDecision
from meerkat_runtime.events.reports import RejectReason
from meerkat_runtime.events.run_primitive import RunPrimitive
from meerkat_runtime.events.runtime_event import RuntimeEventEnvelope
from meerkat_runtime.runtime import coerce_input

LIMIT = 64 * 1024
"""``max_input_bytes`` of the runtimes under test (a small limit keeps the huge cases cheap)."""

UUID = "01955b3c-7d1e-7c4a-9f00-3a2b1c0d4e5f"


@pytest.fixture(scope="module", params=["memory", "sqlite"])
def rt(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Runtime]:
    if request.param == "memory":
        url = f"memory://{uuid.uuid4().hex}"
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('bad') / 'bad.db'}"
    with Runtime.open(url, max_input_bytes=LIMIT) as runtime:
        stopped = runtime.session("stopped")
        stopped.accept({"input_type": "prompt", "content": "before the stop"})
        stopped.stop()
        runtime.create_session("destroyed").destroy()
        yield runtime


def rows(rt: Runtime) -> tuple[int, int]:
    """What the store holds: (log head position, number of sessions)."""
    return rt.store.max_position(), len(rt.store.session_ids())


def prompt(**header: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"input_type": "prompt", "content": "hello"}
    if header:
        doc["header"] = header
    return doc


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"k": [value]}
    return value


def peer_terminal(**convention: Any) -> dict[str, Any]:
    return {
        "input_type": "peer",
        "header": {
            "source": {"type": "peer", "peer_id": str(uuid.uuid4()), "display_identity": "Al"}
        },
        "convention": {
            "convention_type": "response_terminal",
            "request_id": str(uuid.uuid4()),
            "status": "completed",
            **convention,
        },
        "content": "",
    }


# Each case: (name, document). Documents are dicts; JSON-able ones are also sent as bytes and str.
INVALID: list[tuple[str, Any]] = [
    ("not an object", [1, 2, 3]),
    ("a bare string", "hello"),
    ("a number", 42),
    ("null", None),
    ("empty object", {}),
    ("no input_type", {"content": "hello"}),
    ("unknown input_type", {"input_type": "bogus", "content": "x"}),
    ("input_type not a string", {"input_type": 7, "content": "x"}),
    ("content missing", {"input_type": "prompt"}),
    ("content a number", {"input_type": "prompt", "content": 5}),
    ("content an object", {"input_type": "prompt", "content": {"text": "x"}}),
    ("content block without a type", {"input_type": "prompt", "content": [{"text": "x"}]}),
    ("text block without text", {"input_type": "prompt", "content": [{"type": "text"}]}),
    ("content block not an object", {"input_type": "prompt", "content": ["x"]}),
    ("header a list", {"input_type": "prompt", "content": "x", "header": []}),
    ("header id not a uuid", prompt(id="not-a-uuid")),
    ("header id braced", prompt(id="{" + UUID + "}")),
    ("header id too long", prompt(id=UUID + "0")),
    ("header id an integer", prompt(id=12345)),
    ("header id empty", prompt(id="")),
    ("timestamp a number", prompt(timestamp=1_700_000_000)),
    ("timestamp without offset", prompt(timestamp="2026-03-01T12:00:00")),
    ("timestamp garbage", prompt(timestamp="yesterday")),
    ("source unknown tag", prompt(source={"type": "alien"})),
    ("source not an object", prompt(source="operator")),
    ("durability unknown", prompt(durability="forever")),
    ("visibility half", prompt(visibility={"transcript_eligible": True})),
    ("visibility not bools", prompt(visibility={"transcript_eligible": 1, "operator_eligible": 0})),
    ("idempotency key a number", prompt(idempotency_key=5)),
    ("correlation id not a uuid", prompt(correlation_id="corr-1")),
    (
        "flow step index negative",
        {
            "input_type": "flow_step",
            "step_id": "s",
            "content": "c",
            "header": {"source": {"type": "flow", "flow_id": "f", "step_index": -1}},
        },
    ),
    (
        "progress percent not a number",
        {
            "input_type": "operation",
            "operation_id": "op",
            "event": {"type": "progress", "id": "op", "message": "m", "percent": "half"},
        },
    ),
    (
        "operation event unknown tag",
        {"input_type": "operation", "operation_id": "op", "event": {"type": "exploded"}},
    ),
    (
        "peer convention unknown",
        {"input_type": "peer", "content": "", "convention": {"convention_type": "gossip"}},
    ),
    (
        "external payload missing",
        {"input_type": "external_event", "event_type": "e", "handling_mode": "queue"},
    ),
    (
        "handling mode unknown",
        {"input_type": "external_event", "event_type": "e", "payload": 1, "handling_mode": "shove"},
    ),
    (
        "explicit null for a defaulted field",
        {"input_type": "external_event", "event_type": "e", "payload": 1, "handling_mode": None},
    ),
    (
        "NaN in a payload",
        {"input_type": "external_event", "event_type": "e", "payload": {"x": math.nan}},
    ),
    (
        "Infinity in a payload",
        {"input_type": "external_event", "event_type": "e", "payload": [math.inf]},
    ),
    (
        "-Infinity in a payload",
        {"input_type": "external_event", "event_type": "e", "payload": {"x": {"y": -math.inf}}},
    ),
    (
        "integer beyond 64 bits",
        {"input_type": "external_event", "event_type": "e", "payload": {"x": 2**70}},
    ),
    ("a set in a payload", {"input_type": "external_event", "event_type": "e", "payload": {1, 2}}),
    ("bytes in a payload", {"input_type": "external_event", "event_type": "e", "payload": b"raw"}),
    (
        "non-string key in a payload",
        {"input_type": "external_event", "event_type": "e", "payload": {1: "x"}},
    ),
    ("lone surrogate in content", {"input_type": "prompt", "content": "bad \ud800 text"}),
    (
        "lone surrogate in a payload key",
        {"input_type": "external_event", "event_type": "e", "payload": {"\udfff": 1}},
    ),
    (
        "deep nesting (300)",
        {"input_type": "external_event", "event_type": "e", "payload": nested(300)},
    ),
    (
        "deep nesting (5000)",
        {"input_type": "external_event", "event_type": "e", "payload": nested(5000)},
    ),
    ("huge content", {"input_type": "prompt", "content": "x" * (LIMIT + 1)}),
    ("huge idempotency key", prompt(idempotency_key="k" * (LIMIT + 1))),
    (
        "huge payload",
        {"input_type": "external_event", "event_type": "e", "payload": ["y" * 1000] * 100},
    ),
    (
        "directed id mismatch",
        {
            "input_type": "flow_step",
            "step_id": "s",
            "content": "c",
            "directed_interaction_id": str(uuid.uuid4()),
            "header": {"source": {"type": "flow", "flow_id": "f", "step_index": 0}},
        },
    ),
]

REJECTED: list[tuple[str, str, dict[str, Any]]] = [
    ("derived from the operator", "durability_violation", prompt(durability="derived")),
    (
        "derived prompt from the system",
        "durability_violation",
        prompt(durability="derived", source={"type": "system"}),
    ),
    (
        "progress with a handling mode",
        "peer_handling_mode_invalid",
        {
            "input_type": "peer",
            "content": "",
            "handling_mode": "queue",
            "convention": {
                "convention_type": "response_progress",
                "request_id": "r",
                "phase": "accepted",
            },
        },
    ),
    (
        "steer peer with injected context",
        "peer_handling_mode_invalid",
        {
            "input_type": "peer",
            "content": "m",
            "handling_mode": "steer",
            "injected_context": ["ctx"],
        },
    ),
    (
        "terminal with a blank request id",
        "peer_response_terminal_invalid",
        peer_terminal(request_id=" "),
    ),
    (
        "terminal with a non-uuid request id",
        "peer_response_terminal_invalid",
        peer_terminal(request_id="r-7"),
    ),
    ("terminal cancelled", "peer_response_terminal_invalid", peer_terminal(status="cancelled")),
]


def _forms(doc: Any) -> list[tuple[str, Any]]:
    """The document as an object, and as JSON text and bytes (NaN and Infinity written as
    the bare tokens some encoders emit; orjson would turn them into null)."""
    forms: list[tuple[str, Any]] = [("object", doc)]
    try:
        text = json.dumps(doc)
    except (TypeError, ValueError, RecursionError):
        return forms  # not JSON at all: only an object can carry it
    return [*forms, ("bytes", text.encode()), ("str", text)]


# Bad only as Python objects: in JSON text an integer beyond 64 bits is read as a float
# (as serde_json reads it), and a text key is the only kind there is.
OBJECT_ONLY = {"integer beyond 64 bits", "non-string key in a payload"}


@pytest.mark.parametrize(("name", "doc"), INVALID, ids=[c[0] for c in INVALID])
def test_malformed_input_raises_invalid_input_and_writes_nothing(
    rt: Runtime, name: str, doc: Any
) -> None:
    s = rt.session("bad-input")
    forms = _forms(doc)[:1] if name in OBJECT_ONLY else _forms(doc)
    for form, value in forms:
        before = rows(rt)
        with pytest.raises(InvalidInput):
            s.accept(value)
        assert rows(rt) == before, (name, form)


@pytest.mark.parametrize(("name", "reason", "doc"), REJECTED, ids=[c[0] for c in REJECTED])
def test_rule_violations_are_rejected_with_a_reason_and_write_nothing(
    rt: Runtime, name: str, reason: str, doc: dict[str, Any]
) -> None:
    s = rt.session("rule-breaker")
    for form, value in _forms(doc):
        before = rows(rt)
        out = s.accept(value)
        assert out.kind == "rejected", (name, form, out)
        assert out.reason is not None and str(out.reason)
        assert wire.to_json_value(out.reason)["reject_type"] == reason
        assert out.completion is None
        assert rows(rt) == before, (name, form)


@pytest.mark.parametrize("sid", ["stopped", "destroyed"])
def test_input_to_a_session_that_accepts_none_is_rejected_and_writes_nothing(
    rt: Runtime, sid: str
) -> None:
    before = rows(rt)
    for doc in (
        prompt(),
        prompt(idempotency_key="k"),
        {"input_type": "operation", "operation_id": "o", "event": {"type": "cancelled", "id": "o"}},
    ):
        out = rt.session(sid).accept(doc)
        assert out.kind == "rejected" and str(out.reason).endswith(sid)
    assert rows(rt) == before


def test_invalid_utf8_and_non_json_bytes(rt: Runtime) -> None:
    s = rt.session("bytes")
    before = rows(rt)
    for raw in (
        b'{"input_type":"prompt","content":"\xff\xfe"}',
        b"\x80\x81\x82",
        b'{"input_type":"prompt","content":"x"',
        b'{"input_type":"prompt","content":"x"}trailing',
        b'{"input_type":"external_event","event_type":"e","payload":NaN}',
        b'{"input_type":"external_event","event_type":"e","payload":Infinity}',
        b"",
        b"\x00",
        b"[" * 2000 + b"]" * 2000,
        b'{"input_type":"prompt","content":"' + b"x" * (LIMIT + 10) + b'"}',
    ):
        with pytest.raises(InvalidInput):
            s.accept(raw)
        with pytest.raises(InvalidInput):
            wire.decode(Input, raw)
    with pytest.raises(InvalidInput):
        s.accept(memoryview(b"\xff"))  # type: ignore[arg-type]
    assert rows(rt) == before


def test_the_size_limit_holds_for_every_form_and_is_configurable(tmp_path: Path) -> None:
    with Runtime.open(f"sqlite:///{tmp_path / 'limit.db'}", max_input_bytes=4096) as small:
        s = small.session("limit")
        before = rows(small)
        big = {"input_type": "prompt", "content": "z" * 5000}
        typed = wire.decode(PromptInput, {**big, "header": {
            "id": UUID, "timestamp": "2026-03-01T12:00:00Z", "source": {"type": "operator"},
            "durability": "durable", "visibility": {"transcript_eligible": True, "operator_eligible": True},
        }})  # fmt: skip
        for form in (big, orjson.dumps(big), orjson.dumps(big).decode(), typed):
            with pytest.raises(InvalidInput, match="exceeds the limit"):
                s.accept(form)
        assert rows(small) == before
        assert s.accept({"input_type": "prompt", "content": "z" * 3000}).kind == "accepted"


@pytest.mark.parametrize(
    "sid", ["", "x" * 257, "line\nbreak", "nul\x00", "\t", "bell\x07", 5, None, b"bytes"]
)
def test_bad_session_ids_are_invalid_input(rt: Runtime, sid: Any) -> None:
    before = rows(rt)
    with pytest.raises(InvalidInput):
        rt.session(sid)
    assert rows(rt) == before


# ---------------------------------------------------------------------- hypothesis: wire.decode

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(
        ["prompt", "peer", "operation", "queue", "steer", "durable", UUID, "2026-03-01T12:00:00Z"]
    ),
)
json_like = st.recursive(
    json_leaf,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(
                st.text(max_size=12),
                st.sampled_from(
                    [
                        "input_type",
                        "header",
                        "content",
                        "id",
                        "type",
                        "code",
                        "category",
                        "data",
                        "completion_type",
                        "reject_type",
                        "primitive_type",
                        "outcome_type",
                        "source",
                    ]
                ),
            ),
            children,
            max_size=5,
        ),
    ),
    max_leaves=25,
)
WIRE_TYPES = [
    Input,
    InputState,
    RuntimeEventEnvelope,
    RunPrimitive,
    PolicyDecision,
    CompletionOutcome,
    RejectReason,
    InputTerminalOutcome,
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cls=st.sampled_from(WIRE_TYPES), value=json_like)
def test_decode_of_garbage_is_a_value_or_invalid_input(cls: type, value: Any) -> None:
    for data in _decode_forms(value):
        try:
            decoded: Any = wire.decode(cls, data)
        except InvalidInput:
            continue
        assert isinstance(decoded, cls)
        assert wire.decode(cls, wire.encode(decoded)) == decoded


def _decode_forms(value: Any) -> list[Any]:
    forms: list[Any] = [value]
    with contextlib.suppress(TypeError):
        forms.append(orjson.dumps(value))
    return forms


@settings(max_examples=200, deadline=None)
@given(cls=st.sampled_from(WIRE_TYPES), raw=st.binary(max_size=200))
def test_decode_of_random_bytes_is_a_value_or_invalid_input(cls: type, raw: bytes) -> None:
    try:
        decoded: Any = wire.decode(cls, raw)
    except InvalidInput:
        return
    assert isinstance(decoded, cls)


# ---------------------------------------------------------------------- hypothesis: mutated inputs

VALID: list[dict[str, Any]] = [
    {
        "input_type": "prompt",
        "header": {
            "id": UUID,
            "timestamp": "2026-03-01T12:00:00Z",
            "source": {"type": "operator"},
            "durability": "durable",
            "visibility": {"transcript_eligible": True, "operator_eligible": True},
            "idempotency_key": "req-42",
        },
        "content": "Summarise the report",
        "turn_metadata": {"handling_mode": "queue", "keep_alive": True},
    },
    {
        "input_type": "peer",
        "header": {
            "id": "01955b3c-0000-7000-8000-000000000001",
            "timestamp": "2026-03-01T12:00:01Z",
            "source": {"type": "peer", "peer_id": "peer-a", "display_identity": "Alice"},
            "durability": "durable",
            "visibility": {"transcript_eligible": True, "operator_eligible": True},
        },
        "convention": {
            "convention_type": "response_progress",
            "request_id": "r-7",
            "phase": "in_progress",
        },
        "content": "",
        "payload": {"pct": 40},
    },
    {
        "input_type": "external_event",
        "header": {
            "id": "01955b3c-0000-7000-8000-000000000002",
            "timestamp": "2026-03-01T12:00:02Z",
            "source": {"type": "external", "source_name": "github"},
            "durability": "ephemeral",
            "visibility": {"transcript_eligible": True, "operator_eligible": True},
            "supersession_key": "ci-status",
        },
        "event_type": "ci.status",
        "payload": {"state": "green"},
        "handling_mode": "queue",
    },
    {
        "input_type": "operation",
        "operation_id": "op-1",
        "event": {"type": "progress", "id": "op-1", "message": "half", "percent": 50},
    },
    {
        "input_type": "flow_step",
        "step_id": "step-1",
        "content": [{"type": "text", "text": "do it"}],
        "header": {"source": {"type": "flow", "flow_id": "f", "step_index": 2}},
    },
    {
        "input_type": "continuation",
        "reason": "detached_background_op_completed",
        "continuation_kind": "ordinary",
        "handling_mode": "steer",
        "header": {"source": {"type": "system"}, "durability": "derived"},
    },
]


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    doc: dict[str, Any] = copy.deepcopy(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent: Any = doc
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["drop", "replace", "replace", "add"]))
        last = path[-1]
        if action == "drop" and isinstance(parent, dict):
            del parent[last]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.text(max_size=8))] = draw(json_like)
        else:
            parent[last] = draw(json_like)
    header = doc.setdefault("header", {}) if isinstance(doc.get("header", {}), dict) else None
    if header is not None:
        header["id"] = str(uuid.uuid4())  # each example its own input
    return doc


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(doc=mutated())
def test_mutated_inputs_end_in_a_documented_result(rt: Runtime, doc: dict[str, Any]) -> None:
    s = rt.session(f"fuzz-{uuid.uuid4().hex[:8]}")
    before = rows(rt)
    try:
        out = s.accept(doc)
    except InvalidInput:
        assert rows(rt) == before
        return
    assert out.kind in ("accepted", "rejected"), out
    if out.kind == "rejected":
        assert out.reason is not None and str(out.reason)
        assert rows(rt) == before
        return
    # Accepted: what is stored reads back as exactly what was accepted.
    assert rows(rt) > before
    state = s.input_state(out.input_id)
    assert state is not None and state.persisted_input is not None
    stored = state.persisted_input
    assert wire.decode(Input, wire.encode(stored)) == stored


# ---------------------------------------------------------------------- typed objects


def table_rows(rt: Runtime) -> dict[str, int]:
    """Rows in every table of the store's database (projections caught up first), plus the
    log head and session count; on ``memory://`` only the latter."""
    rt.projections.wait_caught_up(timeout=30)
    out = {"head": rt.store.max_position(), "sessions": len(rt.store.session_ids())}
    if rt.store.url.startswith("sqlite:///"):
        path = rt.store.url.removeprefix("sqlite:///")
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            for name in names:
                out[name] = db.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]
    return out


def _header(**fields: Any) -> InputHeader:
    return InputHeader(**fields)


# (name, typed object, the field InvalidInput must name). Each wrong type in a field the
# dataclasses do not check: every one of them used to be stored (and never read back) or
# to escape as a raw TypeError/ValueError/AttributeError.
TYPED_INVALID: list[tuple[str, Callable[[], Input], str]] = [
    ("prompt content None", lambda: PromptInput(content=None), "content"),  # type: ignore[arg-type]
    ("prompt content [{}]", lambda: PromptInput(content=[{}]), "content[0].type"),  # type: ignore[arg-type]
    ("external event_type None", lambda: ExternalEventInput(event_type=None), "event_type"),  # type: ignore[arg-type]
    (
        "payload nested too deep",
        lambda: ExternalEventInput(event_type="e", payload=nested(100)),
        "payload.k[0]",
    ),
    ("flow step_id None", lambda: FlowStepInput(step_id=None, content="c"), "step_id"),  # type: ignore[arg-type]
    ("continuation reason None", lambda: ContinuationInput(reason=None), "reason"),  # type: ignore[arg-type]
    ("peer content None", lambda: PeerInput(content=None), "content"),  # type: ignore[arg-type]
    (
        "idempotency key 5",
        lambda: PromptInput(content="x", header=_header(idempotency_key=5)),
        "header.idempotency_key",
    ),
    (
        "header id not a uuid",
        lambda: PromptInput(content="x", header=_header(id="not-uuid")),
        "header.id",
    ),
    ("bytes content", lambda: PromptInput(content=b"hello"), "content"),  # type: ignore[arg-type]
    ("payload 2**70", lambda: ExternalEventInput(event_type="e", payload=2**70), "payload"),
    (
        "naive timestamp",
        lambda: PromptInput(content="x", header=_header(timestamp=datetime(2026, 3, 1, 12))),
        "header.timestamp",
    ),
    (
        "durability bogus",
        lambda: PromptInput(content="x", header=_header(durability="bogus")),
        "header.durability",
    ),
    (
        "payload NaN",
        lambda: ExternalEventInput(event_type="e", payload=float("nan")),
        "payload",
    ),
    (
        "payload Infinity inside",
        lambda: ExternalEventInput(event_type="e", payload={"x": [math.inf]}),
        "payload.x[0]",
    ),
    ("header None", lambda: PromptInput(content="x", header=None), "header"),  # type: ignore[arg-type]
    (
        "source a string",
        lambda: PromptInput(content="x", header=_header(source="operator")),
        "header.source",
    ),
    (
        "flow step index negative",
        lambda: FlowStepInput(
            step_id="s", content="c", header=_header(source=FlowOrigin(flow_id="f", step_index=-1))
        ),
        "header.source.step_index",
    ),
    (
        "operation event a dict of the wrong shape",
        lambda: OperationInput(operation_id="op", event={"type": "exploded"}),  # type: ignore[arg-type]
        "event.type",
    ),
    (
        "handling mode bogus",
        lambda: ExternalEventInput(event_type="e", handling_mode="shove"),  # type: ignore[arg-type]
        "handling_mode",
    ),
    (
        "lone surrogate in content",
        lambda: PromptInput(content="bad \ud800"),
        "content",
    ),
    (
        "a set in a payload",
        lambda: ExternalEventInput(event_type="e", payload={"x": {1, 2}}),
        "payload.x",
    ),
    (
        "injected context of numbers",
        lambda: PromptInput(content="x", injected_context=(5,)),  # type: ignore[arg-type]
        "injected_context[0]",
    ),
    (
        "visibility flag not a bool",
        lambda: PromptInput(
            content="x",
            header=_header(visibility=InputVisibility(transcript_eligible="yes")),  # type: ignore[arg-type]
        ),
        "header.visibility.transcript_eligible",
    ),
]


@pytest.mark.parametrize(("name", "make", "path"), TYPED_INVALID, ids=[c[0] for c in TYPED_INVALID])
def test_malformed_typed_input_is_invalid_input_naming_the_field_and_writes_nothing(
    rt: Runtime, name: str, make: Callable[[], Input], path: str
) -> None:
    s = rt.session("typed-bad")
    before = table_rows(rt)
    with pytest.raises(InvalidInput) as caught:
        s.accept(make())
    assert caught.value.path.startswith(path), (name, str(caught.value))
    assert table_rows(rt) == before, name
    # Where the object can be written as JSON at all, the wire refuses that JSON too.
    try:
        as_json = wire.to_json_value(make())
    except (TypeError, ValueError, AttributeError):
        pass
    else:
        with pytest.raises(InvalidInput):
            wire.decode(Input, as_json)
    # The session is not poisoned: it takes a good input and reads back.
    assert s.accept(PromptInput(content="fine")).kind == "accepted"
    assert s.state() is not None


def test_typed_values_the_wire_reads_are_normalised_as_the_wire_reads_them(rt: Runtime) -> None:
    """A plain string for a string enum, a list for a tuple: accepted as the decoder reads
    them, and what is accepted is what reads back."""
    s = rt.session("typed-lenient")
    out = s.accept(
        PromptInput(
            content=[{"type": "text", "text": "hi"}],  # type: ignore[arg-type]
            header=_header(durability="durable"),
        )
    )
    assert out.kind == "accepted"
    state = s.input_state(out.input_id)
    assert state is not None and state.persisted_input is not None
    stored = state.persisted_input
    assert isinstance(stored, PromptInput)
    assert stored.header.durability is InputDurability.DURABLE
    assert stored.content == ({"type": "text", "text": "hi"},)


# Hypothesis: typed objects with junk in any field, nested objects included.
junk = st.one_of(
    json_like,
    st.binary(max_size=4),
    st.sampled_from([set(), frozenset({1}), object(), 2**70, -(2**64), math.nan, math.inf]),
    st.sampled_from([b"x", 3.5, (), ("a",), ({},), [{"type": 1}], datetime(2026, 1, 1)]),
    st.builds(nested, st.integers(30, 80)),
)


def _typed_fields(obj: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Paths to every dataclass field of ``obj``, nested dataclasses included."""
    out = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        out.append((*prefix, f.name))
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out += _typed_fields(value, (*prefix, f.name))
    return out


def _replace_at(obj: Any, path: tuple[str, ...], value: Any) -> Any:
    if len(path) == 1:
        return _unchecked_replace(obj, path[0], value)
    inner = _replace_at(getattr(obj, path[0]), path[1:], value)
    return _unchecked_replace(obj, path[0], inner)


def _unchecked_replace(obj: Any, name: str, value: Any) -> Any:
    """``dataclasses.replace`` without running ``__post_init__`` checks (as a careless host
    may build objects)."""
    clone = copy.copy(obj)
    object.__setattr__(clone, name, value)
    return clone


@st.composite
def broken_typed(draw: st.DrawFn) -> Input:
    inp: Any = coerce_input(copy.deepcopy(draw(st.sampled_from(VALID))))
    for _ in range(draw(st.integers(1, 2))):
        path = draw(st.sampled_from(_typed_fields(inp)))
        inp = _replace_at(inp, path, draw(junk))
    header = inp.input_header
    if isinstance(header, InputHeader):
        inp = _replace_at(inp, ("header", "id"), uuid.uuid4())
    assert isinstance(inp, Input)
    return inp


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(inp=broken_typed())
def test_broken_typed_inputs_are_refused_or_read_back_equal(rt: Runtime, inp: Input) -> None:
    s = rt.session(f"typed-fuzz-{uuid.uuid4().hex[:8]}")
    before = table_rows(rt)
    try:
        out = s.accept(inp)
    except InvalidInput:
        event("invalid")
        assert table_rows(rt) == before
        return
    event(out.kind)
    assert out.kind in ("accepted", "rejected"), out
    if out.kind == "rejected":
        assert table_rows(rt) == before
        return
    # Accepted: every stored event reads back, and the input is what was accepted.
    for rec in rt.store.read_session(s.id):
        envelope_from_record(rec.data, rec.version)
    state = s.input_state(out.input_id)
    assert state is not None and state.persisted_input is not None
    stored = state.persisted_input
    assert wire.decode(Input, wire.encode(stored)) == stored
