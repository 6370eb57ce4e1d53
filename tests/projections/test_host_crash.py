"""A host read model survives kill -9 exactly once (its rows and its offset in one
transaction): a real child process runs ``Runtime.open(url, projections=[...])`` under
load and is SIGKILLed at random moments, often inside the handler; after each kill the
parent reopens the store with the same projection, lets it resume from its stored
offset, and every log position must have been applied exactly once."""

from __future__ import annotations

import random
from pathlib import Path

from meerkat_runtime import Runtime
from meerkat_runtime.runtime import event_codec
from meerkat_runtime.store import open_store

from ..waiting import WAIT
from ._host_support import PositionCounter
from ._support import assert_exactly_once, run_and_kill, stored_offset
from .conftest import Db

CHILD = Path(__file__).with_name("_host_crash_child.py")
NAME = "host_counter"


def killed_inside_a_page(url: str, apply_log: Path) -> bool:
    """Whether the child's last page was begun but not committed when it was killed."""
    lines = apply_log.read_text().split() if apply_log.exists() else []
    if not lines:
        return False
    with open_store(url, codec=event_codec()) as store:
        return stored_offset(store, NAME) < int(lines[-1])


def test_sigkill_keeps_a_host_read_model_exactly_once(durable_db: Db, tmp_path: Path) -> None:
    rnd = random.Random(7)
    events = inside = 0
    lease_ttl = 1.0 if durable_db.backend == "postgres" else 10.0
    trials = 4
    for trial in range(trials):
        apply_log = tmp_path / f"apply-{trial}.log"
        sleep = (0.0, 0.01, 0.03)[trial % 3]
        run_and_kill(CHILD, durable_db.url, trial, rnd.uniform(0.05, 0.5), sleep, apply_log)
        inside += killed_inside_a_page(durable_db.url, apply_log)
        with Runtime.open(
            durable_db.url, projections=[PositionCounter()], lease_ttl=lease_ttl
        ) as rt:
            rt.projections.wait_caught_up(WAIT)
            now = assert_exactly_once(rt.store, NAME)
            status = {s.name: s for s in rt.projections.status()}[NAME]
            assert status.lag == 0 and status.status == "running"
        assert now > events, "the child wrote something before it was killed"
        events = now
    print(f"{durable_db.backend}: {inside} of {trials} kills landed inside a host handler's page")
