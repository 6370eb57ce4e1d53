"""Host projections of the tests, written against the public base only (``HostProjection``).

Imported by ``_host_crash_child.py`` (a separate process) too.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

from meerkat_runtime.events.runtime_event import InputAccepted
from meerkat_runtime.projections import Cursor, FailureStrategy, HostProjection, ProjectedEvent


class SessionCounts(HostProjection):
    """Per session: how many events and how many accepted inputs, and the last position.

    ``fail_for``: sessions whose events make ``handle`` raise.
    """

    name = "session_counts"
    tables = ("host_session_counts",)

    def __init__(
        self,
        *,
        fail_for: frozenset[str] = frozenset(),
        failure_strategy: FailureStrategy | None = None,
        schema_version: int = 1,
    ) -> None:
        self.fail_for = fail_for
        if failure_strategy is not None:
            self.failure_strategy = failure_strategy
        self.schema_version = schema_version

    def create_schema(self, cur: Cursor) -> None:
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {cur.table('host_session_counts')} ("
            "session_id TEXT PRIMARY KEY, events INTEGER NOT NULL, "
            "accepted INTEGER NOT NULL, last_position BIGINT NOT NULL)"
        )

    def handle(self, cur: Cursor, event: ProjectedEvent) -> None:
        if event.session_id in self.fail_for:
            raise RuntimeError(f"cannot count {event.session_id}")
        accepted = int(isinstance(event.envelope.event, InputAccepted))
        cur.execute(
            f"INSERT INTO {cur.table('host_session_counts')} AS c "
            "(session_id, events, accepted, last_position) VALUES (?, 1, ?, ?) "
            "ON CONFLICT (session_id) DO UPDATE SET events = c.events + 1, "
            "accepted = c.accepted + excluded.accepted, last_position = excluded.last_position",
            (event.session_id, accepted, event.position),
        )


def read_counts(cur: Cursor) -> dict[str, tuple[int, int, int]]:
    """``{session: (events, accepted, last position)}`` of :class:`SessionCounts`."""
    rows = cur.execute(f"SELECT * FROM {cur.table('host_session_counts')}").fetchall()
    return {
        r["session_id"]: (int(r["events"]), int(r["accepted"]), int(r["last_position"]))
        for r in rows
    }


class PositionCounter(HostProjection):
    """The exactly-once detector as a host writes it: one row per log position with how
    many times it was applied (table ``host_counter_seen``, read by ``assert_exactly_once``),
    written a page at a time. ``sleep``: seconds inside the handler after writing (a crash
    window); ``log_path``: a file that gets the first and last position of each page begun."""

    name = "host_counter"
    tables = ("host_counter_seen",)

    def __init__(self, sleep: float = 0.0, log_path: str | None = None) -> None:
        self.sleep = sleep
        self.log_path = log_path

    def create_schema(self, cur: Cursor) -> None:
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {cur.table('host_counter_seen')} "
            "(position BIGINT PRIMARY KEY, session_id TEXT NOT NULL, n INTEGER NOT NULL)"
        )

    def handle_batch(self, cur: Cursor, events: Sequence[ProjectedEvent]) -> None:
        if not events:
            return
        if self.log_path is not None:
            fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, f"{events[0].position} {events[-1].position}\n".encode())
            finally:
                os.close(fd)
        cur.executemany(
            f"INSERT INTO {cur.table('host_counter_seen')} AS s (position, session_id, n) "
            "VALUES (?, ?, 1) ON CONFLICT (position) DO UPDATE SET n = s.n + 1",
            [(e.position, e.session_id) for e in events],
        )
        if self.sleep:
            time.sleep(self.sleep)
