"""The session actor: a thin shell around the pure decider.

Receive, decide, append, evolve, reply. Nothing is acknowledged before its
events are durable. Supervision is built in (pykka has none): a store failure
fails the command that met it, drops the in-memory state, and the next
message refolds from the store, retrying with exponential backoff while later
messages wait in the mailbox in order.

Accepts are pipelined. An accept that writes events is decided, its events
are evolved into the state at once (optimistically) and handed to the store
with :meth:`EventStore.submit_append`; the actor goes on to its next message
while the group commit is in flight, and the store's writer thread answers
the host from the commit callback, once the events are durable. Each such
append is chained ``after`` the previous one still in flight, so when one
fails none of those decided on top of it is written. The actor then *drains*:
it waits until none of its appends is in flight, drops the state (the next
use refolds it from the store, as after any failed append), answers the host
of the failed append with its error (or decides it again after a version
conflict, as the blocking path does), and handles the accepts queued behind
it again, one by one without pipelining, in their original order.

Everything else drains first and then runs as before, on a state that holds
only durable events: other commands, queries, dedup and reject answers (they
may point at an input still in flight), snapshots, stopping. So the only
state ever observed by anyone but the actor itself is durable, acks follow
durability, and per-session order is the mailbox order.

Runs. The actor starts a run (``run.started``) and hands the executor call to
the pool or the runtime's event loop; the call's result comes back as a
``RunDone`` message (``_messages``). Every call is fenced by its run id: whenever the log
ends a run the call has not finished (timeout, stop, destroy, recycle,
retire, cancel-run, lease loss, recovery), the call's cancel token is
signalled, its late result is ignored (logged as such), and the session
starts no new run until it returns or ``cancel_grace`` passed since the
signal (the at-least-once window, documented in ``_executor``). Checkpoints
(``request.checkpoint``) and interrupts reach the session as ordinary
messages and decisions, so deciding stays pure.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, assert_never

from meerkat_runtime.actors import _messages as msg
from meerkat_runtime.actors._completion import CompletionHandle
from meerkat_runtime.actors._executor import (
    Interrupt,
    RunRequest,
    RunResult,
    RunStatus,
    start_call,
)
from meerkat_runtime.actors._host import Mailbox
from meerkat_runtime.actors._messages import Call, Mailer
from meerkat_runtime.actors._services import Services
from meerkat_runtime.cluster import session_lease
from meerkat_runtime.errors import (
    ConcurrencyConflict,
    InvalidInput,
    LeaseUnavailable,
    MeerkatRuntimeError,
    OperationLifecycleError,
    SessionNotFound,
    SessionOwnedElsewhere,
    StoreError,
    UndecodableEvent,
)
from meerkat_runtime.events.completion import (
    CallbackBatchPending,
    CallbackPending,
    CompletedWithFinalizationFailure,
    CompletedWithoutResult,
    CompletionOutcome,
    TurnTerminalCauseKind,
    TurnTerminalOutcome,
)
from meerkat_runtime.events.ids import uuid7
from meerkat_runtime.events.input_state import InputState
from meerkat_runtime.events.interrupt import (
    UserInterruptObservation,
    UserInterruptOutcome,
    observe_user_interrupt,
    resolve_user_interrupt_public_result,
)
from meerkat_runtime.events.operations import (
    OperationRecord,
    operation_sequences,
    settled_operations,
)
from meerkat_runtime.events.policy import AdmissionPlan, DefaultPolicyTable, WakeMode
from meerkat_runtime.events.reports import RecoveryReport, RejectReason
from meerkat_runtime.events.run_primitive import RunPrimitive
from meerkat_runtime.events.runtime_event import (
    RunBoundaryReceipt,
    RunCheckpointed,
    RunError,
    RuntimeEventEnvelope,
)
from meerkat_runtime.events.runtime_state import RuntimeState
from meerkat_runtime.events.session import (
    SNAPSHOT_MEMO_MIN_INPUTS,
    Accept,
    AcceptDecision,
    ApplyBoundary,
    CancelRun,
    Command,
    CompleteRun,
    Create,
    Decision,
    DecisionContext,
    Destroy,
    FailRun,
    Recover,
    Recycle,
    Reset,
    Retire,
    SessionState,
    SnapshotMemo,
    StartRun,
    Stop,
    compact,
    completion_outcome,
    decide,
    evolve_settling,
    wants_run,
)
from meerkat_runtime.events.timefmt import utc_now
from meerkat_runtime.events.wire import check_json
from meerkat_runtime.store import AppendTicket, Fence
from meerkat_runtime.telemetry import (
    COLD_RECOVERY,
    SESSION_ID,
    SESSION_VERSION,
    SNAPSHOT_VERSION,
    log_ids,
)
from meerkat_runtime.terminal_status import MISS, Miss, logged_input_state

__all__ = ["AcceptOutcome", "SessionActor"]

log = logging.getLogger(__name__)

# Pipelined appends in flight per session before an accept waits for the oldest.
MAX_IN_FLIGHT = 128
# What a handler returns when the store's commit callback answers the host.
_LATER: Any = object()


class OutcomeKind:
    """``is_accepted`` / ``is_deduplicated`` / ``is_rejected`` of an accept's outcome
    (shared by the sync and the asyncio outcome)."""

    __slots__ = ()
    kind: str

    @property
    def is_accepted(self) -> bool:
        return self.kind == "accepted"

    @property
    def is_deduplicated(self) -> bool:
        return self.kind == "deduplicated"

    @property
    def is_rejected(self) -> bool:
        return self.kind == "rejected"


@dataclass(frozen=True, slots=True)
class AcceptOutcome(OutcomeKind):
    """What ``session.accept`` returns: ``kind`` is accepted, deduplicated or rejected."""

    kind: str
    input_id: uuid.UUID
    existing_id: uuid.UUID | None = None
    reason: RejectReason | None = None
    state: InputState | None = None
    completion: CompletionHandle | None = None
    policy: AdmissionPlan | None = field(default=None, repr=False)
    operation_error: OperationLifecycleError | None = None
    """An operation input whose event its operation's lifecycle refused (accepted all the
    same; the session's operations registry did not change)."""


class _InFlight:
    """A pipelined accept (or accept_many) whose append the store has not settled yet."""

    __slots__ = ("call", "error", "operations", "reply", "resolutions", "settled", "ticket")

    def __init__(
        self,
        call: Call,
        reply: AcceptOutcome | list[AcceptOutcome],  # a list for an accept_many
        resolutions: list[tuple[uuid.UUID, CompletionOutcome]],
    ) -> None:
        self.call = call
        self.reply = reply
        self.resolutions = resolutions
        self.ticket: AppendTicket | None = None
        self.settled = False
        self.error: BaseException | None = None
        self.operations: Sequence[OperationRecord] = ()  # operations it ends, once durable


def _needs_session(m: msg.Message) -> bool:
    """Host calls that need the session to exist: lifecycle commands and queries.

    Accepts and ``Create`` bring it into being; the runtime's own messages (runs,
    timers, retries) never reach a session without events."""
    if isinstance(m, msg.Execute):
        return not isinstance(m.command, Create)
    return isinstance(m, msg.Query | msg.GetCompletion | msg.CancelRun | msg.BoundaryReceipt)


class SessionActor:
    """One live session: an actor run by a session host (``_host``), never its own thread.

    Its mailbox is ordered and it handles one message at a time; the registry
    creates it on first use and passivates it when idle.
    """

    # Slots: thousands are live at once, and a per-instance dict would double their size.
    __slots__ = (
        "__weakref__",
        "_broken",
        "_call",
        "_cancel_at_load",
        "_cancelled_at_load",
        "_draining",
        "_inflight",
        "_pipelining",
        "_retirable",
        "_settled",
        "_snapshot_memo",
        "cold_report",
        "last_writer",
        "lease",
        "mailbox",
        "mailer",
        "owned_elsewhere",
        "retry_scheduled",
        "session_id",
        "snapshot_version",
        "state",
        "svc",
        "unreadable",
    )

    def __init__(self, session_id: str, services: Services, mailer: Mailer) -> None:
        self.mailbox = Mailbox()
        self.mailer = mailer  # the registry: how this actor messages sessions later
        self.session_id = session_id
        self.lease = session_lease(session_id)
        self.svc = services
        self.state: SessionState | None = None
        self.last_writer: str | None = None
        self.snapshot_version = 0
        # Encoded live inputs of the last snapshot, made only for a session holding
        # many (see events.session.state_to_snapshot).
        self._snapshot_memo: SnapshotMemo | None = None
        self.cold_report: RecoveryReport | None = None
        # A cancel-run that arrives when the log holds a run a gone process left in
        # flight: that run is cancelled by the load (see _startup_recovery).
        self._cancel_at_load: msg.CancelRun | None = None
        self._cancelled_at_load: uuid.UUID | None = None
        self.retry_scheduled = False
        # Another live node holds the session's lease: its work is that node's to do,
        # so no retry is scheduled here (only a host call tries to load it again).
        self.owned_elsewhere = False
        # The log holds an event that cannot be read: no retry is scheduled for it.
        self.unreadable: UndecodableEvent | None = None
        # Pipelined accepts, oldest first; the store's callbacks settle them.
        # (A list, not a deque: mostly empty, and an empty deque costs 600 bytes.)
        self._inflight: list[_InFlight] = []
        self._settled: threading.Condition | None = None  # made by the first drain that waits
        # Inputs that commits made terminal: compacted out of the state after the message
        # (its reply may still read them), see events.session.compact.
        self._retirable: list[uuid.UUID] = []
        self._draining = False  # a drain waits: settling appends must notify _settled
        self._broken = False  # an append in flight failed: drain before anything else
        self._pipelining = True  # off while a drain handles calls again
        self._call: Call | None = None

    # ------------------------------------------------------------ message loop

    def on_receive(self, message: Call) -> None:
        """Handle one message (on the actor's host thread)."""
        if isinstance(message.message, msg.Passivate):  # the registry forgot this actor
            try:
                self.on_stop()
            finally:
                message.reply.set_result(None)
            return
        try:
            self._answer(message)
        finally:
            try:
                self._after_message()
            except Exception:
                log.exception(
                    "session %s: after-message step failed",
                    self.session_id,
                    extra=log_ids(self.session_id),
                )
            if isinstance(message.message, msg.Retry):
                self.svc.retries.add(-1)  # after any retry this one scheduled
            self.mailer.message_done(self.session_id, self._busy())

    def _answer(self, call: Call) -> None:
        """Handle ``call`` and put its answer in its reply, unless a commit callback will."""
        try:
            result = self._handle(call)
        except BaseException as exc:
            if not call.reply.done():
                call.reply.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            if result is not _LATER and not call.reply.done():
                call.reply.set_result(result)

    def _handle(self, call: Call) -> Any:
        m = call.message
        if isinstance(m, msg.Settle):
            if self._broken:
                self._drain()
            return None
        if self._inflight and (
            not isinstance(m, msg.Accept)
            or self._broken
            or self.state is None
            or len(self._inflight) >= MAX_IN_FLIGHT
        ):
            self._drain()
        self._call = call
        if isinstance(m, msg.Retry):
            self.retry_scheduled = False  # before loading: a failed reload schedules another
        self._cancel_at_load = m if isinstance(m, msg.CancelRun) and self.state is None else None
        self._cancelled_at_load = None
        try:
            self._ensure_loaded()
        except SessionOwnedElsewhere:
            if isinstance(m, msg.RunDone):
                # The run's session moved to another node, which recovers it: stop
                # waiting for the run here (close() waits for every active run).
                self.svc.active_runs.discard(m.run_id)
                self.svc.calls.finish(self.session_id, m.run_id)
            raise
        finally:
            self._cancel_at_load = None
        if _needs_session(m):
            st = self.state
            assert st is not None
            if st.version == 0:  # no event: never used (the load read its version anyway)
                raise SessionNotFound(self.session_id)
        return self._dispatch(m)

    def _dispatch(self, m: msg.Message) -> Any:
        """The handler of ``m``, on a loaded state."""
        match m:
            case msg.Accept():
                return self._on_accept(m)
            case msg.AcceptMany():
                return self._on_accept_many(m)
            case msg.Execute(command):
                return self._on_command(command)
            case msg.Query(fn):
                st = self.state
                assert st is not None
                return fn(st, self.svc.executor is not None)
            case msg.GetCompletion(input_id):
                return self._on_completion(input_id)
            case msg.CancelRun(reason, run_id):
                return self._on_cancel_run(reason, run_id)
            case msg.UserInterrupt(reason):
                return self._on_user_interrupt(reason)
            case msg.BoundaryReceipt(run_id, sequence):
                return self._on_boundary_receipt(run_id, sequence)
            case msg.RecoverAll():
                return self._on_recover_all()
            case msg.RunDone():
                return self._on_run_done(m)
            case msg.RunTimeout(run_id):
                return self._on_run_timeout(run_id)
            case msg.Checkpoint():
                return self._on_checkpoint(m)
            case msg.LeaseLost():
                return self._on_lease_lost()
            case msg.Retry() | msg.Touch():
                return None  # loaded: _after_message starts what is due
            case msg.Settle() | msg.Passivate():
                raise AssertionError(f"{m!r} is handled before dispatch")
            case _:
                assert_never(m)

    def _busy(self) -> bool:
        st = self.state
        busy = st is not None and (st.run is not None or self.retry_scheduled)
        return busy or self.svc.calls.live(self.session_id)

    # ------------------------------------------------------------ loading and supervision

    def _ensure_loaded(self) -> None:
        if self.state is not None:
            return
        deadline = time.monotonic() + self.svc.recovery_timeout
        delay = self.svc.backoff_initial
        while True:
            try:
                self._acquire_lease()
                self._load()
                self.owned_elsewhere = False
                return
            except SessionOwnedElsewhere:
                raise  # another live node owns it: the host routes there
            except StoreError as exc:
                if self.svc.closing.is_set() or time.monotonic() + delay > deadline:
                    raise StoreError(
                        f"session {self.session_id!r} could not be loaded: {exc}"
                    ) from exc
                log.warning(
                    "session %s: load failed (%s); retrying in %.2fs",
                    self.session_id,
                    exc,
                    delay,
                    extra=log_ids(self.session_id),
                )
                time.sleep(delay)
                delay = min(delay * 2, self.svc.backoff_max)

    def _load(self) -> None:
        tel = self.svc.telemetry
        if tel is None or not tel.tracing:
            self._load_state()
            return
        with tel.span("meerkat.session.load", {SESSION_ID: self.session_id}) as span:
            earlier = self.cold_report
            self._load_state()
            st = self.state
            span.set_attributes(
                {
                    SESSION_VERSION: st.version if st is not None else 0,
                    SNAPSHOT_VERSION: self.snapshot_version,
                    COLD_RECOVERY: self.cold_report is not earlier,
                }
            )

    def _load_state(self) -> None:
        try:
            recovered = self.svc.journal.recover(self.session_id)
        except UndecodableEvent as exc:
            # Only this session is affected: every call on it fails with this error (no
            # automatic retry: the event must be repaired); a host call loads it again.
            self.unreadable = exc
            raise
        self.unreadable = None
        self.snapshot_version = recovered.snapshot_version
        self.state = recovered.state
        self.last_writer = recovered.last_writer
        self._startup_recovery()

    def _startup_recovery(self) -> None:
        st = self.state
        assert st is not None
        if st.phase is RuntimeState.DESTROYED:
            return
        if self.svc.journal.is_foreign(self.last_writer) and (
            st.run is not None or st.non_terminal_ids()
        ):
            cancel, self._cancel_at_load = self._cancel_at_load, None
            if st.run is not None and cancel is not None and cancel.run_id in (None, st.run.run_id):
                # An operator cancels the run a gone process left in flight: its staged
                # inputs are abandoned (cancelled) instead of re-queued by the recovery,
                # in the same append; the cancel-run call then reports it cancelled.
                run_id = st.run.run_id
                _, decision = self._commit_all((CancelRun(run_id=run_id), Recover(cold=True)))
                self._cancelled_at_load = run_id
                log.info(
                    "session %s: run %s (left in flight by a gone process) cancelled: %s",
                    self.session_id,
                    run_id,
                    cancel.reason,
                    extra=log_ids(self.session_id, run_id=run_id),
                )
            else:
                decision = self._commit(Recover(cold=True))
            self.cold_report = decision.reply
            return
        if st.run is not None and st.run.run_id not in self.svc.active_runs:
            # Our own run, but its worker is gone (e.g. the actor restarted mid-run).
            error = RunError(
                kind=TurnTerminalCauseKind.RUNTIME_APPLY_FAILURE,
                outcome=TurnTerminalOutcome.FAILED,
                detail="interrupted: the run's worker is gone",
            )
            self._commit(FailRun(run_id=st.run.run_id, error=error))
        self._fence_calls("the log ended the run")

    def _invalidate(self) -> None:
        """Forget the in-memory state: the next message refolds it from the store."""
        self.state = None

    # ------------------------------------------------------------ leases (shared stores)

    def _acquire_lease(self) -> None:
        membership = self.svc.membership
        if membership is None or (self.state is not None and membership.holds(self.lease)):
            return
        try:
            membership.acquire(self.lease, self)
        except LeaseUnavailable as exc:
            self.owned_elsewhere = True
            raise SessionOwnedElsewhere(self.session_id, exc.owner or "unknown") from None

    def _lease_lost(self, exc: LeaseUnavailable) -> SessionOwnedElsewhere:
        self.svc.calls.cancel(self.session_id, "lease lost")
        if self.svc.membership is not None:
            self.svc.membership.forget(self.lease)
        self._invalidate()
        self.owned_elsewhere = exc.owner is not None  # else expired: free to re-acquire
        self._lease_gone()
        return SessionOwnedElsewhere(self.session_id, exc.owner or "nobody (lease expired)")

    def _on_lease_lost(self) -> None:
        """The heartbeat found our lease taken: drop the state; the next call re-acquires or fails."""
        self.svc.calls.cancel(self.session_id, "lease lost")
        self._invalidate()
        self.owned_elsewhere = True
        self._lease_gone()

    def _lease_gone(self) -> None:
        """This process no longer owns the session (fenced append, or lost at a heartbeat).

        The new owner recovers the session and re-runs the inputs of a run that was
        in flight here: that is the at-least-once window (``meerkat_runtime.cluster``).
        Hook for run control: cancel the executor call of a run in flight here, so
        its side effects stop as early as possible (its outcome can no longer be
        recorded: every append of this process to the session is fenced off).
        """
        if self.svc.telemetry is not None:
            self.svc.telemetry.session_lost(self.session_id)

    def on_stop(self) -> None:
        try:
            self._drain()
        except Exception:
            log.exception(
                "session %s: appends in flight at stop not settled",
                self.session_id,
                extra=log_ids(self.session_id),
            )
        else:
            self._snapshot_at_stop()
        if self.svc.membership is not None:
            self.svc.membership.release(self.lease, self)

    def _snapshot_at_stop(self) -> None:
        """Snapshot the head when the actor stops (passivation, runtime close) and the head
        moved since its last snapshot, so the next load reads it and no tail.

        Only a state that holds nothing but durable events (``_drain`` settled them all
        and dropped the state after a failure); taken before the lease is released, so no
        other owner has written after it. The snapshot keeps the log's last writer:
        whether a later load is a cold recovery does not change. A failure is logged by
        the journal (a snapshot is only a cache) and the stop goes on.

        Not on a store in the process's memory: nothing there outlives the process, and
        a snapshot per passivated session would only trade its refold from memory for
        several KiB of memory each (``scale_bench``: 8 KiB per passivated session).
        """
        st = self.state
        journal = self.svc.journal
        store = journal.store
        if st is None or store.read_only or store.in_memory or store.snapshot_interval <= 0:
            return
        if st.version <= self.snapshot_version:
            return
        self._compact_retirable(st)
        self.snapshot_version = st.version
        journal.save_snapshot(st, writer=self.last_writer, memo=self._memo_for(st))

    # ------------------------------------------------------------ deciding and persisting

    def _context(self) -> DecisionContext:
        return DecisionContext(
            now=utc_now(),
            new_id=uuid7,
            attached=self.svc.executor is not None,
            max_attempts=self.svc.retry.max_attempts,
            policy=self.svc.policy,
        )

    def _commit(self, command: Command, reason: str | None = None) -> Decision:
        """Decide, append atomically, evolve, resolve completions. Raises on refusal.

        Blocks until the append is durable (after any pipelined appends in flight).
        A call whose run the decision ended is told to cancel (``reason``, else one
        named after the command).
        """
        (decision,) = self._commit_all((command,), reason)
        return decision

    def _commit_all(self, commands: Sequence[Command], reason: str | None = None) -> list[Decision]:
        """:meth:`_commit` for several commands: one atomic append of all their events.

        Each command is decided on the state the ones before it left. If another
        writer appended first (a version conflict), the log is refolded and every
        command decided once more. A refusal or a failed append leaves nothing
        written, and a state that holds undurable events is dropped (refolded at
        next use).
        """
        if self._inflight:
            self._drain()
            self._ensure_loaded()
        for attempt in (1, 2):
            st = self.state
            assert st is not None
            expected = st.version
            events: list[RuntimeEventEnvelope] = []
            try:
                decisions, events, settled = self._decide_all(st, commands)
                if events:
                    self._append(expected, events)
                break
            except ConcurrencyConflict:
                # Another writer got there first: refold and decide once more.
                self._invalidate()
                if attempt == 2:
                    raise
                self._load()
            except LeaseUnavailable as exc:
                raise self._lease_lost(exc) from None  # which drops the state
            except BaseException:
                if events:
                    self._invalidate()  # the state holds events that are nowhere
                raise
        if events and st is not None:
            self.last_writer = self.svc.store.incarnation
            if self.svc.telemetry is not None:
                self.svc.telemetry.committed(events)
            for iid, outcome in settled:
                self.svc.completions.resolve(self.session_id, iid, outcome)
                self._retirable.append(iid)
            self._settle_operations(st, events)
            self._maybe_snapshot(st)
            if reason is None and len(commands) == 1:
                reason = _END_REASONS.get(type(commands[0]))
            self._fence_calls(reason or "the log ended the run")
        return decisions

    def _decide_all(
        self, st: SessionState, commands: Sequence[Command]
    ) -> tuple[
        list[Decision], list[RuntimeEventEnvelope], list[tuple[uuid.UUID, CompletionOutcome]]
    ]:
        """Decide each command on the state the ones before it left, evolving ``st`` as it
        goes: the decisions, all their events, and the completions they settle. If one
        raises, a state that already holds events is dropped (refolded at next use)."""
        ctx = self._context()
        decisions: list[Decision] = []
        events: list[RuntimeEventEnvelope] = []
        settled: list[tuple[uuid.UUID, CompletionOutcome]] = []
        try:
            for command in commands:
                decision = decide(st, command, ctx)
                settled += evolve_settling(st, decision.events)
                events += decision.events
                decisions.append(decision)
        except BaseException:
            if events:
                self._invalidate()  # the state holds events that are nowhere
            raise
        return decisions, events, settled

    def _settle_operations(self, st: SessionState, events: Sequence[RuntimeEventEnvelope]) -> None:
        """Answer the ``wait_operations`` calls on operations that durable ``events`` ended."""
        seqs = operation_sequences(events)
        if seqs:
            self.svc.operations.settle(self.session_id, settled_operations(st.operations, seqs))

    def _fence_calls(self, reason: str) -> None:
        """Signal every live call of this session whose run the log no longer has."""
        st = self.state
        if st is not None and self.svc.calls.live(self.session_id):
            self.svc.calls.cancel(self.session_id, reason, keep=st.run.run_id if st.run else None)

    def _append(self, expected: int, events: list[RuntimeEventEnvelope]) -> None:
        fence = self._fence()
        self.svc.journal.append(self.session_id, expected, events, fence=fence)

    def _snapshot_when_settled(self) -> None:
        """Forget settled pipelined appends; snapshot the state once it is all durable.

        A snapshot of a state holding events still in flight could outlive them,
        so while appends are in flight it waits; once it is overdue by a whole
        interval (a session never idle), it drains for it.
        """
        inflight = self._inflight
        done = 0
        while done < len(inflight) and inflight[done].settled and inflight[done].error is None:
            done += 1
        del inflight[:done]
        st = self.state
        if st is None or self._broken:
            self._retirable.clear()  # a refold compacts the whole state
            return
        self._compact_retirable(st)
        journal = self.svc.journal
        if not journal.snapshot_due(st, self.snapshot_version, slack=2 if inflight else 1):
            return
        if inflight:
            self._drain()
            st = self.state
            if st is None:
                return
        self._maybe_snapshot(st)

    def _compact_retirable(self, st: SessionState) -> None:
        """Take the inputs that commits made terminal out of ``st`` (see ``_retirable``)."""
        if self._retirable:
            compact(st, self._retirable)
            self._retirable.clear()

    def _maybe_snapshot(self, st: SessionState) -> None:
        """Snapshot ``st`` when the journal says one is due (a cache: failures are logged)."""
        journal = self.svc.journal
        if journal.snapshot_due(st, self.snapshot_version):
            self.snapshot_version = st.version
            journal.save_snapshot(st, memo=self._memo_for(st))

    def _memo_for(self, st: SessionState) -> SnapshotMemo | None:
        """The snapshot memo for ``st``: kept only while the session holds many inputs."""
        memo = self._snapshot_memo
        if len(st.inputs) >= SNAPSHOT_MEMO_MIN_INPUTS:
            if memo is None:
                memo = self._snapshot_memo = SnapshotMemo()
            return memo
        self._snapshot_memo = None
        return None

    # ------------------------------------------------------------ host calls

    def _on_accept(self, m: msg.Accept) -> Any:
        inp = m.input
        call = self._call
        if self._pipelining and call is not None and call.message is m:
            st = self.state
            assert st is not None
            expected = st.version
            decision = decide(st, Accept(inp, m.wake), self._context())
            if decision.events:
                return self._pipeline(call, st, expected, decision, self._verified(m.validated))
            if self._inflight:
                # A dedup or reject may point at an input still in flight: answer
                # it on durable state only.
                self._drain()
                self._ensure_loaded()
        outcome = self._accept_reply(self._commit(Accept(inp, m.wake)))
        self._interrupt(outcome)
        return outcome

    def _on_accept_many(self, m: msg.AcceptMany) -> Any:
        """Accept ``m.inputs`` in order with one atomic append; outcomes in the same order.

        Each input is decided on the state the ones before it left (so a repeated
        idempotency key within the batch deduplicates); all are durable, or none
        is and the error is raised. Pipelined like a single accept: the append joins
        the host's group commit and its commit callback answers the caller, so the
        batches of many sessions share one commit.
        """
        call = self._call
        if self._pipelining and call is not None and call.message is m:
            fence = self._fence()
            st = self.state
            assert st is not None
            expected = st.version
            decisions, events, resolutions = self._decide_all(st, [Accept(i) for i in m.inputs])
            if events:
                replies = [self._accept_reply(d) for d in decisions]
                return self._submit_pipelined(
                    call,
                    st,
                    expected,
                    events,
                    resolutions,
                    replies,
                    fence,
                    self._verified(m.validated),
                )
            if self._inflight:
                # Only deduplications and rejections: answer them on durable state.
                self._drain()
                self._ensure_loaded()
        decisions = self._commit_all([Accept(inp) for inp in m.inputs])
        replies = [self._accept_reply(d) for d in decisions]
        for reply in replies:
            self._interrupt(reply)
        return replies

    def _interrupt(self, outcome: AcceptOutcome) -> None:
        """A durable input admitted with ``interrupt_yielding``: poke the live run.

        Steer-lane ones may join the run at its next checkpoint; queue-lane ones
        (peer messages and requests) only ask it to yield (see :class:`Interrupt`).
        """
        plan = outcome.policy
        if (
            outcome.kind != "accepted"
            or plan is None
            or plan.decision.wake_mode is not WakeMode.INTERRUPT_YIELDING
        ):
            return
        st = outcome.state
        if st is None or st.persisted_input is None:
            return
        interrupt = Interrupt(outcome.input_id, st.persisted_input, plan.lane)
        self.svc.calls.deliver(self.session_id, interrupt)

    def _pipeline(
        self, call: Call, st: SessionState, expected: int, decision: Decision, verified: bool
    ) -> Any:
        """Evolve now, submit the append, and let its commit callback answer the host."""
        fence = self._fence()
        resolutions = evolve_settling(st, decision.events)
        reply = self._accept_reply(decision)
        return self._submit_pipelined(
            call, st, expected, decision.events, resolutions, reply, fence, verified
        )

    def _verified(self, validated: bool) -> bool:
        """Whether an accept's events need not be decoded again before they are written.

        The store's codec decodes every payload it is about to write (about a fifth
        of an accept's CPU; BENCHMARKS.md section 6). Events decided on an accept
        hold the input, the policy's plan, and ids, times and versions the runtime
        makes. When the host API decoded the input from its wire form just before
        (``validated``) and the plan comes from the built-in table, every part of
        them is a decoded or runtime-made value, so they read back
        (``tests/events/test_accept_events_read_back.py`` checks that over random
        inputs). Inputs handed to the actor some other way, and the plans of a
        custom policy (user code), are still decoded before the write.
        """
        return validated and type(self.svc.policy) is DefaultPolicyTable

    def _fence(self) -> Fence | None:
        """The lease fence an append carries (None without leases); when this node no
        longer holds the lease, :meth:`_lease_lost` (the state dropped) and its error."""
        membership = self.svc.membership
        if membership is None:
            return None
        fence = membership.fence(self.lease)
        if fence is None:
            raise self._lease_lost(LeaseUnavailable(self.lease, None))
        return fence

    def _submit_pipelined(
        self,
        call: Call,
        st: SessionState,
        expected: int,
        events: Sequence[RuntimeEventEnvelope],
        resolutions: list[tuple[uuid.UUID, CompletionOutcome]],
        reply: AcceptOutcome | list[AcceptOutcome],
        fence: Fence | None,
        verified: bool = False,
    ) -> Any:
        """Submit the append of ``events`` (already evolved into ``st``); the commit callback
        answers ``call`` with ``reply``."""
        svc = self.svc
        self._retirable += (iid for iid, _ in resolutions)
        entry = _InFlight(call, reply, resolutions)
        seqs = operation_sequences(events)
        if seqs:
            entry.operations = settled_operations(st.operations, seqs)
        inflight = self._inflight
        after = inflight[-1].ticket if inflight else None
        inflight.append(entry)
        try:
            entry.ticket = svc.journal.submit(
                self.session_id,
                expected,
                events,
                fence=fence,
                after=after,
                on_done=lambda error: self._append_done(entry, error),
                verified=verified,
            )
        except BaseException:
            inflight.pop()  # never queued: the state holds events that are nowhere
            self._invalidate()
            raise
        self.last_writer = svc.store.incarnation
        return _LATER

    def _append_done(self, entry: _InFlight, error: BaseException | None) -> None:
        """The store settled a pipelined append (on its committing thread)."""
        entry.error = error
        entry.settled = True  # after error: whoever sees it settled sees its error
        settled = self._settled
        if self._draining and settled is not None:  # read after settling: see _drain
            with settled:
                settled.notify_all()
        if error is not None:
            # The actor answers the host once it has drained; wake it if idle.
            self._broken = True
            self.mailer.tell_if_live(self.session_id, msg.Settle())
            return
        svc = self.svc
        for iid, outcome in entry.resolutions:
            svc.completions.resolve(self.session_id, iid, outcome)
        if entry.operations:
            svc.operations.settle(self.session_id, entry.operations)
        for accepted in entry.reply if isinstance(entry.reply, list) else (entry.reply,):
            self._interrupt(accepted)
        reply = entry.call.reply
        if not reply.done():
            reply.set_result(entry.reply)

    def _drain(self) -> None:
        """Wait until no pipelined append is in flight; after a failure, recover from it.

        The state is dropped (the next use refolds it), the failed append's host
        gets its error (after a version conflict its accept is decided again,
        as :meth:`_commit` does), and the accepts chained behind it, which the
        store did not attempt, are handled again in order, without pipelining.
        """
        inflight = self._inflight
        if inflight:
            # Appends this host thread still holds would never settle while it waits.
            self.svc.store.flush_batch()
            # The flag is set before checking and read by the callbacks after
            # settling, so a settle that does not notify has been seen here.
            if self._settled is None:
                self._settled = threading.Condition(threading.Lock())
            settled = self._settled
            with settled:
                self._draining = True
                try:
                    while not all(e.settled for e in inflight):
                        settled.wait(0.5)
                finally:
                    self._draining = False
        entries = list(inflight)
        inflight.clear()
        self._broken = False
        failed = [e for e in entries if e.error is not None]
        if not failed:
            return
        self._invalidate()
        head, error = failed[0], failed[0].error
        assert error is not None
        again = [e.call for e in failed[1:]]
        if isinstance(error, ConcurrencyConflict):
            again.insert(0, head.call)
        elif not head.call.reply.done():
            if isinstance(error, LeaseUnavailable):
                error = self._lease_lost(error)
            head.call.reply.set_exception(error)
        self._pipelining = False
        try:
            for call in again:
                self._answer(call)
        finally:
            self._pipelining = True

    def _accept_reply(self, decision: Decision) -> AcceptOutcome:
        d: AcceptDecision = decision.reply
        st = self.state
        assert st is not None
        if d.kind == "rejected":
            return AcceptOutcome(kind="rejected", input_id=d.input_id, reason=d.reason)
        target = d.input_id if d.kind == "accepted" else d.existing_id
        assert target is not None
        if target in st.inputs:
            handle = self.svc.completions.handle(
                self.session_id, target, completion_outcome(st, target)
            )
        else:  # a duplicate of an input that is terminal and compacted out
            handle = self._logged_completion(target)
        if d.kind == "deduplicated":
            return AcceptOutcome(
                kind="deduplicated",
                input_id=d.input_id,
                existing_id=d.existing_id,
                completion=handle,
            )
        if d.operation_error is not None:
            log.warning(
                "session %s: operation input %s accepted, its event refused: %s",
                self.session_id,
                d.input_id,
                d.operation_error,
                extra=log_ids(self.session_id),
            )
        return AcceptOutcome(
            kind="accepted",
            input_id=d.input_id,
            state=st.inputs.get(d.input_id),
            completion=handle,
            policy=d.plan,
            operation_error=d.operation_error,
        )

    def _on_command(self, command: Command) -> Any:
        if isinstance(command, Recover):
            return self._recover(command)
        return self._commit(command).reply

    def _recover(self, command: Recover) -> RecoveryReport:
        report: RecoveryReport = self._commit(command).reply
        # Only now: a refused recover (say, while running) leaves the cold report to
        # the next recover that goes through.
        cold, self.cold_report = self.cold_report, None
        if cold is None:
            return report
        return RecoveryReport(
            inputs_recovered=max(cold.inputs_recovered, report.inputs_recovered),
            inputs_abandoned=cold.inputs_abandoned + report.inputs_abandoned,
            inputs_requeued=cold.inputs_requeued + report.inputs_requeued,
            details=cold.details + report.details,
        )

    def _on_recover_all(self) -> RecoveryReport | None:
        """``rt.recover()``: the cold recovery done at load, else an in-process one."""
        st = self.state
        assert st is not None
        if st.phase is RuntimeState.DESTROYED:
            return None
        if self.cold_report is not None:
            report, self.cold_report = self.cold_report, None
            return report
        if st.phase is RuntimeState.RUNNING:
            return RecoveryReport(
                inputs_recovered=len(st.non_terminal_ids()),
                inputs_abandoned=0,
                inputs_requeued=0,
                details=("a run is in flight in this process; left to finish",),
            )
        in_process: RecoveryReport = self._commit(Recover()).reply
        return in_process

    def _on_completion(self, input_id: uuid.UUID) -> CompletionHandle | Miss | None:
        st = self.state
        assert st is not None
        if input_id not in st.inputs:
            # Terminal and compacted out: the caller reads its outcome from the log.
            return MISS if st.knows(input_id) else None
        outcome: CompletionOutcome | None = completion_outcome(st, input_id)
        return self.svc.completions.handle(self.session_id, input_id, outcome)

    def _logged_completion(self, input_id: uuid.UUID) -> CompletionHandle:
        """A handle for a terminal input compacted out of the state: its outcome is read
        from the log on the pool, so the host thread (shared by many sessions) does
        not wait for a read that grows with the session's history."""
        svc, sid = self.svc, self.session_id
        completions, store = svc.completions, svc.store
        handle = completions.handle(sid, input_id, None)
        delay = [0.05]

        def read() -> None:
            if handle.done():  # resolved meanwhile, or failed by the registry's close
                return
            try:
                logged = logged_input_state(store, sid, input_id)
            except Exception as exc:
                # The input is finished: its outcome is in the log. Try again later
                # (a database blip) until it is read or the runtime closes.
                log.warning(
                    "session %s: reading the outcome of input %s failed (%s); retrying in %.2fs",
                    sid,
                    input_id,
                    exc,
                    delay[0],
                    extra=log_ids(sid),
                )
                svc.scheduler.call_later(delay[0], submit)
                delay[0] = min(delay[0] * 2, 2.0)
                return
            if logged is not None and logged.current_state.is_terminal:
                done = logged.terminal_completion or CompletedWithoutResult()
                completions.resolve(sid, input_id, done)

        def submit() -> None:
            try:
                svc.pool.submit(read)
            except RuntimeError:  # the pool is shut down (closing): read here
                read()

        submit()
        return handle

    # ------------------------------------------------------------ runs

    def _after_message(self) -> None:
        """Snapshot when due; start a run when the session wants one and an executor is bound."""
        self._snapshot_when_settled()
        st = self.state
        if self.svc.executor is None or self.svc.closing.is_set() or self.retry_scheduled:
            return
        if st is None:
            # A store failure dropped the state. No host call may come to reload it,
            # and the log may hold work to go on with (queued input, a run to close).
            self._schedule_retry()
            return
        if not wants_run(st) or st.run is not None:
            return
        wait = self.svc.calls.wait_before_run(self.session_id, self.svc.cancel_grace)
        if wait is not None:
            # A call of an ended run is still executing: no input runs twice at once.
            # Its run_done (or the grace period's end) brings us back here.
            if wait != math.inf:
                mailer, sid = self.mailer, self.session_id
                self.svc.scheduler.call_later(wait, lambda: mailer.tell(sid, msg.Touch()))
            return
        if self._inflight:
            # Start runs from durable state only: let the accepts in flight settle.
            self._drain()
            st = self.state
            if st is None:
                self._schedule_retry()
                return
        try:
            while wants_run(st) and st.run is None:
                run_id = uuid7()
                decision = self._commit(StartRun(run_id=run_id))
                self._submit(run_id, decision.reply)
                st = self.state
                if st is None:
                    return
        except MeerkatRuntimeError as exc:
            log.warning(
                "session %s: could not start a run: %s",
                self.session_id,
                exc,
                extra=log_ids(self.session_id),
            )
            self._schedule_retry()

    def _submit(self, run_id: uuid.UUID, primitive: RunPrimitive) -> None:
        svc, mailer = self.svc, self.mailer
        sid = self.session_id
        request = RunRequest(
            session_id=sid,
            run_id=run_id,
            primitive=primitive,
            contributing_input_ids=primitive.primitive_input_ids(),
            control=_SessionControl(mailer, sid),
        )
        executor = svc.executor
        assert executor is not None
        svc.active_runs.add(run_id)
        svc.calls.add(request)

        def done(result: RunResult) -> None:
            mailer.tell(sid, msg.RunDone(run_id, result))

        tel = svc.telemetry
        try:
            if tel is None:
                start_call(executor, request, svc.pool, svc.runner, done)
            else:
                # The call starts inside the run's span: the executor's spans are its children.
                with tel.run_started(sid, run_id, request.contributing_input_ids):
                    start_call(executor, request, svc.pool, svc.runner, done)
        except RuntimeError as exc:  # the pool or loop is shut down: closing
            svc.calls.finish(sid, run_id)
            svc.active_runs.discard(run_id)
            if tel is not None:
                tel.run_not_started(run_id)
            log.warning(
                "session %s: run %s not started: %s",
                sid,
                run_id,
                exc,
                extra=log_ids(sid, run_id=run_id),
            )
            return
        if svc.run_timeout is not None:
            svc.scheduler.call_later(
                svc.run_timeout, lambda: mailer.tell(sid, msg.RunTimeout(run_id))
            )

    def _on_run_done(self, m: msg.RunDone) -> None:
        run_id, result, redeliveries = m.run_id, m.result, m.redeliveries
        self.svc.active_runs.discard(run_id)
        self.svc.calls.finish(self.session_id, run_id)
        st = self.state
        assert st is not None
        if st.run is None or st.run.run_id != run_id:
            # Fenced: the log ended this run (timeout, stop, cancel, ...) before it returned.
            log.warning(
                "session %s: late result of run %s ignored (%s): the run had already ended",
                self.session_id,
                run_id,
                result.status.value if isinstance(result.status, RunStatus) else result.status,
                extra=log_ids(self.session_id, run_id=run_id),
            )
            return
        command = _command_for(run_id, result)
        try:
            self._commit(command)
        except StoreError:
            # The run ended but its end is not recorded: keep the result and deliver
            # it again after a backoff. The run stays ours meanwhile, so a reload
            # does not close it as interrupted (and re-run work that is done).
            self.svc.active_runs.add(run_id)
            svc, sid = self.svc, self.session_id
            delay = min(svc.backoff_initial * 2**redeliveries, svc.backoff_max)
            again = msg.RunDone(run_id, result, redeliveries + 1)
            mailer = self.mailer
            svc.scheduler.call_later(delay, lambda: mailer.tell(sid, again))
            raise
        if not isinstance(command, CompleteRun):
            self._schedule_retry()

    def _on_run_timeout(self, run_id: uuid.UUID) -> None:
        st = self.state
        assert st is not None
        if st.run is None or st.run.run_id != run_id:
            return
        self.svc.active_runs.discard(run_id)
        detail = f"the executor did not finish within {self.svc.run_timeout} s"
        error = RunError(
            kind=TurnTerminalCauseKind.TIME_BUDGET_EXCEEDED,
            outcome=TurnTerminalOutcome.TIME_BUDGET_EXCEEDED,
            detail=detail,
            retryable=True,
        )
        self._commit(FailRun(run_id=run_id, error=error), reason="timeout")
        self._schedule_retry()

    def _on_cancel_run(self, reason: str, run_id: uuid.UUID | None) -> bool:
        """``session.cancel_run``: end the current run (only ``run_id`` when given)."""
        st = self.state
        assert st is not None
        cancelled, self._cancelled_at_load = self._cancelled_at_load, None
        if cancelled is not None:
            return True  # the load cancelled the run this call named (_startup_recovery)
        run = st.run
        if run is None or (run_id is not None and run.run_id != run_id):
            return False
        self.svc.active_runs.discard(run.run_id)
        self._commit(CancelRun(run_id=run.run_id), reason=reason)
        log.info(
            "session %s: run %s cancelled: %s",
            self.session_id,
            run.run_id,
            reason,
            extra=log_ids(self.session_id, run_id=run.run_id),
        )
        self._schedule_retry()
        return True

    def _on_user_interrupt(self, reason: str) -> UserInterruptOutcome:
        """``session.interrupt``: observe and cancel in one message, so no run slips between."""
        st = self.state
        assert st is not None
        run = st.run
        if st.version == 0:  # never used: no record, seen as Rust sees a missing session
            observation = UserInterruptObservation.DESTROYED
        else:
            observed = st.observed_state(self.svc.executor is not None)
            observation = observe_user_interrupt(observed, run is not None)
        if run is not None:
            self._on_cancel_run(reason, run.run_id)
        result = resolve_user_interrupt_public_result(observation, target_present=st.version > 0)
        return UserInterruptOutcome(result, observation, run.run_id if run is not None else None)

    def _on_checkpoint(self, m: msg.Checkpoint) -> RunBoundaryReceipt | None:
        run_id, absorbed, digest, count = (
            m.run_id,
            m.absorbed,
            m.conversation_digest,
            m.message_count,
        )
        st = self.state
        assert st is not None
        if st.run is None or st.run.run_id != run_id:
            return None  # fenced: the run already ended
        command = ApplyBoundary(
            run_id=run_id, absorbed=absorbed, conversation_digest=digest, message_count=count
        )
        receipt: RunBoundaryReceipt | None = self._commit(command).reply
        return receipt

    def _on_boundary_receipt(self, run_id: uuid.UUID, sequence: int) -> RunBoundaryReceipt | None:
        if self._inflight:
            self._drain()
        for env in self._read_log():
            ev = env.event
            if (
                isinstance(ev, RunCheckpointed)
                and ev.run_id == run_id
                and ev.receipt.sequence == sequence
            ):
                return ev.receipt
        return None

    def _read_log(self) -> Iterator[RuntimeEventEnvelope]:
        return self.svc.journal.envelopes(self.session_id)

    def _schedule_retry(self) -> None:
        """Send ourselves a ``retry`` after the backoff; also when the state was dropped."""
        st = self.state
        if self.retry_scheduled or (st is not None and not (st.queue or st.steer_queue)):
            return
        if st is None and self.owned_elsewhere:
            return  # the owner runs the queued work; retrying here would spin on its lease
        if st is None and self.unreadable is not None:
            return  # a retry would meet the same unreadable event
        attempts = 0
        if st is not None:
            for lane in (st.queue, st.steer_queue):
                for iid in lane:
                    attempts = max(attempts, st.inputs[iid].attempt_count)
        delay = self.svc.retry.delay(attempts)
        self.retry_scheduled = True
        self.svc.retries.add(1)
        sid = self.session_id
        mailer = self.mailer
        self.svc.scheduler.call_later(delay, lambda: mailer.tell(sid, msg.Retry()))


_END_REASONS: dict[type, str] = {
    Stop: "stopped",
    Destroy: "destroyed",
    Recycle: "recycled",
    Retire: "retired",
    Reset: "reset",
    Recover: "recovered",
    CancelRun: "cancelled",
}


def _command_for(run_id: uuid.UUID, result: RunResult) -> Command:
    """The decision a run's result asks for (see the result list in ``_executor``)."""
    status = result.status
    if status is RunStatus.FAILED:
        # The executor's text goes to ``detail``; ``kind`` classifies the cause.
        error = RunError(
            kind=TurnTerminalCauseKind(result.error_kind or "runtime_apply_failure"),
            terminal=result.terminal,
            outcome=TurnTerminalOutcome.FAILED,
            detail=result.error,
            retryable=not result.terminal,
        )
        return FailRun(run_id=run_id, error=error)
    if status is RunStatus.CANCELLED:
        return CancelRun(run_id=run_id, rollback=True)
    try:
        output = check_json(result.output, "output")
        args = check_json(result.args, "args")
        calls = tuple(check_json(c, "pending_tool_calls") for c in result.pending_tool_calls)
    except InvalidInput as exc:
        error = RunError(
            kind=TurnTerminalCauseKind.RUNTIME_APPLY_FAILURE,
            outcome=TurnTerminalOutcome.FAILED,
            detail=f"invalid output: {exc}",
        )
        return FailRun(run_id=run_id, error=error)
    outcome: CompletionOutcome | None = None
    if status is RunStatus.COMPLETED_WITHOUT_RESULT:
        outcome = CompletedWithoutResult()
    elif status is RunStatus.CALLBACK_PENDING:
        assert result.tool_use_id is not None and result.tool_name is not None
        outcome = CallbackPending(
            tool_use_id=result.tool_use_id, tool_name=result.tool_name, args=args
        )
    elif status is RunStatus.CALLBACK_BATCH_PENDING:
        outcome = CallbackBatchPending(pending_tool_calls=calls)
    elif status is RunStatus.COMPLETED_WITH_FINALIZATION_FAILURE:
        failure = RunError(
            kind=TurnTerminalCauseKind(result.error_kind or "runtime_apply_failure"),
            terminal=True,
            outcome=TurnTerminalOutcome.COMPLETED,
            detail=result.error or "finalization failed",
        )
        outcome = CompletedWithFinalizationFailure(error=failure)
    return CompleteRun(run_id=run_id, output=output, outcome=outcome)


class _SessionControl:
    """A request's way back to its session: checkpoints as actor messages."""

    __slots__ = ("mailer", "sid")

    def __init__(self, mailer: Mailer, sid: str) -> None:
        self.mailer = mailer
        self.sid = sid

    def checkpoint(
        self,
        run_id: uuid.UUID,
        absorbed: tuple[uuid.UUID, ...],
        conversation_digest: str | None,
        message_count: int,
        timeout: float | None,
    ) -> RunBoundaryReceipt | None:
        future = self.checkpoint_future(run_id, absorbed, conversation_digest, message_count)
        result: RunBoundaryReceipt | None = future.result(timeout)
        return result

    def checkpoint_future(
        self,
        run_id: uuid.UUID,
        absorbed: tuple[uuid.UUID, ...],
        conversation_digest: str | None,
        message_count: int,
    ) -> Future[RunBoundaryReceipt | None]:
        message = msg.Checkpoint(run_id, absorbed, conversation_digest, message_count)
        return self.mailer.send(self.sid, message)
