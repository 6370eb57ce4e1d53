"""Executors: what does the work of a run (for an agent host, a model turn).

An executor is any callable ``f(request) -> RunResult | None`` or object with
``run(request)``. It is called on a worker thread of the runtime's pool, never
on a session actor's thread, so a slow run never blocks acceptance.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from meerkat_runtime.events.run_primitive import RunPrimitive

__all__ = [
    "EchoExecutor",
    "Executor",
    "ExecutorLike",
    "RunRequest",
    "RunResult",
    "RunStatus",
    "call_executor",
]


class RunStatus(StrEnum):
    """How a run ended, as the executor reports it."""

    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class RunRequest:
    """What an executor receives for one run."""

    session_id: str
    run_id: uuid.UUID
    primitive: RunPrimitive
    contributing_input_ids: tuple[uuid.UUID, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class RunResult:
    """What an executor returns. ``status`` accepts plain strings; ``output`` must be JSON-able."""

    status: RunStatus | str = RunStatus.COMPLETED
    output: Any = None
    error: str | None = None

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "status", RunStatus(self.status))
        except ValueError:
            raise ValueError(
                f"RunResult.status must be one of completed, failed, cancelled; got {self.status!r}"
            ) from None


@runtime_checkable
class Executor(Protocol):
    """An object that performs runs; a plain callable ``f(request)`` works as well."""

    def run(self, request: RunRequest) -> RunResult | None: ...


ExecutorLike = Executor | Callable[[RunRequest], "RunResult | None"]


class EchoExecutor:
    """Completes every run with ``{"text": <the primitive's extracted content>}``."""

    def run(self, request: RunRequest) -> RunResult:
        content = request.primitive.extract_content()
        text = content if isinstance(content, str) else list(content)
        return RunResult(status=RunStatus.COMPLETED, output={"text": text})


def call_executor(executor: ExecutorLike, request: RunRequest) -> RunResult:
    """Run the executor; an exception becomes a failed result carrying its text."""
    try:
        fn = executor.run if isinstance(executor, Executor) else executor
        result: object = fn(request)
    except Exception as exc:  # an executor may raise anything; it must never kill the actor
        return RunResult(status=RunStatus.FAILED, error=f"{type(exc).__name__}: {exc}")
    if result is None:
        return RunResult(status=RunStatus.COMPLETED)
    if not isinstance(result, RunResult):
        return RunResult(
            status=RunStatus.FAILED,
            error=f"executor returned {type(result).__name__}, expected RunResult or None",
        )
    return result
