"""Session hosts: a few pykka actors (OS threads), each running many session actors.

A session stays an actor in the full sense: its own ordered mailbox, one
message at a time, state only from its fold, supervision and passivation.
But no session owns a thread. Sessions are partitioned over a fixed set of
hosts by a stable hash of their id, the way Akka entities, Orleans grains or
Erlang processes are many actors on few threads, so 10,000 live sessions cost
10,000 small objects, not 10,000 threads.

Scheduling. Posting a message appends it to the session's mailbox; a session
that was idle is put on its host's queue once. The host runs up to
:data:`TURN_BUDGET` of the session's messages, then puts it back at the end
of the queue if more wait, so one busy session cannot starve the others.

Batched turns. A host holds the appends its sessions pipeline
(:meth:`EventStore.submit_append`) while its queue has work and hands them to
the store's writer together when the queue runs dry, so a burst of accepts
over many sessions becomes one group commit. Hosts are answered by the commit
callback, once their events are durable; a failed commit fails exactly the
appends in it. Anything that waits for an append (a blocking command, a drain)
hands the held appends over first, so nothing ever waits behind them.

A message handler that blocks (loading a session from the store, a lifecycle
command's blocking append) holds up the other sessions of its host for that
long; accepts, the hot path, never block a host.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import zlib
from typing import TYPE_CHECKING, Any, Protocol

import pykka

from meerkat_runtime.store import EventStore
from meerkat_runtime.telemetry import log_ids

if TYPE_CHECKING:
    from pykka._actor import ActorInbox

    from meerkat_runtime.actors._messages import Call

__all__ = ["Hosted", "Hosts", "Mailbox", "default_host_count"]

log = logging.getLogger(__name__)


class Hosted(Protocol):
    """What a host needs of a session actor (``SessionActor`` is one): its id, its
    mailbox and a handler for one message at a time."""

    @property
    def session_id(self) -> str: ...

    @property
    def mailbox(self) -> Mailbox: ...

    def on_receive(self, message: Call) -> None: ...


# Messages of one session run in a row before the host turns to the next session.
TURN_BUDGET = 64


def default_host_count() -> int:
    """Twice the cores: hosts block on the store now and then (loads, lifecycle commands)."""
    return 2 * (os.cpu_count() or 1)


class Mailbox:
    """A session actor's ordered mailbox and whether it waits on its host's queue.

    A list read from ``head`` on (reset when emptied), not a deque: thousands of
    mostly empty mailboxes are live at once, and an empty deque costs 600 bytes.
    """

    __slots__ = ("calls", "head", "lock", "queued")

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.head = 0
        self.lock = threading.Lock()
        self.queued = False

    def put(self, call: Call) -> bool:
        """Append ``call`` (lock held); True when the actor must be queued on its host."""
        self.calls.append(call)
        if self.queued:
            return False
        self.queued = True
        return True

    def take(self) -> Call | None:
        """The next call (lock held), or None, marking the actor no longer queued."""
        calls = self.calls
        if self.head == len(calls):
            if calls:
                calls.clear()
                self.head = 0
            self.queued = False
            return None
        call = calls[self.head]
        calls[self.head] = None  # type: ignore[call-overload]  # drop the reference now
        self.head += 1
        return call

    def __len__(self) -> int:
        return len(self.calls) - self.head


class SessionHost(pykka.ThreadingActor):
    """One OS thread running the session actors hashed to it."""

    use_daemon_thread = True

    @staticmethod
    def _create_actor_inbox() -> ActorInbox:
        # pykka's default inbox is a queue.Queue (a Python Condition around every put
        # and get); SimpleQueue, in C, is all the inbox protocol needs.
        inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        return inbox

    def __init__(self, store: EventStore) -> None:
        super().__init__()
        self.store = store

    def on_start(self) -> None:
        self.store.hold_appends()  # this thread's pipelined appends wait for the turn's end

    def on_receive(self, message: Any) -> Any:
        try:
            self._run(message)
        finally:
            if self.actor_inbox.empty():  # the end of a turn: commit what it decided
                try:
                    self.store.flush_batch()
                except Exception:
                    log.exception("a session host could not hand its appends to the store")
        return None

    def _run(self, actor: Hosted) -> None:
        mailbox = actor.mailbox
        for _ in range(TURN_BUDGET):
            with mailbox.lock:
                call = mailbox.take()
            if call is None:
                return
            try:
                actor.on_receive(call)
            except Exception:
                log.exception(
                    "session %s: message %r failed",
                    actor.session_id,
                    call.kind,
                    extra=log_ids(actor.session_id),
                )
        with mailbox.lock:
            if not len(mailbox):
                mailbox.take()  # marks it idle (and resets the list)
                return
        self.actor_ref.tell(actor)  # more waits: to the back of the queue, for fairness

    def on_stop(self) -> None:
        try:
            self.store.flush_batch()
        except Exception:
            log.exception("a session host could not hand its appends to the store")


class Hosts:
    """The fixed set of session hosts of one runtime."""

    def __init__(self, store: EventStore, count: int) -> None:
        if count < 1:
            raise ValueError("session_threads must be >= 1")
        self._refs = [SessionHost.start(store) for _ in range(count)]

    def __len__(self) -> int:
        return len(self._refs)

    def post(self, actor: Hosted, call: Call) -> None:
        """Append ``call`` to the actor's mailbox; queue the actor on its host if idle."""
        mailbox = actor.mailbox
        with mailbox.lock:
            if not mailbox.put(call):
                return
        self._refs[_host_of(actor.session_id, len(self._refs))].tell(actor)

    def stop(self, timeout: float) -> None:
        """Stop every host after the work already queued on it."""
        futures = [ref.stop(block=False) for ref in self._refs]
        for fut in futures:
            try:
                fut.get(timeout=timeout)
            except pykka.Timeout:
                log.warning("a session host did not stop within the close timeout")


def _host_of(session_id: str, count: int) -> int:
    """A stable partition: the same session always runs on the same host (per runtime)."""
    return zlib.crc32(session_id.encode("utf-8", "surrogatepass")) % count
