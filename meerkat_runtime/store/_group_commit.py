"""Group commit: one writer thread commits the appends queued together, across sessions,
in one transaction, and answers each caller once its events are durable.

This is the store's write path, kept apart from the backends: a backend gives it three
row operations (:class:`RowWriter`) and it does the rest: batching, the version
pre-check against a cache of known session versions, falling back to one append per
transaction when a batch meets a version clash (so only the clashing append fails),
recognising an append that is already stored (a retry after a lost acknowledgement),
fencing chains of pipelined appends (``after``), and waking listeners before callers
are answered. With ``group_commit=False`` the same steps run on the caller's thread,
one append per transaction.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, InvalidStateError
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

from eventsourcing.persistence import IntegrityError, StoredEvent

from meerkat_runtime.errors import ConcurrencyConflict, LeaseUnavailable, StoreError

if TYPE_CHECKING:
    from meerkat_runtime.store._base import Fence, RecordedEvent

__all__ = ["DURABLE", "AppendTicket", "CommitStats", "GroupCommit", "Row", "RowWriter"]

logger = logging.getLogger("meerkat_runtime.store")

# The writer's cache of known session versions is only an optimisation: cap it.
_MAX_KNOWN_VERSIONS: Final = 200_000

# (position, session id, version, topic, stored bytes): what backends return from reads.
Row = tuple[int, str, int, str, bytes]

_IN_FLIGHT: Final = 0
DURABLE: Final = 1
_FAILED: Final = 2


@dataclass(slots=True, eq=False)
class AppendTicket:
    """An append queued by :meth:`EventStore.submit_append` (or ``append_async``), until settled.

    Opaque to callers: pass it as a later append's ``after``.
    """

    session_id: str
    expected_version: int
    topics: list[str]
    datas: list[dict[str, Any]] | None  # as read back; only when a future wants RecordedEvents
    stored: list[StoredEvent]
    future: Future[list[RecordedEvent]] | None
    on_done: Callable[[BaseException | None], None] | None = None
    fence: Fence | None = None
    after: AppendTicket | None = None
    outcome: int = _IN_FLIGHT

    @property
    def failed(self) -> bool:
        """True once the append is known to have written nothing."""
        return self.outcome == _FAILED


@dataclass(slots=True)
class CommitStats:
    """Counters of the writer thread since the store opened (for benchmarks and metrics)."""

    groups: int = 0
    """Groups taken off the queue and committed together (one transaction each, unless a
    version clash made the writer fall back to one append per transaction)."""
    appends: int = 0
    """Appends in those groups."""


class RowWriter(Protocol):
    """The row operations of a backend that group commit drives."""

    def _insert(self, stored: Sequence[StoredEvent], fences: Sequence[Fence] = ()) -> list[int]:
        """Insert in one transaction; return the positions in order (``IntegrityError`` if
        any (session, version) exists, :class:`LeaseUnavailable` if a fence does not hold)."""
        ...

    def _current_version(self, session_id: str) -> int:
        """The session's highest version, 0 if none."""
        ...

    def _select_session(self, session_id: str, after_version: int, limit: int | None) -> list[Row]:
        """A session's rows with version > after_version, in version order."""
        ...


_STOP: Final = object()


def _no_check() -> None:
    return None


class GroupCommit:
    """The commit path of one store instance (see the module docstring).

    ``recorded(ticket, positions)`` builds the :class:`RecordedEvent` objects a
    future-waiting caller gets; ``unseal`` turns stored bytes into comparable
    plaintext; ``scrub`` masks secrets in error texts.
    """

    def __init__(
        self,
        rows: RowWriter,
        *,
        url: str,
        enabled: bool,
        max_batch_events: int,
        max_batch_wait: float,
        recorded: Callable[[AppendTicket, Sequence[int]], list[RecordedEvent]],
        unseal: Callable[[bytes], Any],
        scrub: Callable[[str], str],
    ) -> None:
        self._rows = rows
        self.url = url
        self.enabled = enabled
        self._max_batch_events = max_batch_events
        self._max_batch_wait = max_batch_wait
        self._make_recorded = recorded
        self._unseal = unseal
        self._scrub = scrub
        self._listeners: list[Callable[[int], None]] = []
        self._known_versions: dict[str, int] = {}  # lower bounds: versions only grow
        self._known_lock = threading.Lock()
        self._max_committed = 0
        self._notify_lock = threading.Lock()
        self._queue: queue.SimpleQueue[AppendTicket | object] = queue.SimpleQueue()
        self._submit_lock = threading.Lock()
        self._closed = False
        self._writer: threading.Thread | None = None
        self._queued = 0  # appends on the queue (an item may be a batch of several)
        self._local = threading.local()  # .batch: this thread's held appends (see batch)
        self.stats = CommitStats()
        self._observers: list[Callable[[int, int, float], None]] = []

    def start(self) -> None:
        """Start the writer thread (under group commit); once the database is ready."""
        if self.enabled:
            self._writer = threading.Thread(
                target=self._run_writer, name=f"meerkat-store-writer-{id(self):x}", daemon=True
            )
            self._writer.start()

    def on_writer_thread(self) -> bool:
        """True on the writer thread (where waiting for an append would wait forever)."""
        return self._writer is not None and threading.current_thread() is self._writer

    def queued(self) -> int:
        """Appends handed to the writer thread and not yet taken by it (approximate)."""
        return self._queued

    def add_listener(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(max_position)`` after each durable commit, before callers hear."""
        self._listeners.append(callback)

    def observe(self, callback: Callable[[int, int, float], None]) -> Callable[[], None]:
        """Call ``callback(appends, events, seconds)`` after each commit attempt (metrics);
        return a function that stops it. Runs on the committing thread: must be quick."""
        self._observers = [*self._observers, callback]

        def stop() -> None:
            self._observers = [o for o in self._observers if o is not callback]

        return stop

    def _observed(self, appends: int, events: int, started: float) -> None:
        seconds = time.perf_counter() - started
        for callback in self._observers:
            try:
                callback(appends, events, seconds)
            except Exception:
                logger.exception("commit observer %r failed", callback)

    def submit(
        self, ticket: AppendTicket, check_open: Callable[[], None], *, may_defer: bool = False
    ) -> None:
        """Commit ``ticket`` now (no group commit) or queue it for the writer thread.

        ``may_defer``: a pipelined append (answered by its callback) made on a thread
        inside :meth:`batch` waits in that batch and is queued with it. Anything else
        first queues the thread's open batch, so its own commit never waits behind
        appends of this thread that are held back.
        """
        if not self.enabled:
            check_open()
            self._begin(ticket)
            started = time.perf_counter()
            self._commit_one(ticket)
            if self._observers:
                self._observed(1, len(ticket.stored), started)
            return
        held: list[AppendTicket] | None = getattr(self._local, "batch", None)
        if held is not None:
            if may_defer:
                check_open()
                held.append(ticket)
                return
            self.flush_batch()
        self._put(ticket, check_open)

    def _put(self, item: AppendTicket | list[AppendTicket], check_open: Callable[[], None]) -> None:
        with self._submit_lock:
            check_open()
            if self._closed:
                raise StoreError(f"store {self.url} is closed")
            self._queued += len(item) if isinstance(item, list) else 1
            self._queue.put(item)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Hold this thread's pipelined appends until the block ends, then queue them as
        one item, so the writer commits them in one group (a turn of a session host)."""
        if getattr(self._local, "batch", None) is not None:
            yield  # nested: the outer batch queues them
            return
        self._local.batch = []
        try:
            yield
        finally:
            self.flush_batch()
            self._local.batch = None

    def hold_appends(self) -> None:
        """Open a batch on this thread that lasts until the thread ends: its pipelined
        appends wait for :meth:`flush_batch` (a session host flushes at each turn's end)."""
        if getattr(self._local, "batch", None) is None:
            self._local.batch = []

    def flush_batch(self) -> None:
        """Queue the appends this thread's open batch holds (before waiting for any)."""
        held: list[AppendTicket] | None = getattr(self._local, "batch", None)
        if held:
            self._local.batch = []
            try:
                self._put(held, _no_check)
            except StoreError as e:
                for ticket in held:
                    if self._begin(ticket):
                        self._reject(ticket, e)

    def close(self) -> bool:
        """Commit what is queued, stop the writer; False if it was already closed."""
        with self._submit_lock:
            if self._closed:
                return False
            self._closed = True
            if self._writer is not None:
                self._queue.put(_STOP)
        writer = self._writer
        if writer is not None and writer is not threading.current_thread():
            writer.join()
        self._fail_queued()
        return True

    def _run_writer(self) -> None:
        backlog: deque[AppendTicket] = deque()  # taken off the queue, not yet in a group
        stopping = False
        while True:
            if not backlog and (stopping or not self._take(self._queue.get(), backlog)):
                return
            group: list[AppendTicket] = []
            size = 0
            deadline = time.monotonic() + self._max_batch_wait
            while True:
                while backlog and (
                    not group or size + len(backlog[0].stored) <= self._max_batch_events
                ):
                    item = backlog.popleft()
                    if self._begin(item):  # else cancelled by its caller before we got to it
                        group.append(item)
                        size += len(item.stored)
                if backlog or size >= self._max_batch_events or stopping:
                    break
                try:
                    if self._max_batch_wait > 0:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        taken = self._queue.get(timeout=remaining)
                    else:
                        taken = self._queue.get_nowait()
                except queue.Empty:
                    break
                if not self._take(taken, backlog):
                    stopping = True  # commit what was queued before the stop, then return
            if group:
                self.stats.groups += 1
                self.stats.appends += len(group)
                started = time.perf_counter()
                try:
                    self._commit_group(group)
                except BaseException as e:  # never let the writer die with callers waiting
                    logger.exception("store writer failed on %s", self.url)
                    for pending in group:
                        self._fail(pending, e)
                if self._observers:
                    self._observed(len(group), size, started)

    def _take(self, item: object, backlog: deque[AppendTicket]) -> bool:
        """Put a queue item's tickets on ``backlog``; False for the stop signal."""
        if item is _STOP:
            return False
        if isinstance(item, list):
            backlog.extend(item)
        else:
            assert isinstance(item, AppendTicket)
            backlog.append(item)
        with self._submit_lock:
            self._queued -= len(item) if isinstance(item, list) else 1
        return True

    def _commit_group(self, group: list[AppendTicket]) -> None:
        """Commit a group in one transaction, falling back to one by one on a version clash."""
        batch: list[AppendTicket] = []
        clashing: list[AppendTicket] = []  # settled once the batch has committed
        tips: dict[str, int] = {}
        for pending in group:
            if self._blocked(pending):
                continue
            tip = tips.get(pending.session_id)
            if tip is not None:
                if pending.expected_version == tip:
                    batch.append(pending)
                    tips[pending.session_id] = tip + len(pending.stored)
                else:
                    clashing.append(pending)
                continue
            try:
                actual = self._precheck(pending)
                if actual is not None:
                    self._settle_clash(pending, actual)
                    continue
            except Exception as e:
                self._fail(pending, e)
                continue
            batch.append(pending)
            tips[pending.session_id] = pending.expected_version + len(pending.stored)
        if not batch:
            return
        try:
            fences = [p.fence for p in batch if p.fence is not None]
            positions = self._rows._insert([s for p in batch for s in p.stored], fences)
        except (IntegrityError, LeaseUnavailable):
            # Some session moved on behind our back (another process): find
            # which by committing the appends one by one, in arrival order.
            waiting = {id(p) for p in batch} | {id(p) for p in clashing}
            for pending in group:
                if id(pending) in waiting:
                    self._commit_one(pending)
            return
        except Exception as e:
            for pending in batch + clashing:
                self._fail(pending, e)
            return
        self._committed(batch, positions)
        for pending in clashing:
            if self._blocked(pending):
                continue
            try:
                self._settle_clash(pending, tips[pending.session_id])
            except Exception as e:
                self._fail(pending, e)

    def _commit_one(self, pending: AppendTicket) -> None:
        """Commit one append in its own transaction and resolve its future."""
        if self._blocked(pending):
            return
        try:
            actual = self._precheck(pending)
            if actual is not None:
                self._settle_clash(pending, actual)
                return
            fences = [pending.fence] if pending.fence is not None else []
            try:
                positions = self._rows._insert(pending.stored, fences)
            except IntegrityError:
                self._settle_clash(pending, None)
                return
            self._committed([pending], positions)
        except LeaseUnavailable as e:
            self._reject(pending, e)  # nothing written; the caller must re-acquire
        except Exception as e:
            self._fail(pending, e)

    def _settle_clash(self, pending: AppendTicket, actual: int | None) -> None:
        """Resolve an append that cannot be inserted: already stored, or a conflict."""
        end = pending.expected_version + len(pending.stored)
        if (actual is None or actual >= end) and (
            already := self._already_stored(pending)
        ) is not None:
            self._committed([pending], already)
            return
        if actual is None:
            actual = self._rows._current_version(pending.session_id)
            self.learn_version(pending.session_id, actual)
        self._conflict(pending, actual)

    def _already_stored(self, pending: AppendTicket) -> list[int] | None:
        """Return the positions if exactly these events are stored at these versions.

        That happens when a commit succeeded but its acknowledgement was lost
        (connection dropped during COMMIT) and the insert was retried, or the
        caller retried the append: the events carry this incarnation's id, so
        an identical envelope at the same versions is this very append.
        """
        rows = self._rows._select_session(
            pending.session_id, pending.expected_version, len(pending.stored)
        )
        if len(rows) != len(pending.stored):
            return None
        unseal = self._unseal
        for (_, _, version, topic, state), event in zip(rows, pending.stored, strict=True):
            if (
                version != event.originator_version
                or topic != event.topic
                or unseal(state) != unseal(event.state)
            ):
                return None
        return [row[0] for row in rows]

    def _precheck(self, pending: AppendTicket) -> int | None:
        """Return the actual version if the append certainly conflicts, else None.

        The primary key only catches versions that exist; this also refuses an
        expected version beyond the session's end, which would leave a gap.
        Reads the database only when the cached lower bound cannot decide.
        """
        with self._known_lock:
            known = self._known_versions.get(pending.session_id, 0)
        if pending.expected_version == known:
            return None  # the primary key catches anything newer
        actual = self._rows._current_version(pending.session_id)
        self.learn_version(pending.session_id, actual)
        return None if actual == pending.expected_version else actual

    def _committed(self, batch: list[AppendTicket], positions: Sequence[int]) -> None:
        total = sum(len(p.stored) for p in batch)
        if len(positions) != total:
            raise StoreError(f"store returned {len(positions)} positions for {total} events")
        with self._known_lock:
            if len(self._known_versions) > _MAX_KNOWN_VERSIONS:
                self._known_versions.clear()
            for pending in batch:
                self._known_versions[pending.session_id] = pending.stored[-1].originator_version
        if positions:
            # Listeners first: once an append returns, projections have been woken.
            self._notify(max(positions))
        start = 0
        for pending in batch:
            end = start + len(pending.stored)
            self._resolve(pending, positions[start:end])
            start = end

    def learn_version(self, session_id: str, version: int) -> None:
        if version <= 0:
            return
        with self._known_lock:
            if version > self._known_versions.get(session_id, 0):
                if len(self._known_versions) > _MAX_KNOWN_VERSIONS:
                    self._known_versions.clear()
                self._known_versions[session_id] = version

    def _notify(self, position: int) -> None:
        with self._notify_lock:
            self._max_committed = max(self._max_committed, position)
            current = self._max_committed
        for callback in list(self._listeners):
            try:
                callback(current)
            except Exception:
                logger.exception("store listener %r failed", callback)

    def _conflict(self, pending: AppendTicket, actual: int) -> None:
        self._reject(
            pending, ConcurrencyConflict(pending.session_id, pending.expected_version, actual)
        )

    def _fail(self, pending: AppendTicket, cause: BaseException) -> None:
        detail = self._scrub(str(cause))
        if isinstance(cause, StoreError):
            error = StoreError(detail)
        else:
            error = StoreError(
                f"append to session {pending.session_id!r} in store {self.url} failed, "
                f"nothing of it was written: {type(cause).__name__}: {detail}"
            )
        if detail == str(cause):
            error.__cause__ = cause
        else:  # the cause's own text shows a secret: a logged traceback would print it
            error.__suppress_context__ = True
        self._reject(pending, error)

    @staticmethod
    def _begin(pending: AppendTicket) -> bool:
        """Mark a future's append as running; False if its caller cancelled it."""
        return pending.future is None or pending.future.set_running_or_notify_cancel()

    def _blocked(self, pending: AppendTicket) -> bool:
        """Fail ``pending`` unattempted if the append it was queued ``after`` failed."""
        after = pending.after
        if after is None or after.outcome != _FAILED:
            return False
        self._reject(
            pending,
            StoreError(
                f"append to session {pending.session_id!r} was not attempted, nothing of it "
                f"was written: the append it follows failed"
            ),
        )
        return True

    def _resolve(self, pending: AppendTicket, positions: Sequence[int]) -> None:
        if pending.outcome != _IN_FLIGHT:
            return
        pending.outcome = DURABLE
        pending.after = None  # a settled append no longer needs its predecessor
        if pending.future is not None:
            with suppress(InvalidStateError):
                pending.future.set_result(self._make_recorded(pending, positions))
        else:
            self._call_back(pending, None)

    def _reject(self, pending: AppendTicket, error: BaseException) -> None:
        if pending.outcome != _IN_FLIGHT:
            return
        pending.outcome = _FAILED
        pending.after = None
        if pending.future is not None:
            with suppress(InvalidStateError):
                pending.future.set_exception(error)
        else:
            self._call_back(pending, error)

    @staticmethod
    def _call_back(pending: AppendTicket, error: BaseException | None) -> None:
        # Dropped before the call, as it runs once: a caller's callback usually holds what
        # holds the ticket (a session's in-flight entry), and that cycle would otherwise
        # outlive the append until the cyclic GC found it. At thousands of appends a second
        # that garbage made full collections long stop-the-world pauses (BENCHMARKS.md 7).
        on_done, pending.on_done = pending.on_done, None
        assert on_done is not None
        try:
            on_done(error)
        except Exception:
            logger.exception("append callback %r failed", on_done)

    def _fail_queued(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            for ticket in item if isinstance(item, list) else [item]:
                if isinstance(ticket, AppendTicket) and self._begin(ticket):
                    self._reject(ticket, StoreError(f"store {self.url} was closed"))
