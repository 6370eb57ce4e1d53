"""Helpers of the scenario and table tests: short names for the spec's enums, reads of a
driver's state, and drivers brought into a given state.
"""

from __future__ import annotations

from typing import Any

import pytest

from meerkat_runtime.errors import (
    RuntimeStateTransitionError,
)
from meerkat_runtime.events import (
    AbandonedOutcome,
    AbandonKind,
    Accept,
    Destroy,
    Input,
    InputAbandonReason,
    InputLifecycleState,
    Retire,
    RuntimeState,
    RuntimeStateChangeEvent,
    Stop,
)
from meerkat_runtime.events.runtime_event import InputQueued, RuntimeEvent, RuntimeEventEnvelope

from ._support import Driver, prompt

L = InputLifecycleState
S = RuntimeState
AK = AbandonKind


def abandoned_with(kind: AbandonKind) -> AbandonedOutcome:
    return AbandonedOutcome(reason=InputAbandonReason(kind))


def phase(d: Driver) -> RuntimeState:
    """``d.state.phase``, read through a call: mypy would keep an earlier
    ``assert d.state.phase is X`` narrowing across the commands that move the phase."""
    return d.state.phase


def wake_pending(d: Driver) -> bool:
    """``d.state.wake_pending``, read through a call (see ``phase``)."""
    return d.state.wake_pending


def state_change(event: RuntimeEvent) -> RuntimeStateChangeEvent:
    """The event, which must be a ``runtime.state_changed`` one."""
    assert isinstance(event, RuntimeStateChangeEvent), event
    return event


def assert_refused(
    d: Driver, command: Any, frm: str, to: str, *, attached: bool | None = None
) -> None:
    """The command raises the runtime-state error, emits nothing and changes nothing."""
    before = d.snapshot()
    log_len = len(d.log)
    with pytest.raises(RuntimeStateTransitionError) as info:
        d.run(command, attached=attached)
    assert str(info.value) == f"Invalid runtime state transition: {frm} -> {to}"
    assert (info.value.from_state, info.value.to_state) == (frm, to)
    assert d.snapshot() == before
    assert len(d.log) == log_len


def accepted_only_log(inp: Input) -> tuple[Driver, list[RuntimeEventEnvelope]]:
    """A log where ``inp`` was accepted but never queued (a row persisted in ``accepted``)."""
    d = Driver()
    d.run(Accept(inp))
    log = [env for env in d.log if not isinstance(env.event, InputQueued)]
    return d, log


def driver_in(state: str) -> Driver:
    """A session in ``state`` holding some inputs (the state it is observed in)."""
    d = Driver(attached=state == "attached")
    if state == "initializing":
        d.state.phase = S.INITIALIZING
        return d
    d.accept(prompt("q1"))
    d.accept(prompt("q2"))
    if state == "running":
        d.start()  # q1 staged, q2 queued
    elif state == "retired":
        d.run(Retire(loop_attached=True))
    elif state == "stopped":
        d.run(Stop())
    elif state == "destroyed":
        d.run(Destroy())
    assert d.state.observed_state(d.attached).value == state
    return d
