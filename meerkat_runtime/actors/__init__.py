"""Session actors, their registry (routing, passivation, admission), executors and completions."""

from meerkat_runtime.actors._completion import CompletionHandle, CompletionRegistry
from meerkat_runtime.actors._executor import (
    CancelToken,
    EchoExecutor,
    Executor,
    ExecutorLike,
    Interrupt,
    InterruptQueue,
    RetryPolicy,
    RunRequest,
    RunResult,
    RunStatus,
    call_executor,
)
from meerkat_runtime.actors._messages import Call
from meerkat_runtime.actors._registry import SessionRegistry
from meerkat_runtime.actors._scheduler import Scheduler
from meerkat_runtime.actors._services import Services
from meerkat_runtime.actors._session import AcceptOutcome, SessionActor
from meerkat_runtime.events.runtime_event import RunBoundaryReceipt

__all__ = [
    "AcceptOutcome",
    "Call",
    "CancelToken",
    "CompletionHandle",
    "CompletionRegistry",
    "EchoExecutor",
    "Executor",
    "ExecutorLike",
    "Interrupt",
    "InterruptQueue",
    "RetryPolicy",
    "RunBoundaryReceipt",
    "RunRequest",
    "RunResult",
    "RunStatus",
    "Scheduler",
    "Services",
    "SessionActor",
    "SessionRegistry",
    "call_executor",
]
