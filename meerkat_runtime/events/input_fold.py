"""The per-input fold: how one input-lifecycle event changes one ``InputState``.

Shared by the session fold (``session.evolve``, which adds the session-level
effects: queues, runs, idempotency index) and by the input ledger projection,
so the ledger and a fresh fold of the log agree by construction and ``verify``
checks what can still differ: missed, doubled or reordered events.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from meerkat_runtime.events.completion import (
    Abandoned,
    CompletedWithoutResult,
    CompletionOutcome,
    RuntimeTerminated,
    TurnErrorMetadata,
    TurnTerminalCauseKind,
    TurnTerminalOutcome,
)
from meerkat_runtime.events.input_state import (
    AbandonedOutcome,
    AbandonKind,
    CoalescedOutcome,
    ConsumedOutcome,
    InputAbandonReason,
    InputLifecycleState,
    InputState,
    SupersededOutcome,
    accepted_input_state,
)
from meerkat_runtime.events.policy import ConsumePoint
from meerkat_runtime.events.run_primitive import HandlingMode
from meerkat_runtime.events.runtime_event import (
    InputAbandoned,
    InputAccepted,
    InputApplied,
    InputCoalesced,
    InputConsumed,
    InputDeduplicated,
    InputLifecycleEvent,
    InputQueued,
    InputStaged,
    InputStateTransitioned,
    InputSuperseded,
)

__all__ = [
    "REASON_RECEIPT_FOUND",
    "REASON_RECEIPT_MISSING",
    "REASON_RECOVERY",
    "abandon_completion",
    "coalesced_completion",
    "evolve_input",
    "needs_admission_sequence",
    "superseded_completion",
]

L = InputLifecycleState
REASON_RECOVERY = "Recovery"
REASON_RECEIPT_FOUND = "RecoveryReceiptFound"
REASON_RECEIPT_MISSING = "RecoveryReceiptMissing"
_TERMINATING = frozenset(
    {AbandonKind.STOPPED, AbandonKind.RESET, AbandonKind.DESTROYED, AbandonKind.RETIRED}
)


def needs_admission_sequence(prev: InputState | None, event: InputLifecycleEvent) -> bool:
    """True when ``event`` gives the input a new admission sequence number."""
    if isinstance(event, InputQueued):
        return True
    return (
        isinstance(event, InputStateTransitioned)
        and event.to is L.QUEUED
        and prev is not None
        and prev.admission_sequence is None
    )


def _accepted(
    prev: InputState | None, ev: InputAccepted, at: datetime, seq: int | None
) -> InputState:
    st = accepted_input_state(ev.input_id, at, ev.policy, ev.runtime_semantics, ev.input)
    if ev.policy is not None and ev.policy.decision.consume_point is ConsumePoint.ON_ACCEPT:
        st = st.transition(
            L.CONSUMED,
            at,
            "ConsumeOnAccept (Ignore+OnAccept)",
            terminal_outcome=ConsumedOutcome(),
            terminal_completion=CompletedWithoutResult(),
        )
    return st


def _queued(prev: InputState, ev: InputQueued, at: datetime, seq: int | None) -> InputState:
    return prev.transition(
        L.QUEUED,
        at,
        "QueueAccepted",
        admission_sequence=seq,
        attempt_count=0,
        recovery_lane=ev.lane or HandlingMode.QUEUE,
    )


def _staged(prev: InputState, ev: InputStaged, at: datetime, seq: int | None) -> InputState:
    return prev.transition(
        L.STAGED,
        at,
        f"StageForRun({ev.run_id})",
        last_run_id=ev.run_id,
        attempt_count=prev.attempt_count + 1,
    )


def _applied(prev: InputState, ev: InputApplied, at: datetime, seq: int | None) -> InputState:
    boundary = ev.boundary_sequence or 0
    st = prev.transition(L.APPLIED, at, f"MarkApplied({ev.run_id})")
    return st.transition(
        L.APPLIED_PENDING_CONSUMPTION,
        at,
        f"MarkAppliedPendingConsumption(boundary_sequence={boundary})",
        last_boundary_sequence=boundary,
    )


def _consumed(prev: InputState, ev: InputConsumed, at: datetime, seq: int | None) -> InputState:
    return prev.transition(L.CONSUMED, at, "RunCompleted", terminal_outcome=ConsumedOutcome())


def abandon_completion(reason: InputAbandonReason) -> CompletionOutcome:
    """What a waiter on an input abandoned for ``reason`` receives.

    Stop, reset, destroy and retire end the runtime under the input: a
    ``runtime_terminated`` outcome whose error is a terminal ``fatal_failure``
    (as Rust builds it). Exhausted attempts are a terminal ``retry_exhausted``;
    a cancelled input an ``unknown`` cause with outcome ``cancelled``.
    """
    if reason.kind in _TERMINATING:
        detail = f"runtime {reason.kind.value}"
        return RuntimeTerminated(
            reason=reason.kind.value,
            error=TurnErrorMetadata(
                kind=TurnTerminalCauseKind.FATAL_FAILURE,
                terminal=True,
                outcome=TurnTerminalOutcome.FAILED,
                detail=detail,
            ),
        )
    if reason.kind is AbandonKind.MAX_ATTEMPTS_EXHAUSTED:
        kind, outcome = TurnTerminalCauseKind.RETRY_EXHAUSTED, TurnTerminalOutcome.FAILED
    else:
        kind, outcome = TurnTerminalCauseKind.UNKNOWN, TurnTerminalOutcome.CANCELLED
    text = str(reason)
    error = TurnErrorMetadata(kind=kind, terminal=True, outcome=outcome, detail=text)
    return Abandoned(reason=text, error=error)


def _replaced(msg: str) -> CompletionOutcome:
    error = TurnErrorMetadata(kind=TurnTerminalCauseKind.UNKNOWN, terminal=True, detail=msg)
    return Abandoned(reason=msg, error=error)


def superseded_completion(superseded_by: uuid.UUID) -> CompletionOutcome:
    """What a waiter on an input superseded by a newer one receives."""
    return _replaced(f"superseded by {superseded_by}")


def coalesced_completion(aggregate_id: uuid.UUID) -> CompletionOutcome:
    """What a waiter on an input coalesced into a newer one receives."""
    return _replaced(f"coalesced into {aggregate_id}")


def _abandoned(prev: InputState, ev: InputAbandoned, at: datetime, seq: int | None) -> InputState:
    reason = ev.reason
    return prev.transition(
        L.ABANDONED,
        at,
        f"Abandon({reason})",
        terminal_outcome=AbandonedOutcome(reason=reason),
        terminal_completion=abandon_completion(reason),
    )


def _superseded(prev: InputState, ev: InputSuperseded, at: datetime, seq: int | None) -> InputState:
    return prev.transition(
        L.SUPERSEDED,
        at,
        f"Supersede({ev.superseded_by})",
        terminal_outcome=SupersededOutcome(superseded_by=ev.superseded_by),
        terminal_completion=superseded_completion(ev.superseded_by),
    )


def _coalesced(prev: InputState, ev: InputCoalesced, at: datetime, seq: int | None) -> InputState:
    return prev.transition(
        L.COALESCED,
        at,
        f"Coalesce({ev.aggregate_id})",
        terminal_outcome=CoalescedOutcome(aggregate_id=ev.aggregate_id),
        terminal_completion=coalesced_completion(ev.aggregate_id),
    )


def _transitioned(
    prev: InputState, ev: InputStateTransitioned, at: datetime, seq: int | None
) -> InputState:
    to = ev.to
    changes: dict[str, Any] = {}
    if to is L.QUEUED:
        changes["last_run_id"] = None
        if prev.admission_sequence is None:
            changes["admission_sequence"] = seq
            changes["recovery_lane"] = prev.recovery_lane or HandlingMode.QUEUE
    elif to is L.CONSUMED:
        changes["terminal_outcome"] = ConsumedOutcome()
        changes["terminal_completion"] = CompletedWithoutResult()
    elif to is L.APPLIED_PENDING_CONSUMPTION:
        changes["last_boundary_sequence"] = 0
    recovery = ev.reason in (REASON_RECOVERY, REASON_RECEIPT_FOUND, REASON_RECEIPT_MISSING)
    return prev.transition(to, at, ev.reason, recovery=recovery, **changes)


_HANDLERS: dict[type, Callable[[Any, Any, datetime, int | None], InputState]] = {
    InputAccepted: _accepted,
    InputQueued: _queued,
    InputStaged: _staged,
    InputApplied: _applied,
    InputConsumed: _consumed,
    InputAbandoned: _abandoned,
    InputSuperseded: _superseded,
    InputCoalesced: _coalesced,
    InputStateTransitioned: _transitioned,
}


def evolve_input(
    prev: InputState | None,
    event: InputLifecycleEvent,
    at: datetime,
    admission_sequence: int | None = None,
) -> InputState | None:
    """The input's state after ``event`` (``prev`` unchanged for ``input.deduplicated``).

    Raises :class:`InputTransitionError` for an illegal move, ``KeyError`` for
    an event about an input that was never accepted.
    """
    if isinstance(event, InputDeduplicated):
        return prev
    handler = _HANDLERS[type(event)]
    if prev is None and not isinstance(event, InputAccepted):
        raise KeyError(f"input {event.input_id} was never accepted")
    return handler(prev, event, at, admission_sequence)
