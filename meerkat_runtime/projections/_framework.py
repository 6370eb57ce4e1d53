"""A small projection framework on pykka actors (Akka Projections' vocabulary).

A :class:`Projection` has a name, a schema, and ``apply(cursor, events)``
that updates its read model for a page of events. A :class:`ProjectionRunner`
actor follows the store-wide log from the projection's stored **offset** and
commits each page's read-model writes *and* the new offset in one
transaction in the events' own database, so every event is applied exactly
once across crashes: a crash before commit loses both, after commit keeps
both. The offset update is conditional on the offset the runner read, so two
runners of one projection (two processes) can never both apply a page.

Gaps: positions may have holes but are committed in order (see
``meerkat_runtime.store``), so reading ``after = offset`` never skips an
event that commits later.

Following: catch-up from the offset on start, then live: woken in-process by
the store's commit listener, and polling every ``poll_interval`` seconds for
writes by other processes. A live runner (caught up at its last poll) starts
at most one read-model transaction per ``batch_interval`` seconds: the commits
that land meanwhile go into the next one. A transaction costs far more than an
event in it (a commit, an fsync on SQLite ``FULL``, the offset update, the
lookups), so a busy log then costs one transaction per interval instead of one
per store commit, for at most that much more lag.

Read-model layouts: a projection declares ``schema_version``; the version each
store holds is recorded beside the offsets. When a runtime opens a store whose
read model has an older layout, it drops that projection's tables and replays
them from the log (the log is the truth, so this loses nothing); a store that
recorded no version has layout 1 (the releases before versions were recorded).

Failure strategies (:class:`FailureStrategy`): ``fail`` stops the projection;
``skip`` records the event in the skipped table and moves on; ``retry``
retries with exponential backoff, then fails; ``retry_then_skip`` retries,
then skips.

Poison events (design choice): an event that cannot be read back (an older
version wrote it, or the database was edited by hand; see
:class:`~meerkat_runtime.errors.UndecodableEvent`) fails the same way on every
try, so it is never retried, and one bad session should not stop a read model
for all the others. ``FailureStrategy.unreadable`` decides: ``"skip"`` skips it
at once and *holds back its session*: that session's later events are
recorded as skipped too (its rows stay as they were before the bad event,
rather than being updated from a history with a hole), while every other
session goes on; ``"fail"`` stops the projection. Left unset, it is ``"fail"``
for the ``fail`` strategy and ``"skip"`` for the others (``retry`` is meant
for failures that may pass, which this one cannot). The built-in ledger and
views use the default (``retry``, so unreadable events are skipped);
``health`` reports every skipped event with its session and log position, and
``rebuild`` clears the skipped events and the held-back sessions along with
the read model.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

import pykka

from meerkat_runtime.cluster import Membership
from meerkat_runtime.errors import (
    LeaseUnavailable,
    MeerkatRuntimeError,
    StoreError,
    StoreUnavailable,
    UndecodableEvent,
)
from meerkat_runtime.events.catalogue import EVENT_TOPICS, decode_recorded
from meerkat_runtime.events.timefmt import format_timestamp, utc_now
from meerkat_runtime.projections._sql import (
    ROW_CACHE_ROWS,
    Cursor,
    PageRows,
    RowCache,
    ScratchSql,
    Sql,
)
from meerkat_runtime.store import EventStore, RecordedEvent, UnreadableInLog
from meerkat_runtime.telemetry import (
    PROJECTION_EVENTS,
    PROJECTION_NAME,
    PROJECTION_POSITION,
    Telemetry,
    log_ids,
)

__all__ = [
    "FailureStrategy",
    "Projection",
    "ProjectionRunner",
    "ProjectionSet",
    "ProjectionStatus",
    "SkippedEvent",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

OFFSETS = "meerkat_projection_offsets"
SKIPPED = "meerkat_projection_skipped"
LAYOUTS = "meerkat_projection_layouts"

# The database itself failing (connection lost, timeout, server restarting), not a
# handler: no event is at fault, so the failure strategy does not apply; the runner
# stays alive and the next poll tries again.
_UNAVAILABLE: tuple[type[Exception], ...] = (StoreUnavailable,)


@dataclass(frozen=True, slots=True)
class FailureStrategy:
    """What a projection does when its handler raises on an event.

    ``kind``: ``fail`` stops the projection; ``skip`` records the event as skipped
    and goes on; ``retry`` retries ``retries`` times with exponential backoff,
    then stops; ``retry_then_skip`` retries, then skips.

    ``unreadable``: what to do with an event that cannot be read back at all
    (:class:`~meerkat_runtime.errors.UndecodableEvent`), which is never retried:
    ``"skip"`` records it as skipped and holds back its session (that session's
    later events are skipped too; every other session goes on), ``"fail"`` stops
    the projection. Unset, it is ``"fail"`` for kind ``fail`` and ``"skip"``
    otherwise, so by default one bad session never stops a read model for the
    others; ``health`` names each skipped event's session and log position.
    """

    kind: Literal["fail", "skip", "retry", "retry_then_skip"] = "retry"
    retries: int = 5
    backoff: float = 0.05
    max_backoff: float = 2.0
    #: An event that cannot be read back: ``"skip"`` (holding back its session) or
    #: ``"fail"``; None: ``"fail"`` when ``kind`` is ``"fail"``, else ``"skip"``.
    unreadable: Literal["skip", "fail"] | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("fail", "skip", "retry", "retry_then_skip"):
            raise ValueError(f"unknown failure strategy {self.kind!r}")
        if self.retries < 0 or self.backoff < 0:
            raise ValueError("retries and backoff must be >= 0")
        if self.unreadable not in (None, "skip", "fail"):
            raise ValueError(f"unreadable must be 'skip' or 'fail', not {self.unreadable!r}")

    @property
    def skips_unreadable(self) -> bool:
        """Whether an event that cannot be read back is skipped (else the projection stops)."""
        if self.unreadable is not None:
            return self.unreadable == "skip"
        return self.kind != "fail"


@dataclass(frozen=True, slots=True)
class ProjectionStatus:
    name: str
    status: Literal["running", "retrying", "failed", "stopped", "standby"]
    position: int
    head: int
    error: str | None = None

    @property
    def lag(self) -> int:
        """Head position minus projected position (events, counting gaps)."""
        return max(0, self.head - self.position)


@dataclass(frozen=True, slots=True)
class SkippedEvent:
    projection: str
    position: int
    session_id: str
    topic: str
    error: str
    skipped_at: str


class Projection(ABC):
    """A read model kept from the event log."""

    name: str = ""
    #: Tables this projection owns (dropped/cleared by rebuild).
    tables: tuple[str, ...] = ()
    failure_strategy: FailureStrategy = FailureStrategy()
    #: Version of the read model's table layout. Raise it when the tables change: a store
    #: holding an older layout has them dropped and replayed from the log on open.
    schema_version: int = 1

    @abstractmethod
    def create_schema(self, cur: Cursor) -> None:
        """Create the read-model tables and indexes if missing."""

    @abstractmethod
    def apply(self, cur: Cursor, events: Sequence[RecordedEvent]) -> None:
        """Update the read model for ``events`` (in position order), inside ``cur``'s transaction."""

    def clear(self, cur: Cursor) -> None:
        for table in self.tables:
            cur.execute(f"DELETE FROM {cur.table(table)}")


def ensure_framework_schema(sql: Sql) -> None:
    with sql.schema_transaction() as cur:
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {cur.table(OFFSETS)} "
            "(name TEXT PRIMARY KEY, position BIGINT NOT NULL)"
        )
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {cur.table(SKIPPED)} ("
            "name TEXT NOT NULL, position BIGINT NOT NULL, session_id TEXT NOT NULL, "
            "topic TEXT NOT NULL, error TEXT NOT NULL, skipped_at TEXT NOT NULL, "
            "PRIMARY KEY (name, position))"
        )
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {cur.table(LAYOUTS)} "
            "(name TEXT PRIMARY KEY, version INTEGER NOT NULL)"
        )


def prepare_projection(sql: Sql, projection: Projection) -> None:
    """Bring ``projection``'s tables to its layout and make sure its offset row exists.

    An older layout is dropped and the offset reset to 0, in one transaction, so the
    runner replays the log into the new tables (a runner of another process finds its
    offset moved and replays too). A newer layout (a newer release wrote this store)
    raises :class:`StoreError`: this release cannot keep it.
    """
    name, want = projection.name, projection.schema_version
    with sql.schema_transaction() as cur:
        row = cur.execute(
            f"SELECT version FROM {cur.table(LAYOUTS)} WHERE name = ?", (name,)
        ).fetchone()
        have = int(row["version"]) if row else 1
        if have > want:
            raise StoreError(
                f"read model {name!r} has layout {have}, newer than this release's {want}; "
                "upgrade meerkat-runtime to use this store"
            ).with_hint("upgrade meerkat-runtime to read this store")
        if have < want:
            ran = cur.execute(
                f"SELECT position FROM {cur.table(OFFSETS)} WHERE name = ?", (name,)
            ).fetchone()
            if ran is not None:  # not a fresh store: say why the read model replays
                log.warning(
                    "projection %s: read model layout %d is older than %d; rebuilding it from "
                    "the log", name, have, want, extra=log_ids(projection=name),
                )  # fmt: skip
            for table in projection.tables:
                cur.execute(f"DROP TABLE IF EXISTS {cur.table(table)}")
            cur.execute(f"UPDATE {cur.table(OFFSETS)} SET position = 0 WHERE name = ?", (name,))
            cur.execute(f"DELETE FROM {cur.table(SKIPPED)} WHERE name = ?", (name,))
        if row is None or have != want:
            cur.execute(
                f"INSERT INTO {cur.table(LAYOUTS)} (name, version) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET version = excluded.version",
                (name, want),
            )
        projection.create_schema(cur)
        cur.execute(
            f"INSERT INTO {cur.table(OFFSETS)} (name, position) VALUES (?, 0) "
            "ON CONFLICT (name) DO NOTHING",
            (name,),
        )


class _OffsetMoved(Exception):
    """Another runner advanced this projection's offset first."""


class RunnerHost(Protocol):
    """What a :class:`ProjectionRunner` needs of the set that runs it."""

    membership: Membership | None
    poll_interval: float
    page_size: int
    pages_per_message: int
    batch_interval: float
    telemetry: Telemetry | None

    @property
    def closed(self) -> bool: ...

    def report_progress(self, name: str, position: int, status: str, error: str | None) -> None: ...

    def poll_taken(self, name: str) -> None: ...

    def linger(self, seconds: float) -> None: ...

    def read_log(self, after: int, limit: int, fresh_after: float) -> list[RecordedEvent]: ...


class ProjectionRunner(pykka.ThreadingActor):
    """Follows the log for one projection. Messages: ``"poll"``, ``"pause"``, ``"resume"``."""

    use_daemon_thread = True

    def __init__(
        self,
        projection: Projection,
        sql: Sql,
        owner: RunnerHost,
        cache_rows: int = ROW_CACHE_ROWS,
    ) -> None:
        super().__init__()
        self.projection = projection
        self.sql = sql
        self.owner = owner
        self.position = 0
        # The read-model rows of the last pages, right as of the offset they were
        # committed at (``RowCache``: checked at every commit).
        self.cache = RowCache(cache_rows)
        self.status: Literal["running", "retrying", "failed", "stopped", "standby"] = "running"
        self.error: str | None = None
        self.paused = False
        self.next_lease_check = 0.0  # standby: monotonic time of the next lease attempt
        self.started = False
        # Sessions whose events this projection holds back after an unreadable one.
        self.held: dict[str, str] = {}
        # Live (the last poll read the log to its end) and when it began reading the last
        # page it applied: a poll within batch_interval of that waits, so the commits
        # meanwhile share a page (a page that took longer than that is followed at once).
        self.live = False
        self.last_batch = 0.0
        # When this runner took its poll: a shared page read before then may miss
        # commits whose poke that poll answers.
        self.poll_taken_at = 0.0

    def _start(self) -> bool:
        """Create the schema and read the offset; on failure report ``retrying`` and try at next poll."""
        if self.started:
            return True
        try:
            self._init_schema()
            self._reload_offset()
        except Exception as exc:
            self.status, self.error = "retrying", f"cannot start: {type(exc).__name__}: {exc}"
            log.warning("projection %s: %s", self.projection.name, self.error, extra=self._ids())
            self.owner.report_progress(self.projection.name, self.position, self.status, self.error)
            return False
        self.started = True
        self.status, self.error = "running", None
        self.owner.report_progress(self.projection.name, self.position, self.status, self.error)
        return True

    def _init_schema(self) -> None:
        prepare_projection(self.sql, self.projection)
        self._reload_offset()

    def _reload_offset(self) -> None:
        with self.sql.transaction() as cur:
            row = cur.execute(
                f"SELECT position FROM {cur.table(OFFSETS)} WHERE name = ?", (self.projection.name,)
            ).fetchone()
            held = cur.execute(
                f"SELECT session_id, error FROM {cur.table(SKIPPED)} "
                "WHERE name = ? AND error LIKE ? ORDER BY position",
                (self.projection.name, f"{_UNREADABLE}%"),
            ).fetchall()
        self.position = int(row["position"]) if row else 0
        self.cache.clear()
        self.held = {}
        for r in held:  # the first of a session is the unreadable event itself
            self.held.setdefault(r["session_id"], r["error"].removeprefix(_UNREADABLE).strip())
        self.owner.report_progress(self.projection.name, self.position, self.status, self.error)

    def _leader(self) -> bool:
        """With a cluster, only the holder of ``projection:<name>`` runs it; others stand by
        and follow the stored offset (so ``wait_caught_up`` works on every node)."""
        membership = self.owner.membership
        if membership is None:
            return True
        lease = f"projection:{self.projection.name}"
        if membership.holds(lease):
            return True
        # A standby is poked by every commit of the cluster; trying the lease (a row lock
        # and a durable commit on PostgreSQL) and re-reading the offset at each poke cost
        # the store a transaction per commit for nothing. Once a poll interval is enough:
        # that is how soon it takes over a freed lease, and how fresh its offset is.
        now = time.monotonic()
        if self.status == "standby" and now < self.next_lease_check:
            return False
        self.next_lease_check = now + self.owner.poll_interval
        try:
            membership.acquire(lease, self)
        except LeaseUnavailable as exc:
            if self.status != "standby":
                log.info(
                    "projection %s: standing by, %s runs it",
                    self.projection.name,
                    exc.owner,
                    extra=self._ids(),
                )
            self.status, self.error = "standby", None
            self.started = False
            try:
                self._reload_offset()
            except Exception as exc2:  # the database is away: try again at the next poll
                log.warning("projection %s: %s", self.projection.name, exc2, extra=self._ids())
            return False
        except StoreError as exc:
            log.warning(
                "projection %s: lease check failed: %s",
                self.projection.name,
                exc,
                extra=self._ids(),
            )
            return False
        self.status = "running"
        self.started = False  # re-read the offset: the previous holder moved it
        return True

    def on_stop(self) -> None:
        if self.owner.membership is not None:
            self.owner.membership.release(f"projection:{self.projection.name}", self)

    def _ids(self, event: RecordedEvent | None = None) -> dict[str, str]:
        """The ids a log record of this runner carries (and the event's session's)."""
        return log_ids(
            event.session_id if event is not None else None, projection=self.projection.name
        )

    def on_receive(self, message: Any) -> Any:
        if message == "poll":
            self.poll_taken_at = time.monotonic()
            self.owner.poll_taken(self.projection.name)
            if not self.paused and self.status != "failed" and self._leader() and self._start():
                self._batch_wait()
                self._follow()
        elif message == "pause":
            self.paused = True
        elif message == "resume":
            self.paused = False
            self.status, self.error = "running", None
            self.started = False
            self.poll_taken_at = time.monotonic()
            if self._start():
                self._follow()
        elif message == "status":
            return (self.status, self.position, self.error)
        return None

    # ------------------------------------------------------------ processing

    def _follow(self) -> None:
        """Catch up. If the database is unavailable, report ``retrying`` and let the next
        poll try again: an exception escaping a pykka ``tell`` would stop this actor."""
        try:
            self._catch_up()
        except StoreError as exc:  # unavailable, or the log cannot be read now
            error = f"database unavailable: {type(exc).__name__}: {exc}"
            if self.status != "retrying":
                log.warning(
                    "projection %s: %s; retrying", self.projection.name, error, extra=self._ids()
                )
            self.status, self.error = "retrying", error
            self.owner.report_progress(self.projection.name, self.position, self.status, self.error)
            return
        if self.status == "retrying":
            self.status, self.error = "running", None
            self.owner.report_progress(self.projection.name, self.position, self.status, self.error)

    def _batch_wait(self) -> None:
        """Live, and the last page applied was read less than ``batch_interval`` ago: wait
        out the rest (after a quiet spell, the next commit is applied at once)."""
        if self.live:
            wait = self.last_batch + self.owner.batch_interval - time.monotonic()
            if wait > 0:
                self.owner.linger(wait)

    def _catch_up(self) -> None:
        self.live = False
        pages = 0
        while pages < self.owner.pages_per_message:
            read_at = time.monotonic()
            try:
                events = self.owner.read_log(
                    self.position, self.owner.page_size, self.poll_taken_at
                )
            except UnreadableInLog as exc:
                # The store cannot read an event at all: the events before it, then it.
                if exc.before:
                    self._process(exc.before)
                    if self.status == "failed" or self.position < exc.before[-1].position:
                        return
                bad = RecordedEvent(exc.session_id, exc.version, exc.position, exc.topic, {}, "")
                self._on_unreadable(bad, exc)
                if self.status == "failed":
                    return
                pages += 1
                continue
            if not events:
                self.live = True
                return
            self._process(events)
            self.last_batch = read_at
            pages += 1
            if self.status == "failed" or self.owner.closed:
                return
            if len(events) < self.owner.page_size:
                self.live = True
                return
        self.actor_ref.tell("poll")  # more to do: yield so pause/stop messages get a turn

    def _commit(self, events: Sequence[RecordedEvent], skipped: SkippedEvent | None = None) -> None:
        telemetry = self.owner.telemetry
        if telemetry is None or not telemetry.tracing:
            self._commit_page(events, skipped)
            return
        attributes = {
            PROJECTION_NAME: self.projection.name,
            PROJECTION_EVENTS: len(events),
            PROJECTION_POSITION: events[-1].position,
        }
        with telemetry.span("meerkat.projection.batch", attributes):
            self._commit_page(events, skipped)

    def _commit_page(self, events: Sequence[RecordedEvent], skipped: SkippedEvent | None) -> None:
        name = self.projection.name
        new_position = events[-1].position
        # Derived: the page's rows and offset commit together and can always be applied
        # again from the log, so the commit need not wait for the disk (on SQLite FULL:
        # no fsync while holding the write lock every append also needs). A power loss
        # can only roll the read model back to an earlier offset, never lose an event.
        self.cache.valid_at(self.position)
        page = self.cache.page()
        try:
            self._apply_page(page, events, skipped, new_position)
        except BaseException:
            self.cache.clear()  # a failed apply may have left its rows half-changed
            raise
        self.cache.commit(page, new_position)
        self.position = new_position
        self.owner.report_progress(name, new_position, self.status, self.error)

    def _apply_page(
        self,
        page: PageRows,
        events: Sequence[RecordedEvent],
        skipped: SkippedEvent | None,
        new_position: int,
    ) -> None:
        """One transaction: the offset's compare-and-set, the page's rows, its skips."""
        name = self.projection.name
        with self.sql.transaction(derived=True, cache=page) as cur:
            # Compare-and-set the offset first: it locks the offset row (PostgreSQL) or
            # takes the write lock (SQLite) before the handler runs, so a second runner
            # of this projection waits here and then finds the offset moved. RETURNING
            # tells whether *this* update matched (re-reading the offset cannot: another
            # runner that applied the same page leaves the same value), and it is
            # portable where DB-API ``rowcount`` is not offered by every cursor.
            moved = cur.execute(
                f"UPDATE {cur.table(OFFSETS)} SET position = ? WHERE name = ? AND position = ? "
                "RETURNING position",
                (new_position, name, self.position),
            ).fetchall()
            if not moved:
                raise _OffsetMoved
            skips = [] if skipped is None else [skipped]
            if skipped is None:
                held = self.held
                if held:
                    skips = [self._held_back(e) for e in events if e.session_id in held]
                    events = [e for e in events if e.session_id not in held]
                if events:
                    self.projection.apply(cur, events)
            cur.executemany(
                f"INSERT INTO {cur.table(SKIPPED)} "
                "(name, position, session_id, topic, error, skipped_at) VALUES (?, ?, ?, ?, ?, ?)",
                [(name, k.position, k.session_id, k.topic, k.error, k.skipped_at) for k in skips],
            )

    def _process(self, events: Sequence[RecordedEvent]) -> None:
        try:
            self._commit(events)
            return
        except _OffsetMoved:
            self._reload_offset()
            return
        except _UNAVAILABLE:
            raise
        except Exception as exc:
            if len(events) == 1:
                self._on_event_failure(events[0], exc)
                return
        # Isolate the failing event: replay the page one event at a time.
        for event in events:
            if event.position <= self.position:
                continue
            try:
                self._commit([event])
            except _OffsetMoved:
                self._reload_offset()
                return
            except _UNAVAILABLE:
                raise
            except Exception as exc:
                self._on_event_failure(event, exc)
                if self.position < event.position:
                    return  # not applied nor skipped (failed, or closing): never go past it

    def _held_back(self, event: RecordedEvent) -> SkippedEvent:
        """The skipped record of an event of a held-back session."""
        return SkippedEvent(
            projection=self.projection.name,
            position=event.position,
            session_id=event.session_id,
            topic=event.topic,
            error=f"{_UNREADABLE} held back after an unreadable event: "
            f"{self.held[event.session_id]}",
            skipped_at=format_timestamp(utc_now()),
        )

    def _on_event_failure(self, event: RecordedEvent, exc: Exception) -> None:
        strategy = self.projection.failure_strategy
        name = self.projection.name
        unreadable = _unreadable(event, exc)
        if unreadable is not None:
            self._on_unreadable(event, unreadable)
            return
        error = f"{type(exc).__name__}: {exc}"
        if strategy.kind in ("retry", "retry_then_skip"):
            delay = strategy.backoff
            for attempt in range(1, strategy.retries + 1):
                if self.owner.closed:
                    return  # closing: leave the offset before the event; a restart retries it
                self.status, self.error = "retrying", error
                self.owner.report_progress(name, self.position, self.status, self.error)
                log.warning(
                    "projection %s: event at %d failed (%s); retry %d/%d in %.2fs",
                    name, event.position, error, attempt, strategy.retries, delay,
                    extra=self._ids(event),
                )  # fmt: skip
                time.sleep(delay)
                delay = min(delay * 2, strategy.max_backoff)
                try:
                    self._commit([event])
                except _OffsetMoved:
                    self._reload_offset()
                    self.status, self.error = "running", None
                    return
                except Exception as again:
                    error = f"{type(again).__name__}: {again}"
                    continue
                self.status, self.error = "running", None
                self.owner.report_progress(name, self.position, self.status, self.error)
                return
        if strategy.kind in ("skip", "retry_then_skip"):
            log.warning(
                "projection %s: skipping event at %d: %s",
                name,
                event.position,
                error,
                extra=self._ids(event),
            )
            skipped = SkippedEvent(
                projection=name,
                position=event.position,
                session_id=event.session_id,
                topic=event.topic,
                error=error,
                skipped_at=format_timestamp(utc_now()),
            )
            try:
                self._commit([event], skipped=skipped)
                self.status, self.error = "running", None
                return
            except _OffsetMoved:
                self._reload_offset()
                return
            except Exception as exc2:
                error = f"could not record skipped event: {exc2}"
        self._fail(event, error)

    def _fail(self, event: RecordedEvent, error: str) -> None:
        """Stop at ``event``: status ``failed``, logged and reported to the owner."""
        name = self.projection.name
        self.status, self.error = "failed", error
        log.error(
            "projection %s failed at position %d: %s",
            name,
            event.position,
            error,
            extra=self._ids(event),
        )
        self.owner.report_progress(name, self.position, self.status, self.error)

    def _on_unreadable(self, event: RecordedEvent, exc: UndecodableEvent) -> None:
        """A poison event: never retried; skipped with its session held back, or a stop."""
        name = self.projection.name
        error = f"{_UNREADABLE} {exc}"
        if self.projection.failure_strategy.skips_unreadable:
            log.error(
                "projection %s: skipping unreadable event, holding back %s",
                name,
                exc,
                extra=self._ids(event),
            )
            skipped = SkippedEvent(
                projection=name,
                position=event.position,
                session_id=event.session_id,
                topic=event.topic,
                error=error,
                skipped_at=format_timestamp(utc_now()),
            )
            try:
                self._commit([event], skipped=skipped)
            except _OffsetMoved:
                self._reload_offset()
                return
            except Exception as exc2:
                error = f"could not record skipped event: {exc2}"
            else:
                self.held.setdefault(event.session_id, str(exc))
                self.status, self.error = "running", None
                return
        self._fail(event, error)


#: How many recently read pages of the log the runners of one set share.
_SHARED_PAGES = 8

#: How the skipped table marks an unreadable event (and the events held back after it).
_UNREADABLE = "UndecodableEvent:"


def _unreadable(event: RecordedEvent, exc: Exception) -> UndecodableEvent | None:
    """The event's own defect when it cannot be read back, whatever its handler raised."""
    if isinstance(exc, UndecodableEvent):
        return exc
    if event.topic not in EVENT_TOPICS:
        return None  # not a runtime event: the projection knows its own format
    try:
        decode_recorded(event)
    except UndecodableEvent as defect:
        return defect
    return None


def _nothing() -> None:
    pass


class ProjectionSet:
    """The projections of one runtime: start, follow, wait, rebuild, report (``rt.projections``).

    ``page_size``: events per read-model transaction at most. ``batch_interval``: a
    caught-up projection starts at most one transaction per that many seconds (the
    commits meanwhile share it). ``poll_interval``: how often the log is checked for
    other processes' writes. ``cache_rows``: read-model rows each runner keeps between
    its pages (:class:`~meerkat_runtime.projections.RowCache`; 0: none).
    """

    def __init__(
        self,
        store: EventStore,
        projections: Sequence[Projection],
        *,
        poll_interval: float = 0.2,
        page_size: int = 500,
        pages_per_message: int = 20,
        batch_interval: float = 0.01,
        schedule_every: Callable[[float, Callable[[], None]], None] | None = None,
        membership: Membership | None = None,
        sql: Sql | None = None,
        telemetry: Telemetry | None = None,
        cache_rows: int = ROW_CACHE_ROWS,
    ) -> None:
        self.store = store
        self.membership = membership
        self.telemetry = telemetry
        self.sql = sql if sql is not None else Sql(store)
        self.projections = {p.name: p for p in projections}
        self.page_size = page_size
        self.pages_per_message = pages_per_message
        self.batch_interval = batch_interval
        self.poll_interval = poll_interval
        self._cond = threading.Condition()
        self._state: dict[str, tuple[int, str, str | None]] = {}
        self._poll_pending: set[str] = set()
        self._runners: dict[str, pykka.ActorRef[ProjectionRunner]] = {}
        self._closed = False
        self._closing = threading.Event()  # cuts a runner's batch wait short
        # The last pages read (by offset and size): when they were read, and the events.
        self._pages: dict[tuple[int, int], tuple[float, list[RecordedEvent]]] = {}
        self._pages_lock = threading.Lock()
        ensure_framework_schema(self.sql)
        for p in projections:
            # The read-model tables exist (in the projection's layout) before open returns,
            # so a query made at once (rt.ledger, rt.views, verify) never meets a missing or
            # outdated table. A failure here (another process creating them) is left to the
            # runner's retry.
            try:
                prepare_projection(self.sql, p)
            except Exception as exc:
                log.warning(
                    "projection %s: schema not created yet: %s",
                    p.name,
                    exc,
                    extra=log_ids(projection=p.name),
                )
            if isinstance(self.sql, ScratchSql):
                self._seed(p)
            self._runners[p.name] = ProjectionRunner.start(p, self.sql, self, cache_rows)
        store.add_listener(lambda _position: self.poke())
        # Other processes' commits: LISTEN/NOTIFY on PostgreSQL (polling stays the fallback).
        # Without projections there is nothing to poke: a listener would only be a thread
        # and a connection woken by every commit of every node of the cluster.
        self._stop_watch: Callable[[], None] = (
            store.watch_commits(self.poke) if projections else _nothing
        )
        if schedule_every is not None:
            schedule_every(poll_interval, self.poke)
        else:
            self._poller = threading.Thread(
                target=self._poll_loop, name="meerkat-projections", daemon=True
            )
            self._poller.start()
        self.poke()

    def _seed(self, projection: Projection) -> None:
        """Start a private read model from the rows the store holds (read-only stores):
        its runner then applies only the events after the stored offset. Rows that
        cannot be copied (tables missing, another layout) mean replaying from 0."""
        assert isinstance(self.sql, ScratchSql)
        stored = Sql(self.store)
        try:
            with stored.transaction() as cur:
                row = cur.execute(
                    f"SELECT position FROM {cur.table(OFFSETS)} WHERE name = ?", (projection.name,)
                ).fetchone()
                layout = cur.execute(
                    f"SELECT version FROM {cur.table(LAYOUTS)} WHERE name = ?", (projection.name,)
                ).fetchone()
        except Exception:
            row = layout = None
        have = int(layout["version"]) if layout else 1
        if row is None or have != projection.schema_version:
            return
        if not self.sql.copy_rows(stored, projection.tables):
            return
        with self.sql.transaction() as cur:
            cur.execute(
                f"UPDATE {cur.table(OFFSETS)} SET position = ? WHERE name = ?",
                (int(row["position"]), projection.name),
            )
        with contextlib.suppress(Exception):
            with stored.transaction() as cur:
                skipped = cur.execute(
                    f"SELECT * FROM {cur.table(SKIPPED)} WHERE name = ?", (projection.name,)
                ).fetchall()
            with self.sql.transaction() as cur:
                cur.executemany(
                    f"INSERT INTO {cur.table(SKIPPED)} "
                    "(name, position, session_id, topic, error, skipped_at) VALUES (?, ?, ?, ?, ?, ?)",
                    [[r["name"], r["position"], r["session_id"], r["topic"], r["error"],
                      r["skipped_at"]] for r in skipped],
                )  # fmt: skip

    # ------------------------------------------------------------ runner callbacks (RunnerHost)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has begun: runners stop at their next step."""
        return self._closed

    def report_progress(self, name: str, position: int, status: str, error: str | None) -> None:
        """A runner's new position and status (what ``status()`` and the waits read)."""
        with self._cond:
            self._state[name] = (position, status, error)
            self._cond.notify_all()

    def poll_taken(self, name: str) -> None:
        """The runner ``name`` took its queued poll: the next poke queues another."""
        with self._cond:
            self._poll_pending.discard(name)

    def linger(self, seconds: float) -> None:
        """A runner's wait for its next batch: ``seconds``, or until :meth:`close`."""
        self._closing.wait(seconds)

    def read_log(self, after: int, limit: int, fresh_after: float) -> list[RecordedEvent]:
        """The page of the log after position ``after``, read once for every runner at that
        offset: a page another runner read is reused if its read began after
        ``fresh_after`` (the log is append-only and committed in position order, so it
        holds every event committed before then). Decoding the log is a large share of
        a projection's cost, and live runners poked by the same commit read the same page.
        """
        key = (after, limit)
        with self._pages_lock:
            hit = self._pages.get(key)
        if hit is not None and hit[0] >= fresh_after:
            return hit[1]
        started = time.monotonic()
        events = self.sql.store.read_all(after_position=after, limit=limit)
        with self._pages_lock:
            self._pages.pop(key, None)
            self._pages[key] = (started, events)
            while len(self._pages) > _SHARED_PAGES:
                del self._pages[next(iter(self._pages))]
        return events

    # ------------------------------------------------------------ control

    def poke(self) -> None:
        """Ask every runner to catch up (coalesced: at most one poll queued per runner)."""
        with self._cond:
            if self._closed:
                return
            due = [n for n in self._runners if n not in self._poll_pending]
            self._poll_pending.update(due)
            runners = [self._runners[n] for n in due]
        for ref in runners:
            with contextlib.suppress(pykka.ActorDeadError):
                ref.tell("poll")

    def _poll_loop(self) -> None:
        while not self._closed:
            time.sleep(self.poll_interval)
            self.poke()

    def wait_caught_up(self, timeout: float | None = None) -> None:
        """Block until every projection has processed every event durable now; ``TimeoutError``."""
        target = self.store.max_position()
        deadline = None if timeout is None else time.monotonic() + timeout
        self.poke()
        with self._cond:
            while True:
                behind = []
                for name in self._runners:
                    position, status, error = self._state.get(name, (0, "running", None))
                    if status == "failed":
                        raise MeerkatRuntimeError(
                            f"projection {name!r} has failed: {error}"
                        ).with_hint(
                            "a read model cannot apply an event of the log; "
                            "set MEERKAT_DEBUG=1 to see the log"
                        )
                    if position < target:
                        behind.append(name)
                if not behind:
                    return
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(
                        f"projections {', '.join(behind)} not caught up to position {target} "
                        f"within {timeout} s"
                    )
                self._cond.wait(remaining if remaining is not None else 0.5)

    def rebuild(self, name: str | None = None) -> None:
        """Drop and replay one read model (or all) from the start of the log."""
        names = [name] if name is not None else list(self.projections)
        for n in names:
            if n not in self.projections:
                raise ValueError(f"unknown projection {n!r}; known: {', '.join(self.projections)}")
        for n in names:
            ref = self._runners[n]
            ref.ask("pause")
            with self.sql.transaction() as cur:
                self.projections[n].clear(cur)
                cur.execute(f"UPDATE {cur.table(OFFSETS)} SET position = 0 WHERE name = ?", (n,))
                cur.execute(f"DELETE FROM {cur.table(SKIPPED)} WHERE name = ?", (n,))
            self.report_progress(n, 0, "running", None)
            ref.ask("resume")

    def status(self) -> list[ProjectionStatus]:
        """Status, position and lag of every projection."""
        try:
            head = self.store.max_position()
        except StoreError:
            if not self._closed:
                raise
            # Closed along with its store (Runtime.close): report "stopped" where we stood.
            with self._cond:
                head = max((position for position, _, _ in self._state.values()), default=0)
        with self._cond:
            out = []
            for n in self._runners:
                position, status, error = self._state.get(n, (0, "running", None))
                state = "stopped" if self._closed else status
                out.append(ProjectionStatus(n, state, position, head, error))  # type: ignore[arg-type]
            return out

    def elsewhere(self) -> tuple[list[ProjectionStatus], list[SkippedEvent]]:
        """The projections the store records that this set does not run (a host's own read
        models, seen from another process such as ``meerkat-runtime health``): each at its
        stored offset, as ``standby``, and their skipped events. Read from the store's
        database; empty when it holds no projection tables."""
        mine = set(self._runners)
        try:
            head = self.store.max_position()
            with Sql(self.store).read_transaction() as cur:
                offsets = cur.execute(
                    f"SELECT name, position FROM {cur.table(OFFSETS)} ORDER BY name"
                ).fetchall()
                skipped = cur.execute(
                    f"SELECT * FROM {cur.table(SKIPPED)} ORDER BY name, position"
                ).fetchall()
        except StoreError:
            return [], []
        return (
            [
                ProjectionStatus(r["name"], "standby", int(r["position"]), head)
                for r in offsets
                if r["name"] not in mine
            ],
            [
                SkippedEvent(r["name"], int(r["position"]), r["session_id"], r["topic"], r["error"], r["skipped_at"])
                for r in skipped
                if r["name"] not in mine
            ],
        )  # fmt: skip

    def query(self, fn: Callable[[Cursor], _T]) -> _T:
        """``fn(cur)`` in a read-only transaction on the read models (a host projection's
        tables included): every statement sees one consistent state."""
        with self.sql.read_transaction() as cur:
            return fn(cur)

    def skipped(self, name: str | None = None) -> list[SkippedEvent]:
        """Events a projection skipped under its failure strategy."""
        with self.sql.transaction() as cur:
            where, params = ("WHERE name = ?", (name,)) if name else ("", ())
            rows = cur.execute(
                f"SELECT * FROM {cur.table(SKIPPED)} {where} ORDER BY name, position",
                params,
            ).fetchall()
        return [
            SkippedEvent(r["name"], int(r["position"]), r["session_id"], r["topic"], r["error"], r["skipped_at"])
            for r in rows
        ]  # fmt: skip

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
        self._closing.set()
        self._stop_watch()
        for ref in self._runners.values():
            try:
                ref.stop(block=True, timeout=10)
            except pykka.Timeout:
                log.warning("a projection runner did not stop in time")
