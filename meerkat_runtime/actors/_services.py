"""What every session actor of one runtime shares, in a module of its own.

The registry makes the actors and the actors use these; keeping them here means
neither of ``_registry`` and ``_session`` imports the other's module to name them.
"""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from meerkat_runtime.actors._calls import CallTable
from meerkat_runtime.actors._completion import CompletionRegistry
from meerkat_runtime.actors._executor import AsyncRunner, ExecutorLike, RetryPolicy
from meerkat_runtime.actors._operations import OperationWatchers
from meerkat_runtime.actors._scheduler import Scheduler
from meerkat_runtime.cluster import Membership
from meerkat_runtime.events.policy import DEFAULT_POLICY, Policy
from meerkat_runtime.store import EventStore, SessionJournal
from meerkat_runtime.telemetry import Telemetry

__all__ = ["PendingRetries", "Services"]


class PendingRetries:
    """How many session retries are scheduled or being handled (a gauge, thread-safe).

    A retry counts from the moment it is scheduled until the message it sends has
    been handled, including any retry that handling schedules in turn: a session
    that keeps retrying never lets the gauge fall to zero between two attempts.
    """

    __slots__ = ("_lock", "_n")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._n = 0

    def add(self, n: int) -> None:
        with self._lock:
            self._n += n

    @property
    def value(self) -> int:
        return self._n


@dataclass(frozen=True, eq=False)
class Services:
    """What every session actor of one runtime shares: set once, when the runtime opens.

    The fields never change; the few that hold changing state are objects made for
    sharing between threads (the run and call tables, the retry gauge, ``closing``).
    How an actor messages sessions is not here: the registry hands each actor itself,
    as a :class:`~meerkat_runtime.actors._messages.Mailer`.
    """

    store: EventStore
    journal: SessionJournal
    executor: ExecutorLike | None
    completions: CompletionRegistry
    scheduler: Scheduler
    pool: ThreadPoolExecutor
    runner: AsyncRunner
    membership: Membership | None = None
    telemetry: Telemetry | None = None  # None: no OpenTelemetry SDK to report to
    run_timeout: float | None = 300.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    cancel_grace: float | None = 30.0
    recovery_timeout: float = 10.0
    backoff_initial: float = 0.05
    backoff_max: float = 2.0
    policy: Policy = DEFAULT_POLICY
    active_runs: set[uuid.UUID] = field(default_factory=set)
    retries: PendingRetries = field(default_factory=PendingRetries)
    calls: CallTable = field(default_factory=CallTable)
    closing: threading.Event = field(default_factory=threading.Event)
    """Set when the runtime closes: no run starts any more."""
    operations: OperationWatchers = field(default_factory=OperationWatchers)
    """Pending ``wait_operations`` calls (``_operations``)."""
