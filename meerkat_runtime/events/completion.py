"""Completion outcomes: what a waiter on an input receives (docs: concepts/completions.md).

The waiting machinery (futures, handles) lives in ``meerkat_runtime.actors``;
this module holds only the wire types, so an outcome can be derived from the
event log alone.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar

from meerkat_runtime.events._codec import JsonValue, tagged, wfield

__all__ = [
    "Abandoned",
    "AbandonedWithError",
    "CallbackBatchPending",
    "CallbackPending",
    "Cancelled",
    "Completed",
    "CompletedWithFinalizationFailure",
    "CompletedWithoutResult",
    "CompletionOutcome",
    "RuntimeTerminated",
    "TurnErrorMetadata",
    "TurnTerminalCauseKind",
    "TurnTerminalOutcome",
]


class TurnTerminalCauseKind(StrEnum):
    """Why a turn (run) ended in failure: a closed classifier (unknown values are refused)."""

    UNKNOWN = "unknown"
    HOOK_DENIED = "hook_denied"
    HOOK_FAILURE = "hook_failure"
    LLM_FAILURE = "llm_failure"
    TOOL_FAILURE = "tool_failure"
    STRUCTURED_OUTPUT_VALIDATION_FAILED = "structured_output_validation_failed"
    BUDGET_EXHAUSTED = "budget_exhausted"
    TIME_BUDGET_EXCEEDED = "time_budget_exceeded"
    RETRY_EXHAUSTED = "retry_exhausted"
    TURN_LIMIT_REACHED = "turn_limit_reached"
    RUNTIME_APPLY_FAILURE = "runtime_apply_failure"
    FATAL_FAILURE = "fatal_failure"


class TurnTerminalOutcome(StrEnum):
    """How a turn ended."""

    NONE = "none"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    BUDGET_EXHAUSTED = "budget_exhausted"
    TIME_BUDGET_EXCEEDED = "time_budget_exceeded"
    STRUCTURED_OUTPUT_VALIDATION_FAILED = "structured_output_validation_failed"


@dataclass(frozen=True, slots=True)
class TurnErrorMetadata:
    """Machine-readable facts of a failure: the ``error`` of ``run.failed`` and of the
    failing completion outcomes.

    ``kind`` classifies the cause; ``terminal`` says the failure is final (the run's
    inputs are not retried), always written and ``false`` when missing on read;
    ``detail`` carries the human-readable text (an executor's error message goes
    here); ``provider``, ``model`` and ``retryable`` are optional hints. A string
    ``kind``/``outcome`` given to the constructor is converted to its enum (an
    unknown one raises ``ValueError``).
    """

    kind: TurnTerminalCauseKind
    terminal: bool = False
    outcome: TurnTerminalOutcome | None = wfield(default=None, omit="none")
    detail: str | None = wfield(default=None, omit="none")
    provider: str | None = wfield(default=None, omit="none")
    model: str | None = wfield(default=None, omit="none")
    retryable: bool | None = wfield(default=None, omit="none")

    def __post_init__(self) -> None:
        if type(self.kind) is not TurnTerminalCauseKind:
            object.__setattr__(self, "kind", TurnTerminalCauseKind(self.kind))
        if self.outcome is not None and type(self.outcome) is not TurnTerminalOutcome:
            object.__setattr__(self, "outcome", TurnTerminalOutcome(self.outcome))


@dataclass(frozen=True, slots=True)
class CompletionOutcome:
    """The terminal result of an input (tag ``completion_type``)."""

    __tag_key__: ClassVar[str] = "completion_type"


@tagged
@dataclass(frozen=True, slots=True)
class Completed(CompletionOutcome):
    """The input's run completed; ``output`` is the executor's output (omitted when None)."""

    __tag__: ClassVar[str] = "completed"
    run_id: uuid.UUID
    output: JsonValue = wfield(default=None, omit="none")


@tagged
@dataclass(frozen=True, slots=True)
class CompletedWithoutResult(CompletionOutcome):
    __tag__: ClassVar[str] = "completed_without_result"


@tagged
@dataclass(frozen=True, slots=True)
class CallbackPending(CompletionOutcome):
    __tag__: ClassVar[str] = "callback_pending"
    tool_use_id: str
    tool_name: str
    args: JsonValue = wfield(default=None, required=True)


@tagged
@dataclass(frozen=True, slots=True)
class CallbackBatchPending(CompletionOutcome):
    __tag__: ClassVar[str] = "callback_batch_pending"
    pending_tool_calls: tuple[JsonValue, ...] = wfield(default=(), required=True)


@tagged
@dataclass(frozen=True, slots=True)
class Cancelled(CompletionOutcome):
    __tag__: ClassVar[str] = "cancelled"


@tagged
@dataclass(frozen=True, slots=True)
class Abandoned(CompletionOutcome):
    __tag__: ClassVar[str] = "abandoned"
    reason: str
    error: TurnErrorMetadata


@tagged
@dataclass(frozen=True, slots=True)
class AbandonedWithError(CompletionOutcome):
    __tag__: ClassVar[str] = "abandoned_with_error"
    reason: str
    error: TurnErrorMetadata


@tagged
@dataclass(frozen=True, slots=True)
class CompletedWithFinalizationFailure(CompletionOutcome):
    __tag__: ClassVar[str] = "completed_with_finalization_failure"
    error: TurnErrorMetadata


@tagged
@dataclass(frozen=True, slots=True)
class RuntimeTerminated(CompletionOutcome):
    """The runtime was stopped, reset, destroyed or retired without a loop; ``reason`` says which."""

    __tag__: ClassVar[str] = "runtime_terminated"
    reason: str
    error: TurnErrorMetadata
