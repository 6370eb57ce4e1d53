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

from meerkat_runtime.events.digest import digest
from meerkat_runtime.events.runtime_state import RuntimeState
from meerkat_runtime.events.timefmt import format_timestamp, parse_timestamp
from meerkat_runtime.projections._framework import Projection
from meerkat_runtime.projections._sql import Cursor, Sql, check_choice
from meerkat_runtime.store import RecordedEvent

__all__ = ["ViewQueries", "ViewRow", "ViewsProjection"]

TABLE = "meerkat_views"
INPUTS = "meerkat_view_inputs"


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


#: A view row's columns, in the order ``apply`` writes them.
_VIEW_COLUMNS = (
    "session_id",
    "state",
    "queued",
    "staged",
    "current_run_id",
    "counts",
    "last_sequence",
    "updated_at",
    "position",
)
#: What a later page changes in an existing row (its key and first position stay).
_VIEW_UPDATED = tuple(c for c in _VIEW_COLUMNS if c not in ("session_id", "position"))


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
        # Digests, not decoded envelopes: a view needs a handful of fields, and a full
        # envelope decode costs ~5x more than the whole update.
        digests = [(rec, digest(rec.data)) for rec in events]
        # Rows this runner wrote in earlier pages come from its cache (copied: a cached
        # row is never changed in place), the others from the tables.
        cache = cur.cache
        cached, unknown = cache.known(TABLE, sorted({rec.session_id for rec in events}))
        sessions = {sid: {**v, "counts": dict(v["counts"])} for sid, v in cached.items()}
        if unknown:
            sessions.update(_load_sessions(cur, unknown))
        # An input accepted in this page has no row yet (its acceptance starts it).
        seen: set[tuple[str, str]] = set()
        earlier: list[tuple[str, str]] = []
        for rec, d in digests:
            if d.input_id is None:
                continue
            key = (rec.session_id, str(d.input_id))
            if key in seen:
                continue
            seen.add(key)
            if not (d.category == "input_lifecycle" and d.code == "accepted"):
                earlier.append(key)
        inputs, lookup = cache.known(INPUTS, earlier)
        if lookup:
            inputs.update(_load_inputs(cur, set(lookup)))
        changed_inputs: set[tuple[str, str]] = set()
        for rec, d in digests:
            view = sessions.get(rec.session_id)
            if view is None:
                view = sessions[rec.session_id] = {
                    "state": RuntimeState.IDLE.value,
                    "current_run_id": None,
                    "counts": {},
                    "position": rec.position,
                }
            view["last_sequence"] = rec.version
            view["updated_at"] = d.timestamp
            if d.runtime_state is not None:
                view["state"] = d.runtime_state.value
            elif d.run_id is not None:
                run_id = str(d.run_id)
                if d.code == "started":
                    view["current_run_id"] = run_id
                elif d.ends_run and view["current_run_id"] == run_id:
                    view["current_run_id"] = None
            elif d.input_id is not None:
                key = (rec.session_id, str(d.input_id))
                before = inputs.get(key)
                after = None if d.input_phase is None else d.input_phase.value
                if after is not None and after != before:
                    counts = view["counts"]
                    if before is not None:
                        counts[before] = counts.get(before, 0) - 1
                        if counts[before] == 0:
                            del counts[before]
                    counts[after] = counts.get(after, 0) + 1
                    inputs[key] = after
                    changed_inputs.add(key)
        for sid, view in sessions.items():
            cache.put(TABLE, sid, view)
        for key, phase in inputs.items():
            cache.put(INPUTS, key, phase)
        cur.insert_rows(
            INPUTS,
            ("session_id", "input_id", "state"),
            [(sid, iid, inputs[(sid, iid)]) for sid, iid in sorted(changed_inputs)],
            conflict=("session_id", "input_id"),
            update=("state",),
        )
        cur.insert_rows(
            TABLE,
            _VIEW_COLUMNS,
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
            conflict=("session_id",),
            update=_VIEW_UPDATED,
        )


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
