"""What the console's pages show, read from a runtime opened read-only.

Each function reads the read models (``rt.views``, ``rt.ledger``), the projection
status or the store; none writes. Lists are paged by position (sessions, inputs)
or by version (events): a page holds up to ``limit`` rows and the cursor of the
next page, ``None`` on the last one.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

import orjson

from meerkat_runtime.errors import InvalidInput
from meerkat_runtime.projections import LedgerRow, ViewRow
from meerkat_runtime.runtime import Runtime
from meerkat_runtime.store import RecordedEvent

T = TypeVar("T")

__all__ = [
    "ClusterInfo",
    "EventItem",
    "Page",
    "cluster_info",
    "find_inputs",
    "session_events",
    "session_inputs",
    "sessions",
]


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list: its rows and the cursor (``after``) of the next page."""

    rows: list[T]
    next_after: int | None


def _page(rows: list[T], limit: int, cursor: Callable[[T], int]) -> Page[T]:
    """Rows fetched with ``limit + 1``: the extra row only says a next page exists."""
    if len(rows) > limit:
        rows = rows[:limit]
        return Page(rows, cursor(rows[-1]))
    return Page(rows, None)


def sessions(
    rt: Runtime, state: str | None, search: str | None, after: int | None, limit: int
) -> Page[ViewRow]:
    """Sessions by first event, optionally of one state and with ids containing ``search``."""
    rows = rt.views.list(state=state, limit=limit + 1, after=after, search=search or None)
    return _page(rows, limit, lambda r: r.position)


def session_inputs(rt: Runtime, session_id: str, after: int | None, limit: int) -> Page[LedgerRow]:
    """A session's inputs (ledger rows, with their lifecycle history) by first acceptance."""
    rows = rt.ledger.list(session_id=session_id, limit=limit + 1, after=after)
    return _page(rows, limit, lambda r: r.position)


@dataclass(frozen=True, slots=True)
class EventItem:
    """One stored event of a session, ready to show."""

    sequence: int
    position: int
    topic: str
    timestamp: str
    input_id: str | None
    run_id: str | None
    body: str
    """The event (type and data) as indented JSON."""


def _event_item(rec: RecordedEvent) -> EventItem:
    event = rec.data.get("event", {})
    data = event.get("data", {}) if isinstance(event, dict) else {}
    data = data if isinstance(data, dict) else {}
    input_id = data.get("input_id")
    run_id = data.get("run_id")
    return EventItem(
        sequence=rec.version,
        position=rec.position,
        topic=rec.topic,
        timestamp=str(rec.data.get("timestamp", "")),
        input_id=str(input_id) if input_id is not None else None,
        run_id=str(run_id) if run_id is not None else None,
        body=orjson.dumps(event, option=orjson.OPT_INDENT_2).decode(),
    )


def session_events(rt: Runtime, session_id: str, after: int, limit: int) -> Page[EventItem]:
    """A session's events with ``sequence > after``, oldest first."""
    records = rt.store.read_session(session_id, after_version=after, limit=limit + 1)
    return _page([_event_item(r) for r in records], limit, lambda e: e.sequence)


def find_inputs(rt: Runtime, query: str, limit: int = 100) -> list[LedgerRow]:
    """Inputs whose id is ``query`` or that were accepted with idempotency key ``query``.

    A query that reads as a UUID is looked up both ways: a key may look like an id.
    """
    query = query.strip()
    if not query:
        return []
    found: dict[tuple[str, str], LedgerRow] = {}
    try:
        input_id: uuid.UUID | None = uuid.UUID(query)
    except ValueError:
        input_id = None
    if input_id is not None:
        for row in rt.ledger.find(input_id):
            found[(row.session_id, str(row.input_id))] = row
    for row in rt.ledger.list(idempotency_key=query, limit=limit):
        found.setdefault((row.session_id, str(row.input_id)), row)
    return sorted(found.values(), key=lambda r: (r.position, r.session_id))[:limit]


def parse_input_id(text: str) -> uuid.UUID:
    """An input id from a URL; ``InvalidInput`` for anything that is not a UUID."""
    try:
        return uuid.UUID(text)
    except ValueError:
        raise InvalidInput(f"not an input id (a UUID): {text!r:.80}", "input_id") from None


# ---------------------------------------------------------------- cluster

NODE_TTL_DEFAULT = 10.0
"""Lease TTL assumed for a node whose heartbeat does not record its own (Runtime's default)."""


@dataclass(frozen=True, slots=True)
class NodeItem:
    node_id: str
    alive: bool
    heartbeat_age: float
    lease_ttl: float
    leases_held: int
    started_at: datetime
    heartbeat_at: datetime
    incarnation: str


@dataclass(frozen=True, slots=True)
class LeaseItem:
    name: str
    """The session id or projection name the lease is for."""
    owner: str
    token: int
    expires_at: datetime
    live: bool


@dataclass(frozen=True, slots=True)
class ClusterInfo:
    """Nodes sharing a store (SQLite file, PostgreSQL), their session leases and the
    projection owners."""

    now: datetime
    nodes: list[NodeItem]
    sessions: list[LeaseItem]
    projections: list[LeaseItem]


def cluster_info(rt: Runtime) -> ClusterInfo | None:
    """The cluster as the store records it (read from its tables: the console joins no
    cluster); ``None`` for a store that is not shared (memory)."""
    store = rt.store
    if not store.supports_leases:
        return None
    now = store.shared().clock()  # the clock expiries are in (the database server's on PostgreSQL)
    node_rows = store.shared().list_nodes()
    leases = store.shared().list_leases()
    held: dict[str, int] = {}
    for lease in leases:
        if lease.live:
            held[lease.owner] = held.get(lease.owner, 0) + 1
    nodes = []
    for info in node_rows:
        age = max(0.0, (now - info.heartbeat_at).total_seconds())
        recorded = info.info.get("lease_ttl")
        ttl = float(recorded) if isinstance(recorded, (int, float)) else NODE_TTL_DEFAULT
        nodes.append(
            NodeItem(
                node_id=info.node_id,
                alive=age < ttl,
                heartbeat_age=age,
                lease_ttl=ttl,
                leases_held=held.get(info.node_id, 0),
                started_at=info.started_at,
                heartbeat_at=info.heartbeat_at,
                incarnation=info.incarnation,
            )
        )

    def items(prefix: str) -> list[LeaseItem]:
        return [
            LeaseItem(x.name.removeprefix(prefix), x.owner, x.token, x.expires_at, x.live)
            for x in leases
            if x.name.startswith(prefix)
        ]

    return ClusterInfo(now, nodes, items("session:"), items("projection:"))
