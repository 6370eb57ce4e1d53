"""A projection on standby (another node holds its lease) stays cheap for the store."""

from __future__ import annotations

import time
from typing import Any

import pytest

from meerkat_runtime.cluster import Membership
from meerkat_runtime.store import EventStore

from ..waiting import WAIT, wait_until
from ._support import CountingProjection, plain_codec
from .conftest import Db
from .test_failures import append_numbered


class CountingMembership(Membership):
    """Counts the attempts to take a projection's lease."""

    attempts = 0

    def acquire(self, name: str, holder: object = None) -> int:
        if name.startswith("projection:"):
            self.attempts += 1
        return super().acquire(name, holder)


def _member(store: EventStore, node: str) -> CountingMembership:
    return CountingMembership(store, node, 30.0, lambda _name: None)


def test_a_standby_tries_the_lease_once_per_poll_interval_not_at_every_commit(
    durable_db: Db,
) -> None:
    """Every commit pokes the projections of every node. A standby used to try the lease
    (on PostgreSQL a row lock and a durable commit) and re-read the stored offset at
    each poke: a store transaction per commit of the cluster, for nothing. With a poll
    interval longer than the test, it tries once (when it starts) whatever the commits."""
    leader_store = durable_db.store(plain_codec())
    standby_store = durable_db.store(plain_codec())
    leader = _member(leader_store, "leader")
    standby = _member(standby_store, "standby")
    try:
        durable_db.projections(leader_store, [CountingProjection()], membership=leader)
        wait_until(lambda: leader.holds("projection:counting"), WAIT)
        pset = durable_db.projections(
            standby_store, [CountingProjection()], membership=standby, poll_interval=3600.0
        )
        wait_until(lambda: standby.attempts >= 1, WAIT)
        wait_until(lambda: pset.status()[0].status == "standby", WAIT)
        for i in range(30):  # each commit of the standby's store pokes its runner
            append_numbered(standby_store, i, 1)
            pset.poke()
            time.sleep(0.01)
        assert standby.attempts == 1
        assert not standby.holds("projection:counting")
    finally:
        for pset in durable_db.sets:
            pset.close()
        durable_db.sets.clear()
        standby.close()
        leader.close()


def test_a_runtime_without_projections_does_not_listen_to_the_cluster_s_commits(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``watch_commits`` (PostgreSQL's LISTEN) wakes a thread of every node at every
    commit of every node, to poke its projection runners. A runtime opened with
    ``projections=False`` has none to poke: it must not listen at all (it did, a
    thread and a connection woken by every append of the cluster)."""
    from meerkat_runtime import Runtime
    from meerkat_runtime.store._postgres import PostgresEventStore

    watches: list[bool] = []
    real = PostgresEventStore.watch_commits

    def counting(self: PostgresEventStore, callback: Any) -> Any:
        watches.append(True)
        return real(self, callback)

    monkeypatch.setattr(PostgresEventStore, "watch_commits", counting)
    with Runtime.open(postgres_url, projections=False, executor=None) as rt:
        rt.session("s").accept({"input_type": "prompt", "content": "hello"})
    assert watches == []
    with Runtime.open(postgres_url, executor=None) as rt:  # the same store, projections on
        rt.session("s").accept({"input_type": "prompt", "content": "again"})
    assert watches == [True]
