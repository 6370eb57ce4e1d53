"""Upcasters: stored shapes written by earlier versions of this package, read as today's.

The wire codec itself follows the Rust serde shapes strictly (it refuses what
Rust refuses); the legacy shapes below are accepted only where stored data is
read back (events through the store codec's schema versions, ledger rows and
session snapshots), so stores written before a shape changed keep working.

Legacy shapes handled:

* ``runtime_semantics`` with the keys ``handling_mode`` and
  ``peer_terminal_apply_intent`` (now Rust's ``execution_handling_mode`` and
  ``peer_response_terminal_apply_intent``); in ``input.accepted`` events
  (schema 1) and in stored input rows.
* run errors (``run.failed``, schema 1) with this package's own kinds
  (``executor_failed``, ``invalid_output``, ``interrupted``: now
  ``runtime_apply_failure``; ``timeout``: now ``time_budget_exceeded``; any
  other unknown kind: ``unknown``, the old kind kept at the front of
  ``detail``), and errors written as ``{"kind", "message"}`` (the message moves
  to ``detail``).
* terminal completions of stored input rows whose error is the old
  ``{"kind", "message"}`` object: rebuilt from the row's terminal outcome
  exactly as the input fold builds them today, so a ledger row written before
  the change and a fresh fold of the log still agree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from meerkat_runtime.errors import InvalidInput
from meerkat_runtime.events._codec import from_wire, to_wire
from meerkat_runtime.events.completion import CompletionOutcome, TurnTerminalCauseKind
from meerkat_runtime.events.input_fold import (
    abandon_completion,
    coalesced_completion,
    superseded_completion,
)
from meerkat_runtime.events.input_state import (
    AbandonedOutcome,
    CoalescedOutcome,
    InputState,
    InputTerminalOutcome,
    SupersededOutcome,
)

__all__ = [
    "EVENT_UPCASTERS",
    "input_state_from_stored",
    "upcast_input_accepted_v1",
    "upcast_input_state_row",
    "upcast_run_error",
    "upcast_run_failed_v1",
    "upcast_runtime_semantics",
]

_SEMANTICS_RENAMES = (
    ("handling_mode", "execution_handling_mode"),
    ("peer_terminal_apply_intent", "peer_response_terminal_apply_intent"),
)
_SEMANTICS_ORDER = (
    "boundary",
    "execution_kind",
    "execution_handling_mode",
    "peer_response_terminal_apply_intent",
    "live_interrupt_required",
)
_KINDS = frozenset(k.value for k in TurnTerminalCauseKind)
_LEGACY_KINDS = {
    "executor_failed": TurnTerminalCauseKind.RUNTIME_APPLY_FAILURE.value,
    "invalid_output": TurnTerminalCauseKind.RUNTIME_APPLY_FAILURE.value,
    "interrupted": TurnTerminalCauseKind.RUNTIME_APPLY_FAILURE.value,
    "timeout": TurnTerminalCauseKind.TIME_BUDGET_EXCEEDED.value,
}


def upcast_runtime_semantics(value: Any) -> Any:
    """``runtime_semantics`` with the old key names renamed and the optional keys written as
    ``null`` when absent, in today's key order (anything else is returned as is)."""
    if not isinstance(value, dict) or not any(old in value for old, _ in _SEMANTICS_RENAMES):
        return value
    renamed = dict(value)
    for old, new in _SEMANTICS_RENAMES:
        if old in renamed:
            moved = renamed.pop(old)
            renamed.setdefault(new, moved)
    out = {key: renamed.pop(key) for key in _SEMANTICS_ORDER if key in renamed}
    for key in ("execution_handling_mode", "peer_response_terminal_apply_intent"):
        out.setdefault(key, None)
    return {**{k: out[k] for k in _SEMANTICS_ORDER if k in out}, **renamed}


def upcast_run_error(value: Any) -> Any:
    """A run error of an earlier version in today's shape (anything else returned as is)."""
    if not isinstance(value, dict):
        return value
    kind = value.get("kind")
    if "message" not in value and (not isinstance(kind, str) or kind in _KINDS):
        return value
    out = dict(value)
    message = out.pop("message", None)
    if isinstance(message, str) and out.get("detail") is None:
        out["detail"] = message
    if isinstance(kind, str) and kind not in _KINDS:
        new = _LEGACY_KINDS.get(kind)
        if new is None:
            new = TurnTerminalCauseKind.UNKNOWN.value
            detail = out.get("detail")
            out["detail"] = kind if not isinstance(detail, str) else f"{kind}: {detail}"
        out["kind"] = new
    return out


def _event_data(payload: dict[str, Any]) -> dict[str, Any] | None:
    event = payload.get("event")
    data = event.get("data") if isinstance(event, dict) else None
    return data if isinstance(data, dict) else None


def upcast_input_accepted_v1(payload: dict[str, Any]) -> dict[str, Any]:
    """``input.accepted`` schema 1 -> 2: Rust's key names in ``runtime_semantics``."""
    data = _event_data(payload)
    if data is None or "runtime_semantics" not in data:
        return payload
    semantics = upcast_runtime_semantics(data["runtime_semantics"])
    if semantics is data["runtime_semantics"]:
        return payload
    return {
        **payload,
        "event": {**payload["event"], "data": {**data, "runtime_semantics": semantics}},
    }


def upcast_run_failed_v1(payload: dict[str, Any]) -> dict[str, Any]:
    """``run.failed`` schema 1 -> 2: the error's kind is one of Rust's, text in ``detail``."""
    data = _event_data(payload)
    if data is None or "error" not in data:
        return payload
    error = upcast_run_error(data["error"])
    if error is data["error"]:
        return payload
    return {**payload, "event": {**payload["event"], "data": {**data, "error": error}}}


#: Per topic, the upcasters of each old schema version (``{1: v1 -> v2}``).
EVENT_UPCASTERS: dict[str, dict[int, Callable[[dict[str, Any]], dict[str, Any]]]] = {
    "input.accepted": {1: upcast_input_accepted_v1},
    "run.failed": {1: upcast_run_failed_v1},
}


def _completion_for(outcome: InputTerminalOutcome) -> CompletionOutcome | None:
    if isinstance(outcome, AbandonedOutcome):
        return abandon_completion(outcome.reason)
    if isinstance(outcome, SupersededOutcome):
        return superseded_completion(outcome.superseded_by)
    if isinstance(outcome, CoalescedOutcome):
        return coalesced_completion(outcome.aggregate_id)
    return None


def upcast_input_state_row(row: Any) -> Any:
    """A stored input row (ledger row, snapshot entry) of an earlier version in today's shape."""
    if not isinstance(row, dict):
        return row
    out = row
    semantics = row.get("runtime_semantics")
    new_semantics = upcast_runtime_semantics(semantics)
    if new_semantics is not semantics:
        out = {**out, "runtime_semantics": new_semantics}
    completion = row.get("terminal_completion")
    error = completion.get("error") if isinstance(completion, dict) else None
    if isinstance(error, dict) and "message" in error:
        # The fold derived this completion from the terminal outcome: derive it again.
        rebuilt = None
        if "terminal_outcome" in row:
            try:
                outcome = from_wire(InputTerminalOutcome, row["terminal_outcome"])
            except InvalidInput:
                outcome = None
            if outcome is not None:
                rebuilt = _completion_for(outcome)
        assert isinstance(completion, dict)
        if rebuilt is not None:
            out = {**out, "terminal_completion": to_wire(rebuilt)}
        else:
            out = {**out, "terminal_completion": {**completion, "error": upcast_run_error(error)}}
    elif isinstance(error, dict):
        new_error = upcast_run_error(error)
        if new_error is not error:
            assert isinstance(completion, dict)
            out = {**out, "terminal_completion": {**completion, "error": new_error}}
    return out


def input_state_from_stored(row: Any, path: str = "") -> InputState:
    """Decode a stored input row, upcasting an earlier version's shape first."""
    return from_wire(InputState, upcast_input_state_row(row), path)
