"""Push subscriptions: follow the store's log as events commit (``rt.subscribe``).

A subscription reads the store's own log, so it is resumable and sees every
committed event in order whatever process wrote it: ``rt.subscribe(after=position)``
follows the store-wide notification log by position, ``session.subscribe(after=
sequence)`` one session's log by sequence. It yields typed
:class:`~meerkat_runtime.events.RuntimeEventEnvelope` s; after each one,
``sub.position`` is where to resume from and ``sub.session_id`` names its session.

One reader of the log per runtime: a :class:`CommitFeed` tail thread reads what
committed since it last looked, keeps the most recent events in memory (a ring)
and wakes only the subscribers they concern; a subscriber within the ring reads
it there (no query, each event decoded once for all), one further behind reads
the store until it has caught up. The tail looks when told, without polling
where the store can tell: this process's commits (the store's commit listener,
every backend) and, on PostgreSQL, other processes' commits (LISTEN/NOTIFY).
Elsewhere (a SQLite file shared by processes, a ``memory://NAME`` store opened
twice) it also looks every ``poll_interval``.

The sync :class:`Subscription` is a blocking iterator; the asyncio
:class:`AsyncSubscription` holds no thread while it waits (a loop event set by
the feed; reads from the ring happen on the loop, reads from the store are a
short hop to the loop's default executor). Both end cleanly: ``close()`` (from
any thread), their ``timeout`` (seconds without a new event; the store is
looked at once more before ending), their ``until`` predicate (after yielding
the event it accepts), or the runtime closing. A session's subscription also
ends with the session: after yielding the event that destroyed it, or at once
when it was destroyed before the subscription's position (a destroyed session
never has another event).

An event that cannot be read back raises
:class:`~meerkat_runtime.errors.UndecodableEvent` from the iterator, once; the
subscription has then moved past it, so iterating again goes on with the next
event. Events of topics that are not runtime events are passed over.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from meerkat_runtime.errors import StoreError, UndecodableEvent
from meerkat_runtime.events.catalogue import EVENT_TOPICS, decode_recorded
from meerkat_runtime.events.runtime_event import RuntimeDestroyed, RuntimeEventEnvelope
from meerkat_runtime.store import EventStore, RecordedEvent, UnreadableInLog
from meerkat_runtime.telemetry import log_ids

__all__ = [
    "AsyncSubscription",
    "CommitFeed",
    "EventObserver",
    "Subscription",
]

log = logging.getLogger(__name__)

#: How many events a subscription reads at a time.
PAGE = 500

#: The last event of a destroyed session (nothing is ever appended after it).
DESTROYED = RuntimeDestroyed.__code_prefix__ + "." + RuntimeDestroyed.__tag__

EventObserver = Callable[[RuntimeEventEnvelope], Any]
"""An ``on_runtime_event`` callback: called with each committed envelope."""

Until = Callable[[RuntimeEventEnvelope], bool]


def _listens(store: EventStore) -> bool:
    """Whether the store hears other processes' commits (overrides ``watch_commits``)."""
    return type(store).watch_commits is not EventStore.watch_commits


class CommitFeed:
    """Reads one store's log once for all its subscribers, and wakes those it concerns.

    A tail thread reads the events committed since it last looked, keeps the last
    ``ring_size`` of them in memory, and wakes the subscribers they concern (every
    whole-store subscriber; a session's subscribers only for its events). A
    subscriber within the ring reads it there (no query, each event decoded once
    for all); one further behind reads the store itself until it has caught up.

    The tail looks when told (this process's commits; NOTIFY on PostgreSQL) and
    every ``poll_interval`` for commits it cannot hear (other processes on SQLite;
    on PostgreSQL only a safety net behind LISTEN/NOTIFY: ``listen_poll_interval``).
    It starts with the first subscriber.
    """

    def __init__(
        self,
        store: EventStore,
        *,
        poll_interval: float = 0.2,
        listen_poll_interval: float = 5.0,
        ring_size: int = 1024,
    ) -> None:
        self.store = store
        self._listens = _listens(store)
        self._poll_interval = listen_poll_interval if self._listens else poll_interval
        self._ring_size = ring_size
        self._lock = threading.Lock()
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._generation = 0
        self._closed = False
        self._started = False
        # The ring: the events with positions in (floor, head], in log order. floor < 0:
        # the tail has not read the log yet and the ring covers nothing.
        self._ring: list[_Entry] = []
        self._positions: list[int] = []
        self._floor = -1
        self._head = -1
        # By session (None: whole-store subscribers); a waker returning False is dropped.
        self._wakers: dict[str | None, list[Callable[[], bool]]] = {}
        self._stop_watch: Callable[[], None] | None = None
        self._tail: threading.Thread | None = None
        self._observers: set[threading.Thread] = set()
        store.add_listener(self._on_commit)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called: every subscription has ended or will end."""
        return self._closed

    @property
    def generation(self) -> int:
        """A number that grows whenever events may have committed (or NOTIFY connected)."""
        return self._generation

    def _on_commit(self, _position: int) -> None:
        if not self._closed:
            self.wake()

    def wake(self) -> None:
        """Tell the tail that events may have committed (cheap: any thread, any time)."""
        self._generation += 1
        self._dirty.set()

    def attach(self, session_id: str | None, waker: Callable[[], bool]) -> Callable[[], None]:
        """Register a subscriber of ``session_id`` (None: every session): ``waker()`` is
        called when events for it are in the ring, and at close; return a detacher."""
        with self._lock:
            self._wakers.setdefault(session_id, []).append(waker)
            start = not self._started and not self._stop.is_set()
            self._started = True
        if start:
            self._start()

        def detach() -> None:
            with self._lock:
                kept = [w for w in self._wakers.get(session_id, []) if w is not waker]
                if kept:
                    self._wakers[session_id] = kept
                else:
                    self._wakers.pop(session_id, None)

        return detach

    def _start(self) -> None:
        if self._listens:
            self._stop_watch = self.store.watch_commits(self.wake)
        self._tail = threading.Thread(target=self._tail_loop, name="meerkat-subscriptions", daemon=True)  # fmt: skip
        self._tail.start()
        self._dirty.set()  # read the head at once

    def _tail_loop(self) -> None:
        while not self._stop.is_set():
            self._dirty.wait(self._poll_interval)
            self._dirty.clear()
            if self._stop.is_set():
                return
            try:
                self._catch_up()
            except StoreError:
                continue  # closed under us, or the database is away: try at the next tick
            except Exception:
                log.exception("subscriptions: reading the log failed; retrying")

    def _catch_up(self) -> None:
        if self._head < 0:  # first look: the ring starts at the head
            head = self.store.max_position()
            with self._lock:
                self._head = self._floor = head
                everyone = [w for ws in self._wakers.values() for w in ws]
            # A commit between a subscriber's first read and this look is behind the ring's
            # start and will never be in it: wake everyone to read the store once more.
            self._call(everyone)
        while True:
            bad: UnreadableInLog | None = None
            try:
                records = self.store.read_all(after_position=self._head, limit=PAGE)
            except UnreadableInLog as exc:
                records, bad = exc.before, exc
            entries = [_Entry(r) for r in records]
            if bad is not None:
                hole = RecordedEvent(bad.session_id, bad.version, bad.position, bad.topic, {}, "")
                entries.append(_Entry(hole, bad))
            if not entries:
                return
            self._add(entries)
            if bad is None and len(records) < PAGE:
                return

    def _add(self, entries: list[_Entry]) -> None:
        with self._lock:
            self._ring.extend(entries)
            self._positions.extend(e.record.position for e in entries)
            self._head = entries[-1].record.position
            excess = len(self._ring) - self._ring_size
            if excess > self._ring_size // 4:  # trim in steps, not on every add
                self._floor = self._positions[excess - 1]
                del self._ring[:excess], self._positions[:excess]
            sessions = {e.record.session_id for e in entries}
            wakers = [w for sid in (None, *sessions) for w in self._wakers.get(sid, ())]
        self._call(wakers)

    def _call(self, wakers: list[Callable[[], bool]]) -> None:
        gone = []
        for waker in wakers:
            try:
                alive = waker()
            except Exception:
                log.debug("a subscription waker failed", exc_info=True)
                alive = False
            if not alive:
                gone.append(waker)
        if gone:
            with self._lock:
                for sid in list(self._wakers):
                    kept = [w for w in self._wakers[sid] if w not in gone]
                    if kept:
                        self._wakers[sid] = kept
                    else:
                        del self._wakers[sid]

    def head(self) -> int:
        """The tail's position: every event up to it is in the store (-1: not read yet)."""
        with self._lock:
            return self._head

    def from_ring(self, after: int, session_id: str | None) -> tuple[list[_Entry], int] | None:
        """The events after ``after`` (a position: whole-store; for a session, the log
        position up to which its subscriber has all its events) from the ring, and the
        position the subscriber then stands at; None when the ring does not cover it."""
        with self._lock:
            if self._floor < 0 or after < self._floor:
                return None
            first = bisect.bisect_right(self._positions, after)
            if session_id is None:
                page = self._ring[first : first + PAGE]
                return page, (page[-1].record.position if page else after)
            mine = []
            for index in range(first, len(self._ring)):
                entry = self._ring[index]
                if entry.record.session_id == session_id:
                    mine.append(entry)
                    if len(mine) == PAGE:
                        return mine, entry.record.position
            return mine, max(after, self._head)

    def subscribe(
        self,
        after: int = 0,
        *,
        session_id: str | None = None,
        timeout: float | None = None,
        until: Until | None = None,
    ) -> Subscription:
        """A blocking iterator over the events after ``after`` (a position, or a sequence
        of ``session_id``), as they commit."""
        return Subscription(self, _Reader(self, session_id), after, timeout, until)

    def subscribe_async(
        self,
        after: int = 0,
        *,
        session_id: str | None = None,
        timeout: float | None = None,
        until: Until | None = None,
    ) -> AsyncSubscription:
        """Like :meth:`subscribe`, for ``async for``."""
        return AsyncSubscription(self, _Reader(self, session_id), after, timeout, until)

    def observe(self, callback: EventObserver, *, after: int | None = None) -> Callable[[], None]:
        """Call ``callback(envelope)`` for each event committed after ``after`` (default:
        the log's head now), on a thread of its own; return a function that stops it."""
        start = self.store.max_position() if after is None else after
        sub = self.subscribe(start)
        observers = self._observers

        def run() -> None:
            try:
                _deliver(sub, callback)
            finally:
                observers.discard(thread)

        thread = threading.Thread(target=run, name="meerkat-observer", daemon=True)
        observers.add(thread)
        thread.start()

        def stop() -> None:
            sub.close()
            if threading.current_thread() is not thread:
                thread.join(timeout=5)

        return stop

    def close(self) -> None:
        """Stop the tail, and end every subscription once it has read what committed
        before the close (its iterator then stops); observers have delivered it when this
        returns. Idempotent."""
        with self._lock:
            if self._stop.is_set():
                return
            self._stop.set()
        self._dirty.set()
        if self._stop_watch is not None:
            self._stop_watch()
        if self._tail is not None and self._tail is not threading.current_thread():
            self._tail.join(timeout=5)
        if self._started:
            # One last look: what committed before the close is in the ring for the
            # subscribers to read before they end.
            try:
                self._catch_up()
            except Exception:
                log.debug("subscriptions: the last look at the log failed", exc_info=True)
        with self._lock:
            self._closed = True
            wakers = [w for ws in self._wakers.values() for w in ws]
        self._call(wakers)
        # Observers deliver what committed before the close, then end: wait for them, so
        # no callback runs after the runtime's close() returned (one stuck in its
        # callback is waited for 5 s at most, all together).
        deadline = time.monotonic() + 5.0
        for thread in list(self._observers):
            if thread is not threading.current_thread():
                thread.join(timeout=max(0.0, deadline - time.monotonic()))


def _deliver(sub: Subscription, callback: EventObserver) -> None:
    """An observer's thread: every envelope to ``callback``; a raise is logged, never fatal."""
    while True:
        try:
            envelope = next(sub)
        except StopIteration:
            return
        except UndecodableEvent as exc:
            log.error("observer %r: event not delivered: %s", callback, exc,
                      extra=log_ids(exc.session_id))  # fmt: skip
            continue
        except Exception:
            if sub.closed:
                return
            log.exception("observer %r: reading the log failed; retrying", callback)
            time.sleep(0.5)
            continue
        try:
            callback(envelope)
        except Exception:
            log.exception(
                "observer %r raised on event %s of session %s (sequence %d)",
                callback, envelope.event.event_code, sub.session_id, envelope.sequence,
                extra=log_ids(sub.session_id),
            )  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Item:
    """One read event: where it is, and its envelope or why it has none."""

    cursor: int
    session_id: str
    envelope: RuntimeEventEnvelope | None  # None with no error: not a runtime event
    error: UndecodableEvent | None = None


class _Entry:
    """An event in the feed's ring, decoded once (on first use) for every subscriber."""

    __slots__ = ("_decoded", "error", "record")

    def __init__(self, record: RecordedEvent, error: UndecodableEvent | None = None) -> None:
        self.record = record
        self.error = error
        self._decoded: tuple[RuntimeEventEnvelope | None, UndecodableEvent | None] | None = None

    def item(self, cursor: int) -> _Item:
        if self._decoded is None:  # two threads may both decode: the same answer
            if self.error is not None:
                self._decoded = (None, self.error)
            else:
                item = _decode(self.record, cursor)
                self._decoded = (item.envelope, item.error)
        envelope, error = self._decoded
        return _Item(cursor, self.record.session_id, envelope, error)


def _decode(rec: RecordedEvent, cursor: int) -> _Item:
    if rec.topic not in EVENT_TOPICS:
        return _Item(cursor, rec.session_id, None)
    try:
        return _Item(cursor, rec.session_id, decode_recorded(rec))
    except UndecodableEvent as exc:
        return _Item(cursor, rec.session_id, None, exc)


class _Reader:
    """Reads a page of the store-wide log (by position) or of one session (by sequence):
    from the feed's ring when it covers the reader, else from the store.

    ``watermark`` (a session's reader): the log position up to which it has every event
    of its session; -1 when unknown (read the store).
    """

    def __init__(self, feed: CommitFeed, session_id: str | None) -> None:
        self.feed = feed
        self.store = feed.store
        self.session_id = session_id
        self.watermark = -1
        self.end_unknown = session_id is not None  # whether ended_before must still look

    def ended_before(self, after: int) -> bool:
        """Whether this reader's session was destroyed at a sequence <= ``after`` (so no
        event will ever follow). Looks at the store once, on the first read that finds
        nothing new; later a destroy is seen as the event it is."""
        if not self.end_unknown:
            return False
        self.end_unknown = False
        assert self.session_id is not None
        version = self.store.session_version(self.session_id)
        if version == 0 or version > after:
            return False
        try:
            last = self.store.read_session(self.session_id, after_version=version - 1, limit=1)
        except UndecodableEvent:
            return False  # not a destroy; the reads report it where it is met
        return bool(last) and last[0].topic == DESTROYED

    def from_ring(self, after: int) -> list[_Item] | None:
        """The page after ``after`` from the ring (no I/O); None: read the store."""
        if self.session_id is None:
            got = self.feed.from_ring(after, None)
            if got is None:
                return None
            return [e.item(e.record.position) for e in got[0]]
        if self.watermark < 0:
            return None
        got = self.feed.from_ring(self.watermark, self.session_id)
        if got is None:
            return None
        entries, self.watermark = got
        return [e.item(e.record.version) for e in entries if e.record.version > after]

    def from_store(self, after: int) -> list[_Item]:
        if self.session_id is None:
            return self._read_all(after)
        head = self.feed.head()  # every event up to it is in the store: the read sees it
        items, full = self._read_session(self.session_id, after)
        if full or (items and items[-1].error is not None):
            self.watermark = -1  # more to read, or a hole: read the store again
        else:
            self.watermark = head
        return items

    def read(self, after: int) -> list[_Item]:
        items = self.from_ring(after)
        return self.from_store(after) if items is None else items

    def _read_all(self, after: int) -> list[_Item]:
        try:
            records = self.store.read_all(after_position=after, limit=PAGE)
        except UnreadableInLog as exc:
            items = [_decode(r, r.position) for r in exc.before]
            return [*items, _Item(exc.position, exc.session_id, None, exc)]
        return [_decode(r, r.position) for r in records]

    def _read_session(self, session_id: str, after: int) -> tuple[list[_Item], bool]:
        try:
            records = self.store.read_session(session_id, after_version=after, limit=PAGE)
        except UndecodableEvent as exc:
            # A session read fails as a whole: read the events before the bad one alone.
            good = exc.version - after - 1
            before = (
                self.store.read_session(session_id, after_version=after, limit=good)
                if good > 0
                else []
            )
            items = [_decode(r, r.version) for r in before]
            return [*items, _Item(exc.version, session_id, None, exc)], False
        return [_decode(r, r.version) for r in records], len(records) == PAGE


class _Cursor:
    """What the sync and asyncio subscriptions share: the position and the read-ahead."""

    def __init__(
        self,
        feed: CommitFeed,
        reader: _Reader,
        after: int,
        timeout: float | None,
        until: Until | None,
    ) -> None:
        if type(after) is not int or after < 0:
            raise ValueError(f"after must be an int >= 0, got {after!r}")
        if timeout is not None and timeout < 0:
            raise ValueError("timeout must be >= 0")
        self._feed = feed
        self._reader = reader
        self._timeout = timeout
        self._until = until
        self._buffer: deque[_Item] = deque()
        self._closed = False
        self.position = after
        """Where this subscription stands: the log position (``rt.subscribe``) or the session
        sequence (``session.subscribe``) of the last event yielded; resume with ``after=``."""
        self.session_id: str | None = reader.session_id
        """The session of the last event yielded (the subscribed one for a session)."""

    @property
    def closed(self) -> bool:
        """Whether the subscription has ended (closed, timed out, ``until`` met) or will end
        once it has read what committed before its runtime closed."""
        return self._ended()

    def _ended(self) -> bool:
        # A method, not the property: its answer changes between two checks (other threads).
        return self._closed or self._feed.closed

    def _take(self) -> RuntimeEventEnvelope | None:
        """The next buffered envelope (None when the buffer is empty); raises a bad event's
        error after moving past it."""
        if self._closed:  # a read that was under way when close() ran yields nothing
            return None
        while self._buffer:
            item = self._buffer.popleft()
            self.position = item.cursor
            if item.error is not None:
                raise item.error
            if item.envelope is None:
                continue
            self.session_id = item.session_id
            if self._until is not None and self._until(item.envelope):
                self._end()
            elif (
                self._reader.session_id is not None and item.envelope.event.event_code == DESTROYED
            ):
                self._end()  # the session's log is complete
            return item.envelope
        return None

    def _end(self) -> None:
        self._closed = True
        self._buffer.clear()

    def _deadline(self) -> float | None:
        return None if self._timeout is None else time.monotonic() + self._timeout


class Subscription(_Cursor, Iterator[RuntimeEventEnvelope]):
    """A blocking iterator over committed events (``rt.subscribe``, ``session.subscribe``).

    Iteration waits for the next event; it ends when :meth:`close` is called (from any
    thread), after ``timeout`` seconds without an event, after the event ``until``
    accepts, or when the runtime closes. Also a context manager (closes on exit).
    """

    def __init__(
        self,
        feed: CommitFeed,
        reader: _Reader,
        after: int,
        timeout: float | None,
        until: Until | None,
    ) -> None:
        super().__init__(feed, reader, after, timeout, until)
        self._wake = threading.Event()
        self._detach = feed.attach(reader.session_id, _sync_waker(self))

    def __iter__(self) -> Subscription:
        return self

    def __next__(self) -> RuntimeEventEnvelope:
        deadline = self._deadline()
        while True:
            envelope = self._take()
            if envelope is not None:
                return envelope
            if self._closed:
                self.close()
                raise StopIteration
            draining = self._feed.closed  # the runtime closed: read what is left, then end
            self._wake.clear()  # before reading: events added during the read set it again
            try:
                items = self._reader.read(self.position)
            except StoreError:
                if self._ended():  # the store closed with the runtime
                    self.close()
                    raise StopIteration from None
                raise
            if items:
                self._buffer.extend(items)
                continue
            if draining or self._reader.ended_before(self.position):
                self.close()
                raise StopIteration
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                # The ring may trail the store by a commit: look at the store itself
                # before ending, so a timeout never ends short of what is durable now.
                items = [] if self._ended() else self._reader.from_store(self.position)
                if items:
                    self._buffer.extend(items)
                    continue
                self.close()
                raise StopIteration
            self._sleep(deadline)

    def _sleep(self, deadline: float | None) -> None:
        """Until woken, closed or ``deadline``; in bounded waits, so that a signal handler
        (Ctrl-C) gets its turn promptly, but without reading again after each."""
        while not self._ended():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return
            if self._wake.wait(1.0 if remaining is None else min(remaining, 1.0)):
                return

    def close(self) -> None:
        """End the subscription; a blocked iteration returns at once. Idempotent."""
        if not self._closed:
            self._end()
        self._detach()
        self._wake.set()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncSubscription(_Cursor, AsyncIterator[RuntimeEventEnvelope]):
    """``async for`` over committed events; holds no thread while it waits.

    Ends like :class:`Subscription`; ``await sub.aclose()`` or ``sub.close()``, or
    ``async with``.
    """

    def __init__(
        self,
        feed: CommitFeed,
        reader: _Reader,
        after: int,
        timeout: float | None,
        until: Until | None,
    ) -> None:
        super().__init__(feed, reader, after, timeout, until)
        self._event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._detach: Callable[[], None] | None = None

    def _bind(self) -> asyncio.Event:
        """The loop event the feed sets on each wake (made on the first ``__anext__``)."""
        if self._event is None:
            self._event = asyncio.Event()
            self._loop = asyncio.get_running_loop()
            self._detach = self._feed.attach(self._reader.session_id, _waker(self, self._loop))
        return self._event

    def __aiter__(self) -> AsyncSubscription:
        return self

    async def __anext__(self) -> RuntimeEventEnvelope:
        event = self._bind()
        deadline = self._deadline()
        loop = asyncio.get_running_loop()
        while True:
            envelope = self._take()
            if envelope is not None:
                return envelope
            if self._closed:
                self.close()
                raise StopAsyncIteration
            draining = self._feed.closed  # as in Subscription: what is left, then the end
            event.clear()  # before reading: a commit during the read sets it again
            items = self._reader.from_ring(self.position)  # in memory: no hop needed
            if items is None:
                try:
                    items = await loop.run_in_executor(None, self._reader.from_store, self.position)
                except StoreError:
                    if self._ended():
                        self.close()
                        raise StopAsyncIteration from None
                    raise
            if items:
                self._buffer.extend(items)
                continue
            if draining or (
                self._reader.end_unknown
                and await loop.run_in_executor(None, self._reader.ended_before, self.position)
            ):
                self.close()
                raise StopAsyncIteration
            if self._ended():
                continue
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                # As in Subscription: the store itself before ending.
                items = await loop.run_in_executor(None, self._reader.from_store, self.position)
                if items:
                    self._buffer.extend(items)
                    continue
                self.close()
                raise StopAsyncIteration
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), remaining)

    def close(self) -> None:
        """End the subscription (from any thread); a waiting ``__anext__`` returns soon.
        Idempotent."""
        if not self._closed:
            self._end()
        if self._detach is not None:
            self._detach()
        event, loop = self._event, self._loop
        if event is None or loop is None:
            return
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:  # no loop runs on this thread
            on_loop = False
        if on_loop:
            event.set()
        else:
            # asyncio.Event is not thread-safe: set off its loop, the loop is not woken
            # and a waiting ``__anext__`` sleeps on until something else wakes it.
            with contextlib.suppress(RuntimeError):  # the loop has closed
                loop.call_soon_threadsafe(event.set)

    async def aclose(self) -> None:
        """:meth:`close`, awaitable (for ``contextlib.aclosing``)."""
        self.close()

    async def __aenter__(self) -> AsyncSubscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


def _waker(sub: AsyncSubscription, loop: asyncio.AbstractEventLoop) -> Callable[[], bool]:
    """Sets ``sub``'s loop event from any thread. It holds ``sub`` weakly: a subscription
    dropped without ``close`` (its task cancelled) is then forgotten by the feed, as is
    one whose loop has closed."""
    ref = weakref.ref(sub)

    def waker() -> bool:
        alive = ref()
        if alive is None or alive._event is None or alive._closed:
            return False
        try:
            loop.call_soon_threadsafe(alive._event.set)
        except RuntimeError:  # the loop has closed
            return False
        return True

    return waker


def _sync_waker(sub: Subscription) -> Callable[[], bool]:
    """Sets ``sub``'s thread event; holds it weakly, like :func:`_waker`."""
    ref = weakref.ref(sub)

    def waker() -> bool:
        alive = ref()
        if alive is None or alive._closed:
            return False
        alive._wake.set()
        return True

    return waker


async def deliver_async(sub: AsyncSubscription, callback: EventObserver) -> None:
    """An asyncio observer's task: every envelope to ``callback`` (awaited when it returns
    an awaitable); a raise is logged, never fatal."""
    while True:
        try:
            envelope = await anext(sub)
        except StopAsyncIteration:
            return
        except UndecodableEvent as exc:
            log.error("observer %r: event not delivered: %s", callback, exc,
                      extra=log_ids(exc.session_id))  # fmt: skip
            continue
        except Exception:
            if sub.closed:
                return
            log.exception("observer %r: reading the log failed; retrying", callback)
            await asyncio.sleep(0.5)
            continue
        try:
            result = callback(envelope)
            if isinstance(result, Awaitable):
                await result
        except Exception:
            log.exception(
                "observer %r raised on event %s of session %s (sequence %d)",
                callback, envelope.event.event_code, sub.session_id, envelope.sequence,
                extra=log_ids(sub.session_id),
            )  # fmt: skip
