"""The input ledger: one row per input with its lifecycle (``rt.ledger``).

Each row keeps the input's ``InputState`` (the spec's stored row, without the
input payload) folded by the same :func:`evolve_input` the sessions use, plus
indexed columns for queries: session, kind, state, since when, position.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import orjson

from meerkat_runtime.events._codec import from_wire, to_wire
from meerkat_runtime.events.catalogue import envelope_from_record
from meerkat_runtime.events.ids import parse_uuid
from meerkat_runtime.events.input_fold import evolve_input
from meerkat_runtime.events.input_state import (
    InputState,
    InputStateHistoryEntry,
    InputTerminalOutcome,
)
from meerkat_runtime.events.runtime_event import InputAccepted, InputLifecycleEvent
from meerkat_runtime.events.timefmt import format_timestamp, parse_timestamp
from meerkat_runtime.projections._framework import Projection
from meerkat_runtime.projections._sql import Cursor, Sql
from meerkat_runtime.store import RecordedEvent

__all__ = ["LedgerProjection", "LedgerQueries", "LedgerRow"]

TABLE = "meerkat_ledger"


@dataclass(frozen=True, slots=True)
class LedgerRow:
    """One input as the ledger sees it."""

    input_id: uuid.UUID
    session_id: str
    kind: str | None
    state: str
    history: tuple[InputStateHistoryEntry, ...]
    idempotency_key: str | None
    run_id: uuid.UUID | None
    terminal_outcome: InputTerminalOutcome | None
    position: int
    state_since: datetime
    updated_at: datetime
    input_state: InputState


class LedgerProjection(Projection):
    name = "ledger"
    tables = (TABLE,)

    def create_schema(self, cur: Cursor) -> None:
        t = cur.table(TABLE)
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {t} ("
            "input_id TEXT PRIMARY KEY, session_id TEXT NOT NULL, kind TEXT, "
            "state TEXT NOT NULL, position BIGINT NOT NULL, state_since TEXT NOT NULL, "
            "updated_at TEXT NOT NULL, row_json TEXT NOT NULL)"
        )
        for cols in (("session_id", "position"), ("state", "position"), ("position",)):
            index = cur.index(f"{TABLE}_{'_'.join(cols)}_idx")
            cur.execute(f"CREATE INDEX IF NOT EXISTS {index} ON {t} ({', '.join(cols)})")

    def apply(self, cur: Cursor, events: Sequence[RecordedEvent]) -> None:
        relevant = [e for e in events if e.topic.startswith("input.")]
        if not relevant:
            return
        ids = sorted({str(e.data["event"]["data"]["input_id"]).lower() for e in relevant})
        rows = _load(cur, ids)
        changed: set[str] = set()
        for rec in relevant:
            env = envelope_from_record(rec.data, rec.version)
            ev = env.event
            assert isinstance(ev, InputLifecycleEvent)
            key = str(ev.input_id)
            current = rows.get(key)
            prev = current["state"] if current else None
            new = evolve_input(prev, ev, env.timestamp)
            if new is None or new is prev:
                continue
            if isinstance(ev, InputAccepted):
                kind = ev.input.kind.value if ev.input is not None else None
                current = {"session_id": rec.session_id, "kind": kind, "position": rec.position}
                new = replace(new, persisted_input=None)  # the log keeps the payload
            assert current is not None
            since = (
                env.timestamp
                if prev is None or new.current_state != prev.current_state
                else current["since"]
            )
            rows[key] = {**current, "state": new, "since": since}
            changed.add(key)
        cur.executemany(
            f"INSERT INTO {cur.table(TABLE)} "
            "(input_id, session_id, kind, state, position, state_since, updated_at, row_json) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (input_id) DO UPDATE SET "
            "state = excluded.state, state_since = excluded.state_since, "
            "updated_at = excluded.updated_at, row_json = excluded.row_json",
            [
                (
                    key,
                    rows[key]["session_id"],
                    rows[key]["kind"],
                    rows[key]["state"].current_state.value,
                    rows[key]["position"],
                    _sortable(rows[key]["since"]),
                    format_timestamp(rows[key]["state"].updated_at),
                    orjson.dumps(to_wire(rows[key]["state"])).decode(),
                )
                for key in sorted(changed)
            ],
        )


def _sortable(value: datetime) -> str:
    """A UTC timestamp of fixed width (always six fractional digits), so the text order of
    the ``state_since`` column is time order. The wire form is shorter on whole seconds and
    milliseconds ("...:01Z", "...:00.500Z"), which sorts after a later "...:00.500100Z"."""
    if value.tzinfo is None:
        raise ValueError("naive datetime cannot be compared with ledger timestamps")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _load(cur: Cursor, ids: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for r in cur.select_in(TABLE, "input_id", ids):
        out[r["input_id"]] = {
            "session_id": r["session_id"],
            "kind": r["kind"],
            "position": int(r["position"]),
            "since": parse_timestamp(r["state_since"]),
            "state": from_wire(InputState, orjson.loads(r["row_json"])),
        }
    return out


def _row(r: dict[str, Any]) -> LedgerRow:
    st = from_wire(InputState, orjson.loads(r["row_json"]))
    return LedgerRow(
        input_id=st.input_id,
        session_id=r["session_id"],
        kind=r["kind"],
        state=r["state"],  # the indexed column queries filter on (verify checks it against the row)
        history=st.history,
        idempotency_key=st.idempotency_key,
        run_id=st.last_run_id,
        terminal_outcome=st.terminal_outcome,
        position=int(r["position"]),
        state_since=parse_timestamp(r["state_since"]),
        updated_at=parse_timestamp(r["updated_at"]),
        input_state=st,
    )


class LedgerQueries:
    """Queries on the input ledger (``rt.ledger``); they read the read model, never the actors."""

    def __init__(self, sql: Sql) -> None:
        self._sql = sql

    def get(self, input_id: uuid.UUID | str) -> LedgerRow | None:
        key = str(parse_uuid(input_id, "input_id"))
        with self._sql.transaction() as cur:
            r = cur.execute(
                f"SELECT * FROM {cur.table(TABLE)} WHERE input_id = ?",
                (key,),
            ).fetchone()
        return _row(r) if r else None

    def list(
        self,
        session_id: str | None = None,
        state: str | None = None,
        limit: int = 100,
        after: int | None = None,
        *,
        state_since_before: datetime | None = None,
    ) -> list[LedgerRow]:
        """Rows by first acceptance; ``after=row.position`` pages on. ``state_since_before``
        keeps inputs that entered their current state before that time (e.g. queued for long)."""
        if limit < 1:
            raise ValueError("limit must be >= 1")
        where: list[str] = ["1 = 1"]
        params: list[object] = []
        if session_id is not None:
            where.append("session_id = ?")
            params.append(session_id)
        if state is not None:
            where.append("state = ?")
            params.append(str(state))
        if after is not None:
            where.append("position > ?")
            params.append(int(after))
        if state_since_before is not None:
            where.append("state_since < ?")
            params.append(_sortable(state_since_before))
        params.append(int(limit))
        with self._sql.transaction() as cur:
            rows = cur.execute(
                f"SELECT * FROM {cur.table(TABLE)} WHERE {' AND '.join(where)} "
                "ORDER BY position, input_id LIMIT ?",
                params,
            ).fetchall()
        return [_row(r) for r in rows]

    def count(self, session_id: str | None = None, state: str | None = None) -> int:
        where: list[str] = ["1 = 1"]
        params: list[object] = []
        if session_id is not None:
            where.append("session_id = ?")
            params.append(session_id)
        if state is not None:
            where.append("state = ?")
            params.append(str(state))
        with self._sql.transaction() as cur:
            r = cur.execute(
                f"SELECT COUNT(*) AS n FROM {cur.table(TABLE)} WHERE {' AND '.join(where)}",
                params,
            ).fetchone()
        return int(r["n"]) if r else 0
