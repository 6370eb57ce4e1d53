"""Cluster membership: leases that give each session one owner process at a time.

Several runtime processes may share one PostgreSQL store. A node holds a
lease (``session:<id>``) for every session whose actor it runs; a lease has
an owner, an expiry and a fencing token, and is renewed by a heartbeat every
``ttl / 3`` seconds. Every append carries the node's fence, checked inside
the append's transaction with the lease row locked, so a node that lost its
lease (paused past expiry, partitioned) cannot write, even if it does not know
yet. Optimistic concurrency (expected versions) stays underneath as a second
guard against forks.

A session whose owner died is taken over by whichever node is asked for it
once the lease has expired: it folds the log and recovers it (its last events
carry another incarnation, so the cold recovery rules apply).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from meerkat_runtime.errors import LeaseUnavailable, StoreError
from meerkat_runtime.store import EventStore, Fence, Lease, NodeInfo

__all__ = ["ClusterView", "Membership", "default_node_id", "session_lease"]

log = logging.getLogger(__name__)


def default_node_id() -> str:
    """Host name plus process id."""
    return f"{socket.gethostname()}-{os.getpid()}"


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


class Membership:
    """This node's leases: acquire, renew by heartbeat, release, and fence appends."""

    def __init__(
        self,
        store: EventStore,
        node_id: str,
        ttl: float,
        on_lost: Callable[[str], None],
    ) -> None:
        if ttl <= 0:
            raise ValueError("lease_ttl must be > 0")
        self.store = store
        self.node_id = node_id
        self.ttl = ttl
        self._on_lost = on_lost
        self._lock = threading.Lock()
        self._held: dict[str, tuple[int, object]] = {}  # name -> (token, holder)
        self._closed = False
        store.heartbeat_node(node_id, self._info())

    def _info(self, **extra: int) -> dict[str, object]:
        """What the nodes table records; ``lease_ttl`` tells a reader (``meerkat-runtime
        cluster``) how old a heartbeat may be before the node counts as dead."""
        return {"pid": os.getpid(), "host": socket.gethostname(), "lease_ttl": self.ttl, **extra}

    def acquire(self, name: str, holder: object = None) -> int:
        """Take lease ``name`` (or confirm it) for ``holder`` (e.g. an actor) in this node.

        :class:`LeaseUnavailable` if another live node holds it. A later holder in
        this node replaces an earlier one, whose :meth:`release` then does nothing.
        """
        token = self.store.acquire_lease(name, self.node_id, self.ttl)
        with self._lock:
            self._held[name] = (token, holder)
        return token

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
        with self._lock:
            held = self._held.get(name)
            if held is None or held[1] is not holder:
                return
            del self._held[name]
        if self._closed:
            return
        try:
            self.store.release_lease(name, self.node_id)
        except StoreError as exc:  # it will expire by itself
            log.warning("could not release lease %s: %s", name, exc)

    def heartbeat(self) -> None:
        """Renew every held lease; report the ones lost to ``on_lost``."""
        if self._closed:
            return
        with self._lock:
            names = list(self._held)
        try:
            self.store.heartbeat_node(self.node_id, self._info(leases=len(names)))
            renewed = self.store.renew_leases(names, self.node_id, self.ttl)
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
        with self._lock:
            released = [n for n in names if n in renewed and n not in self._held]
        for name in released:
            try:
                self.store.release_lease(name, self.node_id)
            except StoreError as exc:
                log.warning("could not release lease %s: %s", name, exc)

    def view(self, projection_names: list[str]) -> ClusterView:
        leases = self.store.list_leases()
        owners: dict[str, str | None] = {}
        for p in projection_names:
            lease = next((x for x in leases if x.name == f"projection:{p}"), None)
            owners[p] = lease.owner if lease is not None and lease.live else None
        return ClusterView(
            node_id=self.node_id,
            nodes=self.store.list_nodes(),
            leases=[x for x in leases if x.name.startswith("session:")],
            projection_owners=owners,
        )

    def close(self) -> None:
        """Release every lease (other nodes can take over at once)."""
        with self._lock:
            names = list(self._held)
            self._held.clear()
            self._closed = True
        for name in names:
            try:
                self.store.release_lease(name, self.node_id)
            except StoreError as exc:
                log.warning("could not release lease %s: %s", name, exc)


def lease_owner_error(exc: LeaseUnavailable) -> str:
    return exc.owner or "nobody (expired)"
