"""A host's own read models, on the framework the ledger and views use.

A host subclasses :class:`HostProjection` and passes instances to
``Runtime.open(..., projections=[...])`` (or ``AsyncRuntime.open``). The runtime
runs them beside the built-in ledger and views, with the same guarantees:

* **exactly once**: the rows ``handle`` writes through ``cur`` and the
  projection's offset commit in one transaction in the store's database, so a
  crash (kill -9 included) loses both or keeps both;
* **catch-up**: a new projection (or one whose process was down) replays the log
  from its stored offset before following new commits;
* **rebuild**: ``rt.projections.rebuild(name)`` clears its tables and replays the
  log; raising ``schema_version`` does the same on the next open;
* **failures**: a handler that raises follows the projection's
  ``failure_strategy``; an event that cannot be read back is skipped and its
  session held back by default (see :class:`FailureStrategy`);
* **status**: position, lag and status in ``rt.projections.status()``, problems in
  ``meerkat-runtime health``; on a shared store one process at a time runs it.

Handlers must write only through ``cur`` (never a connection of their own, nor
side effects outside the database), or exactly-once does not hold for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from meerkat_runtime.events.catalogue import EVENT_TOPICS, decode_recorded
from meerkat_runtime.events.runtime_event import RuntimeEventEnvelope
from meerkat_runtime.projections._framework import Projection
from meerkat_runtime.projections._sql import Cursor
from meerkat_runtime.store import RecordedEvent

__all__ = ["HostProjection", "ProjectedEvent"]


@dataclass(frozen=True, slots=True)
class ProjectedEvent:
    """One committed runtime event, as a host projection receives it."""

    position: int
    """Its place in the store-wide log."""
    session_id: str
    sequence: int
    """Its place in the session's log (``envelope.sequence``)."""
    envelope: RuntimeEventEnvelope


class HostProjection(Projection):
    """Base of a host's read model: set ``name`` and ``tables``, implement
    :meth:`create_schema` and :meth:`handle` (or :meth:`handle_batch`).

    ``name`` (unique; ``ledger`` and ``views`` are taken) keys the stored offset.
    ``tables`` lists the tables it owns: ``rebuild`` empties them, a new
    ``schema_version`` drops them. SQL runs on the store's database (SQLite or
    PostgreSQL; ``memory://`` has a private SQLite): use ``?`` placeholders, quote
    table names with ``cur.table(name)``, and SQL both speak (``INSERT ... ON
    CONFLICT ... DO UPDATE``). Only runtime events reach the handlers, in log order.
    """

    def handle(self, cur: Cursor, event: ProjectedEvent) -> None:
        """Update the read model for one event, through ``cur`` (inside the transaction
        that also moves the offset)."""
        raise NotImplementedError(f"{type(self).__name__} must implement handle or handle_batch")

    def handle_batch(self, cur: Cursor, events: Sequence[ProjectedEvent]) -> None:
        """Update the read model for a page of events, in log order (default: :meth:`handle`
        for each). Override it to batch writes (``cur.insert_rows``, ``cur.executemany``)."""
        for event in events:
            self.handle(cur, event)

    def apply(self, cur: Cursor, events: Sequence[RecordedEvent]) -> None:
        """The framework's entry point: decodes the page's runtime events for the handlers."""
        self.handle_batch(
            cur,
            [
                ProjectedEvent(rec.position, rec.session_id, rec.version, decode_recorded(rec))
                for rec in events
                if rec.topic in EVENT_TOPICS
            ],
        )
