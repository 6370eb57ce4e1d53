"""User interrupt: what an interrupt saw, and the public result it resolves to.

For users: docs/concepts/runtime-and-runs.md (Interrupting a run).

The Rust crate's ``user_interrupt.rs`` hard-cancels a session's current run
and ``interrupt_public_result.rs`` classifies what the interrupt observed into
the result an app shows. Here the cancel is the run control's
(``session.cancel_run``): the run's staged inputs are abandoned as
``cancelled`` and the executor's cancel token is signalled. The classifier is
the Rust machine's ``ResolveUserInterruptPublicResult`` table, ported as a
pure function.

This port has no staged (not yet promoted) sessions and no promotion step, so
an interrupt never observes ``staged_noop`` and is never ``session_busy``; both
stay in the enums and the table for fidelity.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum

from meerkat_runtime.events.runtime_state import RuntimeState

__all__ = [
    "UserInterruptObservation",
    "UserInterruptOutcome",
    "UserInterruptPublicResult",
    "observe_user_interrupt",
    "resolve_user_interrupt_public_result",
]


class UserInterruptObservation(StrEnum):
    """What an interrupt found (the Rust machine's ``UserInterruptObservationKind``)."""

    ACCEPTED = "accepted"  # a run was in flight and is cancelled
    STAGED_NOOP = "staged_noop"
    IDLE_NOOP = "idle_noop"  # no run, session idle: nothing to cancel
    ATTACHED_NOOP = "attached_noop"  # no run, executor bound: nothing to cancel
    DESTROYED = "destroyed"
    NOT_INTERRUPTIBLE = "not_interruptible"  # retired or stopped, no run


class UserInterruptPublicResult(StrEnum):
    """What an app shows for an interrupt (the Rust ``UserInterruptPublicResult``)."""

    INTERRUPTED = "interrupted"
    STAGED_NOOP = "staged_noop"
    NOT_FOUND = "not_found"
    SESSION_BUSY = "session_busy"
    CONFLICT = "conflict"


def resolve_user_interrupt_public_result(
    observation: UserInterruptObservation,
    target_present: bool,
    staged_promotion_busy: bool = False,
) -> UserInterruptPublicResult:
    """The public result of an interrupt (the Rust ``resolve_user_interrupt_public_result``).

    A cancelled run is ``interrupted``; so is an interrupt with nothing to cancel
    on an idle or attached session (a no-op success), and one on a destroyed
    session that still has its record. A destroyed or unknown session without a
    record is ``not_found``, a retired or stopped one ``conflict``. While a
    staged session is being promoted, anything but a cancel is ``session_busy``.
    """
    o = UserInterruptObservation
    r = UserInterruptPublicResult
    if observation is o.ACCEPTED:
        return r.INTERRUPTED
    if staged_promotion_busy:
        return r.SESSION_BUSY
    if observation in (o.IDLE_NOOP, o.ATTACHED_NOOP):
        return r.INTERRUPTED
    if observation is o.STAGED_NOOP:
        return r.STAGED_NOOP
    if observation is o.DESTROYED:
        return r.INTERRUPTED if target_present else r.NOT_FOUND
    return r.CONFLICT


def observe_user_interrupt(observed: RuntimeState, run_in_flight: bool) -> UserInterruptObservation:
    """The observation of an interrupt on a session in state ``observed`` (as a host sees it)."""
    o = UserInterruptObservation
    if run_in_flight:
        return o.ACCEPTED
    if observed is RuntimeState.DESTROYED:
        return o.DESTROYED
    if observed is RuntimeState.IDLE:
        return o.IDLE_NOOP
    if observed is RuntimeState.ATTACHED:
        return o.ATTACHED_NOOP
    return o.NOT_INTERRUPTIBLE


@dataclass(frozen=True, slots=True)
class UserInterruptOutcome:
    """What ``session.interrupt()`` did: the public ``result``, what it ``observed``, and
    the run it cancelled (None when there was none)."""

    result: UserInterruptPublicResult
    observation: UserInterruptObservation
    run_id: uuid.UUID | None = None

    @property
    def interrupted(self) -> bool:
        """True when a run was cancelled (not a no-op)."""
        return self.observation is UserInterruptObservation.ACCEPTED
