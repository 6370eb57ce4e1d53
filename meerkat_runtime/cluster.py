"""Cluster membership: leases that give each session one owner process at a time.

Several runtime processes may share one store, a SQLite file (processes on one
machine) or a PostgreSQL database (any number of machines). A node holds a
lease (``session:<id>``) for every session whose actor it runs; a lease has
an owner (the node id), the holder's incarnation (its process start) and OS
process, an expiry and a fencing token, and is renewed by a heartbeat every
``ttl / 3`` seconds. Every append carries the node's fence, checked inside
the append's transaction (PostgreSQL: the lease row locked; SQLite: the
file's single writer lock), so a node that lost its lease (paused past
expiry, partitioned, replaced by a restart) cannot write, even if it does not
know yet. Optimistic concurrency (expected versions) stays underneath as a
second guard against forks.

A session whose owner died is taken over by whichever node is asked for it:
at once by a new incarnation of the same node id (a restarted service), at
once when the holder's process is on this machine and gone
(:func:`process_gone`), else once the lease has expired. The new owner folds
the log and recovers it (its last events carry another incarnation, so the
cold recovery rules apply).

At-least-once window: an executor call runs in the process that owns the
session, once per input. Only when that process dies, or is fenced off
(its lease taken over: expiry while paused or cut off, a restart with its node
id, an operator's ``--force``), while an executor call is in flight, can the
end of that run not be recorded; the new owner's recovery then re-queues (or
abandons, per the recovery rules) its inputs and they run again. Nothing else
runs an input twice: a process never starts a run for a session it does not
hold, and its appends are fenced.

Running a single service: on SQLite nothing needs setting; on PostgreSQL give
it a stable node id (``node_id=`` or ``MEERKAT_NODE_ID``) so a restart on
another machine or container takes its sessions back at once instead of after
``lease_ttl``. Never run two live processes with one node id: each takes the
sessions back from the other (safe, but they interrupt each other's runs).
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime

from meerkat_runtime.errors import LeaseUnavailable, StoreError
from meerkat_runtime.store import EventStore, Fence, Lease, NodeInfo

__all__ = [
    "NODE_ID_ENV",
    "ClusterView",
    "Membership",
    "default_node_id",
    "live_holder",
    "process_gone",
    "process_key",
    "session_lease",
]

log = logging.getLogger(__name__)


NODE_ID_ENV = "MEERKAT_NODE_ID"
"""Environment variable naming this process's node id (see :func:`default_node_id`)."""

NODE_RETENTION_TTLS = 10.0
"""A node row whose heartbeat is older than this many of its lease TTLs is deleted."""


_defaults = itertools.count(1)


def default_node_id() -> str:
    """``$MEERKAT_NODE_ID`` if set, else host name plus process id.

    Without the variable, a second runtime opened in the same process gets ``-2``
    appended (and so on): two runtimes with one node id would take sessions from
    each other (see the module docstring).
    """
    if env := os.environ.get(NODE_ID_ENV):
        return env
    n = next(_defaults)
    base = f"{socket.gethostname()}-{os.getpid()}"
    return base if n == 1 else f"{base}-{n}"


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError):
        return ""


def _start_ticks(pid: int) -> str:
    """When process ``pid`` started (clock ticks since boot), or "" if there is none."""
    stat = _read(f"/proc/{pid}/stat")
    # The command name (field 2) may hold spaces and parentheses: split after its end.
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else ""


def _pid_namespace() -> str:
    """Boot id and pid namespace: pids mean the same process only where both are equal."""
    boot = _read("/proc/sys/kernel/random/boot_id")
    try:
        ns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return ""
    return f"{boot}/{ns}" if boot else ""


def process_key() -> str:
    """This operating-system process: boot id, pid namespace, pid and start time ("" off Linux).

    Recorded with every lease, so another process on the same host (same boot, same
    pid namespace) can tell for sure that the holder is gone: no process with that
    pid, or one started at another time (the pid was reused).
    """
    where = _pid_namespace()
    pid = os.getpid()
    start = _start_ticks(pid)
    return f"{where}:{pid}:{start}" if where and start else ""


def process_gone(key: str) -> bool:
    """True only if the process ``key`` names is certainly not running (see :func:`process_key`).

    False when it runs or when this process cannot tell (another host, container or
    boot, or no ``/proc``): then only the lease's expiry frees what it held.
    """
    parts = key.rsplit(":", 2)
    if len(parts) != 3 or not parts[0] or parts[0] != _pid_namespace():
        return False
    _, pid, start = parts
    if not pid.isdigit() or not start:
        return False
    return _start_ticks(int(pid)) != start


def session_lease(session_id: str) -> str:
    return f"session:{session_id}"


@dataclass(frozen=True, slots=True)
class ClusterView:
    """What ``rt.cluster()`` reports: nodes, session leases and projection owners."""

    node_id: str
    nodes: list[NodeInfo]
    leases: list[Lease]
    projection_owners: dict[str, str | None]
    now: datetime | None = None


def live_holder(lease: Lease) -> bool:
    """True if ``lease`` is held by a process that may still be running."""
    return lease.live and not process_gone(lease.process)


_LEASE_LOCK_STRIPES = 64


class Membership:
    """This node's leases: acquire, renew by heartbeat, release, and fence appends.

    Each process start is a new *incarnation* of its node (the store's writer id): a node that
    restarts with the same node id takes its leases back at once, with new
    fencing tokens, so its previous life can no longer write (see the module
    docstring). ``force`` takes leases from live holders too (operator tools'
    ``--force``): the holder is fenced off and loses the session.
    """

    def __init__(
        self,
        store: EventStore,
        node_id: str,
        ttl: float,
        on_lost: Callable[[str], None],
        *,
        force: bool = False,
    ) -> None:
        if ttl <= 0:
            raise ValueError("lease_ttl must be > 0")
        if not isinstance(node_id, str) or not node_id:
            raise ValueError("node_id must be a non-empty str")
        self.store = store
        self.shared = store.shared()  # leases and nodes; StoreError on memory://
        self.node_id = node_id
        self.ttl = ttl
        self.force = force
        # The store instance's writer id, recorded on every event it appends: a fresh
        # random id each time a process opens the store.
        self.incarnation = store.incarnation
        self.process = process_key()
        self._on_lost = on_lost
        self._lock = threading.Lock()
        self._held: dict[str, tuple[int, object]] = {}  # name -> (token, holder)
        # A lease's acquire and release each go to the store and then update _held; the
        # same lease's pair must not interleave, or a release that read _held before an
        # acquire by another holder updated it would delete the row that acquire just
        # confirmed (the holder then fences with a lease nobody holds). Striped by name.
        self._lease_locks = [threading.Lock() for _ in range(_LEASE_LOCK_STRIPES)]
        self._closed = False
        self._beats = 0
        self.shared.heartbeat_node(node_id, self._info(), incarnation=self.incarnation)
        self._prune()

    def _info(self, **extra: int) -> dict[str, object]:
        """What the nodes table records; ``lease_ttl`` tells a reader (``meerkat-runtime
        cluster``) how old a heartbeat may be before the node counts as dead."""
        return {"pid": os.getpid(), "host": socket.gethostname(), "lease_ttl": self.ttl, **extra}

    def _prune(self) -> None:
        try:
            self.shared.prune_nodes(NODE_RETENTION_TTLS)
        except StoreError as exc:
            log.warning("could not delete the rows of dead nodes: %s", exc)

    @staticmethod
    def _stripe(name: str) -> int:
        return zlib.crc32(name.encode("utf-8", "surrogatepass")) % _LEASE_LOCK_STRIPES

    def _lease_lock(self, name: str) -> threading.Lock:
        return self._lease_locks[self._stripe(name)]

    def acquire(self, name: str, holder: object = None) -> int:
        """Take lease ``name`` (or confirm it) for ``holder`` (e.g. an actor) in this node.

        :class:`LeaseUnavailable` if another live process holds it. A holder known
        dead (same host, its process gone) is not waited for. A later holder in
        this node replaces an earlier one, whose :meth:`release` then does nothing.
        """
        with self._lease_lock(name):
            return self._acquire(name, holder)

    def _acquire(self, name: str, holder: object) -> int:
        try:
            token = self.shared.acquire_lease(
                name, self.node_id, self.ttl, incarnation=self.incarnation, process=self.process
            )
        except LeaseUnavailable:
            current = next((x for x in self.shared.list_leases(name) if x.name == name), None)
            if current is None or not (
                self.force or (current.live and process_gone(current.process))
            ):
                raise
            if current.live and not process_gone(current.process):
                log.warning("taking lease %s from live node %s (forced)", name, current.owner)
            token = self.shared.acquire_lease(
                name,
                self.node_id,
                self.ttl,
                incarnation=self.incarnation,
                process=self.process,
                steal=current.token,
            )
        with self._lock:
            self._held[name] = (token, holder)
        return token

    @contextmanager
    def _lease_locks_of(self, names: Sequence[str]) -> Iterator[None]:
        """Hold the per-lease locks of every name in ``names`` (taken in stripe order, so
        two holders of several never deadlock; everyone else holds at most one)."""
        stripes = sorted({self._stripe(n) for n in names})
        with ExitStack() as stack:
            for stripe in stripes:
                stack.enter_context(self._lease_locks[stripe])
            yield

    def acquire_many(self, names: Sequence[str], holder: object) -> list[str]:
        """Take the leases ``names`` not held in this node yet for ``holder``, in one
        transaction; return those taken, in the order given.

        A name another live process holds is tried again alone (:meth:`acquire`: a holder
        known dead is not waited for, ``force`` steals); one still refused is left out.
        A store failure takes nothing (logged).
        """
        refused: list[str] = []
        with self._lease_locks_of(names):
            with self._lock:
                wanted = [n for n in names if n not in self._held]
            try:
                tokens = self.shared.acquire_leases(
                    wanted,
                    self.node_id,
                    self.ttl,
                    incarnation=self.incarnation,
                    process=self.process,
                )
            except StoreError as exc:
                log.warning("could not take %d leases: %s", len(wanted), exc)
                return []
            with self._lock:
                for name in wanted:
                    token = tokens.get(name)
                    if token is None:
                        refused.append(name)
                    else:
                        self._held[name] = (token, holder)
        taken = set(tokens)
        for name in refused:
            try:
                self.acquire(name, holder)
            except (LeaseUnavailable, StoreError):
                continue
            taken.add(name)
        return [n for n in wanted if n in taken]

    def release_many(self, names: Sequence[str], holder: object) -> None:
        """:meth:`release` for many leases, in one transaction."""
        with self._lease_locks_of(names):
            with self._lock:
                mine = [n for n in names if (h := self._held.get(n)) is not None and h[1] is holder]
                for name in mine:
                    del self._held[name]
            if self._closed or not mine:
                return
            try:
                self.shared.release_leases(mine, self.node_id, incarnation=self.incarnation)
            except StoreError as exc:  # they will expire by themselves
                log.warning("could not release %d leases: %s", len(mine), exc)

    def holds(self, name: str) -> bool:
        with self._lock:
            return name in self._held

    def fence(self, name: str) -> Fence | None:
        with self._lock:
            held = self._held.get(name)
        return None if held is None else Fence(name, self.node_id, held[0])

    def forget(self, name: str) -> None:
        with self._lock:
            self._held.pop(name, None)

    def release(self, name: str, holder: object = None) -> None:
        """Give lease ``name`` up now (passivation) if ``holder`` still holds it here."""
        self.release_many((name,), holder)

    def heartbeat(self) -> None:
        """Renew every held lease; report the ones lost to ``on_lost``."""
        if self._closed:
            return
        with self._lock:
            names = list(self._held)
        try:
            self.shared.heartbeat_node(
                self.node_id, self._info(leases=len(names)), incarnation=self.incarnation
            )
            renewed = self.shared.renew_leases(
                names, self.node_id, self.ttl, incarnation=self.incarnation
            )
        except StoreError as exc:
            log.warning("lease heartbeat failed (%s); leases may expire", exc)
            return
        for name in names:
            if name not in renewed:
                self.forget(name)
                log.warning("lease %s was lost (taken over by another node)", name)
                self._on_lost(name)
        # A lease released while the renewal ran (a session passivated) was extended
        # again: release it once more, or it would stay live for a whole TTL with no
        # holder here, and every other node asking for it would be refused meanwhile.
        for name in names:
            if name not in renewed:
                continue
            with self._lease_lock(name):  # not while another holder here acquires it
                with self._lock:
                    if name in self._held:
                        continue
                try:
                    self.shared.release_lease(name, self.node_id, incarnation=self.incarnation)
                except StoreError as exc:
                    log.warning("could not release lease %s: %s", name, exc)
        self._beats += 1
        if self._beats % 30 == 0:  # every 10 TTLs: the dead stay listed about that long
            self._prune()

    def view(self, projection_names: list[str]) -> ClusterView:
        leases = self.shared.list_leases()
        owners: dict[str, str | None] = {}
        for p in projection_names:
            lease = next((x for x in leases if x.name == f"projection:{p}"), None)
            owners[p] = lease.owner if lease is not None and lease.live else None
        return ClusterView(
            node_id=self.node_id,
            nodes=self.shared.list_nodes(),
            leases=[x for x in leases if x.name.startswith("session:")],
            projection_owners=owners,
        )

    def close(self) -> None:
        """Release every lease (other nodes can take over at once) and leave the node list."""
        with self._lock:
            names = list(self._held)
            self._held.clear()
            self._closed = True
        for name in names:
            try:
                self.shared.release_lease(name, self.node_id, incarnation=self.incarnation)
            except StoreError as exc:
                log.warning("could not release lease %s: %s", name, exc)
        try:
            self.shared.remove_node(self.node_id, self.incarnation)
        except StoreError as exc:
            log.warning("could not remove node %s from the node list: %s", self.node_id, exc)


def lease_owner_error(exc: LeaseUnavailable) -> str:
    return exc.owner or "nobody (expired)"
