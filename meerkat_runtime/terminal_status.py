"""Terminal status: "did interaction X / run Y finish, and how?" (Rust ``terminal_status.rs``).

Two witnesses answer, through the same pure functions
(:func:`interaction_report`, :func:`evaluate_run`):

* ``live_runtime``: the session's actor is live in this process and its state
  holds the input (for a run: the run is its run in flight). Nothing is read
  from the store.
* ``durable_store``: otherwise (passivated, not started since a restart, owned
  by another process, or the live state does not hold the input). The
  session's log is read and its input events folded one input at a time
  (:func:`fold_input_states`, the fold the input ledger uses), without starting
  the session or taking its lease. This does not depend on the session's state
  keeping terminal inputs: the log keeps every input for good.

Both are folds of the same durable events, so a restart changes no answer. The
one difference: a session that loads applies the recovery rules (an input
left ``staged`` by a dead process is rolled back to ``queued``), while the log
read as it stands shows the input as the dead process left it, until some
process loads the session.

Honest limitation (as in Rust): an input re-staged into a later run (its run
failed and was retried) has its ``last_run_id`` rebound to that later run, so
the earlier run reports ``no_durable_witness``. That is the durable truth, not
a failure: do not read it as ``failed``.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import Enum, StrEnum
from typing import Final, Generic, TypeVar

from meerkat_runtime.errors import InvalidInput, SessionNotFound
from meerkat_runtime.events.catalogue import decode_recorded
from meerkat_runtime.events.completion import CompletedWithoutResult, CompletionOutcome
from meerkat_runtime.events.ids import parse_uuid
from meerkat_runtime.events.input_fold import evolve_input, needs_admission_sequence
from meerkat_runtime.events.input_state import (
    AbandonedOutcome,
    ConsumedOutcome,
    InputAbandonReason,
    InputLifecycleState,
    InputState,
    InputTerminalOutcome,
)
from meerkat_runtime.events.runtime_event import (
    InputLifecycleEvent,
    InputStaged,
    RunCancelled,
    RunCompleted,
    RunFailed,
)
from meerkat_runtime.events.session import SessionState, settle_run_inputs
from meerkat_runtime.store import EventStore, RecordedEvent, SessionJournal

__all__ = [
    "InteractionTerminalReport",
    "RunResolutionClass",
    "RunTerminalReport",
    "RunTerminalStatus",
    "TerminalWitnessSource",
    "evaluate_run",
    "find_by_idempotency_key",
    "fold_input_states",
    "interaction_report",
    "read_input_states",
]


T = TypeVar("T")
_RUN_ENDS = frozenset({"run.completed", "run.failed", "run.cancelled"})


class TerminalWitnessSource(StrEnum):
    """Which witness answered a terminal-status query."""

    LIVE_RUNTIME = "live_runtime"
    """The session's actor is live in this process: its state answered."""
    DURABLE_STORE = "durable_store"
    """The session's log, read from the store and folded, answered."""


class RunTerminalStatus(StrEnum):
    """Where a run stands, judged by the inputs whose last run it is."""

    IN_FLIGHT = "in_flight"
    """At least one of its inputs is not terminal yet."""
    RESOLVED = "resolved"
    """Every input bound to it is terminal (``outcome`` says how)."""
    NO_DURABLE_WITNESS = "no_durable_witness"
    """No input names it as its last run: an unknown run, or every input it had was
    re-staged into a later run since (retried). Not a failure."""


class RunResolutionClass(StrEnum):
    """How a resolved run ended, from its inputs' terminal outcomes."""

    CONSUMED = "consumed"
    """At least one input was consumed by it."""
    ABANDONED = "abandoned"
    """None was consumed; the first abandoned input (in admission order) gives the reason."""
    DISPLACED = "displaced"
    """Only superseded or coalesced inputs name it."""


@dataclass(frozen=True, slots=True)
class InteractionTerminalReport:
    """The terminal status of one input (interaction)."""

    input_id: uuid.UUID
    phase: InputLifecycleState
    """Its lifecycle state when the witness answered."""
    terminal: InputTerminalOutcome | None
    """How it ended; None while it is not terminal (``phase`` says where it is)."""
    resolving_run_id: uuid.UUID | None
    """The run it last took part in (rebound when it is retried in a later run)."""
    attempt_count: int
    """How many runs it was staged into."""
    idempotency_key: str | None
    updated_at: datetime
    """When its state last changed."""
    source: TerminalWitnessSource

    @property
    def is_terminal(self) -> bool:
        return self.terminal is not None


@dataclass(frozen=True, slots=True)
class RunTerminalReport:
    """The terminal status of one run, judged by the inputs that name it as their last run."""

    run_id: uuid.UUID
    status: RunTerminalStatus
    outcome: RunResolutionClass | None
    """Set when ``status`` is ``resolved``."""
    abandon_reason: InputAbandonReason | None
    """Set when ``outcome`` is ``abandoned``: the first abandoned input's reason."""
    witnesses: tuple[InteractionTerminalReport, ...]
    """The inputs whose last run it is, in admission order."""
    source: TerminalWitnessSource


# ---------------------------------------------------------------- the pure evaluation


def interaction_report(st: InputState, source: TerminalWitnessSource) -> InteractionTerminalReport:
    """One input's state as its terminal-status report (pure)."""
    return InteractionTerminalReport(
        input_id=st.input_id,
        phase=st.current_state,
        terminal=st.terminal_outcome,
        resolving_run_id=st.last_run_id,
        attempt_count=st.attempt_count,
        idempotency_key=st.idempotency_key,
        updated_at=st.updated_at,
        source=source,
    )


def find_by_idempotency_key(inputs: Iterable[InputState], key: str) -> InputState | None:
    """The first input (in the order given) accepted under exactly ``key``, or None.

    No prefix or case folding: ``"order-4"`` does not find ``"order-42"``. The
    first wins, as in the session's idempotency index: a key stays bound to the
    input first accepted with it.
    """
    return next((st for st in inputs if st.idempotency_key == key), None)


def evaluate_run(
    run_id: uuid.UUID, inputs: Iterable[InputState], source: TerminalWitnessSource
) -> RunTerminalReport:
    """The status of run ``run_id`` over a session's input states (pure).

    Witnesses are the inputs whose ``last_run_id`` is the run, in admission order
    (inputs without an admission sequence last, then by id). Precedence when all
    are terminal: consumed, then abandoned (the first abandoned witness gives the
    reason), then displaced. No witness at all: ``no_durable_witness``.
    """
    witnesses = sorted(
        (st for st in inputs if st.last_run_id == run_id),
        key=lambda st: (
            st.admission_sequence is None,
            st.admission_sequence or 0,
            st.input_id.bytes,
        ),
    )
    outcome: RunResolutionClass | None = None
    reason: InputAbandonReason | None = None
    if not witnesses:
        status = RunTerminalStatus.NO_DURABLE_WITNESS
    elif any(st.terminal_outcome is None for st in witnesses):
        status = RunTerminalStatus.IN_FLIGHT
    else:
        status = RunTerminalStatus.RESOLVED
        if any(isinstance(st.terminal_outcome, ConsumedOutcome) for st in witnesses):
            outcome = RunResolutionClass.CONSUMED
        else:
            reason = next(
                (
                    st.terminal_outcome.reason
                    for st in witnesses
                    if isinstance(st.terminal_outcome, AbandonedOutcome)
                ),
                None,
            )
            outcome = RunResolutionClass.ABANDONED if reason else RunResolutionClass.DISPLACED
    return RunTerminalReport(
        run_id=run_id,
        status=status,
        outcome=outcome,
        abandon_reason=reason,
        witnesses=tuple(interaction_report(st, source) for st in witnesses),
        source=source,
    )


# ---------------------------------------------------------------- the durable witness


def fold_input_states(records: Iterable[RecordedEvent]) -> dict[uuid.UUID, InputState]:
    """Every input of a session's log, folded one input at a time, in acceptance order.

    Only the input events are decoded; they go through the per-input fold the
    session and the input ledger use (with the same admission sequence numbers),
    so each state equals the session fold's on every field a report shows.
    """
    inputs: dict[uuid.UUID, InputState] = {}
    runs: dict[uuid.UUID, list[uuid.UUID]] = {}  # the inputs each run staged
    counter = 0
    for rec in records:
        if rec.topic in _RUN_ENDS:
            env = decode_recorded(rec)
            end = env.event
            assert isinstance(end, (RunCompleted, RunFailed, RunCancelled))
            settle_run_inputs(inputs, runs.pop(end.run_id, ()), end)
            continue
        if not rec.topic.startswith("input."):
            continue
        env = decode_recorded(rec)
        ev = env.event
        assert isinstance(ev, InputLifecycleEvent)
        prev = inputs.get(ev.input_id)
        seq = None
        if needs_admission_sequence(prev, ev):
            counter += 1
            seq = counter
        new = evolve_input(prev, ev, env.timestamp, seq)
        if new is not None:
            inputs[ev.input_id] = new
        if isinstance(ev, InputStaged):
            runs.setdefault(ev.run_id, []).append(ev.input_id)
    return inputs


def read_input_states(store: EventStore, session_id: str) -> list[InputState]:
    """The durable witness set of a session: :func:`fold_input_states` of its whole log.

    Reads the log (a page at a time) without starting the session or taking its
    lease. :class:`SessionNotFound` when the log has no event (never used).
    """
    seen = False

    def records() -> Iterable[RecordedEvent]:
        nonlocal seen
        for rec in SessionJournal(store).records(session_id):
            seen = True
            yield rec

    inputs = fold_input_states(records())
    if not seen:
        raise SessionNotFound(session_id)
    return list(inputs.values())


def held_input_state(st: SessionState, input_id: uuid.UUID) -> InputState | Miss | None:
    """A live session's state of ``input_id``; :data:`MISS` when the session compacted
    it out (terminal: the log holds it, see :func:`logged_input_state`); None if unknown."""
    found = st.inputs.get(input_id)
    if found is not None:
        return found
    return MISS if st.knows(input_id) else None


def logged_input_state(
    store: EventStore, session_id: str, input_id: uuid.UUID
) -> InputState | None:
    """``input_id``'s state folded from the session's log (reads the whole log)."""
    return next((s for s in read_input_states(store, session_id) if s.input_id == input_id), None)


def logged_completion(
    store: EventStore, session_id: str, input_id: uuid.UUID
) -> CompletionOutcome | None:
    """The outcome waiters on ``input_id`` receive, from the session's log; None while it
    is not terminal (or unknown)."""
    st = logged_input_state(store, session_id, input_id)
    if st is None or not st.current_state.is_terminal:
        return None
    return st.terminal_completion or CompletedWithoutResult()


def merge_input_states(logged: list[InputState], held: list[InputState]) -> list[InputState]:
    """Every input of a session: the log's states, with the live session's (fresher, or
    not yet durable) states in their place; in acceptance order."""
    merged = {s.input_id: s for s in logged}
    merged.update((s.input_id, s) for s in held)
    return list(merged.values())


# ---------------------------------------------------------------- the queries
# What ``Session`` and ``AsyncSession`` ask (not public: the reports are the API).


class Miss(Enum):
    """The live state does not hold the answer: the durable witness gives it."""

    MISS = 0


MISS: Final = Miss.MISS


class TerminalQuery(ABC, Generic[T]):
    """One terminal-status question, as the live state and as the log answer it.

    ``live`` runs on the session's actor (a query: it reads the state, never
    changes it) and returns :data:`MISS` when the state does not hold the
    answer; ``durable`` answers from :func:`read_input_states`.
    """

    __slots__ = ()

    @abstractmethod
    def live(self, st: SessionState, attached: bool) -> T | Miss: ...

    @abstractmethod
    def durable(self, inputs: list[InputState]) -> T: ...


LIVE = TerminalWitnessSource.LIVE_RUNTIME
DURABLE = TerminalWitnessSource.DURABLE_STORE


def _check_key(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"expected a string, got {type(value).__name__}", path)
    return value


class InteractionQuery(TerminalQuery[InteractionTerminalReport | None]):
    """``interaction_status``: by input id or by idempotency key (exactly one)."""

    __slots__ = ("input_id", "key")

    def __init__(self, input_id: uuid.UUID | str | None, idempotency_key: str | None) -> None:
        if (input_id is None) == (idempotency_key is None):
            raise InvalidInput("give exactly one of input_id and idempotency_key", "input_id")
        self.input_id = None if input_id is None else parse_uuid(input_id, "input_id")
        self.key = (
            None if idempotency_key is None else _check_key(idempotency_key, "idempotency_key")
        )

    def live(self, st: SessionState, attached: bool) -> InteractionTerminalReport | Miss | None:
        if self.key is not None:
            iid = st.idempotency.get(self.key)
            if iid is None:
                return None  # the index keeps every key bound: none is bound to this one
        else:
            iid = self.input_id
        assert iid is not None
        found = st.inputs.get(iid)
        return MISS if found is None else interaction_report(found, LIVE)

    def durable(self, inputs: list[InputState]) -> InteractionTerminalReport | None:
        if self.key is not None:
            found = find_by_idempotency_key(inputs, self.key)
        else:
            found = next((st for st in inputs if st.input_id == self.input_id), None)
        return None if found is None else interaction_report(found, DURABLE)


class RunQuery(TerminalQuery[RunTerminalReport]):
    """``run_status``: the live state answers for its run in flight only.

    While a run is in flight every input naming it is staged or applied (not
    terminal), so any state holds all its witnesses; a finished run's witnesses
    are terminal inputs, which the log keeps for good.
    """

    __slots__ = ("run_id",)

    def __init__(self, run_id: uuid.UUID | str) -> None:
        self.run_id = parse_uuid(run_id, "run_id")

    def live(self, st: SessionState, attached: bool) -> RunTerminalReport | Miss:
        if st.run is None or st.run.run_id != self.run_id:
            return MISS
        return evaluate_run(self.run_id, st.inputs.values(), LIVE)

    def durable(self, inputs: list[InputState]) -> RunTerminalReport:
        return evaluate_run(self.run_id, inputs, DURABLE)


class KeyQuery(TerminalQuery[uuid.UUID | None]):
    """``input_id_for_idempotency_key``: the session's idempotency index, exact match."""

    __slots__ = ("key",)

    def __init__(self, key: str) -> None:
        self.key = _check_key(key, "key")

    def live(self, st: SessionState, attached: bool) -> uuid.UUID | None:
        return st.idempotency.get(self.key)

    def durable(self, inputs: list[InputState]) -> uuid.UUID | None:
        found = find_by_idempotency_key(inputs, self.key)
        return None if found is None else found.input_id
