"""The input ledger: one row per input with its lifecycle (``rt.ledger``).

Each row keeps the input's ``InputState`` (the spec's stored row, without the
input payload) folded by the same :func:`evolve_input` the sessions use, plus
indexed columns for queries: session, kind, state, since when, position.

A row is keyed by (session, input id): as in the Rust runtime, an input ledger
belongs to one session, and input ids are unique within their session only, so
two sessions may each hold an input with the same id (a host that reuses
``header.id``, or a session imported beside its copy). Queries that take an input
id alone answer for every session that holds it; :meth:`LedgerQueries.get`
without a session raises :class:`~meerkat_runtime.errors.AmbiguousInputId` when
that is more than one.

Idempotency keys are secrets a host may derive from user data. When the store
encrypts its payloads (``cipher_key``), the ledger keeps only a keyed hash of
each key (``"hmac-sha256:<hex>"``, see ``Serializer.conceal``), never the key in
clear; ``list(idempotency_key=...)`` hashes the key asked for, so lookups work
all the same. Without encryption the key is kept as given.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

import orjson

from meerkat_runtime.errors import AmbiguousInputId, InvalidInput, UndecodableEvent
from meerkat_runtime.events._codec import from_wire
from meerkat_runtime.events.ids import parse_uuid
from meerkat_runtime.events.input_fold import evolve_input
from meerkat_runtime.events.input_state import (
    InputLifecycleState,
    InputState,
    InputStateHistoryEntry,
    InputTerminalOutcome,
)
from meerkat_runtime.events.runtime_event import InputAccepted, InputLifecycleEvent
from meerkat_runtime.events.timefmt import format_timestamp, parse_timestamp
from meerkat_runtime.events.upcast import input_state_from_stored
from meerkat_runtime.events.wire import to_json_value
from meerkat_runtime.projections._framework import Projection
from meerkat_runtime.projections._sql import Cursor, Sql, check_choice
from meerkat_runtime.store import RecordedEvent

__all__ = ["LedgerProjection", "LedgerQueries", "LedgerRow"]

TABLE = "meerkat_ledger"


@dataclass(frozen=True, slots=True)
class LedgerRow:
    """One input as the ledger sees it.

    ``idempotency_key`` is the key the input was accepted with, or, when the store is
    encrypted (``cipher_key``), its keyed hash ``"hmac-sha256:<hex>"`` (the ledger never
    holds the key in clear then); ``input_state.idempotency_key`` is the same value.
    """

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


Key = tuple[str, str]
"""A ledger row's key: (session id, input id as lower-case text)."""


class LedgerProjection(Projection):
    name = "ledger"
    tables = (TABLE,)
    # 2: keyed by (session_id, input_id), was input_id alone; idempotency_key column.
    # 3: idempotency keys concealed (keyed hash) when the store is encrypted.
    schema_version = 3

    def create_schema(self, cur: Cursor) -> None:
        t = cur.table(TABLE)
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {t} ("
            "session_id TEXT NOT NULL, input_id TEXT NOT NULL, kind TEXT, "
            "state TEXT NOT NULL, position BIGINT NOT NULL, state_since TEXT NOT NULL, "
            "updated_at TEXT NOT NULL, idempotency_key TEXT, row_json TEXT NOT NULL, "
            "PRIMARY KEY (session_id, input_id))"
        )
        for cols in (
            ("session_id", "position"),
            ("state", "position"),
            ("position",),
            ("input_id",),
            ("idempotency_key",),
        ):
            index = cur.index(f"{TABLE}_{'_'.join(cols)}_idx")
            cur.execute(f"CREATE INDEX IF NOT EXISTS {index} ON {t} ({', '.join(cols)})")

    def apply(self, cur: Cursor, events: Sequence[RecordedEvent]) -> None:
        # Read first: an event that cannot be read fails as UndecodableEvent, naming it.
        decoded = [_read(rec) for rec in events if rec.topic.startswith("input.")]
        if not decoded:
            return
        # An input accepted in this page starts a new row (an acceptance folds from
        # nothing): only the inputs that were accepted in an earlier page are looked up.
        fresh: set[Key] = set()
        earlier: set[Key] = set()
        for key, _, ev, _ in decoded:
            if key not in fresh and key not in earlier:
                (fresh if isinstance(ev, InputAccepted) else earlier).add(key)
        # Rows this runner wrote in earlier pages come from its cache, not the table.
        cache = cur.cache
        rows, missing = cache.known(TABLE, earlier)
        if missing:
            for key, row in _load(cur, set(missing)).items():
                rows[key] = row
                if not row["state"].current_state.is_terminal:
                    cache.put(TABLE, key, row)
        conceal = cur.sql.store.serializer.conceal
        changed: set[Key] = set()
        for key, at, ev, rec in decoded:
            current = rows.get(key)
            prev = current["state"] if current else None
            new = evolve_input(prev, ev, at)
            if new is None or new is prev:
                continue
            if isinstance(ev, InputAccepted):
                kind = ev.input.kind.value if ev.input is not None else None
                current = {"session_id": rec.session_id, "kind": kind, "position": rec.position}
                # The log keeps the payload; the key is kept concealed when encrypted
                # (set once, at acceptance: later steps carry the stored value on).
                key_kept = None if new.idempotency_key is None else conceal(new.idempotency_key)
                new = _without_input(new, key_kept)
            assert current is not None
            since = (
                at if prev is None or new.current_state != prev.current_state else current["since"]
            )
            rows[key] = {**current, "state": new, "since": since}
            if new.current_state.is_terminal:
                cache.forget(TABLE, key)  # rarely read again: not worth its memory
            else:
                cache.put(TABLE, key, rows[key])
            changed.add(key)
        cur.insert_rows(
            TABLE,
            (
                "session_id",
                "input_id",
                "kind",
                "state",
                "position",
                "state_since",
                "updated_at",
                "idempotency_key",
                "row_json",
            ),
            [
                (
                    key[0],
                    key[1],
                    rows[key]["kind"],
                    rows[key]["state"].current_state.value,
                    rows[key]["position"],
                    _sortable(rows[key]["since"]),
                    format_timestamp(rows[key]["state"].updated_at),
                    rows[key]["state"].idempotency_key,
                    orjson.dumps(to_json_value(rows[key]["state"])).decode(),
                )
                for key in sorted(changed)
            ],
            conflict=("session_id", "input_id"),
            update=("state", "state_since", "updated_at", "idempotency_key", "row_json"),
        )


def _read(rec: RecordedEvent) -> tuple[Key, datetime, InputLifecycleEvent, RecordedEvent]:
    """The row key, time and event of a stored input-lifecycle event, without building
    its envelope (its id, runtime id and the envelope itself are not the ledger's).

    The event's own data is decoded in full, the input of an ``input.accepted`` included
    (its body is dropped, but a damaged one must be found here, not folded past);
    :class:`UndecodableEvent` if it cannot be read, as :func:`decode_recorded` says it.
    """
    try:
        payload = rec.data
        wire = payload["event"]
        if wire["category"] != "input_lifecycle":
            raise InvalidInput(f"the payload is a {wire['category']!r} event", "event.category")
        ev = from_wire(InputLifecycleEvent, wire["data"], "event.data")
        at = parse_timestamp(payload["timestamp"])
    except InvalidInput as exc:
        raise UndecodableEvent(
            rec.session_id, rec.version, rec.position, rec.topic, str(exc)
        ) from None
    except (KeyError, TypeError, ValueError) as exc:
        detail = f"not a stored input event: {exc!r:.80}"
        raise UndecodableEvent(
            rec.session_id, rec.version, rec.position, rec.topic, detail
        ) from None
    if ev.event_code != rec.topic:
        detail = f"the payload is a {ev.event_code!r} event"
        raise UndecodableEvent(rec.session_id, rec.version, rec.position, rec.topic, detail)
    return (rec.session_id, str(ev.input_id)), at, ev, rec


def _without_input(state: InputState, idempotency_key: str | None) -> InputState:
    """``state`` without its input and with ``idempotency_key``: a field-by-field copy, as
    :meth:`InputState.transition` makes (``dataclasses.replace`` costs ~35 us a call)."""
    new = object.__new__(InputState)
    for name in _STATE_FIELDS:
        object.__setattr__(new, name, getattr(state, name))
    object.__setattr__(new, "persisted_input", None)
    object.__setattr__(new, "idempotency_key", idempotency_key)
    return new


_STATE_FIELDS = tuple(f.name for f in fields(InputState))


def _sortable(value: datetime) -> str:
    """A UTC timestamp of fixed width (always six fractional digits), so the text order of
    the ``state_since`` column is time order. The wire form is shorter on whole seconds and
    milliseconds ("...:01Z", "...:00.500Z"), which sorts after a later "...:00.500100Z"."""
    if value.tzinfo is None:
        raise ValueError("naive datetime cannot be compared with ledger timestamps")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _load(cur: Cursor, keys: set[Key]) -> dict[Key, dict[str, Any]]:
    """The stored rows of ``keys`` (looked up by input id: the same id in another
    session is rare, so its rows are read and dropped here)."""
    out: dict[Key, dict[str, Any]] = {}
    for r in cur.select_in(TABLE, "input_id", sorted({iid for _, iid in keys})):
        key = (r["session_id"], r["input_id"])
        if key not in keys:
            continue
        out[key] = {
            "session_id": r["session_id"],
            "kind": r["kind"],
            "position": int(r["position"]),
            "since": parse_timestamp(r["state_since"]),
            "state": input_state_from_stored(orjson.loads(r["row_json"])),
        }
    return out


def _row(r: dict[str, Any]) -> LedgerRow:
    st = input_state_from_stored(orjson.loads(r["row_json"]))
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

    def get(self, input_id: uuid.UUID | str, session_id: str | None = None) -> LedgerRow | None:
        """The row of input ``input_id`` of session ``session_id``; None if there is none.

        Without ``session_id``: the one row with that input id, None if no session holds
        it, :class:`~meerkat_runtime.errors.AmbiguousInputId` (naming the sessions) if
        several do; :meth:`find` returns all of them.
        """
        key = str(parse_uuid(input_id, "input_id"))
        if session_id is not None:
            with self._sql.transaction() as cur:
                r = cur.execute(
                    f"SELECT * FROM {cur.table(TABLE)} WHERE session_id = ? AND input_id = ?",
                    (session_id, key),
                ).fetchone()
            return _row(r) if r else None
        rows = self.find(key)
        if len(rows) > 1:
            raise AmbiguousInputId(key, [r.session_id for r in rows])
        return rows[0] if rows else None

    def find(self, input_id: uuid.UUID | str) -> list[LedgerRow]:
        """Every row with input id ``input_id`` (one per session holding it), by position."""
        key = str(parse_uuid(input_id, "input_id"))
        with self._sql.transaction() as cur:
            rows = cur.execute(
                f"SELECT * FROM {cur.table(TABLE)} WHERE input_id = ? ORDER BY position, session_id",
                (key,),
            ).fetchall()
        return [_row(r) for r in rows]

    def list(
        self,
        session_id: str | None = None,
        state: str | None = None,
        limit: int = 100,
        after: int | None = None,
        *,
        state_since_before: datetime | None = None,
        input_id: uuid.UUID | str | None = None,
        idempotency_key: str | None = None,
    ) -> list[LedgerRow]:
        """Rows by first acceptance; ``after=row.position`` pages on. ``state_since_before``
        keeps inputs that entered their current state before that time (e.g. queued for long);
        ``input_id`` keeps the rows of that input id (one per session holding it);
        ``idempotency_key`` the inputs accepted with that key (given in clear, also when the
        store is encrypted and the ledger keeps only its keyed hash). An unknown ``state``
        raises :class:`InvalidInput` (a typo would list nothing)."""
        state = check_choice(state, InputLifecycleState, "state")
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
        if input_id is not None:
            where.append("input_id = ?")
            params.append(str(parse_uuid(input_id, "input_id")))
        if idempotency_key is not None:
            where.append("idempotency_key = ?")
            params.append(self._sql.store.serializer.conceal(str(idempotency_key)))
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
                "ORDER BY position, session_id, input_id LIMIT ?",
                params,
            ).fetchall()
        return [_row(r) for r in rows]

    def count(
        self,
        session_id: str | None = None,
        state: str | None = None,
        *,
        input_id: uuid.UUID | str | None = None,
    ) -> int:
        """How many rows match (each (session, input) counts once); an unknown ``state``
        raises :class:`InvalidInput`."""
        state = check_choice(state, InputLifecycleState, "state")
        where: list[str] = ["1 = 1"]
        params: list[object] = []
        if session_id is not None:
            where.append("session_id = ?")
            params.append(session_id)
        if state is not None:
            where.append("state = ?")
            params.append(str(state))
        if input_id is not None:
            where.append("input_id = ?")
            params.append(str(parse_uuid(input_id, "input_id")))
        with self._sql.transaction() as cur:
            r = cur.execute(
                f"SELECT COUNT(*) AS n FROM {cur.table(TABLE)} WHERE {' AND '.join(where)}",
                params,
            ).fetchone()
        return int(r["n"]) if r else 0
