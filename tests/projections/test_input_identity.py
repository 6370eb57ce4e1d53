"""Input ids are unique within a session only (issue 13, item 2).

As in the Rust runtime, an input ledger belongs to one session: the same
``header.id`` accepted by two sessions is two inputs. The ledger, the views'
counts, completions, ``verify`` and ``rebuild`` keep them apart; a lookup by
input id alone that matches several sessions says so instead of picking one.
A store written before the ledger was keyed by session is rebuilt from the log
when it is opened.
"""

from __future__ import annotations

import pytest

from meerkat_runtime import AmbiguousInputId, Completed, uuid7
from meerkat_runtime.projections import Sql

from ..waiting import WAIT
from ._support import DispatchExecutor, full_listing, prompt
from .conftest import Db


def test_the_same_input_id_in_two_sessions_is_two_ledger_rows(db: Db) -> None:
    rt = db.runtime()
    iid = str(uuid7())
    for sid in ("a", "b"):
        assert rt.session(sid).accept(prompt(f"from {sid}", id=iid)).kind == "accepted"
    rt.session("b").destroy()  # b's input is abandoned; a's stays queued
    rt.projections.wait_caught_up(WAIT)

    found = rt.ledger.find(iid)
    assert [(r.session_id, r.state) for r in found] == [("a", "queued"), ("b", "abandoned")]
    row_a, row_b = rt.ledger.get(iid, session_id="a"), rt.ledger.get(iid, "b")
    assert row_a is not None and row_a.state == "queued"
    assert row_b is not None and row_b.state == "abandoned"
    assert rt.ledger.get(iid, session_id="c") is None
    with pytest.raises(AmbiguousInputId) as info:
        rt.ledger.get(iid)
    assert info.value.session_ids == ["a", "b"]
    assert "name the session" in str(info.value)
    assert [r.session_id for r in rt.ledger.list(input_id=iid)] == ["a", "b"]
    assert rt.ledger.count(input_id=iid) == 2 and rt.ledger.count() == 2
    assert [r.input_id for r in rt.ledger.list(session_id="a")] == [row_a.input_id]

    view_a, view_b = rt.views.get("a"), rt.views.get("b")
    assert view_a is not None and view_a.counts == {"queued": 1} and view_a.queued == 1
    assert view_b is not None and view_b.counts == {"abandoned": 1} and view_b.queued == 0

    report = rt.verify()
    assert report.ok, report.mismatches[:10]
    assert report.inputs == 2

    before = full_listing(rt)
    rt.projections.rebuild()
    rt.projections.wait_caught_up(WAIT)
    assert full_listing(rt) == before
    assert rt.verify().ok


def test_a_unique_input_id_is_found_without_its_session(db: Db) -> None:
    rt = db.runtime()
    out = rt.session("only").accept(prompt())
    rt.projections.wait_caught_up(WAIT)
    row = rt.ledger.get(out.input_id)
    assert row is not None and row.session_id == "only"
    assert rt.ledger.get(uuid7()) is None


def test_completions_of_the_same_input_id_in_two_sessions_stay_apart(db: Db) -> None:
    executor = DispatchExecutor()  # runs of hold-* sessions wait for release()
    rt = db.runtime(executor=executor)
    iid = str(uuid7())
    held = rt.session("hold-a").accept(prompt("from a", id=iid))
    quick = rt.session("b").accept(prompt("from b", id=iid))
    assert held.kind == quick.kind == "accepted"
    assert held.completion is not None and quick.completion is not None
    done_b = quick.completion.wait(WAIT)
    assert isinstance(done_b, Completed) and done_b.output == {"text": "from b"}
    # b's completion is b's input's: it must not resolve session hold-a's waiter.
    assert not held.completion.done()
    executor.release()
    done_a = held.completion.wait(WAIT)
    assert isinstance(done_a, Completed) and done_a.output == {"text": "from a"}
    rt.projections.wait_caught_up(WAIT)
    assert {r.session_id: r.state for r in rt.ledger.find(iid)} == {
        "hold-a": "consumed",
        "b": "consumed",
    }
    assert rt.verify().ok


# The layout of the releases before read-model layouts were recorded (layout 1).
_OLD_LEDGER = (
    "CREATE TABLE {t} (input_id TEXT PRIMARY KEY, session_id TEXT NOT NULL, kind TEXT, "
    "state TEXT NOT NULL, position BIGINT NOT NULL, state_since TEXT NOT NULL, "
    "updated_at TEXT NOT NULL, row_json TEXT NOT NULL)"
)
_OLD_VIEW_INPUTS = (
    "CREATE TABLE {t} (input_id TEXT PRIMARY KEY, session_id TEXT NOT NULL, state TEXT NOT NULL)"
)


def test_a_store_with_the_old_ledger_layout_is_rebuilt_on_open(db: Db) -> None:
    """A store whose read models were written by a release that keyed them by input id
    alone: opening it rebuilds them from the log, and the same id in two sessions works."""
    rt = db.runtime()
    iid = str(uuid7())
    rt.session("a").accept(prompt("from a", id=iid))
    rt.session("b").accept(prompt("from b"))
    rt.projections.wait_caught_up(WAIT)
    head = rt.store.max_position()
    rt.close()

    # Turn the store into one written by the old release: old tables (with a stale,
    # wrong row), offsets at the head, no layout recorded.
    store = db.store()
    with Sql(store).transaction() as cur:
        cur.execute(f"DROP TABLE {cur.table('meerkat_ledger')}")
        cur.execute(f"DROP TABLE {cur.table('meerkat_view_inputs')}")
        cur.execute(_OLD_LEDGER.format(t=cur.table("meerkat_ledger")))
        cur.execute(_OLD_VIEW_INPUTS.format(t=cur.table("meerkat_view_inputs")))
        cur.execute(
            f"INSERT INTO {cur.table('meerkat_ledger')} VALUES (?, 'a', 'prompt', 'consumed', "
            "1, '2020-01-01T00:00:00.000000Z', '2020-01-01T00:00:00Z', '{}')",
            (iid,),
        )
        cur.execute(f"DELETE FROM {cur.table('meerkat_projection_layouts')}")
        cur.execute(f"UPDATE {cur.table('meerkat_projection_offsets')} SET position = ?", (head,))
    store.close()

    rt = db.runtime()
    assert rt.session("b").accept(prompt("again", id=iid)).kind == "accepted"
    rt.projections.wait_caught_up(WAIT)
    assert {r.session_id: r.state for r in rt.ledger.find(iid)} == {"a": "queued", "b": "queued"}
    assert rt.ledger.count() == 3
    view_b = rt.views.get("b")
    assert view_b is not None and view_b.queued == 2
    report = rt.verify()
    assert report.ok, report.mismatches[:10]
