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
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from contextlib import suppress
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
        self.stats = CommitStats()

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
        """Appends waiting for the writer thread (approximate)."""
        return self._queue.qsize()

    def add_listener(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(max_position)`` after each durable commit, before callers hear."""
        self._listeners.append(callback)

    def submit(self, ticket: AppendTicket, check_open: Callable[[], None]) -> None:
        """Commit ``ticket`` now (no group commit) or queue it for the writer thread."""
        if not self.enabled:
            check_open()
            self._begin(ticket)
            self._commit_one(ticket)
            return
        with self._submit_lock:
            check_open()
            if self._closed:
                raise StoreError(f"store {self.url} is closed")
            self._queue.put(ticket)

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
        carry: AppendTicket | None = None
        while True:
            if carry is not None:
                group, carry = [carry], None
            else:
                item = self._queue.get()
                if item is _STOP:
                    return
                assert isinstance(item, AppendTicket)
                group = [item] if self._begin(item) else []
            size = sum(len(p.stored) for p in group)
            stopping = False
            deadline = time.monotonic() + self._max_batch_wait
            while size < self._max_batch_events:
                try:
                    if self._max_batch_wait > 0:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        item = self._queue.get(timeout=remaining)
                    else:
                        item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                assert isinstance(item, AppendTicket)
                if not self._begin(item):
                    continue  # cancelled by its caller before we got to it
                if group and size + len(item.stored) > self._max_batch_events:
                    carry = item
                    break
                group.append(item)
                size += len(item.stored)
            if group:
                self.stats.groups += 1
                self.stats.appends += len(group)
                try:
                    self._commit_group(group)
                except BaseException as e:  # never let the writer die with callers waiting
                    logger.exception("store writer failed on %s", self.url)
                    for pending in group:
                        self._fail(pending, e)
            if stopping:
                return

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
        assert pending.on_done is not None
        try:
            pending.on_done(error)
        except Exception:
            logger.exception("append callback %r failed", pending.on_done)

    def _fail_queued(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, AppendTicket) and self._begin(item):
                self._reject(item, StoreError(f"store {self.url} was closed"))
