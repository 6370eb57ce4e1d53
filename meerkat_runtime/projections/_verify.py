"""``verify``: refold every session from the log and compare with the read models.

Checks, per session: versions are contiguous from 1, the log folds without an
illegal transition, every input of the fold has a ledger row with the same
kind, lifecycle state, history, idempotency key, run and terminal outcome (and
the ledger has no extra rows), and the view has the fold's state, counts,
current run and last sequence. Sessions written by more than one writer are
reported as notes (a replay can spot two writers; it is not by itself
corruption).

Safe on a live store: each read model is compared with the log *at the
position that read model has reached*. Its offset and its rows are read in one
read-only snapshot transaction, and each session's log is folded only up to
that position (every event up to a projection's offset is committed, since
positions commit in order), so events written meanwhile never show as
differences. How far each read model is behind the head of the log is reported
as ``lag``, which is not a mismatch (``health`` judges lag).

An event that cannot be read back is a ``log`` mismatch naming its session,
version and log position; that session's rows are not compared.

Each difference is a :class:`Mismatch`: where, which field, what the log says
(``expected``) and what the read model holds (``found``), values shown briefly
(a history shows its first differing entry, not the whole tuple).
"""

from __future__ import annotations

import itertools
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

import orjson

from meerkat_runtime.errors import UndecodableEvent
from meerkat_runtime.events import wire
from meerkat_runtime.events.catalogue import decode_recorded
from meerkat_runtime.events.runtime_state import RuntimeState
from meerkat_runtime.events.session import SessionState, evolve
from meerkat_runtime.events.timefmt import format_timestamp
from meerkat_runtime.projections._framework import OFFSETS
from meerkat_runtime.projections._ledger import TABLE as LEDGER_TABLE
from meerkat_runtime.projections._ledger import LedgerRow
from meerkat_runtime.projections._ledger import _row as ledger_row
from meerkat_runtime.projections._sql import Cursor, Sql
from meerkat_runtime.projections._views import TABLE as VIEWS_TABLE
from meerkat_runtime.projections._views import ViewRow
from meerkat_runtime.projections._views import _view as view_row
from meerkat_runtime.store import EventStore, RecordedEvent

__all__ = ["Mismatch", "VerifyReport", "verify"]

_OBSERVED_TO_PHASE = {"attached": "idle", "initializing": "idle"}
_MAX_SHOWN = 160  # characters of one value in a mismatch line


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One difference between the log and a read model (or a defect of the log itself).

    ``model`` is ``"ledger"``, ``"views"`` or ``"log"``; ``where`` names the session
    (and input); ``field`` the column or attribute (``history[2]`` for one entry);
    ``expected`` is what the log says and ``found`` what the read model holds, both
    shown briefly as text.
    """

    model: str
    where: str
    field: str
    expected: str
    found: str

    def __str__(self) -> str:
        return (
            f"{self.where}: {self.model} {self.field}: expected {self.expected}, found {self.found}"
        )


@dataclass
class VerifyReport:
    """What ``verify`` found; ``ok`` when there is no mismatch.

    ``mismatches`` are readable lines, one per difference; ``diffs`` the same
    differences as :class:`Mismatch` objects. ``positions`` is the log position each
    read model was compared at, ``lag`` how many positions it was behind the head of
    the log then (lag is not a mismatch).
    """

    sessions: int = 0
    inputs: int = 0
    events: int = 0
    mismatches: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    diffs: list[Mismatch] = field(default_factory=list)
    positions: dict[str, int] = field(default_factory=dict)
    lag: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def add(self, mismatch: Mismatch) -> None:
        self.diffs.append(mismatch)
        self.mismatches.append(str(mismatch))


@dataclass
class _Snapshot:
    """A read model as one transaction saw it: its offset and its rows."""

    position: int
    ledger: dict[tuple[str, uuid.UUID], LedgerRow] = field(default_factory=dict)
    views: dict[str, ViewRow] = field(default_factory=dict)


def verify(
    store: EventStore,
    *,
    projection_names: Sequence[str] = ("ledger", "views"),
    sql: Sql | None = None,
) -> VerifyReport:
    """Refold every session and compare it with the ledger and the views, each at the
    log position it has reached (see the module docstring). The read models are read
    from ``sql``: the store's own database by default."""
    sql = sql if sql is not None else Sql(store)
    report = VerifyReport()
    snapshots: dict[str, _Snapshot] = {}
    for name in ("ledger", "views"):
        if name not in projection_names:
            continue
        snap = _read_model(sql, name)
        if snap is None:
            report.notes.append(f"projection {name!r} has not started: not compared")
        else:
            snapshots[name] = snap
    head = store.max_position()  # read after the snapshots: lag is never negative
    for name, snap in snapshots.items():
        report.positions[name] = snap.position
        report.lag[name] = max(0, head - snap.position)
    checkpoints = sorted(snapshots.items(), key=lambda item: item[1].position)
    for sid in store.session_ids():
        report.sessions += 1
        state = SessionState(session_id=sid)
        try:
            records = store.read_session(sid)  # UndecodableEvent if the store cannot read one
            report.events += len(records)
            _check_log(report, sid, records)
            rest = iter(records)
            pending: RecordedEvent | None = next(rest, None)
            for name, snap in checkpoints:
                while pending is not None and pending.position <= snap.position:
                    evolve(state, decode_recorded(pending))
                    pending = next(rest, None)
                if name == "ledger":
                    _compare_ledger(report, sid, state, snap.ledger, store.serializer.conceal)
                else:
                    _compare_view(report, sid, state, snap.views.pop(sid, None))
            while pending is not None:  # the whole log must fold, compared or not
                evolve(state, decode_recorded(pending))
                pending = next(rest, None)
        except Exception as exc:
            if isinstance(exc, UndecodableEvent):
                event = f"event {exc.version} (log position {exc.position}, topic {exc.topic!r})"
                expected, detail = "an event that can be read", exc.detail
            else:
                event, expected, detail = (
                    f"event {state.version + 1}",
                    "an event that folds",
                    str(exc),
                )
            report.add(
                Mismatch(
                    "log",
                    f"session {sid!r}",
                    event,
                    expected,
                    f"{type(exc).__name__}: {_brief(detail)}",
                )
            )
            # Not compared: its rows are not "rows without an input" either.
            if "ledger" in snapshots:
                for key in [k for k in snapshots["ledger"].ledger if k[0] == sid]:
                    del snapshots["ledger"].ledger[key]
            if "views" in snapshots:
                snapshots["views"].views.pop(sid, None)
            continue
        report.inputs += len(state.inputs)
    if "ledger" in snapshots:
        for (sid, iid), row in snapshots["ledger"].ledger.items():
            report.add(
                Mismatch("ledger", f"session {sid!r} input {iid}", "row", "no row", _row_brief(row))
            )
    if "views" in snapshots:
        for sid in snapshots["views"].views:
            report.add(Mismatch("views", f"session {sid!r}", "row", "no row", "a view row"))
    return report


def _read_model(sql: Sql, name: str) -> _Snapshot | None:
    """The offset and rows of read model ``name`` from one consistent snapshot; None if
    its projection never started (no offset row)."""
    with sql.read_transaction() as cur:
        row = cur.execute(
            f"SELECT position FROM {cur.table(OFFSETS)} WHERE name = ?", (name,)
        ).fetchone()
        if row is None:
            return None
        snap = _Snapshot(position=int(row["position"]))
        if name == "ledger":
            for r in _all_rows(cur, LEDGER_TABLE):
                lr = ledger_row(r)
                snap.ledger[(lr.session_id, lr.input_id)] = lr
        else:
            for r in _all_rows(cur, VIEWS_TABLE):
                vr = view_row(r)
                snap.views[vr.session_id] = vr
    return snap


def _all_rows(cur: Cursor, table: str) -> list[dict[str, Any]]:
    return cur.execute(f"SELECT * FROM {cur.table(table)}").fetchall()


def _check_log(report: VerifyReport, sid: str, records: Sequence[RecordedEvent]) -> None:
    versions = [r.version for r in records]
    for place, version in enumerate(versions, start=1):
        if version != place:  # the first version out of place
            report.add(
                Mismatch("log", f"session {sid!r}", f"versions[{place}]", str(place), str(version))
            )
            break
    writers = [r.writer for r in records]
    switches = sum(1 for a, b in itertools.pairwise(writers) if a != b)
    if switches:
        report.notes.append(f"session {sid!r}: {len(set(writers))} writers, {switches} switches")


def _compare_ledger(
    report: VerifyReport,
    sid: str,
    state: SessionState,
    rows: dict[tuple[str, uuid.UUID], LedgerRow],
    conceal: Callable[[str], str],
) -> None:
    """Compare the session's inputs (folded up to the ledger's position) with its rows;
    compared rows are taken out of ``rows`` (what is left over has no input). ``conceal``
    turns an idempotency key into the form the ledger keeps (hashed when encrypted)."""
    for iid, st in state.inputs.items():
        where = f"session {sid!r} input {iid}"
        row = rows.pop((sid, iid), None)
        if row is None:
            report.add(Mismatch("ledger", where, "row", f"a {st.current_state} input", "no row"))
            continue
        if row.input_state.current_state.value != row.state:
            report.add(
                Mismatch(
                    "ledger",
                    where,
                    "state column",
                    f"{_show(row.input_state.current_state)} (the row's own state)",
                    _show(row.state),
                )
            )
        expected: dict[str, Any] = {
            "kind": st.kind,
            "state": st.current_state.value,
            "idempotency_key": (
                None if st.idempotency_key is None else conceal(st.idempotency_key)
            ),
            "run_id": st.last_run_id,
            "terminal_outcome": st.terminal_outcome,
        }
        for key, want in expected.items():
            got = getattr(row, key)
            if got != want:
                report.add(Mismatch("ledger", where, key, _show(want), _show(got)))
        _compare_sequence(report, "ledger", where, "history", st.history, row.history)


def _compare_sequence(
    report: VerifyReport,
    model: str,
    where: str,
    name: str,
    want: Sequence[Any],
    got: Sequence[Any],
) -> None:
    """Report the first entry where two sequences differ, as ``name[i]``."""
    sizes = len(want) != len(got)
    for i, (w, g) in enumerate(itertools.zip_longest(want, got, fillvalue=_NOTHING)):
        if w != g:
            report.add(
                Mismatch(
                    model,
                    where,
                    f"{name}[{i}]",
                    _show(w) + (f" (of {len(want)} entries)" if sizes else ""),
                    _show(g) + (f" (of {len(got)} entries)" if sizes else ""),
                )
            )
            return


def _compare_view(
    report: VerifyReport, sid: str, state: SessionState, view: ViewRow | None
) -> None:
    where = f"session {sid!r}"
    if view is None:
        if state.version > 0:
            report.add(
                Mismatch("views", where, "row", f"a view at sequence {state.version}", "no row")
            )
        return
    if state.version == 0:  # the view is ahead of the log it was compared with
        report.add(Mismatch("views", where, "row", "no view row", f"a view at {view.position}"))
        return
    counts = Counter(s.current_state.value for s in state.inputs.values())
    phase = _OBSERVED_TO_PHASE.get(view.state, view.state)
    want_phase = (
        RuntimeState.RUNNING.value if state.phase is RuntimeState.RUNNING else state.phase.value
    )
    checks: dict[str, tuple[Any, Any]] = {
        "state": (want_phase, phase),
        "counts": (dict(sorted(counts.items())), dict(sorted(view.counts.items()))),
        "queued": (counts.get("queued", 0), view.queued),
        "staged": (counts.get("staged", 0), view.staged),
        "current_run_id": (state.run.run_id if state.run else None, view.current_run_id),
        "last_sequence": (state.version, view.last_sequence),
    }
    for key, (want, got) in checks.items():
        if got != want:
            report.add(Mismatch("views", where, key, _show(want), _show(got)))


class _Nothing:
    """Past the end of a sequence."""

    def __repr__(self) -> str:
        return "nothing"


_NOTHING = _Nothing()


def _show(value: Any) -> str:
    """A short readable form of a compared value: JSON of its wire form, cut to length."""
    if value is None:
        return "none"
    if isinstance(value, _Nothing):
        return "nothing"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    try:
        text = orjson.dumps(
            wire.to_json_value(value) if not isinstance(value, (str, int, float, dict)) else value
        ).decode()
    except Exception:
        text = repr(value)
    return _brief(text)


def _brief(text: str) -> str:
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _row_brief(row: LedgerRow) -> str:
    return f"a {row.state} row at position {row.position}"
