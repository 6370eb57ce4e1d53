"""Crash safety with a real process kill (issue item 2).

A child process (``_crash_child.py``) runs a runtime with its projections and
a counting projection on a SQLite file or a PostgreSQL schema while it
accepts continuously; the parent SIGKILLs it at a random moment, several
times, restarting it on the same database in between. After each kill the
parent opens the database itself: the projections resume from their stored
offsets, and then every event must have been applied exactly once: the
counting projection holds each log position once, and ``verify`` finds the
ledger (histories included) and the views equal to a refold of the log. The
counting projection sleeps inside ``apply`` so that many kills land between
the handler and the commit.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from meerkat_runtime import Runtime
from meerkat_runtime.projections import ProjectionSet
from meerkat_runtime.runtime import event_codec
from meerkat_runtime.store import open_store

from ..waiting import WAIT
from ._support import CountingProjection, assert_exactly_once, run_and_kill, stored_offset
from .conftest import Db

CHILD = Path(__file__).with_name("_crash_child.py")


def check_after_crash(db: Db) -> tuple[int, int]:
    """Reopen, let the projections resume, and check exactly-once; returns (events, inputs)."""
    # A short lease (PostgreSQL) so the next child takes the projections over quickly.
    lease_ttl = 1.0 if db.backend == "postgres" else 10.0
    with Runtime.open(db.url, lease_ttl=lease_ttl) as rt:
        counting = ProjectionSet(rt.store, [CountingProjection()], poll_interval=0.02)
        try:
            rt.projections.wait_caught_up(WAIT)
            counting.wait_caught_up(WAIT)
            events = assert_exactly_once(rt.store)
            report = rt.verify()
            assert report.ok, "\n".join(report.mismatches[:20])
            assert report.events == events
            assert all(s.lag == 0 for s in rt.projections.status() + counting.status())
            return events, report.inputs
        finally:
            counting.close()


def killed_inside_apply(db: Db, apply_log: Path) -> bool:
    """Whether the child's last page was begun but not committed when it was killed."""
    lines = apply_log.read_text().split() if apply_log.exists() else []
    if not lines:
        return False
    last = int(lines[-1])
    with open_store(db.url, codec=event_codec()) as store:
        return stored_offset(store) < last


def crash_trials(db: Db, trials: int, seed: int, tmp_path: Path) -> int:
    """Kill and check ``trials`` times; returns how many kills landed inside an apply."""
    rnd = random.Random(seed)
    events = 0
    inside = 0
    for trial in range(trials):
        apply_log = tmp_path / f"apply-{seed}-{trial}.log"
        sleep = (0.0, 0.005, 0.02)[trial % 3]
        run_and_kill(CHILD, db.url, seed * 1000 + trial, rnd.uniform(0.05, 0.6), sleep, apply_log)
        inside += killed_inside_apply(db, apply_log)
        now, inputs = check_after_crash(db)
        assert now > events, "the child wrote something before it was killed"
        assert inputs > 0
        events = now
    print(f"{db.backend}: {inside} of {trials} kills landed between a handler and its commit")
    return inside


def test_sigkill_during_projection_commits(durable_db: Db, tmp_path: Path) -> None:
    crash_trials(durable_db, trials=3, seed=1, tmp_path=tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [2, 3])
def test_sigkill_many_times(durable_db: Db, seed: int, tmp_path: Path) -> None:
    crash_trials(durable_db, trials=10, seed=seed, tmp_path=tmp_path)


def test_counting_projection_detects_a_double_apply(local_db: Db) -> None:
    """The detector itself: an offset moved back makes the projection apply events twice."""
    from ._support import plain_codec
    from .test_failures import append_numbered

    store = local_db.store(plain_codec())
    append_numbered(store, 0, 6)
    pset = local_db.projections(store, [CountingProjection()])
    pset.wait_caught_up(WAIT)
    pset.close()
    with pset.sql.transaction() as cur:  # simulate a lost offset update
        cur.execute(f"UPDATE {cur.table('meerkat_projection_offsets')} SET position = 2")
    again = local_db.projections(store, [CountingProjection()])
    again.wait_caught_up(WAIT)
    with pytest.raises(AssertionError, match="more than once"):
        assert_exactly_once(store)
