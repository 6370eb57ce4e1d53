"""The generated encoders/decoders of the wire codec agree with its generic (reference) path.

``to_wire``/``from_wire`` run per-class functions generated as Python source
(``_codec._FAST_ENC`` / ``_FAST_DEC``); ``_to_wire_generic``/``_from_wire_generic``
walk the class plans field by field. Under :func:`generic_codec` every class
goes through the generic path only (nested values included), which is how the
codec worked before code generation. Both must produce the same wire dicts
(same keys in the same order, same value types), the same decoded values, and
on bad input the same :class:`InvalidInput` message and path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import partial
from typing import Annotated, Any, ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meerkat_runtime.errors import InvalidInput
from meerkat_runtime.events import InputHeader, PromptInput, RuntimeEventEnvelope
from meerkat_runtime.events import _codec as codec
from meerkat_runtime.events._codec import (
    Custom,
    from_wire,
    tagged,
    to_wire,
    to_wire_tagged,
    wfield,
)
from meerkat_runtime.events.ids import uuid_text
from meerkat_runtime.events.timefmt import format_timestamp, parse_timestamp_text

from . import strategies as s
from ._wire import ALL_EXAMPLES

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: Every wire type of the pure core, as values.
ANY_VALUE = st.one_of(
    s.inputs,
    s.headers,
    s.origins,
    s.conventions,
    s.operation_events,
    s.turn_metadata,
    s.tool_overlays,
    s.renderables,
    s.appends,
    s.context_appends,
    s.run_primitives,
    s.policy_decisions,
    s.policy_snapshots,
    s.runtime_semantics,
    s.abandon_reasons,
    s.terminal_outcomes,
    s.history_entries,
    s.input_state_events,
    s.reconstruction_sources,
    s.completion_outcomes,
    s.input_states,
    s.run_errors,
    s.input_events,
    s.run_events,
    s.runtime_events,
    s.envelopes,
    s.reject_reasons,
    s.reports,
    s.input_scopes,
)


@contextlib.contextmanager
def generic_codec() -> Iterator[None]:
    """Run ``to_wire``/``from_wire`` on the generic path only (no generated function at all)."""
    caches = (codec._FAST_ENC, codec._FAST_ENC_TAGGED, codec._FAST_DEC)
    saved = [dict(c) for c in caches]
    compilers = (codec._compiled_encoder, codec._compiled_tagged_encoder, codec._compiled_decoder)
    for c in caches:
        c.clear()
    codec._compiled_encoder = lambda cls: codec._to_wire_generic
    codec._compiled_tagged_encoder = lambda cls: partial(codec._to_wire_generic, tagged=True)
    codec._compiled_decoder = lambda cls: lambda d: codec._from_wire_generic(cls, d)
    try:
        yield
    finally:
        (codec._compiled_encoder, codec._compiled_tagged_encoder, codec._compiled_decoder) = (
            compilers
        )
        for c, old in zip(caches, saved, strict=True):
            c.clear()
            c.update(old)


def shape(value: Any) -> Any:
    """A JSON-native value with its key order and exact types made comparable."""
    if isinstance(value, dict):
        return ("dict", [(k, shape(v)) for k, v in value.items()])
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [shape(v) for v in value])
    return (type(value), value)


def outcome(fn: Callable[[], Any]) -> tuple[Any, ...]:
    """What a call gives: its value (as repr, so tuple/list and enum/str differ), or its error."""
    try:
        value = fn()
    except InvalidInput as exc:
        return ("invalid", exc.detail, exc.path)
    except Exception as exc:  # any other error must match too
        return ("error", type(exc), str(exc))
    return ("ok", type(value), repr(value))


def decode_targets(value: Any) -> list[type]:
    """The class of ``value`` and the tagged-union bases it can also be decoded through."""
    cls = type(value)
    return [cls] + [
        b for b in cls.__mro__[1:] if "__tag_key__" in b.__dict__ and "__tag__" not in b.__dict__
    ]


def both(fn: Callable[[], Any]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    generated = outcome(fn)
    with generic_codec():
        reference = outcome(fn)
    return generated, reference


# ---------------------------------------------------------------- valid values


@SETTINGS
@given(ANY_VALUE)
def test_generated_encoders_write_what_the_generic_path_writes(value: Any) -> None:
    for encode in (to_wire, to_wire_tagged):  # its own form, and its form inside its union
        generated = encode(value)
        with generic_codec():
            reference = encode(value)
        assert shape(generated) == shape(reference)
    assert type(value) in codec._FAST_ENC
    assert type(value) in codec._FAST_ENC_TAGGED


@SETTINGS
@given(ANY_VALUE)
def test_generated_decoders_read_what_the_generic_path_reads(value: Any) -> None:
    with generic_codec():
        doc = to_wire_tagged(value)  # a union base needs the tag; the class itself may ignore it
    for cls in decode_targets(value):
        generated, reference = both(partial(from_wire, cls, doc))
        assert generated == reference
        assert generated[0] == "ok"
        assert from_wire(cls, doc) == value


def test_decoding_uses_the_generated_function() -> None:
    doc = to_wire(PromptInput(content="hi"))
    calls: list[Any] = []
    generated = codec._compiled_decoder(PromptInput)

    def spy(d: Any) -> Any:
        calls.append(d)
        return generated(d)

    codec._FAST_DEC[PromptInput] = spy
    try:
        assert from_wire(PromptInput, doc).content == "hi"
    finally:
        codec._FAST_DEC[PromptInput] = generated
    assert calls == [doc]


# ---------------------------------------------------------------- bad input: same error, same path

_U = "01955b3c-7d1e-7c4a-9f00-3a2b1c0d4e5f"
#: Replacements for any node of a document: wrong types, out-of-range numbers, lone
#: surrogates, near-miss timestamps and uuids, other variants' tags and enum values.
NASTY: list[Any] = [
    None, True, False, 0, -1, 2**64, 2**64 - 1, -(2**63) - 1, 1.5, float("nan"), float("inf"),
    "", "x", "\ud800", "a\udfffb", "é", [], [1], ["\ud800"], [None], {}, {"a": "\ud800"},
    {"type": "text"}, [{"type": "text", "text": "t"}], "2026-03-01T12:00:00Z",
    "2026-03-01T12:00:00.123456789+01:00", "2026-03-01T12:00:00", "2026-03-01T12:00:00+05:99",
    "9999-12-31T23:59:59-01:00", _U, _U.upper(), _U.replace("-", ""), _U[:-1], "prompt",
    "peer", "retired", "durable", "queue", "accepted", "input_lifecycle",
]  # fmt: skip
_DROP = object()  # replacement meaning: remove the key


def mutations(doc: Any) -> Iterator[Any]:
    """``doc`` with each node in turn replaced by each NASTY value, and each key dropped."""
    for path in s.json_paths(doc):
        for value in NASTY:
            yield s.replace_at(doc, path, value)
        if path and isinstance(path[-1], str):
            parent = dict(_at(doc, path[:-1]))
            del parent[path[-1]]
            yield s.replace_at(doc, path[:-1], parent)


def assert_decoded_alike(cls: type, docs: list[Any]) -> None:
    """Each document decodes to equal values on both paths, or fails with the same error."""
    generated = [outcome(partial(from_wire, cls, d, "doc")) for d in docs]
    with generic_codec():
        reference = [outcome(partial(from_wire, cls, d, "doc")) for d in docs]
    for doc, got, want in zip(docs, generated, reference, strict=True):
        assert got == want, doc


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_every_mutation_of_a_value_fails_alike(data: st.DataObject) -> None:
    value = data.draw(ANY_VALUE, label="value")
    cls = data.draw(st.sampled_from(decode_targets(value)), label="cls")
    assert_decoded_alike(cls, list(mutations(to_wire(value))))


@pytest.mark.parametrize(("cls", "example"), ALL_EXAMPLES, ids=lambda v: getattr(v, "__name__", ""))
def test_every_mutation_of_a_spec_example_fails_alike(cls: type, example: Any) -> None:
    assert_decoded_alike(cls, list(mutations(example)))


@SETTINGS
@given(st.data())
def test_wild_replacements_fail_alike(data: st.DataObject) -> None:
    """Any node of any value replaced with anything JSON-ish (hypothesis's ``wild_json``)."""
    value = data.draw(ANY_VALUE, label="value")
    doc = to_wire(value)
    path = data.draw(st.sampled_from(s.json_paths(doc)), label="path")
    mutated = s.replace_at(doc, path, data.draw(s.wild_json, label="replacement"))
    cls = data.draw(st.sampled_from(decode_targets(value)), label="cls")
    assert_decoded_alike(cls, [mutated])


def _at(doc: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        doc = doc[part]
    return doc


@pytest.mark.parametrize(
    ("cls", "doc", "detail", "path"),
    [
        (PromptInput, [], "expected object, got array", ""),
        (PromptInput, {"input_type": "peer"}, "expected 'prompt', got 'peer'", "input_type"),
        (PromptInput, {"content": "x"}, "missing required field", "header"),
        (InputHeader, {"id": 3}, "expected a uuid string, got int", "id"),
    ],
)
def test_known_errors_keep_their_message_and_path(
    cls: type, doc: Any, detail: str, path: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        from_wire(cls, doc)
    assert (caught.value.detail, caught.value.path) == (detail, path)


def test_a_bad_header_field_is_named_by_its_full_path() -> None:
    doc = to_wire(PromptInput(content="hi"))
    doc["header"] = {**doc["header"], "timestamp": "2026-03-01T12:00:00"}
    with pytest.raises(InvalidInput) as caught:
        from_wire(RuntimeEventEnvelope, _envelope_of(doc), "event")
    assert caught.value.path == "event.event.data.input.header.timestamp"
    assert "not an RFC 3339 timestamp with offset" in caught.value.detail


def _envelope_of(input_doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "timestamp": "2026-03-01T12:00:00Z",
        "runtime_id": "rt:session:x",
        "event": {
            "category": "input_lifecycle",
            "data": {"code": "accepted", "input_id": str(uuid.uuid4()), "input": input_doc},
        },
    }


# ---------------------------------------------------------------- rare but valid forms


def test_rare_valid_forms_are_decoded_by_the_generic_path() -> None:
    """What the generated code does not expect (a dict subclass, tuples, datetime and uuid
    objects) is still decoded, exactly as the generic path decodes it."""

    class Mapping(dict[str, Any]):
        pass

    header = InputHeader()
    doc = to_wire(PromptInput(content="hi", header=header))
    variants = [
        Mapping(doc),
        {**doc, "header": {**doc["header"], "timestamp": header.timestamp, "id": header.id}},
        {**doc, "content": ({"type": "text", "text": "hi"},)},
    ]
    for form in variants:
        generated, reference = both(partial(from_wire, PromptInput, form))
        assert generated == reference
        assert generated[0] == "ok"


# ---------------------------------------------------------------- classes the generator must handle


@dataclasses.dataclass(frozen=True, slots=True)
class _Tree:
    """A class that contains itself (the generator must not recurse forever)."""

    label: str
    note: str | None  # no default: a missing key reads as None (serde)
    children: tuple[_Tree, ...] = wfield(default=(), omit="empty")
    parent: _Tree | None = wfield(default=None, omit="none")
    stamp: datetime | None = None
    flag: bool = wfield(default=False, omit="false")


@dataclasses.dataclass(frozen=True, slots=True)
class _Shape:
    __tag_key__: ClassVar[str] = "shape"


@tagged
@dataclasses.dataclass(frozen=True, slots=True)
class _Square(_Shape):
    __tag__: ClassVar[str] = "square"
    side: int = wfield(ge=0)


def test_self_referencing_classes_round_trip_on_both_paths() -> None:
    leaf = _Tree("leaf", "n", stamp=datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=UTC), flag=True)
    tree = _Tree("root", None, children=(leaf, _Tree("other", None)), parent=_Tree("up", None))
    doc = to_wire(tree)
    with generic_codec():
        assert shape(to_wire(tree)) == shape(doc)
    assert from_wire(_Tree, doc) == tree
    assert_decoded_alike(_Tree, list(mutations(doc)))
    generated, reference = both(lambda: from_wire(_Tree, {**doc, "children": [{"label": 1}]}))
    assert (
        generated == reference == ("invalid", "expected string, got integer", "children[0].label")
    )


def test_odd_field_values_are_written_as_the_generic_path_writes_them() -> None:
    """Encoders mirror the generic path also on values outside a field's type (no validation)."""
    odd = [
        _Tree("x", None, flag=0),  # type: ignore[arg-type]
        _Tree("x", None, flag=None),  # type: ignore[arg-type]
        _Tree("x", None, flag=""),  # type: ignore[arg-type]
        _Tree("x", None, children=None),  # type: ignore[arg-type]
        _Tree("x", None, children=[]),  # type: ignore[arg-type]
        _Lenient(None),  # type: ignore[arg-type]
    ]
    for value in odd:
        generated = to_wire(value)
        with generic_codec():
            assert shape(to_wire(value)) == shape(generated)


@dataclasses.dataclass(frozen=True, slots=True)
class _Lenient:
    """A custom decoder that would take null: the codec still refuses it for a non-optional field."""

    text: Annotated[str, Custom(lambda v: v, lambda v, path: "" if v is None else v)]
    more: Annotated[str, Custom(lambda v: v, lambda v, path: "" if v is None else v)] = "m"


def test_null_is_refused_before_a_custom_decoder_sees_it() -> None:
    assert from_wire(_Lenient, {"text": "t"}) == _Lenient("t")
    assert_decoded_alike(_Lenient, [{"text": None}, {"text": "t", "more": None}, {"more": "x"}])
    with pytest.raises(InvalidInput, match="must not be null"):
        from_wire(_Lenient, {"text": None})


@dataclasses.dataclass(frozen=True, slots=True)
class _Unplannable:
    value: int | str  # an untagged union without a Custom codec: no codec at all


@dataclasses.dataclass(frozen=True, slots=True)
class _Holder:
    inner: _Unplannable | None = wfield(default=None, omit="none")
    other: _Unplannable | None = None


def test_a_field_of_a_class_without_codec_fails_only_when_it_has_a_value() -> None:
    generated = to_wire(_Holder())
    with generic_codec():
        assert shape(to_wire(_Holder())) == shape(generated) == shape({"other": None})
    assert_decoded_alike(_Holder, [{}, {"other": None}, {"inner": {"value": 1}}, {"other": []}])
    assert from_wire(_Holder, {}) == _Holder()
    with pytest.raises(TypeError, match="untagged union"):
        from_wire(_Holder, {"inner": {"value": 1}})


@dataclasses.dataclass(frozen=True, slots=True)
class _Checked:
    """``__post_init__`` normalises and refuses; an init=False field and a skipped one have defaults."""

    name: str
    count: int = 0
    derived: str = dataclasses.field(default="d", init=False)
    local: int = dataclasses.field(default=7, compare=False, metadata={"skip": True})

    def __post_init__(self) -> None:
        if self.count > 100:
            raise ValueError("count too large")
        object.__setattr__(self, "name", self.name.strip())


@dataclasses.dataclass(frozen=True, slots=True, init=False)
class _OwnInit:
    """A class with its own ``__init__``: decoding must call it."""

    name: str

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "name", name.upper())


@dataclasses.dataclass(slots=True)
class _Mutable:
    name: str
    tags: tuple[str, ...] = ()


@pytest.mark.parametrize(
    ("cls", "doc", "expected"),
    [
        (_Checked, {"name": " a "}, "_Checked(name='a', count=0, derived='d', local=7)"),
        (_OwnInit, {"name": "a"}, "_OwnInit(name='A')"),
        (_Mutable, {"name": "a", "tags": ["x"]}, "_Mutable(name='a', tags=('x',))"),
    ],
)
def test_values_are_built_as_their_class_builds_them(cls: type, doc: Any, expected: str) -> None:
    assert repr(from_wire(cls, doc)) == expected
    assert_decoded_alike(cls, [doc, *mutations(doc)])


def test_a_refusing_post_init_gives_the_same_invalid_input() -> None:
    generated, reference = both(partial(from_wire, _Checked, {"name": "a", "count": 101}))
    assert generated == reference == ("invalid", "count too large", "")


def test_a_variant_registered_after_its_union_was_compiled_is_decoded() -> None:
    assert from_wire(_Shape, {"shape": "square", "side": 2}) == _Square(2)

    @tagged
    @dataclasses.dataclass(frozen=True, slots=True)
    class _Circle(_Shape):
        __tag__: ClassVar[str] = "circle"
        radius: float = 1.0

    try:
        assert from_wire(_Shape, {"shape": "circle", "radius": 2}) == _Circle(2.0)
        generated, reference = both(lambda: from_wire(_Shape, {"shape": "square", "side": -1}))
        assert generated == reference == ("invalid", "must be >= 0, got -1", "side")
    finally:
        del codec._VARIANTS[_Shape]["circle"]


# ---------------------------------------------------------------- timestamps


@settings(max_examples=200, deadline=None)
@given(s.timestamps)
def test_formatted_timestamps_read_back_equal(value: datetime) -> None:
    text = format_timestamp(value)
    parsed = parse_timestamp_text(text)
    assert parsed == value
    assert parsed.tzinfo is UTC
    assert format_timestamp(parsed) == text


@settings(max_examples=200, deadline=None)
@given(s.uuids)
def test_uuid_text_is_str(value: uuid.UUID) -> None:
    assert uuid_text(value) == str(value)
    assert uuid_text(value) == str(value)  # cached

    class Tagged(uuid.UUID):
        def __str__(self) -> str:
            return "tagged"

    assert uuid_text(Tagged(int=value.int)) == "tagged"
