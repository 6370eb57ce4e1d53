"""``verify`` on a live store (issue 13, item 6).

Each read model is compared with the log at the position it has reached, read
in one snapshot with its rows, so a store being written while ``verify`` runs
shows lag, never a mismatch; and a difference is reported field by field
(what the log says, what the read model holds), not as whole-object reprs.
"""

from __future__ import annotations

import threading

import orjson

from meerkat_runtime import EchoExecutor
from meerkat_runtime.projections import Mismatch, Sql, VerifyReport, verify

from ..waiting import WAIT, wait_until
from ._support import prompt
from .conftest import Db

WRITERS = 4
SESSIONS = 8
MIN_VERIFIES = 6


def test_verify_during_a_live_workload_reports_no_mismatch(db: Db) -> None:
    rt = db.runtime(executor=EchoExecutor())
    stop = threading.Event()
    accepted = [0] * WRITERS
    errors: list[BaseException] = []

    def write(w: int) -> None:
        try:
            n = 0
            while not stop.is_set():
                out = rt.session(f"live-{(w + n) % SESSIONS}").accept(prompt(f"w{w} #{n}"))
                assert out.kind == "accepted", out
                accepted[w] += 1
                n += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,), daemon=True) for w in range(WRITERS)]
    for t in threads:
        t.start()
    checker = db.store()  # another store instance, as the CLI or another process would be
    reports: list[VerifyReport] = []
    try:
        wait_until(lambda: sum(accepted) >= 20 or bool(errors), what="the workload to start")

        def verified_while_lagging() -> bool:
            report = verify(checker)
            assert report.ok, report.mismatches[:10]
            reports.append(report)
            lagged = any(lag > 0 for r in reports for lag in r.lag.values())
            return bool(errors) or (len(reports) >= MIN_VERIFIES and lagged)

        wait_until(verified_while_lagging, what="verify runs that met a lagging read model")
    finally:
        stop.set()
        for t in threads:
            t.join(WAIT)
    assert not errors, errors
    for report in reports:
        assert set(report.positions) == {"ledger", "views"}
    # The writes went on while verify ran: later runs saw more of the log.
    assert reports[-1].events > reports[0].events
    rt.projections.wait_caught_up(WAIT)
    final = verify(checker)
    assert final.ok, final.mismatches[:10]
    assert final.inputs == sum(accepted)


def test_a_lagging_read_model_is_lag_not_a_mismatch(db: Db) -> None:
    rt = db.runtime()
    for n in range(3):
        rt.session("s").accept(prompt(f"before {n}"))
    rt.projections.wait_caught_up(WAIT)
    rt.close()
    rt = db.runtime(projections=False)  # writes the log; nothing follows it
    for n in range(4):
        rt.session("s").accept(prompt(f"after {n}"))
    head = rt.store.max_position()
    rt.close()
    report = verify(db.store())
    assert report.ok, report.mismatches
    assert report.lag["ledger"] > 0 and report.lag["views"] > 0
    assert report.positions["ledger"] + report.lag["ledger"] == head
    assert report.inputs == 7  # the whole log folds; the read models are compared at their position


def test_a_corrupted_read_model_is_reported_field_by_field(db: Db) -> None:
    rt = db.runtime(executor=EchoExecutor())
    outcomes = [rt.session("s").accept(prompt(f"p{n}")) for n in range(3)]
    for out in outcomes:
        assert out.completion is not None
        out.completion.wait(WAIT)
    rt.projections.wait_caught_up(WAIT)
    rt.close()
    first, second = (str(o.input_id) for o in outcomes[:2])
    store = db.store()
    with Sql(store).transaction() as cur:
        # first input: its state column says queued (it was consumed)
        cur.execute(
            f"UPDATE {cur.table('meerkat_ledger')} SET state = 'queued' WHERE input_id = ?",
            (first,),
        )
        # second input: the last history entry is lost from its stored row
        row = cur.execute(
            f"SELECT row_json FROM {cur.table('meerkat_ledger')} WHERE input_id = ?", (second,)
        ).fetchone()
        assert row is not None
        stored = orjson.loads(row["row_json"])
        entries = len(stored["history"])
        stored["history"] = stored["history"][:-1]
        cur.execute(
            f"UPDATE {cur.table('meerkat_ledger')} SET row_json = ? WHERE input_id = ?",
            (orjson.dumps(stored).decode(), second),
        )
        # the view counts one input too many
        cur.execute(
            f"UPDATE {cur.table('meerkat_views')} SET counts = ? WHERE session_id = 's'",
            ('{"consumed": 4}',),
        )
    report = verify(store)
    assert not report.ok
    found = {(d.model, d.where, d.field): d for d in report.diffs}
    state = found["ledger", f"session 's' input {first}", "state"]
    assert (state.expected, state.found) == ('"consumed"', '"queued"')
    assert str(state) == (
        f'session \'s\' input {first}: ledger state: expected "consumed", found "queued"'
    )
    history = found["ledger", f"session 's' input {second}", f"history[{entries - 1}]"]
    assert '"to":"consumed"' in history.expected and history.expected.endswith(
        f"(of {entries} entries)"
    )
    assert history.found == f"nothing (of {entries - 1} entries)"
    counts = found["views", "session 's'", "counts"]
    assert (counts.expected, counts.found) == ('{"consumed":3}', '{"consumed":4}')
    assert [str(d) for d in report.diffs] == report.mismatches
    assert all(isinstance(d, Mismatch) for d in report.diffs)
    assert all(len(line) < 400 for line in report.mismatches), report.mismatches
