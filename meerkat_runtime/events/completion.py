"""Completion outcomes: what a waiter on an input receives (docs: concepts/completions.md).

The waiting machinery (futures, handles) lives in ``meerkat_runtime.actors``;
this module holds only the wire types, so an outcome can be derived from the
event log alone.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
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
]


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
    error: JsonValue = wfield(default=None, required=True)


@tagged
@dataclass(frozen=True, slots=True)
class AbandonedWithError(CompletionOutcome):
    __tag__: ClassVar[str] = "abandoned_with_error"
    reason: str
    error: JsonValue = wfield(default=None, required=True)


@tagged
@dataclass(frozen=True, slots=True)
class CompletedWithFinalizationFailure(CompletionOutcome):
    __tag__: ClassVar[str] = "completed_with_finalization_failure"
    error: JsonValue = wfield(default=None, required=True)


@tagged
@dataclass(frozen=True, slots=True)
class RuntimeTerminated(CompletionOutcome):
    """The runtime was stopped, reset, destroyed or retired without a loop; ``reason`` says which."""

    __tag__: ClassVar[str] = "runtime_terminated"
    reason: str
    error: JsonValue = wfield(default=None, required=True)
