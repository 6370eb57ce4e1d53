"""The accept path's hand-built values equal what the ordinary constructors build.

``uuid7`` fills a ``uuid.UUID``'s slots directly, ``accepted_input_state``
copies a template instead of running ``InputState.__init__`` and
``InputState.transition`` copies slots with generated code and fills its
history entry's slots: each must give a value indistinguishable from the plain
construction (equality, hash, wire form, pickling).
"""

from __future__ import annotations

import pickle
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from meerkat_runtime.events import wire
from meerkat_runtime.events.completion import CompletionOutcome
from meerkat_runtime.events.ids import uuid7
from meerkat_runtime.events.input_state import (
    INPUT_TRANSITIONS,
    InputLifecycleState,
    InputState,
    InputStateHistoryEntry,
    accepted_input_state,
    with_completion,
)
from meerkat_runtime.events.inputs import Input
from meerkat_runtime.events.policy import PolicySnapshot, RuntimeSemantics
from meerkat_runtime.events.runtime_event import RuntimeEvent, RuntimeEventEnvelope, new_envelope
from meerkat_runtime.events.timefmt import format_timestamp

from .strategies import (
    completion_outcomes,
    input_states,
    inputs,
    optional,
    policy_snapshots,
    runtime_events,
    runtime_semantics,
)
from .strategies import timestamps as timestamp_values


def test_uuid7_is_a_plain_uuid() -> None:
    for _ in range(100):
        u = uuid7()
        plain = uuid.UUID(int=u.int)
        assert type(u) is uuid.UUID
        assert u == plain and hash(u) == hash(plain) and str(u) == str(plain)
        assert u.version == 7 and u.variant == uuid.RFC_4122
        assert u.is_safe is plain.is_safe
        assert pickle.loads(pickle.dumps(u)) == u


@given(
    input_id=st.uuids(),
    at=timestamp_values,
    policy=optional(policy_snapshots),
    semantics=optional(runtime_semantics),
    inp=optional(inputs),
)
def test_accepted_input_state_equals_the_constructor(
    input_id: uuid.UUID,
    at: datetime,
    policy: PolicySnapshot | None,
    semantics: RuntimeSemantics | None,
    inp: Input | None,
) -> None:
    header = inp.input_header if inp is not None else None
    expected = InputState(
        input_id=input_id,
        current_state=InputLifecycleState.ACCEPTED,
        created_at=at,
        updated_at=at,
        policy=policy,
        runtime_semantics=semantics,
        durability=header.durability if header else None,
        idempotency_key=header.idempotency_key if header else None,
        persisted_input=inp,
    )
    got = accepted_input_state(input_id, at, policy, semantics, inp)
    assert got == expected
    assert wire.encode(got) == wire.encode(expected)


@given(
    state=input_states,
    move=st.sampled_from(sorted(INPUT_TRANSITIONS)),
    at=timestamp_values,
)
def test_transition_copies_every_field(
    state: InputState, move: tuple[InputLifecycleState, InputLifecycleState], at: datetime
) -> None:
    state = replace(state, current_state=move[0])
    moved = state.transition(move[1], at, "why", attempt_count=3)
    assert moved.current_state is move[1]
    for name in InputState.__dataclass_fields__:
        if name not in ("current_state", "history", "updated_at", "attempt_count"):
            assert getattr(moved, name) == getattr(state, name), name
    assert moved.updated_at == at and moved.attempt_count == 3
    assert moved.history[:-1] == state.history
    entry = moved.history[-1]
    expected = InputStateHistoryEntry(timestamp=at, from_state=move[0], to=move[1], reason="why")
    assert type(entry) is InputStateHistoryEntry
    assert entry == expected and hash(entry) == hash(expected)
    assert wire.encode(entry) == wire.encode(expected)
    assert pickle.loads(pickle.dumps(entry)) == expected


@given(state=input_states, completion=optional(completion_outcomes))
def test_with_completion_equals_replace(
    state: InputState, completion: CompletionOutcome | None
) -> None:
    got = with_completion(state, completion)
    assert got == replace(state, terminal_completion=completion)
    assert got.terminal_completion is completion and got is not state
    assert pickle.loads(pickle.dumps(got)) == got


@given(
    event_id=st.uuids(),
    at=timestamp_values,
    runtime_id=st.text(max_size=8),
    event=runtime_events,
    sequence=st.integers(min_value=0, max_value=2**40),
)
def test_new_envelope_equals_the_constructor(
    event_id: uuid.UUID, at: datetime, runtime_id: str, event: RuntimeEvent, sequence: int
) -> None:
    expected = RuntimeEventEnvelope(
        id=event_id, timestamp=at, runtime_id=runtime_id, event=event, sequence=sequence
    )
    got = new_envelope(event_id, at, runtime_id, event, sequence)
    assert type(got) is RuntimeEventEnvelope
    for name in RuntimeEventEnvelope.__dataclass_fields__:  # sequence too (not compared)
        assert getattr(got, name) == getattr(expected, name)
    assert got == expected and repr(got) == repr(expected)
    assert wire.encode(got) == wire.encode(expected)
    assert pickle.loads(pickle.dumps(got)) == expected


def _timestamp_by_fields(value: datetime) -> str:
    """The wire timestamp written field by field (the rule of reference/wire-format.md)."""
    utc = value.astimezone(UTC)
    base = (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T"
        f"{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}"
    )
    if utc.microsecond == 0:
        return base + "Z"
    if utc.microsecond % 1000 == 0:
        return f"{base}.{utc.microsecond // 1000:03d}Z"
    return f"{base}.{utc.microsecond:06d}Z"


@given(
    st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from(
            [
                UTC,
                timezone(timedelta(0)),
                timezone(timedelta(hours=5, minutes=30)),
                timezone(timedelta(hours=-11)),
            ]
        ),
    ),
    st.sampled_from([None, 0, 1000]),
)
def test_format_timestamp_equals_the_field_by_field_form(value: datetime, step: int | None) -> None:
    # ``format_timestamp`` cuts ``isoformat``'s text; whole seconds and whole
    # milliseconds (the shorter forms) are drawn often, as are years below 1000.
    if step is not None:
        value = value.replace(microsecond=value.microsecond // step * step if step else 0)
    assert format_timestamp.__wrapped__(value) == _timestamp_by_fields(value)
