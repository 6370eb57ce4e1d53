"""Batch recovery: ``rt.recover()`` for many passivated sessions without an actor each.

The actor path creates an actor per session, loads it with two queries and
answers through a message; for 10,000 idle sessions that costs far more than
reading their events. Here the same steps run inline for a batch of sessions:
read their snapshots and tails with a few queries (``load_snapshots``,
``read_sessions``), fold them with the pure core, decide what the session
actor would decide (cold recovery when the log's last writer is another
process, else an in-process ``Recover``), and append only the sessions whose
recovery writes events, with the version the fold read as the expected
version. A session that is live in this process, that became live meanwhile
(the append then conflicts), whose state needs anything but plain recovery
(its own run in flight, a refused transition, a store failure) goes back to the
actor path, which handles every case. On stores with leases the batch takes
each session's lease for the time of its recovery (fenced appends, released
after); a session another live process owns goes to the actor path, which
reports it (:class:`SessionOwnedElsewhere`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING

from meerkat_runtime.actors._messages import RecoverAll
from meerkat_runtime.cluster import session_lease
from meerkat_runtime.errors import MeerkatRuntimeError
from meerkat_runtime.events.ids import uuid7
from meerkat_runtime.events.reports import RecoveryReport
from meerkat_runtime.events.runtime_event import RuntimeEventEnvelope
from meerkat_runtime.events.runtime_state import RuntimeState
from meerkat_runtime.events.session import (
    Decision,
    DecisionContext,
    Recover,
    SessionState,
    decide,
    evolve_settling,
    wants_run,
)
from meerkat_runtime.events.timefmt import utc_now
from meerkat_runtime.store import RecordedEvent
from meerkat_runtime.store._journal import Recovered
from meerkat_runtime.telemetry import log_ids

if TYPE_CHECKING:
    from meerkat_runtime.actors._registry import SessionRegistry
    from meerkat_runtime.actors._services import Services

__all__ = ["BatchRecovery", "recover_batch"]

log = logging.getLogger(__name__)

BATCH_SESSIONS = 500
"""Sessions read, folded and appended together."""


@dataclass(slots=True)
class BatchRecovery:
    """What :func:`recover_batch` did: reports of the sessions it recovered, and the rest."""

    reports: dict[str, RecoveryReport]
    """Recovered here; a destroyed session has no report (as on the actor path)."""
    to_actors: list[str]
    """Sessions left to the actor path, in the order given."""


def recover_batch(
    services: Services,
    registry: SessionRegistry,
    session_ids: Sequence[str],
    *,
    batch: int = BATCH_SESSIONS,
) -> BatchRecovery:
    """Recover ``session_ids`` inline, a batch at a time; see the module docstring.

    Sessions live in ``registry`` are left to their actors; a recovered session with
    work to run is woken through it."""
    reports: dict[str, RecoveryReport] = {}
    handled: set[str] = set()
    membership = services.membership
    for start in range(0, len(session_ids), batch):
        chunk = session_ids[start : start + batch]
        live = set(registry.live_ids())
        candidates = [sid for sid in chunk if sid not in live]
        holder = object()
        if membership is not None:
            # One transaction for the chunk's leases (one each cost a commit per session).
            taken = set(membership.acquire_many([session_lease(s) for s in candidates], holder))
            candidates = [sid for sid in candidates if session_lease(sid) in taken]
        try:
            for sid, report in _recover_chunk(services, registry, candidates).items():
                handled.add(sid)
                if report is not None:
                    reports[sid] = report
        finally:
            if membership is not None:
                membership.release_many([session_lease(sid) for sid in candidates], holder)
    return BatchRecovery(reports, [sid for sid in session_ids if sid not in handled])


def _recover_chunk(
    services: Services, registry: SessionRegistry, session_ids: list[str]
) -> dict[str, RecoveryReport | None]:
    """Recover what can be recovered inline; sessions missing from the result go to actors."""
    journal = services.journal
    try:
        # A session with an unreadable event is left out: its actor raises the error to
        # whoever asks, the batch goes on without it.
        loaded, _ = journal.recover_many(session_ids)
    except MeerkatRuntimeError as exc:
        # The actors retry a failing store with backoff (recovery_timeout).
        log.warning("batch recovery could not read %d sessions: %s", len(session_ids), exc)
        return {}
    done: dict[str, RecoveryReport | None] = {}
    pending: list[tuple[str, Decision, Future[list[RecordedEvent]]]] = []
    ctx = DecisionContext(
        now=utc_now(),
        new_id=uuid7,
        attached=services.executor is not None,
        max_attempts=services.retry.max_attempts,
        policy=services.policy,
    )
    for sid, item in loaded.items():
        st = item.state
        if st.phase is RuntimeState.DESTROYED:
            done[sid] = None
            continue
        if journal.is_foreign(item.last_writer) and (st.run is not None or st.non_terminal_ids()):
            command = Recover(cold=True)
        elif st.run is None:
            command = Recover()
        else:
            continue  # this process's own run, worker gone: the actor closes it first
        try:
            decision = decide(st, command, ctx)
        except MeerkatRuntimeError:
            continue  # the actor path raises it to the caller, as it always did
        if not decision.events:
            done[sid] = decision.reply
            _wake_if_wanted(services, registry, sid, st)
            continue
        fence = None
        if services.membership is not None:
            fence = services.membership.fence(session_lease(sid))
            if fence is None:
                continue
        try:
            future = journal.append_async(sid, st.version, decision.events, fence=fence)
        except MeerkatRuntimeError:
            continue
        pending.append((sid, decision, future))
    for sid, decision, future in pending:
        try:
            future.result()
        except MeerkatRuntimeError as exc:
            # Most likely the session became live meanwhile and its actor wrote first.
            log.info(
                "session %s: batch recovery not written (%s); using its actor",
                sid,
                exc,
                extra=log_ids(sid),
            )
            continue
        _written(services, registry, sid, loaded[sid], decision.events)
        done[sid] = decision.reply
    return done


def _written(
    services: Services,
    registry: SessionRegistry,
    sid: str,
    item: Recovered,
    events: list[RuntimeEventEnvelope],
) -> None:
    """After a durable append: what ``SessionActor._commit`` does next, then wake the session."""
    st = item.state
    for iid, outcome in evolve_settling(st, events):
        services.completions.resolve(sid, iid, outcome)
    journal = services.journal
    if journal.snapshot_due(st, item.snapshot_version):
        journal.save_snapshot(st)
    _wake_if_wanted(services, registry, sid, st)


def _wake_if_wanted(
    services: Services, registry: SessionRegistry, sid: str, st: SessionState
) -> None:
    """Queued work and a bound executor: the actor starts the run, as after its own recovery."""
    if services.executor is not None and not services.closing.is_set() and wants_run(st):
        # "recover_all", not a bare wake: it also takes the cold report a load may recompute,
        # which would otherwise be added to the next ``session.recover()``.
        registry.tell(sid, RecoverAll())
