"""Ingress metadata types (Rust ``ingress_types.rs``): ``ContentShape``, ``RequestId``,
``ReservationKey``. The ``ContentShape`` cases are the Rust module's tests."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest

import meerkat_runtime
from meerkat_runtime import (
    ContentShape,
    InputKind,
    InputLifecycleState,
    InputState,
    KindId,
    PromptInput,
    RequestId,
    ReservationKey,
    wire,
)
from meerkat_runtime.events import ingress

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

SHAPES = [
    (InputKind.PROMPT, "prompt"),
    (InputKind.PEER_MESSAGE, "peer_message"),
    (InputKind.PEER_REQUEST, "peer_request"),
    (InputKind.PEER_RESPONSE_PROGRESS, "peer_response_progress"),
    (InputKind.PEER_RESPONSE_TERMINAL, "peer_response_terminal"),
    (InputKind.FLOW_STEP, "flow_step"),
    (InputKind.EXTERNAL_EVENT, "external_event"),
    (InputKind.CONTINUATION, "continuation"),
    (InputKind.OPERATION, "operation"),
]


def test_the_content_shape_is_closed_to_the_input_kinds() -> None:
    assert [k for k, _ in SHAPES] == list(InputKind)
    for kind, label in SHAPES:
        shape = ContentShape.from_kind(kind)
        assert shape.kind is kind
        assert shape.as_str() == label and str(shape) == label
        assert ContentShape.from_kind_id(KindId(kind)) == shape == ContentShape(kind)
        assert hash(shape) == hash(ContentShape(kind))
    assert len({ContentShape(k) for k, _ in SHAPES}) == 9


@pytest.mark.parametrize("text", ["prompt", "anything", ""])
def test_the_content_shape_is_not_an_arbitrary_string(text: Any) -> None:
    """Rust keeps ``ContentShape`` from being a public string newtype; so does the port."""
    assert not issubclass(ContentShape, str)
    with pytest.raises(TypeError, match="InputKind"):
        ContentShape(text)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ContentShape(InputKind.PROMPT).kind = InputKind.OPERATION  # type: ignore[misc]


def test_an_input_state_gives_its_content_shape_without_reading_the_payload() -> None:
    st = InputState(
        input_id=PromptInput(content="x").input_header.id,
        current_state=InputLifecycleState.ACCEPTED,
        created_at=NOW,
        updated_at=NOW,
        persisted_input=PromptInput(content="x"),
    )
    assert st.content_shape == ContentShape(InputKind.PROMPT)
    assert dataclasses.replace(st, persisted_input=None).content_shape is None


def test_request_ids_and_reservation_keys_are_plain_strings() -> None:
    rid = RequestId("r-7")
    key = ReservationKey("reservation-1")
    assert type(rid) is str and rid == "r-7"
    assert type(key) is str and key == "reservation-1"
    assert wire.encode(rid, as_type=RequestId) == b'"r-7"'
    assert wire.decode(ReservationKey, b'"reservation-1"') == key


def test_they_are_exported() -> None:
    for name in ingress.__all__:
        assert getattr(meerkat_runtime, name) is getattr(ingress, name)
        assert name in meerkat_runtime.events.__all__
