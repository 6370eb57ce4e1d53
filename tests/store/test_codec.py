"""EventCodec: registration rules, the stored envelope, upcasting."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from meerkat_runtime.errors import StoreError
from meerkat_runtime.store import EventCodec


def add(key: str, value: Any) -> Any:
    return lambda d: {**d, key: value}


def test_register_checks_the_upcaster_chain() -> None:
    codec = EventCodec()
    codec.register("a")
    codec.register("b", version=3, upcasters={1: add("x", 1), 2: add("y", 2)})
    assert codec.topics() == frozenset({"a", "b"})
    assert codec.schema_version("b") == 3

    with pytest.raises(ValueError, match=r"lacks upcasters for 2->3"):
        codec.register("c", version=3, upcasters={1: add("x", 1)})
    with pytest.raises(ValueError, match=r"lacks upcasters for 1->2, 2->3"):
        codec.register("c", version=3)
    with pytest.raises(ValueError, match="unknown versions"):
        codec.register("c", version=2, upcasters={1: add("x", 1), 2: add("y", 2)})
    with pytest.raises(ValueError, match="not callable"):
        codec.register("c", version=2, upcasters={1: "nope"})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="already registered"):
        codec.register("a")
    with pytest.raises(ValueError, match=">= 1"):
        codec.register("c", version=0)
    with pytest.raises(ValueError, match="non-empty"):
        codec.register("")
    assert "c" not in codec.topics()


def test_envelope_carries_schema_version_and_writer() -> None:
    codec = EventCodec()
    codec.register("t", version=2, upcasters={1: add("new", True)})
    raw = codec.encode("t", {"k": "v"}, "w-1")
    assert orjson.loads(raw) == {"s": 2, "w": "w-1", "d": {"k": "v"}}
    assert codec.decode("t", raw) == ({"k": "v"}, "w-1")


def test_upcasters_run_in_order_from_the_stored_version() -> None:
    old = EventCodec()
    old.register("t")
    raw_v1 = old.encode("t", {"trail": []}, "w")

    new = EventCodec()
    new.register(
        "t",
        version=3,
        upcasters={
            1: lambda d: {"trail": [*d["trail"], 1]},
            2: lambda d: {"trail": [*d["trail"], 2]},
        },
    )
    assert new.decode("t", raw_v1) == ({"trail": [1, 2]}, "w")
    raw_v3 = new.encode("t", {"trail": ["current"]}, "w")
    assert new.decode("t", raw_v3) == ({"trail": ["current"]}, "w")

    with pytest.raises(StoreError, match=r"schema version 3, but this codec registers version 1"):
        old.decode("t", raw_v3)


def test_an_upcaster_must_return_a_dict() -> None:
    old = EventCodec()
    old.register("t")
    new = EventCodec()
    new.register("t", version=2, upcasters={1: lambda d: None})  # type: ignore[dict-item,return-value]
    with pytest.raises(StoreError, match="returned NoneType"):
        new.decode("t", old.encode("t", {}, "w"))


def test_refuses_unregistered_topics_and_non_json_payloads() -> None:
    codec = EventCodec()
    codec.register("t")

    @dataclass
    class Point:
        x: int

    with pytest.raises(StoreError, match="not registered"):
        codec.encode("u", {}, "w")
    with pytest.raises(StoreError, match="not registered"):
        codec.decode("u", codec.encode("t", {}, "w"))
    with pytest.raises(StoreError, match="not JSON-native"):
        codec.encode("t", {"p": Point(1)}, "w")
    with pytest.raises(StoreError, match="not JSON-native"):
        codec.encode("t", {1: "int key"}, "w")  # type: ignore[dict-item]
    with pytest.raises(StoreError, match="not JSON-native"):
        codec.encode("t", {"s": {1, 2}}, "w")
    # orjson writes UUIDs as strings; reading gives the string back.
    u = uuid.uuid4()
    assert codec.decode("t", codec.encode("t", {"id": u}, "w"))[0] == {"id": str(u)}


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b'{"s": 1, "w": "x"}',
        b'{"s": "1", "w": "x", "d": {}}',
        b'{"s": 1, "d": {}}',
    ],
)
def test_malformed_envelopes_are_store_errors(raw: bytes) -> None:
    codec = EventCodec()
    codec.register("t")
    with pytest.raises(StoreError):
        codec.decode("t", raw)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)


@given(st.dictionaries(st.text(), json_values, max_size=6), st.text(min_size=1))
def test_json_native_payloads_round_trip(data: dict[str, Any], writer: str) -> None:
    codec = EventCodec()
    codec.register("t")
    assert codec.decode("t", codec.encode("t", data, writer)) == (data, writer)
