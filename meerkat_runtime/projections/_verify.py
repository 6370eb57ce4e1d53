"""``verify``: refold every session from the log and compare with the read models.

Checks, per session: versions are contiguous from 1, the log folds without an
illegal transition, every input of the fold has a ledger row with the same
kind, lifecycle state, history, idempotency key, run and terminal outcome (and
the ledger has no extra rows), and the view has the fold's state, counts,
current run and last sequence. Also that every projection has caught up with
the log. Sessions written by more than one writer are reported as notes (a
replay can spot two writers; it is not by itself corruption).
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field

from meerkat_runtime.events.catalogue import envelope_from_record
from meerkat_runtime.events.runtime_state import RuntimeState
from meerkat_runtime.events.session import SessionState, evolve
from meerkat_runtime.projections._framework import OFFSETS
from meerkat_runtime.projections._ledger import LedgerQueries
from meerkat_runtime.projections._sql import Sql
from meerkat_runtime.projections._views import ViewQueries
from meerkat_runtime.store import EventStore

__all__ = ["VerifyReport", "verify"]

_OBSERVED_TO_PHASE = {"attached": "idle", "initializing": "idle"}


@dataclass
class VerifyReport:
    """What ``verify`` found; ``ok`` when there is no mismatch."""

    sessions: int = 0
    inputs: int = 0
    events: int = 0
    mismatches: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches


def verify(
    store: EventStore, *, projection_names: tuple[str, ...] = ("ledger", "views")
) -> VerifyReport:
    """Refold every session and compare it with the ledger and the views."""
    sql = Sql(store)
    ledger, views = LedgerQueries(sql), ViewQueries(sql)
    report = VerifyReport()
    head = store.max_position()
    with sql.transaction() as cur:
        offsets = {
            r["name"]: int(r["position"])
            for r in cur.execute(f"SELECT name, position FROM {cur.table(OFFSETS)}").fetchall()
        }
    for name in projection_names:
        if offsets.get(name, 0) < head:
            report.mismatches.append(
                f"projection {name!r} is behind: at position {offsets.get(name, 0)}, log head {head}"
            )
    seen_inputs: set[tuple[str, str]] = set()
    for sid in store.session_ids():
        report.sessions += 1
        records = store.read_session(sid)
        report.events += len(records)
        versions = [r.version for r in records]
        if versions != list(range(1, len(records) + 1)):
            report.mismatches.append(f"session {sid!r}: versions are not contiguous from 1")
        writers = [r.writer for r in records]
        switches = sum(1 for a, b in itertools.pairwise(writers) if a != b)
        if switches:
            report.notes.append(
                f"session {sid!r}: {len(set(writers))} writers, {switches} switches"
            )
        state = SessionState(session_id=sid)
        try:
            for rec in records:
                evolve(state, envelope_from_record(rec.data, rec.version))
        except Exception as exc:
            report.mismatches.append(
                f"session {sid!r}: log does not fold at version {state.version + 1}: {exc}"
            )
            continue
        _compare_ledger(report, sid, state, ledger, seen_inputs)
        _compare_view(report, sid, state, views)
    extra = ledger.count() - len(seen_inputs)
    if extra > 0:
        report.mismatches.append(f"ledger has {extra} rows for inputs no session log contains")
    return report


def _compare_ledger(
    report: VerifyReport,
    sid: str,
    state: SessionState,
    ledger: LedgerQueries,
    seen: set[tuple[str, str]],
) -> None:
    rows = {}
    after = None
    while True:
        page = ledger.list(session_id=sid, limit=1000, after=after)
        rows.update({r.input_id: r for r in page})
        if len(page) < 1000:
            break
        after = page[-1].position
    for iid, st in state.inputs.items():
        report.inputs += 1
        seen.add((sid, str(iid)))
        row = rows.pop(iid, None)
        if row is None:
            report.mismatches.append(f"session {sid!r}: input {iid} missing from the ledger")
            continue
        expected = {
            "kind": st.kind,
            "state": st.current_state.value,
            "history": st.history,
            "idempotency_key": st.idempotency_key,
            "run_id": st.last_run_id,
            "terminal_outcome": st.terminal_outcome,
        }
        if row.input_state.current_state.value != row.state:
            report.mismatches.append(
                f"session {sid!r}: input {iid} ledger state column {row.state!r} disagrees with "
                f"its row ({row.input_state.current_state.value!r})"
            )
        if row.session_id != sid:
            report.mismatches.append(
                f"session {sid!r}: input {iid} ledger session is {row.session_id!r}"
            )
        for key, want in expected.items():
            got = getattr(row, key)
            if got != want:
                report.mismatches.append(
                    f"session {sid!r}: input {iid} ledger {key} is {got!r}, the log says {want!r}"
                )
    for iid in rows:
        report.mismatches.append(f"session {sid!r}: ledger row {iid} has no input in the log")


def _compare_view(report: VerifyReport, sid: str, state: SessionState, views: ViewQueries) -> None:
    view = views.get(sid)
    if view is None:
        report.mismatches.append(f"session {sid!r}: no view row")
        return
    counts = Counter(s.current_state.value for s in state.inputs.values())
    phase = _OBSERVED_TO_PHASE.get(view.state, view.state)
    want_phase = (
        RuntimeState.RUNNING.value if state.phase is RuntimeState.RUNNING else state.phase.value
    )
    checks = {
        "state": (phase, want_phase),
        "counts": (view.counts, dict(counts)),
        "queued": (view.queued, counts.get("queued", 0)),
        "staged": (view.staged, counts.get("staged", 0)),
        "current_run_id": (view.current_run_id, state.run.run_id if state.run else None),
        "last_sequence": (view.last_sequence, state.version),
    }
    for key, (got, want) in checks.items():
        if got != want:
            report.mismatches.append(
                f"session {sid!r}: view {key} is {got!r}, the log says {want!r}"
            )
