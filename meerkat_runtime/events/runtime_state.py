"""The runtime state machine (docs: concepts/runtime-and-runs.md).

:data:`TRANSITIONS` is the whole table; :func:`check_transition` is the only
gate and raises :class:`RuntimeStateTransitionError` for anything else.
"""

from __future__ import annotations

from enum import StrEnum

from meerkat_runtime.errors import RuntimeStateTransitionError

__all__ = ["TRANSITIONS", "RuntimeState", "check_transition"]


class RuntimeState(StrEnum):
    """The seven coarse states of a session runtime."""

    INITIALIZING = "initializing"
    IDLE = "idle"
    ATTACHED = "attached"
    RUNNING = "running"
    RETIRED = "retired"
    STOPPED = "stopped"
    DESTROYED = "destroyed"

    @property
    def is_terminal(self) -> bool:
        return self is RuntimeState.DESTROYED

    @property
    def accepts_input(self) -> bool:
        return self in _ACCEPTS

    @property
    def may_prepare_run(self) -> bool:
        """Idle and attached may prepare a run; a retired runtime drains through its own move."""
        return self in (RuntimeState.IDLE, RuntimeState.ATTACHED)

    def may_process_queue(self, run_bound: bool = False) -> bool:
        """Idle, attached and retired process the queue; running only with a bound run id."""
        return self in _PROCESSES or (self is RuntimeState.RUNNING and run_bound)


S = RuntimeState
_ACCEPTS = frozenset({S.IDLE, S.ATTACHED, S.RUNNING})
_PROCESSES = frozenset({S.IDLE, S.ATTACHED, S.RETIRED})

#: Every legal (from, to) move; ``(x, x)`` pairs are the idempotent ones the table allows.
TRANSITIONS: frozenset[tuple[RuntimeState, RuntimeState]] = frozenset(
    {
        (S.INITIALIZING, S.IDLE),
        (S.INITIALIZING, S.DESTROYED),
        (S.INITIALIZING, S.STOPPED),  # design choice: a stop while initializing ends in stopped
        (S.IDLE, S.IDLE),
        (S.IDLE, S.ATTACHED),
        (S.IDLE, S.RUNNING),
        (S.IDLE, S.RETIRED),
        (S.IDLE, S.STOPPED),
        (S.IDLE, S.DESTROYED),
        (S.ATTACHED, S.IDLE),
        (S.ATTACHED, S.ATTACHED),
        (S.ATTACHED, S.RUNNING),
        (S.ATTACHED, S.RETIRED),
        (S.ATTACHED, S.STOPPED),
        (S.ATTACHED, S.DESTROYED),
        (S.RUNNING, S.IDLE),
        (S.RUNNING, S.ATTACHED),
        (S.RUNNING, S.RETIRED),
        (S.RUNNING, S.STOPPED),
        (S.RUNNING, S.DESTROYED),
        (S.RETIRED, S.IDLE),
        (S.RETIRED, S.RUNNING),
        (S.RETIRED, S.RETIRED),
        (S.RETIRED, S.DESTROYED),
        (S.STOPPED, S.IDLE),
        (S.STOPPED, S.ATTACHED),
        (S.STOPPED, S.RETIRED),
        (S.STOPPED, S.DESTROYED),
    }
)


def check_transition(from_state: RuntimeState, to_state: RuntimeState) -> RuntimeState:
    """Return ``to_state`` if the move is legal, else raise :class:`RuntimeStateTransitionError`."""
    if (from_state, to_state) not in TRANSITIONS:
        raise RuntimeStateTransitionError(from_state.value, to_state.value)
    return to_state
