"""Event digests agree with the decoded event for every runtime event."""

from __future__ import annotations

import pytest
from hypothesis import given, settings

from meerkat_runtime.errors import InvalidInput
from meerkat_runtime.events.catalogue import envelope_from_record, envelope_to_record
from meerkat_runtime.events.digest import digest
from meerkat_runtime.events.input_state import InputLifecycleState
from meerkat_runtime.events.policy import ConsumePoint
from meerkat_runtime.events.runtime_event import (
    InputAccepted,
    InputLifecycleEvent,
    InputStateTransitioned,
    RunCheckpointed,
    RunLifecycleEvent,
    RunStarted,
    RuntimeEvent,
    RuntimeEventEnvelope,
    RuntimeStateChangeEvent,
)
from meerkat_runtime.events.wire import to_json_value

from .strategies import envelopes


@settings(max_examples=300)
@given(envelopes)
def test_a_digest_holds_what_the_decoded_event_holds(env: RuntimeEventEnvelope) -> None:
    _, payload = envelope_to_record(env)
    d = digest(payload)
    event = envelope_from_record(payload, 1).event  # what a full decode reads back
    assert d.category == to_json_value(event, as_type=RuntimeEvent)["category"]
    assert d.timestamp == env.timestamp
    if isinstance(event, InputLifecycleEvent):
        assert d.input_id == event.input_id
        if isinstance(event, InputStateTransitioned):
            assert d.input_phase is event.to
        elif isinstance(event, InputAccepted):
            on_accept = event.policy is not None and (
                event.policy.decision.consume_point is ConsumePoint.ON_ACCEPT
            )
            expected = InputLifecycleState.CONSUMED if on_accept else InputLifecycleState.ACCEPTED
            assert d.input_phase is expected
    else:
        assert d.input_id is None and d.input_phase is None
    if isinstance(event, RunLifecycleEvent):
        assert d.run_id == event.run_id
        assert d.ends_run == (not isinstance(event, (RunStarted, RunCheckpointed)))
    else:
        assert d.run_id is None and not d.ends_run
    if isinstance(event, RuntimeStateChangeEvent):
        assert d.runtime_state is event.to
    else:
        assert d.runtime_state is None


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"event": {"category": "input_lifecycle", "data": {"code": "accepted"}}},
        {"timestamp": "x", "event": {"category": "run_lifecycle", "data": {"code": "started"}}},
        {"event": "nope", "timestamp": "2026-01-01T00:00:00Z"},
    ],
)
def test_an_unreadable_payload_is_invalid_input(payload: dict[str, object]) -> None:
    with pytest.raises(InvalidInput, match="not a stored runtime event"):
        digest(payload)
