"""meerkat-runtime: an event-sourced actor runtime for long-lived sessions.

Hosts send typed inputs to sessions; each session is an actor whose state is a
fold of its persisted events. See ``Runtime.open``.
"""

from meerkat_runtime import events
from meerkat_runtime.actors import (
    AcceptOutcome,
    CancelToken,
    CompletionHandle,
    EchoExecutor,
    Executor,
    Interrupt,
    InterruptQueue,
    RetryPolicy,
    RunRequest,
    RunResult,
    RunStatus,
)
from meerkat_runtime.errors import (
    AcceptManyFailed,
    AmbiguousInputId,
    CompletionWaitError,
    ConcurrencyConflict,
    InvalidInput,
    MeerkatRuntimeError,
    OperationLifecycleError,
    Overloaded,
    RuntimeControlPlaneError,
    RuntimeStateTransitionError,
    SessionNotFound,
    SessionOwnedElsewhere,
    StoreError,
    StoreUnavailable,
    UndecodableEvent,
)
from meerkat_runtime.events import *  # noqa: F403  (names: events.__all__)
from meerkat_runtime.runtime import Runtime, RuntimeActivity, RuntimeOptions, Session
from meerkat_runtime.store import EventStore, open_store
from meerkat_runtime.terminal_status import (
    InteractionTerminalReport,
    RunResolutionClass,
    RunTerminalReport,
    RunTerminalStatus,
    TerminalWitnessSource,
)

__version__ = "0.1.0"

__all__ = [
    "AcceptManyFailed",
    "AcceptOutcome",
    "AmbiguousInputId",
    "CancelToken",
    "CompletionHandle",
    "CompletionWaitError",
    "ConcurrencyConflict",
    "EchoExecutor",
    "EventStore",
    "Executor",
    "InteractionTerminalReport",
    "Interrupt",
    "InterruptQueue",
    "InvalidInput",
    "MeerkatRuntimeError",
    "OperationLifecycleError",
    "Overloaded",
    "RetryPolicy",
    "RunRequest",
    "RunResolutionClass",
    "RunResult",
    "RunStatus",
    "RunTerminalReport",
    "RunTerminalStatus",
    "Runtime",
    "RuntimeActivity",
    "RuntimeControlPlaneError",
    "RuntimeOptions",
    "RuntimeStateTransitionError",
    "Session",
    "SessionNotFound",
    "SessionOwnedElsewhere",
    "StoreError",
    "StoreUnavailable",
    "TerminalWitnessSource",
    "UndecodableEvent",
    "open_store",
]
__all__ += events.__all__  # every spec name, listed once: in meerkat_runtime.events
