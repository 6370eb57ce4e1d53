"""The session journal: the one place where a session's log meets its state.

The event store knows topics and JSON payloads; the events package knows
envelopes, folds and snapshots of a :class:`SessionState`. Everything that
crosses between them goes through :class:`SessionJournal`:

* **recovery**: a session's state is its latest usable snapshot plus the events
  after it, folded and compacted (terminal inputs out, see
  :func:`~meerkat_runtime.events.session.compact`) (:meth:`SessionJournal.recover`,
  or :meth:`~SessionJournal.recover_many` for a batch with a few queries);
* **reading**: envelopes in pages (:meth:`~SessionJournal.envelopes`), or a
  full fold from the first event (:meth:`~SessionJournal.replay`) for tools
  that must see every event (inspection);
* **writing**: decided envelopes become one atomic append
  (:meth:`~SessionJournal.append`, :meth:`~SessionJournal.append_async`,
  :meth:`~SessionJournal.submit`);
* **snapshots**: when one is due (:meth:`~SessionJournal.snapshot_due`) and
  saving it (:meth:`~SessionJournal.save_snapshot`, a cache: a failure is
  logged, never raised);
* **writers**: whether the last writer of a log is another process
  (:meth:`~SessionJournal.is_foreign`), which makes a load a cold recovery.

The journal holds no state of its own besides the store: any number of
callers (session actors, batch recovery, the CLI) share one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from meerkat_runtime.errors import InvalidInput, StoreError, UndecodableEvent
from meerkat_runtime.events.catalogue import decode_recorded, envelope_to_record
from meerkat_runtime.events.runtime_event import RuntimeEventEnvelope
from meerkat_runtime.events.session import (
    SessionState,
    SnapshotMemo,
    compact,
    evolve,
    state_from_snapshot,
    state_to_snapshot,
)
from meerkat_runtime.store._base import (
    AppendTicket,
    EventStore,
    Fence,
    NewEvent,
    RecordedEvent,
    Snapshot,
)
from meerkat_runtime.telemetry import log_ids

__all__ = ["Recovered", "SessionJournal"]

log = logging.getLogger(__name__)

PAGE = 500
"""Events read per query when paging a log."""

COMPACT_EVERY = 1000
"""Events folded between two compactions while recovering a long tail."""


@dataclass(slots=True)
class Recovered:
    """A session's state as recovered from its journal."""

    state: SessionState
    """Snapshot plus tail, folded."""
    snapshot_version: int
    """The version of the snapshot the fold started from (0: none)."""
    last_writer: str | None
    """Incarnation of the process that wrote the last event (or the snapshot), if known."""


class SessionJournal:
    """Load, fold, append and snapshot sessions on one :class:`EventStore`."""

    __slots__ = ("store",)

    def __init__(self, store: EventStore) -> None:
        self.store = store

    # ------------------------------------------------------------ recovery

    def recover(self, session_id: str) -> Recovered:
        """The session's state: its snapshot (if usable) plus the events after it.

        Raises :class:`UndecodableEvent` when an event of the tail cannot be read.
        """
        store = self.store
        snap = store.load_snapshot(session_id) if store.snapshot_interval > 0 else None
        item = self._from_snapshot(session_id, snap)
        self._fold_tail(item, store.read_session(session_id, after_version=item.state.version))
        return item

    def recover_many(
        self, session_ids: Sequence[str]
    ) -> tuple[dict[str, Recovered], dict[str, UndecodableEvent]]:
        """:meth:`recover` for many sessions with a few queries.

        Returns the recovered sessions, and apart those whose tail holds an event
        that cannot be read (each with its error).
        """
        store = self.store
        snapshots = store.load_snapshots(session_ids) if store.snapshot_interval > 0 else {}
        items = {sid: self._from_snapshot(sid, snapshots.get(sid)) for sid in session_ids}
        tails = store.iter_sessions({sid: item.state.version for sid, item in items.items()})
        broken: dict[str, UndecodableEvent] = {}
        for sid, records in tails:
            try:
                self._fold_tail(items[sid], records)
            except UndecodableEvent as exc:
                broken[sid] = exc
                del items[sid]
        return items, broken

    @staticmethod
    def _from_snapshot(session_id: str, snap: Snapshot | None) -> Recovered:
        """The state a snapshot holds; an empty state when there is none or it cannot be
        used (logged: a snapshot is only a cache, the log refolds it)."""
        if snap is not None:
            try:
                state = state_from_snapshot(snap.data["state"])
                if state.session_id != session_id or state.version != snap.version:
                    raise InvalidInput("snapshot belongs to another session or version")
                writer: str | None = snap.data.get("writer")
                return Recovered(state, state.version, writer)
            except (InvalidInput, KeyError, TypeError) as exc:
                log.warning(
                    "session %s: ignoring unreadable snapshot at version %s (%s); refolding",
                    session_id,
                    snap.version,
                    exc,
                    extra=log_ids(session_id),
                )
        return Recovered(SessionState(session_id=session_id), 0, None)

    @staticmethod
    def _fold_tail(item: Recovered, records: Iterable[RecordedEvent]) -> None:
        state = item.state
        rec = None
        for n, rec in enumerate(records, 1):
            evolve(state, decode_recorded(rec))
            if n % COMPACT_EVERY == 0:
                compact(state)  # a long tail is folded in bounded memory
        compact(state)
        if rec is not None:
            item.last_writer = rec.writer

    def is_foreign(self, writer: str | None) -> bool:
        """Whether ``writer`` (a log's last writer) is another process than this store's."""
        return writer is not None and writer != self.store.incarnation

    # ------------------------------------------------------------ reading

    def envelopes(
        self, session_id: str, *, after: int = 0, upto: int | None = None, page: int = PAGE
    ) -> Iterator[RuntimeEventEnvelope]:
        """The session's events with ``after < sequence <= upto``, read a page at a time.

        Raises :class:`UndecodableEvent` at the first event that cannot be read.
        """
        for rec in self.records(session_id, after=after, upto=upto, page=page):
            yield decode_recorded(rec)

    def records(
        self, session_id: str, *, after: int = 0, upto: int | None = None, page: int = PAGE
    ) -> Iterator[RecordedEvent]:
        """The stored events behind :meth:`envelopes`, undecoded, a page at a time."""
        cursor = after
        while upto is None or cursor < upto:
            limit = page if upto is None else min(page, upto - cursor)
            rows = self.store.read_session(session_id, after_version=cursor, limit=limit)
            yield from rows
            if len(rows) < limit:
                return
            cursor = rows[-1].version

    def replay(
        self, session_id: str, *, upto: int | None = None
    ) -> tuple[SessionState, list[RuntimeEventEnvelope]]:
        """Fold the whole log from its first event (no snapshot), with the envelopes read."""
        state = SessionState(session_id=session_id)
        envelopes = []
        for env in self.envelopes(session_id, upto=upto):
            evolve(state, env)
            envelopes.append(env)
        return state, envelopes

    # ------------------------------------------------------------ writing

    @staticmethod
    def to_new_events(envelopes: Sequence[RuntimeEventEnvelope]) -> list[NewEvent]:
        """The store's form of decided envelopes."""
        return [NewEvent(*envelope_to_record(env)) for env in envelopes]

    def append(
        self,
        session_id: str,
        expected_version: int,
        envelopes: Sequence[RuntimeEventEnvelope],
        *,
        fence: Fence | None = None,
    ) -> list[RecordedEvent]:
        """Append ``envelopes`` atomically after ``expected_version``; returns once durable."""
        return self.store.append(
            session_id, expected_version, self.to_new_events(envelopes), fence=fence
        )

    def append_async(
        self,
        session_id: str,
        expected_version: int,
        envelopes: Sequence[RuntimeEventEnvelope],
        *,
        fence: Fence | None = None,
    ) -> Future[list[RecordedEvent]]:
        """:meth:`append` without waiting: a future settled when durable or failed."""
        return self.store.append_async(
            session_id, expected_version, self.to_new_events(envelopes), fence=fence
        )

    def submit(
        self,
        session_id: str,
        expected_version: int,
        envelopes: Sequence[RuntimeEventEnvelope],
        *,
        fence: Fence | None,
        after: AppendTicket | None,
        on_done: Callable[[BaseException | None], None],
        verified: bool = False,
    ) -> AppendTicket:
        """Queue a pipelined append chained behind ``after``; ``on_done`` reports it.

        ``verified``: the caller vouches that the envelopes read back (see
        :meth:`EventStore.submit_append`)."""
        return self.store.submit_append(
            session_id,
            expected_version,
            self.to_new_events(envelopes),
            fence=fence,
            after=after,
            on_done=on_done,
            verified=verified,
        )

    # ------------------------------------------------------------ snapshots

    def snapshot_due(self, state: SessionState, snapshot_version: int, *, slack: int = 1) -> bool:
        """Whether ``state`` is due a snapshot after one at ``snapshot_version``.

        Due every ``snapshot_interval`` events, or every ``len(inputs)`` events when
        larger: a snapshot serialises every input the session knows, so a fixed
        interval would make its cost per event grow with the session; spacing them
        by the state's size keeps it constant, and the tail a load folds is never
        longer than the snapshot it starts from. ``slack`` multiplies the spacing
        (a caller with appends in flight waits longer before forcing one).
        """
        interval = self.store.snapshot_interval
        if interval <= 0:
            return False
        return state.version - snapshot_version >= slack * max(interval, len(state.inputs))

    def save_snapshot(
        self,
        state: SessionState,
        *,
        writer: str | None = None,
        memo: SnapshotMemo | None = None,
    ) -> bool:
        """Save a snapshot of ``state``; False if the store refused it (logged: a
        snapshot is only a cache).

        ``writer`` is the incarnation recorded as the log's last writer (default: this
        process, which wrote the head it snapshots); a load without a tail takes it for
        the writer of the head, so it decides whether that load is a cold recovery.
        ``memo``: the session's :class:`~meerkat_runtime.events.session.SnapshotMemo`
        (see :func:`~meerkat_runtime.events.session.state_to_snapshot`)."""
        data = {
            "state": state_to_snapshot(state, memo),
            "writer": self.store.incarnation if writer is None else writer,
        }
        try:
            self.store.save_snapshot(state.session_id, state.version, data)
        except StoreError as exc:
            log.warning(
                "session %s: snapshot at %d not saved: %s",
                state.session_id,
                state.version,
                exc,
                extra=log_ids(state.session_id),
            )
            return False
        return True
