"""A stored event's headline, read without decoding the whole envelope.

Read models that need only a handful of fields (which input, which run, which
state) should not decode every envelope: a full decode costs several times the
update it feeds. :func:`digest` reads those fields from an envelope's stored
payload (its wire form, see the wire-format reference) into an :class:`EventDigest`. This
module is the one place outside the codec that knows that layout; a payload it
cannot read raises :class:`InvalidInput`, as a decode would.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from meerkat_runtime.errors import InvalidInput
from meerkat_runtime.events.ids import parse_uuid
from meerkat_runtime.events.input_state import InputLifecycleState
from meerkat_runtime.events.policy import ConsumePoint
from meerkat_runtime.events.runtime_state import RuntimeState
from meerkat_runtime.events.timefmt import parse_timestamp

__all__ = ["EventDigest", "digest"]

#: The lifecycle phase each input event code leaves its input in (``None``: unchanged).
_PHASE_AFTER: dict[str, InputLifecycleState | None] = {
    "accepted": InputLifecycleState.ACCEPTED,
    "deduplicated": None,
    "queued": InputLifecycleState.QUEUED,
    "staged": InputLifecycleState.STAGED,
    "applied": InputLifecycleState.APPLIED_PENDING_CONSUMPTION,
    "consumed": InputLifecycleState.CONSUMED,
    "abandoned": InputLifecycleState.ABANDONED,
    "superseded": InputLifecycleState.SUPERSEDED,
    "coalesced": InputLifecycleState.COALESCED,
}

_RUN_ENDS = frozenset({"completed", "failed", "cancelled"})


@dataclass(frozen=True, slots=True)
class EventDigest:
    """The fields of one stored event that read models index by."""

    category: str
    """The event family's tag (``input_lifecycle``, ``run_lifecycle``, ...)."""
    code: str
    """The event's code within its family (``accepted``, ``started``, ...; empty for a
    runtime-state change, which has none)."""
    timestamp: datetime
    input_id: uuid.UUID | None = None
    """The input an input-lifecycle event is about."""
    input_phase: InputLifecycleState | None = None
    """The phase an input-lifecycle event leaves its input in (None: unchanged)."""
    run_id: uuid.UUID | None = None
    """The run a run-lifecycle event is about."""
    ends_run: bool = False
    """A run-lifecycle event that ends its run (a checkpoint does not)."""
    runtime_state: RuntimeState | None = None
    """The state a runtime-state change moves the session to."""


def digest(payload: dict[str, Any]) -> EventDigest:
    """The :class:`EventDigest` of a stored envelope payload; :class:`InvalidInput` if unreadable.

    Legality is not checked here: the session's fold checked each event when it was
    decided, and ``verify`` compares read models with a fresh fold.
    """
    try:
        event = payload["event"]
        category, data = event["category"], event["data"]
        code = str(data.get("code", ""))  # a state change has none
        at = parse_timestamp(payload["timestamp"])
        if category == "input_lifecycle":
            return EventDigest(
                category,
                code,
                at,
                input_id=parse_uuid(data["input_id"]),
                input_phase=_phase_after(code, data),
            )
        if category == "run_lifecycle":
            return EventDigest(
                category, code, at, run_id=parse_uuid(data["run_id"]), ends_run=code in _RUN_ENDS
            )
        if category == "runtime_state_change":
            return EventDigest(category, code, at, runtime_state=RuntimeState(data["to"]))
        return EventDigest(category, code, at)
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInput(f"not a stored runtime event: {exc!r:.80}") from None


def _phase_after(code: str, data: dict[str, Any]) -> InputLifecycleState | None:
    if code == "state_transitioned":
        return InputLifecycleState(data["to"])
    if code == "accepted":
        decision = (data.get("policy") or {}).get("decision") or {}
        if decision.get("consume_point") == ConsumePoint.ON_ACCEPT.value:
            return InputLifecycleState.CONSUMED  # operations: consumed on accept
    return _PHASE_AFTER[code]
