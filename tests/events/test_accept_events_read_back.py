"""The events decided on an accept read back, when the input was decoded from its wire form.

The session actor writes those events without decoding them once more
(``SessionActor._verified``): an input the host API coerced is a decoded value,
and the built-in policy table and the runtime make everything else in them. This
is the property that makes that safe, over random inputs, sessions idle and
running, with and without wake.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meerkat_runtime.errors import InvalidInput
from meerkat_runtime.events.catalogue import check_record, envelope_to_record
from meerkat_runtime.events.inputs import Input
from meerkat_runtime.events.session import Accept
from meerkat_runtime.runtime import coerce_input

from . import strategies as s
from ._support import Driver


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    inputs=st.lists(s.inputs, min_size=1, max_size=6),
    wakes=st.lists(st.booleans(), min_size=6, max_size=6),
    attached=st.booleans(),
    running=st.booleans(),
)
def test_every_event_decided_on_a_coerced_input_reads_back(
    inputs: list[Input], wakes: list[bool], attached: bool, running: bool
) -> None:
    driver = Driver(attached=attached)
    if running:  # a run in flight: steer and interrupt paths
        driver.accept(coerce_input({"input_type": "prompt", "content": "first"}))
        driver.start()
    for inp, wake in zip(inputs, wakes, strict=False):
        try:
            accepted = coerce_input(inp)
        except InvalidInput:
            continue  # refused by the host API: never reaches a session
        try:
            decision = driver.run(Accept(accepted, wake))
        except InvalidInput:
            continue  # refused by the decider (e.g. directed-input rules): nothing written
        for envelope in decision.events:
            check_record(*envelope_to_record(envelope))  # raises if it would not read back
        SEEN["events"] += len(decision.events)


SEEN = {"events": 0}


def test_the_property_checked_events() -> None:
    """Random inputs are not all refused by the host API: the property above ran on
    real accept events (it runs first, in file order)."""
    assert SEEN["events"] > 100


def test_the_property_sees_an_event_that_would_not_read_back() -> None:
    """The check this test relies on is real: an input that was not coerced can give
    an accept event that does not read back, and it raises."""
    from meerkat_runtime.events.inputs import PromptInput

    driver = Driver()
    decision = driver.run(Accept(PromptInput(content=None)))  # type: ignore[arg-type]
    records = [envelope_to_record(e) for e in decision.events]
    try:
        for record in records:
            check_record(*record)
    except InvalidInput as exc:
        assert "content" in str(exc)
    else:
        raise AssertionError("an uncoerced null content was not refused")
