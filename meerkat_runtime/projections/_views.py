"""The public runtime-state views: one row per session (``rt.views``).

A row holds the session's state as its events last recorded it, queued and
staged counts, the current run, inputs by lifecycle state, the session's last
sequence and the time of its last event. Per-input lifecycle states are kept
in a side table (keyed by session and input id: input ids are unique within a
session only) so a count moves exactly when an input changes state.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from meerkat_runtime.events.ids import parse_uuid
from meerkat_runtime.events.input_state import InputLifecycleState
from meerkat_runtime.events.policy import ConsumePoint
from meerkat_runtime.events.runtime_state import RuntimeState
from meerkat_runtime.events.timefmt import format_timestamp, parse_timestamp
from meerkat_runtime.projections._framework import Projection
from meerkat_runtime.projections._sql import Cursor, Sql, check_choice
from meerkat_runtime.store import RecordedEvent

__all__ = ["ViewQueries", "ViewRow", "ViewsProjection"]

TABLE = "meerkat_views"
INPUTS = "meerkat_view_inputs"


_RUN_ENDS = frozenset({"completed", "failed", "cancelled"})


@dataclass(frozen=True, slots=True)
class ViewRow:
    """The public view of one session."""

    session_id: str
    state: str
    queued: int
    staged: int
    current_run_id: uuid.UUID | None
    counts: dict[str, int]
    last_sequence: int
    updated_at: datetime
    position: int


class ViewsProjection(Projection):
    name = "views"
    tables = (TABLE, INPUTS)
    # 2: the inputs side table is keyed by (session_id, input_id), was input_id alone.
    schema_version = 2

    def create_schema(self, cur: Cursor) -> None:
        t = cur.table(TABLE)
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {t} ("
            "session_id TEXT PRIMARY KEY, state TEXT NOT NULL, queued INTEGER NOT NULL, "
            "staged INTEGER NOT NULL, current_run_id TEXT, counts TEXT NOT NULL, "
            "last_sequence BIGINT NOT NULL, updated_at TEXT NOT NULL, position BIGINT NOT NULL)"
        )
        for cols in (("state", "position"), ("position",)):
            index = cur.index(f"{TABLE}_{'_'.join(cols)}_idx")
            cur.execute(f"CREATE INDEX IF NOT EXISTS {index} ON {t} ({', '.join(cols)})")
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {cur.table(INPUTS)} ("
            "session_id TEXT NOT NULL, input_id TEXT NOT NULL, state TEXT NOT NULL, "
            "PRIMARY KEY (session_id, input_id))"
        )
        index = cur.index(f"{INPUTS}_input_id_idx")
        cur.execute(f"CREATE INDEX IF NOT EXISTS {index} ON {cur.table(INPUTS)} (input_id)")

    def apply(self, cur: Cursor, events: Sequence[RecordedEvent]) -> None:
        sessions = _load_sessions(cur, sorted({e.session_id for e in events}))
        input_keys = {
            (e.session_id, str(e.data["event"]["data"]["input_id"]).lower())
            for e in events
            if e.topic.startswith("input.")
        }
        inputs = _load_inputs(cur, input_keys)
        changed_inputs: set[tuple[str, str]] = set()
        for rec in events:
            # Read the stored wire dicts directly: a view needs a handful of fields,
            # and a full envelope decode cost ~5x more than the whole update.
            event = rec.data["event"]
            category, data = event["category"], event["data"]
            view = sessions.get(rec.session_id)
            if view is None:
                view = sessions[rec.session_id] = {
                    "state": RuntimeState.IDLE.value,
                    "current_run_id": None,
                    "counts": {},
                    "position": rec.position,
                }
            view["last_sequence"] = rec.version
            view["updated_at"] = parse_timestamp(rec.data["timestamp"])
            if category == "runtime_state_change":
                view["state"] = RuntimeState(data["to"]).value
            elif category == "run_lifecycle":
                run_id = str(parse_uuid(data["run_id"]))
                if data["code"] == "started":
                    view["current_run_id"] = run_id
                elif data["code"] in _RUN_ENDS and view["current_run_id"] == run_id:
                    view["current_run_id"] = None  # a checkpoint does not end the run
            elif category == "input_lifecycle":
                key = (rec.session_id, str(parse_uuid(data["input_id"])))
                before = inputs.get(key)
                after = _next_phase(data)
                if after is not None and after != before:
                    counts = view["counts"]
                    if before is not None:
                        counts[before] = counts.get(before, 0) - 1
                        if counts[before] == 0:
                            del counts[before]
                    counts[after] = counts.get(after, 0) + 1
                    inputs[key] = after
                    changed_inputs.add(key)
        cur.executemany(
            f"INSERT INTO {cur.table(INPUTS)} (session_id, input_id, state) VALUES (?, ?, ?) "
            "ON CONFLICT (session_id, input_id) DO UPDATE SET state = excluded.state",
            [(sid, iid, inputs[(sid, iid)]) for sid, iid in sorted(changed_inputs)],
        )
        cur.executemany(
            f"INSERT INTO {cur.table(TABLE)} (session_id, state, queued, staged, current_run_id, "
            "counts, last_sequence, updated_at, position) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (session_id) DO UPDATE SET state = excluded.state, "
            "queued = excluded.queued, staged = excluded.staged, "
            "current_run_id = excluded.current_run_id, counts = excluded.counts, "
            "last_sequence = excluded.last_sequence, updated_at = excluded.updated_at",
            [
                (
                    sid,
                    v["state"],
                    v["counts"].get("queued", 0),
                    v["counts"].get("staged", 0),
                    v["current_run_id"],
                    orjson.dumps(v["counts"], option=orjson.OPT_SORT_KEYS).decode(),
                    v["last_sequence"],
                    format_timestamp(v["updated_at"]),
                    v["position"],
                )
                for sid, v in sessions.items()
                if "last_sequence" in v
            ],
        )


#: The lifecycle phase each input event leaves its input in (``None``: unchanged).
#: Legality was checked by the session's fold when the event was decided; ``verify``
#: compares these counts with a fresh fold.
_PHASE_AFTER: dict[str, str | None] = {
    "accepted": InputLifecycleState.ACCEPTED.value,
    "deduplicated": None,
    "queued": InputLifecycleState.QUEUED.value,
    "staged": InputLifecycleState.STAGED.value,
    "applied": InputLifecycleState.APPLIED_PENDING_CONSUMPTION.value,
    "consumed": InputLifecycleState.CONSUMED.value,
    "abandoned": InputLifecycleState.ABANDONED.value,
    "superseded": InputLifecycleState.SUPERSEDED.value,
    "coalesced": InputLifecycleState.COALESCED.value,
}


def _next_phase(data: dict[str, Any]) -> str | None:
    """The phase an input is in after the input event ``data`` (its wire form)."""
    code = data["code"]
    if code == "state_transitioned":
        return InputLifecycleState(data["to"]).value
    if code == "accepted":
        decision = (data.get("policy") or {}).get("decision") or {}
        if decision.get("consume_point") == ConsumePoint.ON_ACCEPT.value:
            return InputLifecycleState.CONSUMED.value  # operations: consumed on accept
    return _PHASE_AFTER[code]


def _load_sessions(cur: Cursor, ids: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for r in cur.select_in(TABLE, "session_id", ids):
        out[r["session_id"]] = {
            "state": r["state"],
            "current_run_id": r["current_run_id"],
            "counts": orjson.loads(r["counts"]),
            "position": int(r["position"]),
            "last_sequence": int(r["last_sequence"]),
            "updated_at": parse_timestamp(r["updated_at"]),
        }
    return out


def _load_inputs(cur: Cursor, keys: set[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """Phase of each known input of ``keys`` ((session id, input id))."""
    out: dict[tuple[str, str], str] = {}
    for r in cur.select_in(INPUTS, "input_id", sorted({iid for _, iid in keys})):
        key = (r["session_id"], r["input_id"])
        if key in keys:
            out[key] = r["state"]
    return out


def _view(r: dict[str, Any]) -> ViewRow:
    run = r["current_run_id"]
    return ViewRow(
        session_id=r["session_id"],
        state=r["state"],
        queued=int(r["queued"]),
        staged=int(r["staged"]),
        current_run_id=uuid.UUID(run) if run else None,
        counts=orjson.loads(r["counts"]),
        last_sequence=int(r["last_sequence"]),
        updated_at=parse_timestamp(r["updated_at"]),
        position=int(r["position"]),
    )


class ViewQueries:
    """Queries on the runtime-state views (``rt.views``)."""

    def __init__(self, sql: Sql) -> None:
        self._sql = sql

    def get(self, session_id: str) -> ViewRow | None:
        with self._sql.transaction() as cur:
            r = cur.execute(
                f"SELECT * FROM {cur.table(TABLE)} WHERE session_id = ?",
                (session_id,),
            ).fetchone()
        return _view(r) if r else None

    def list(
        self,
        state: str | None = None,
        limit: int = 100,
        after: int | None = None,
        *,
        search: str | None = None,
    ) -> list[ViewRow]:
        """Views by first event; ``after=row.position`` pages on; an unknown ``state``
        raises :class:`InvalidInput`. ``search`` keeps the sessions whose id contains
        that text (ignoring ASCII case; ``%`` and ``_`` are literal characters)."""
        state = check_choice(state, RuntimeState, "state")
        if limit < 1:
            raise ValueError("limit must be >= 1")
        where: list[str] = ["1 = 1"]
        params: list[object] = []
        if state is not None:
            where.append("state = ?")
            params.append(str(state))
        if search:
            escaped = search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where.append("LOWER(session_id) LIKE ? ESCAPE '\\'")
            params.append(f"%{escaped}%")
        if after is not None:
            where.append("position > ?")
            params.append(int(after))
        params.append(int(limit))
        with self._sql.transaction() as cur:
            rows = cur.execute(
                f"SELECT * FROM {cur.table(TABLE)} WHERE {' AND '.join(where)} "
                "ORDER BY position LIMIT ?",
                params,
            ).fetchall()
        return [_view(r) for r in rows]

    def count_by_state(self) -> dict[str, int]:
        """How many sessions are in each state (states no session is in are left out)."""
        with self._sql.transaction() as cur:
            rows = cur.execute(
                f"SELECT state, COUNT(*) AS n FROM {cur.table(TABLE)} GROUP BY state ORDER BY state"
            ).fetchall()
        return {str(r["state"]): int(r["n"]) for r in rows}
