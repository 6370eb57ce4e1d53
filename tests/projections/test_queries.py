"""Queries on the read models: ``rt.ledger.get/list`` and ``rt.views.get/list`` (issue item 1).

Specific inputs get the row the log implies (state, history, run, terminal
outcome, idempotency key); views count what they should; paging with
``after=row.position`` covers every row once, in order; filters select what
they say.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from meerkat_runtime import (
    Abandoned,
    AbandonedOutcome,
    AbandonKind,
    Completed,
    ConsumedOutcome,
    InputLifecycleState,
    Runtime,
    Session,
)
from meerkat_runtime.events.timefmt import format_timestamp, parse_timestamp
from meerkat_runtime.projections import LedgerRow
from meerkat_runtime.runtime import event_codec
from meerkat_runtime.store import NewEvent, open_store

from ..waiting import WAIT, wait_until
from ._support import (
    DispatchExecutor,
    GatedExecutor,
    external_event,
    full_listing,
    operation,
    peer_progress,
    prompt,
)
from .conftest import Db

L = InputLifecycleState


def assert_row_matches_fold(rt_row: LedgerRow, session: Session) -> None:
    """The ledger row says what the session's own fold says about the input."""
    st = session.input_state(rt_row.input_id)
    assert st is not None
    assert rt_row.session_id == session.id
    assert rt_row.state == st.current_state.value
    assert rt_row.history == st.history
    assert rt_row.run_id == st.last_run_id
    assert rt_row.terminal_outcome == st.terminal_outcome
    assert rt_row.idempotency_key == st.idempotency_key


def test_ledger_rows_of_specific_inputs(db: Db) -> None:
    ex = DispatchExecutor()
    rt = db.runtime(executor=ex)
    ok = rt.session("ok-1")
    done = ok.accept(prompt("hi", idempotency_key="k-1"))
    assert done.completion is not None
    outcome = done.completion.wait(WAIT)
    assert isinstance(outcome, Completed)
    dup = ok.accept(prompt("hi again", idempotency_key="k-1"))
    assert dup.kind == "deduplicated" and dup.existing_id == done.input_id
    op = ok.accept(operation())

    failing = rt.session("fail-1")
    doomed = failing.accept(prompt("will fail"))
    assert doomed.completion is not None
    assert isinstance(doomed.completion.wait(WAIT), Abandoned)

    held = rt.session("hold-1")
    first = held.accept(prompt("runs, held"))
    wait_until(lambda: held.input_state(first.input_id).current_state is not L.QUEUED)  # type: ignore[union-attr]
    old_ci = held.accept(external_event({"state": "red"}, supersession_key="ci"))
    new_ci = held.accept(external_event({"state": "green"}, supersession_key="ci"))
    old_progress = held.accept(peer_progress(supersession_key="progress-r7"))
    new_progress = held.accept(peer_progress(supersession_key="progress-r7"))

    gone = rt.session("gone-1")
    lost = gone.accept(prompt("never runs, session destroyed"))
    gone.destroy()

    rt.projections.wait_caught_up(WAIT)
    row = rt.ledger.get(done.input_id)
    assert row is not None
    assert (row.session_id, row.kind, row.state) == ("ok-1", "prompt", "consumed")
    assert row.run_id == outcome.run_id
    assert row.terminal_outcome == ConsumedOutcome()
    assert row.idempotency_key == "k-1"
    assert [h.to for h in row.history][-1] is L.CONSUMED
    assert_row_matches_fold(row, ok)
    # The duplicate is no input of its own: the key stays with the first.
    assert rt.ledger.get(dup.input_id) is None
    assert [r.input_id for r in rt.ledger.list(session_id="ok-1")] == [
        done.input_id,
        op.input_id,
    ]
    op_row = rt.ledger.get(str(op.input_id))  # a str id works too
    assert op_row is not None and op_row.kind == "operation" and op_row.state == "consumed"
    assert op_row.run_id is None and len(op_row.history) == 1

    row = rt.ledger.get(doomed.input_id)
    assert row is not None and row.state == "abandoned"
    assert isinstance(row.terminal_outcome, AbandonedOutcome)
    assert row.terminal_outcome.reason.kind is AbandonKind.MAX_ATTEMPTS_EXHAUSTED
    assert row.run_id is not None
    assert sum(1 for h in row.history if h.to is L.STAGED) == 3
    assert_row_matches_fold(row, failing)

    row = rt.ledger.get(old_ci.input_id)
    assert row is not None and row.state == "superseded" and row.kind == "external_event"
    assert row.terminal_outcome.superseded_by == new_ci.input_id  # type: ignore[union-attr]
    assert_row_matches_fold(row, held)
    row = rt.ledger.get(old_progress.input_id)
    assert row is not None and row.state == "coalesced"
    assert_row_matches_fold(row, held)
    for out in (new_ci, new_progress):
        row = rt.ledger.get(out.input_id)
        assert row is not None and row.state == "queued" and row.run_id is None

    row = rt.ledger.get(lost.input_id)
    assert row is not None and row.state == "abandoned"
    assert isinstance(row.terminal_outcome, AbandonedOutcome)
    assert row.terminal_outcome.reason.kind is AbandonKind.DESTROYED
    assert_row_matches_fold(row, gone)

    assert rt.ledger.get("01a21363-73e0-73e6-9fd7-172995cd1979") is None
    ex.release()


def test_views_count_queued_staged_and_runs(local_db: Db) -> None:
    rt = local_db.runtime()
    s = rt.session("v-1")
    for i in range(3):
        s.accept(prompt(f"p{i}"))
    s.accept(operation())
    other = rt.session("v-2")
    other.accept(prompt())
    other.retire()
    rt.projections.wait_caught_up(WAIT)
    view = rt.views.get("v-1")
    assert view is not None
    assert (view.queued, view.staged, view.current_run_id) == (3, 0, None)
    assert view.counts == {"queued": 3, "consumed": 1}
    events = list(s.events())
    assert view.last_sequence == events[-1].sequence == len(events)
    assert view.updated_at == events[-1].timestamp
    assert view.state == "idle"
    assert rt.views.get("v-2").state == "retired"  # type: ignore[union-attr]
    assert [v.session_id for v in rt.views.list(state="retired")] == ["v-2"]
    assert [v.session_id for v in rt.views.list(state="idle")] == ["v-1"]
    assert rt.views.get("nope") is None


def test_view_of_a_running_session(db: Db) -> None:
    ex = GatedExecutor()
    rt = db.runtime(executor=ex)
    s = rt.session("r-1")
    first = s.accept(prompt("runs"))
    assert ex.started.wait(WAIT)
    second = s.accept(prompt("waits"))
    rt.projections.wait_caught_up(WAIT)
    view = rt.views.get("r-1")
    assert view is not None
    assert view.state == "running"
    assert view.current_run_id == ex.requests[0].run_id
    staged_now = s.input_state(first.input_id)
    assert staged_now is not None
    assert view.counts == {staged_now.current_state.value: 1, "queued": 1}
    assert (view.queued, view.staged) == (1, 1 if staged_now.current_state is L.STAGED else 0)
    assert [r.run_id for r in rt.ledger.list(session_id="r-1", state=staged_now.current_state)] == [
        ex.requests[0].run_id
    ]
    ex.release()
    for out in (first, second):
        assert out.completion is not None
        assert isinstance(out.completion.wait(WAIT), Completed)
    wait_until(lambda: s.state().value == "attached")
    rt.projections.wait_caught_up(WAIT)
    view = rt.views.get("r-1")
    assert view is not None
    assert view.current_run_id is None and view.counts == {"consumed": 2}
    assert (view.queued, view.staged) == (0, 0)
    assert rt.verify().ok


def _fill(rt_db: Db, sessions: int, per_session: int) -> Runtime:
    rt = rt_db.runtime()
    for i in range(per_session):
        for k in range(sessions):
            doc = operation(f"op-{k}-{i}") if i % 3 == 2 else prompt(f"{k}-{i}")
            rt.session(f"page-{k}").accept(doc)
    rt.projections.wait_caught_up(WAIT)
    return rt


@pytest.mark.parametrize("limit", [1, 4, 1000])
def test_paging_covers_every_row_once_in_order(local_db: Db, limit: int) -> None:
    rt = _fill(local_db, sessions=5, per_session=9)
    everything = rt.ledger.list(limit=1000)
    assert len(everything) == 45 == rt.ledger.count()

    def pages(**filters: Any) -> list[LedgerRow]:
        out: list[LedgerRow] = []
        after = None
        while True:
            page = rt.ledger.list(limit=limit, after=after, **filters)
            assert len(page) <= limit
            out.extend(page)
            if len(page) < limit:
                return out
            after = page[-1].position

    got = pages()
    assert [r.input_id for r in got] == [r.input_id for r in everything]
    positions = [r.position for r in got]
    assert positions == sorted(set(positions)), "positions strictly increase"
    for sid in ("page-0", "page-3"):
        rows = pages(session_id=sid)
        assert [r.input_id for r in rows] == [r.input_id for r in everything if r.session_id == sid]
        assert len(rows) == 9 == rt.ledger.count(session_id=sid)
    queued = pages(state="queued")
    assert {r.state for r in queued} == {"queued"} and len(queued) == 30
    consumed = pages(state=L.CONSUMED)
    assert {r.kind for r in consumed} == {"operation"} and len(consumed) == 15
    both = pages(session_id="page-1", state="consumed")
    assert len(both) == 3 and {r.session_id for r in both} == {"page-1"}

    views = []
    after = None
    while True:
        page = rt.views.list(limit=limit, after=after)
        views.extend(page)
        if len(page) < limit:
            break
        after = page[-1].position
    assert [v.session_id for v in views] == [f"page-{k}" for k in range(5)]
    assert full_listing(rt).ledger == everything


def test_list_rejects_a_bad_limit(local_db: Db) -> None:
    rt = local_db.runtime()
    with pytest.raises(ValueError):
        rt.ledger.list(limit=0)
    with pytest.raises(ValueError):
        rt.views.list(limit=0)


def test_state_since_before_with_the_clock(local_db: Db) -> None:
    rt = local_db.runtime()
    s = rt.session("clock-1")
    early = [s.accept(prompt(f"early {i}")).input_id for i in range(3)]
    cut = datetime.now(UTC)
    late = [s.accept(prompt(f"late {i}")).input_id for i in range(2)]
    rt.projections.wait_caught_up(WAIT)
    rows = rt.ledger.list(state="queued", state_since_before=cut)
    assert [r.input_id for r in rows] == early
    assert all(r.state_since < cut for r in rows)
    later = rt.ledger.list(state="queued")
    assert [r.input_id for r in later] == early + late


def test_state_since_before_compares_instants_not_text(db: Db) -> None:
    """Timestamps on a whole second or millisecond are written shorter ("...00.500Z"):
    the filter must still compare them as instants."""
    source = open_store("memory://", codec=event_codec())
    with Runtime.open(source, projections=False) as src:
        s = src.session("t-1")
        ids = [s.accept(prompt(f"p{i}")).input_id for i in range(4)]
    events = source.read_session("t-1")
    source.close()
    stamps = [
        "2030-01-01T00:00:00.500Z",  # .500000: written with 3 digits
        "2030-01-01T00:00:00.500100Z",
        "2030-01-01T00:00:01Z",  # whole second: no fraction at all
        "2030-01-01T00:00:01.000200Z",
    ]
    # Event 1 creates the session; each accept then writes accepted + queued.
    target = db.store()
    version = 0
    rewritten = [NewEvent(events[0].topic, dict(events[0].data, timestamp=stamps[0]))]
    for i, stamp in enumerate(stamps):
        for rec in events[1 + 2 * i : 3 + 2 * i]:
            rewritten.append(NewEvent(rec.topic, dict(rec.data, timestamp=stamp)))
    target.append("t-1", version, rewritten)
    rt = db.runtime()
    rt.projections.wait_caught_up(WAIT)
    assert rt.verify().ok

    def before(ts: str) -> list[uuid.UUID]:
        return [r.input_id for r in rt.ledger.list(state_since_before=_parse(ts))]

    assert before("2030-01-01T00:00:00.500050Z") == ids[:1]
    assert before("2030-01-01T00:00:00.500101Z") == ids[:2]
    assert before("2030-01-01T00:00:01.000100Z") == ids[:3]
    assert before("2030-01-01T00:00:00.999999Z") == ids[:2]
    assert before("2030-01-01T00:00:00.500000Z") == []
    assert format_timestamp(_parse(stamps[0])) == stamps[0]


def _parse(ts: str) -> datetime:
    return parse_timestamp(ts)
