"""The operations registry of a session, folded from its operation inputs.

For users: docs/concepts/operations.md.

An :class:`~meerkat_runtime.events.inputs.OperationInput` carries one lifecycle
event of an operation run by core (a tool call, a background job). The session
keeps what those events say, per operation: the Rust crate's ops lifecycle
registry (``ops_lifecycle.rs``), here a pure fold of ``input.accepted`` events
so it is in every incarnation of the session and in its snapshots.

Mapping of the wire events onto the Rust registry calls:

* ``started{id,kind}`` registers the operation and marks it running
  (``register_operation`` + ``provisioning_succeeded``);
* ``progress{id,message,percent}`` counts a progress report (``report_progress``);
* ``completed{id,result}``, ``failed{id,error}``, ``cancelled{id}`` make it
  terminal (``complete_operation``, ``fail_operation``, ``cancel_operation``);
* a session that stops accepting input (retired, stopped, destroyed) terminates
  the operations still running (``terminate_owner``): no event could end them.

The guards are the Rust machine's (``from_status_valid``): an event for an
unknown operation is ``not_found``, ``started`` for a known one is
``already_registered``, and every event for a terminal operation is
``invalid_transition``. The Rust runtime admits an operation input whatever
its registry says (the registry is a separate authority whose calls fail), so
here too the input is accepted (and consumed); the registry refuses the move
and changes nothing, and the accept's reply carries the refusal
(:func:`check_operation_input`, ``AcceptOutcome.operation_error``). The fold
(:meth:`OperationRegistry.apply`) applies the same guards, so a refused event
in the log has no effect on any replay.

Retention is the Rust default: the newest 256 terminal operations are kept,
older ones are evicted (an event for an evicted id is ``not_found``; ``started``
may use the id again). The completion feed lists terminal operations in the
order they ended, by a per-session completion sequence; a cursor older than
the evicted prefix reads a :class:`CompletionFeedGap`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from meerkat_runtime.errors import InvalidInput, OperationLifecycleError
from meerkat_runtime.events._codec import JsonValue
from meerkat_runtime.events.inputs import (
    OperationCancelled,
    OperationCompleted,
    OperationEvent,
    OperationFailed,
    OperationInput,
    OperationProgress,
    OperationStarted,
)
from meerkat_runtime.events.runtime_event import (
    InputAccepted,
    RuntimeEventEnvelope,
    RuntimeStateChangeEvent,
)
from meerkat_runtime.events.runtime_state import RuntimeState
from meerkat_runtime.events.timefmt import format_timestamp, parse_timestamp

__all__ = [
    "DEFAULT_MAX_COMPLETED",
    "CompletionBatch",
    "CompletionEntry",
    "CompletionFeedGap",
    "OperationPublicResultClass",
    "OperationRecord",
    "OperationRegistry",
    "OperationStatus",
    "check_operation_input",
    "operation_sequences",
    "settled_operations",
]

#: Terminal operations kept before the oldest is evicted (the Rust ``DEFAULT_MAX_COMPLETED``).
DEFAULT_MAX_COMPLETED = 256


class OperationStatus(StrEnum):
    """An operation's lifecycle status (the Rust ``OperationStatus``).

    This port reaches ``running`` and the terminal ``completed``, ``failed``,
    ``cancelled`` and ``terminated``; the other values exist for the Rust
    registry's provisioning and retiring steps, which no wire event names.
    """

    ABSENT = "absent"
    PROVISIONING = "provisioning"
    RUNNING = "running"
    RETIRING = "retiring"
    COMPLETED = "completed"
    FAILED = "failed"
    ABORTED = "aborted"
    CANCELLED = "cancelled"
    RETIRED = "retired"
    TERMINATED = "terminated"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL

    @property
    def public_result_class(self) -> OperationPublicResultClass:
        """The app-facing class of this status (the Rust machine's classifier)."""
        return _PUBLIC_CLASS[self]


class OperationPublicResultClass(StrEnum):
    """What an app shows for an operation (the Rust ``OperationPublicResultClass``)."""

    MISSING_AUTHORITY = "missing_authority"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


_S = OperationStatus
_P = OperationPublicResultClass
_TERMINAL = frozenset(
    {_S.COMPLETED, _S.FAILED, _S.ABORTED, _S.CANCELLED, _S.RETIRED, _S.TERMINATED}
)
_PUBLIC_CLASS = {
    _S.ABSENT: _P.MISSING_AUTHORITY,
    _S.PROVISIONING: _P.RUNNING,
    _S.RUNNING: _P.RUNNING,
    _S.RETIRING: _P.RUNNING,
    _S.COMPLETED: _P.COMPLETED,
    _S.FAILED: _P.FAILED,
    _S.TERMINATED: _P.FAILED,
    _S.ABORTED: _P.CANCELLED,
    _S.CANCELLED: _P.CANCELLED,
    _S.RETIRED: _P.CANCELLED,
}


@dataclass(frozen=True, slots=True)
class OperationRecord:
    """One operation as its events left it (the Rust ``OperationLifecycleSnapshot``).

    ``progress_count`` counts ``progress`` events; ``progress_message`` and
    ``progress_percent`` are the last one's. ``result`` is the ``completed``
    event's result, ``error`` the ``failed`` one's, ``reason`` why the session
    terminated it. ``completion_seq`` is its place in the completion feed once
    terminal; ``started_sequence`` and ``terminal_sequence`` are the session log
    positions of its first and terminal event.
    """

    operation_id: str
    kind: str
    status: OperationStatus
    started_at: datetime
    updated_at: datetime
    started_sequence: int
    progress_count: int = 0
    progress_message: str | None = None
    progress_percent: float | None = None
    result: JsonValue = None
    error: str | None = None
    reason: str | None = None
    completed_at: datetime | None = None
    completion_seq: int | None = None
    terminal_sequence: int | None = None

    @property
    def terminal(self) -> bool:
        return self.status.is_terminal

    @property
    def public_result_class(self) -> OperationPublicResultClass:
        return self.status.public_result_class

    def to_json(self) -> dict[str, Any]:
        """A JSON-native form (snapshots, ``--json`` output)."""
        return {
            "operation_id": self.operation_id,
            "kind": self.kind,
            "status": self.status.value,
            "public_result_class": self.public_result_class.value,
            "terminal": self.terminal,
            "progress_count": self.progress_count,
            "progress_message": self.progress_message,
            "progress_percent": self.progress_percent,
            "result": self.result,
            "error": self.error,
            "reason": self.reason,
            "started_at": format_timestamp(self.started_at),
            "updated_at": format_timestamp(self.updated_at),
            "completed_at": None
            if self.completed_at is None
            else format_timestamp(self.completed_at),
            "completion_seq": self.completion_seq,
            "started_sequence": self.started_sequence,
            "terminal_sequence": self.terminal_sequence,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OperationRecord:
        done = data["completed_at"]
        percent = data["progress_percent"]
        return cls(
            operation_id=str(data["operation_id"]),
            kind=str(data["kind"]),
            status=OperationStatus(data["status"]),
            started_at=parse_timestamp(data["started_at"]),
            updated_at=parse_timestamp(data["updated_at"]),
            started_sequence=int(data["started_sequence"]),
            progress_count=int(data["progress_count"]),
            progress_message=data["progress_message"],
            progress_percent=None if percent is None else float(percent),
            result=data["result"],
            error=data["error"],
            reason=data["reason"],
            completed_at=None if done is None else parse_timestamp(done),
            completion_seq=data["completion_seq"],
            terminal_sequence=data["terminal_sequence"],
        )


@dataclass(frozen=True, slots=True)
class CompletionEntry:
    """One terminal operation in the completion feed, at its completion sequence."""

    seq: int
    operation: OperationRecord


@dataclass(frozen=True, slots=True)
class CompletionFeedGap:
    """A cursor older than the feed's evicted prefix: entries up to ``dropped_through`` are gone."""

    requested_after_seq: int
    dropped_through: int
    watermark: int


@dataclass(frozen=True, slots=True)
class CompletionBatch:
    """The completion feed after a cursor (the Rust ``CompletionBatch``).

    ``watermark`` is the last completion sequence the session handed out (read
    on from it next time); ``dropped_through`` the last one evicted.
    """

    entries: tuple[CompletionEntry, ...]
    watermark: int
    dropped_through: int

    def gap_after(self, after_seq: int) -> CompletionFeedGap | None:
        """The gap a reader at ``after_seq`` has missed, or None when it missed nothing."""
        if after_seq < self.dropped_through:
            return CompletionFeedGap(after_seq, self.dropped_through, self.watermark)
        return None


_ACTIONS: dict[type, str] = {
    OperationStarted: "started",
    OperationProgress: "progress",
    OperationCompleted: "completed",
    OperationFailed: "failed",
    OperationCancelled: "cancelled",
}


class OperationRegistry:
    """The operations of one session (mutated in place by the fold, read by queries)."""

    __slots__ = ("_done", "dropped_through", "max_completed", "ops", "watermark")

    def __init__(self, max_completed: int = DEFAULT_MAX_COMPLETED) -> None:
        self.ops: dict[str, OperationRecord] = {}
        # Terminal operation ids, oldest completion first; made by the first one (an
        # empty deque is ~600 bytes, and most sessions never start an operation).
        self._done: deque[str] | None = None
        self.watermark = 0  # the last completion sequence handed out
        self.dropped_through = 0  # the last completion sequence evicted
        self.max_completed = max_completed

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, OperationRegistry):
            return NotImplemented
        return (self.ops, self.watermark, self.dropped_through) == (
            other.ops,
            other.watermark,
            other.dropped_through,
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"OperationRegistry({len(self.ops)} operations, watermark={self.watermark})"

    # ---------------------------------------------------------------- reading

    def get(self, operation_id: str) -> OperationRecord | None:
        return self.ops.get(operation_id)

    def records(self) -> list[OperationRecord]:
        """Every retained operation, in the order each started."""
        return sorted(self.ops.values(), key=lambda r: r.started_sequence)

    def feed(self, after_seq: int = 0) -> CompletionBatch:
        """Terminal operations whose completion sequence is after ``after_seq``, in order."""
        done = (self.ops[i] for i in self._done or ())
        entries = tuple(
            CompletionEntry(r.completion_seq, r)
            for r in done
            if r.completion_seq is not None and r.completion_seq > after_seq
        )
        return CompletionBatch(entries, self.watermark, self.dropped_through)

    # ---------------------------------------------------------------- deciding

    def check(self, operation_id: str, event: OperationEvent) -> None:
        """Raise :class:`OperationLifecycleError` when ``event`` is not legal now."""
        action = _ACTIONS.get(type(event))
        if action is None:  # pragma: no cover - the codec admits the five tags only
            raise InvalidInput(f"unknown operation event {event!r}", "event")
        event_id = getattr(event, "id", operation_id)
        if event_id != operation_id:
            raise OperationLifecycleError(
                "id_mismatch",
                operation_id,
                f"operation input {operation_id!r} carries a {action} event for "
                f"operation {event_id!r}: the ids must be equal",
                action=action,
            )
        record = self.ops.get(operation_id)
        if record is None:
            if action != "started":
                raise OperationLifecycleError(
                    "not_found",
                    operation_id,
                    f"operation not found: {operation_id!r} ({action} before started)",
                    action=action,
                )
            return
        if action == "started":
            raise OperationLifecycleError(
                "already_registered",
                operation_id,
                f"operation already registered: {operation_id!r} (it is {record.status})",
                status=record.status.value,
                action=action,
            )
        if record.terminal:
            raise OperationLifecycleError(
                "invalid_transition",
                operation_id,
                f"invalid lifecycle transition for {operation_id!r}: "
                f"{record.status} -> {action} (the operation is terminal)",
                status=record.status.value,
                action=action,
            )

    # ---------------------------------------------------------------- folding

    def apply(self, operation_id: str, event: OperationEvent, at: datetime, sequence: int) -> None:
        """Fold one operation event; an event the guards would refuse changes nothing."""
        try:
            self.check(operation_id, event)
        except (OperationLifecycleError, InvalidInput):
            return  # written before the guards, or by a foreign writer: no effect
        if isinstance(event, OperationStarted):
            self.ops[operation_id] = OperationRecord(
                operation_id=operation_id,
                kind=event.kind,
                status=_S.RUNNING,
                started_at=at,
                updated_at=at,
                started_sequence=sequence,
            )
            return
        record = self.ops[operation_id]
        if isinstance(event, OperationProgress):
            self.ops[operation_id] = replace(
                record,
                progress_count=record.progress_count + 1,
                progress_message=event.message,
                progress_percent=event.percent,
                updated_at=at,
            )
        elif isinstance(event, OperationCompleted):
            self._end(record, _S.COMPLETED, at, sequence, result=event.result)
        elif isinstance(event, OperationFailed):
            self._end(record, _S.FAILED, at, sequence, error=event.error)
        elif isinstance(event, OperationCancelled):
            self._end(record, _S.CANCELLED, at, sequence)

    def terminate(self, reason: str, at: datetime, sequence: int) -> None:
        """End every running operation as ``terminated`` (its owner takes no more input)."""
        for record in [r for r in self.ops.values() if not r.terminal]:
            self._end(record, _S.TERMINATED, at, sequence, reason=reason)

    def _end(
        self,
        record: OperationRecord,
        status: OperationStatus,
        at: datetime,
        sequence: int,
        *,
        result: JsonValue = None,
        error: str | None = None,
        reason: str | None = None,
    ) -> None:
        self.watermark += 1
        self.ops[record.operation_id] = replace(
            record,
            status=status,
            result=result,
            error=error,
            reason=reason,
            updated_at=at,
            completed_at=at,
            completion_seq=self.watermark,
            terminal_sequence=sequence,
        )
        done = self._done
        if done is None:
            done = self._done = deque()
        done.append(record.operation_id)
        while len(done) > self.max_completed:  # evict the oldest terminal operation
            gone = self.ops.pop(done.popleft())
            self.dropped_through = max(self.dropped_through, gone.completion_seq or 0)

    # ---------------------------------------------------------------- snapshots

    def to_json(self) -> dict[str, Any]:
        return {
            "watermark": self.watermark,
            "dropped_through": self.dropped_through,
            "operations": [r.to_json() for r in self.records()],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OperationRegistry:
        reg = cls()
        reg.watermark = int(data["watermark"])
        reg.dropped_through = int(data["dropped_through"])
        for row in data["operations"]:
            record = OperationRecord.from_json(row)
            reg.ops[record.operation_id] = record
        ended = [r for r in reg.ops.values() if r.completion_seq is not None]
        ended.sort(key=lambda r: r.completion_seq or 0)
        if ended:
            reg._done = deque(r.operation_id for r in ended)
        return reg


def check_operation_input(
    registry: OperationRegistry, inp: OperationInput
) -> OperationLifecycleError | None:
    """The accept-time guard: why ``inp``'s event is illegal for its operation, or None."""
    try:
        registry.check(inp.operation_id, inp.event)
    except OperationLifecycleError as exc:
        return exc
    return None


#: Session states that take no input: the operations still running there are terminated.
OWNER_GONE = frozenset({RuntimeState.RETIRED, RuntimeState.STOPPED, RuntimeState.DESTROYED})
_ENDING = (OperationCompleted, OperationFailed, OperationCancelled)


def operation_sequences(events: Iterable[RuntimeEventEnvelope]) -> list[int]:
    """The log sequences among ``events`` that may end an operation (cheap to test)."""
    found: list[int] = []
    for env in events:
        ev = env.event
        if isinstance(ev, InputAccepted):
            if isinstance(ev.input, OperationInput) and isinstance(ev.input.event, _ENDING):
                found.append(env.sequence)
        elif isinstance(ev, RuntimeStateChangeEvent) and ev.to in OWNER_GONE:
            found.append(env.sequence)
    return found


def settled_operations(
    registry: OperationRegistry, sequences: Iterable[int]
) -> Sequence[OperationRecord]:
    """The retained operations that became terminal at one of the log ``sequences``."""
    wanted = set(sequences)
    if not wanted:
        return ()
    return [r for r in registry.ops.values() if r.terminal_sequence in wanted]
