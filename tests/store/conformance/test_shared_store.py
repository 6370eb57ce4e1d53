"""LeaseStore and NodeRegistry conformance, on every backend that has them (SQLite files,
PostgreSQL); ``memory://`` has neither and says so."""

from __future__ import annotations

import time

import pytest

from meerkat_runtime.errors import LeaseUnavailable, StoreError
from meerkat_runtime.store import (
    EventAppender,
    LeaseStore,
    NodeRegistry,
    NotificationLog,
    ReadModelHost,
    SessionLog,
    SharedStore,
    SnapshotStore,
    shared_store,
)

from ..conftest import Backend

EVERY_STORE = (SessionLog, NotificationLog, EventAppender, SnapshotStore, ReadModelHost)
# The backends that have leases and nodes; the tests of those run on these alone.
shared_backends = pytest.mark.parametrize("backend", ["sqlite", "postgres"], indirect=True)


def test_which_backend_implements_which_protocol(backend: Backend) -> None:
    store = backend.open()
    assert all(isinstance(store, protocol) for protocol in EVERY_STORE)
    shared = backend.name != "memory"
    assert isinstance(store, LeaseStore) is shared
    assert isinstance(store, NodeRegistry) is shared
    assert store.supports_leases is shared
    assert (shared_store(store) is not None) is shared


@pytest.mark.parametrize("backend", ["memory"], indirect=True)
def test_a_store_without_leases_refuses_to_be_shared(backend: Backend) -> None:
    with pytest.raises(StoreError, match="shared store"):
        backend.open().shared()


def _shared(backend: Backend) -> SharedStore:
    return backend.open().shared()


@shared_backends
def test_lease_is_exclusive_and_renewal_keeps_its_token(backend: Backend) -> None:
    store = _shared(backend)
    token = store.acquire_lease("test:a", "n1", 30, incarnation="i1")
    assert store.acquire_lease("test:a", "n1", 30, incarnation="i1") == token
    with pytest.raises(LeaseUnavailable) as caught:
        store.acquire_lease("test:a", "n2", 30, incarnation="i2")
    assert caught.value.owner == "n1"
    assert store.renew_leases(["test:a", "test:never"], "n1", 30, incarnation="i1") == {"test:a"}
    [lease] = store.list_leases("test:")
    assert (lease.name, lease.owner, lease.token, lease.live) == ("test:a", "n1", token, True)
    assert lease.expires_at > store.clock()


@shared_backends
def test_a_released_lease_passes_on_with_a_higher_token(backend: Backend) -> None:
    store = _shared(backend)
    first = store.acquire_lease("test:b", "n1", 30, incarnation="i1")
    store.release_lease("test:b", "n1", incarnation="i1")
    assert [x.live for x in store.list_leases("test:b")] == [False]
    assert store.acquire_lease("test:b", "n2", 30, incarnation="i2") > first


@shared_backends
def test_a_restarted_node_takes_its_lease_back_at_once(backend: Backend) -> None:
    store = _shared(backend)
    first = store.acquire_lease("test:c", "n1", 30, incarnation="old")
    assert store.acquire_lease("test:c", "n1", 30, incarnation="new") > first


@shared_backends
def test_an_expired_lease_can_be_taken(backend: Backend) -> None:
    store = _shared(backend)
    store.acquire_lease("test:d", "n1", 0.05, incarnation="i1")
    deadline = time.monotonic() + 10
    while True:  # wait for the expiry on the store's own clock, not for a fixed time
        try:
            store.acquire_lease("test:d", "n2", 30, incarnation="i2")
            break
        except LeaseUnavailable:
            assert time.monotonic() < deadline, "the lease never expired"
            time.sleep(0.02)
    assert [x.owner for x in store.list_leases("test:d")] == ["n2"]


@shared_backends
def test_nodes_heartbeat_list_and_leave(backend: Backend) -> None:
    store = _shared(backend)
    store.heartbeat_node("node-a", {"pid": 1}, incarnation="ia")
    store.heartbeat_node("node-b", {"pid": 2}, incarnation="ib")
    assert {n.node_id: n.info["pid"] for n in store.list_nodes()} == {"node-a": 1, "node-b": 2}
    store.remove_node("node-a", "not-its-incarnation")
    assert {n.node_id for n in store.list_nodes()} == {"node-a", "node-b"}
    store.remove_node("node-a", "ia")
    assert [n.node_id for n in store.list_nodes()] == ["node-b"]
    assert store.prune_nodes(1_000_000) == 0


@shared_backends
def test_leases_taken_and_released_many_at_once_follow_the_single_rules(backend: Backend) -> None:
    """``acquire_leases`` takes what ``acquire_lease`` would (free, expired, ours, our older
    incarnation's) in one call and leaves out, never steals, what another live owner holds."""
    store = _shared(backend)
    mine = store.acquire_lease("many:mine", "n1", 30, incarnation="i1")
    older = store.acquire_lease("many:older", "n1", 30, incarnation="old")
    store.acquire_lease("many:other", "n2", 30, incarnation="i2")
    store.acquire_lease("many:expired", "n2", 0.05, incarnation="i2")
    deadline = time.monotonic() + 10
    while any(x.live for x in store.list_leases("many:expired")):
        assert time.monotonic() < deadline, "the lease never expired"
        time.sleep(0.02)
    names = ["many:free", "many:mine", "many:older", "many:other", "many:expired", "many:free"]
    got = store.acquire_leases(names, "n1", 30, incarnation="i1", process="p1")
    assert set(got) == {"many:free", "many:mine", "many:older", "many:expired"}
    assert got["many:free"] == 1 and got["many:mine"] == mine and got["many:older"] > older
    leases = {x.name: x for x in store.list_leases("many:")}
    assert leases["many:other"].owner == "n2" and leases["many:other"].live
    assert all(leases[n].owner == "n1" and leases[n].live for n in got)
    assert leases["many:free"].process == "p1"
    assert store.acquire_leases([], "n1", 30, incarnation="i1") == {}

    store.release_leases(["many:free", "many:mine", "many:other"], "n1", incarnation="i1")
    leases = {x.name: x for x in store.list_leases("many:")}
    assert not leases["many:free"].live and not leases["many:mine"].live
    assert leases["many:other"].live  # not ours: untouched
    assert leases["many:older"].live  # not asked for
    assert store.acquire_leases(["many:mine"], "n2", 30, incarnation="i2") == {
        "many:mine": mine + 1
    }


@shared_backends
def test_a_group_commit_with_one_stale_fence_fails_only_that_append(backend: Backend) -> None:
    """Fences are checked for a whole group at once: a lease taken over fails its own
    append with the lease's name and new owner; the others in the group commit."""
    from meerkat_runtime.store import Fence

    from ...faulty_store import GatedCommits
    from ._events import happened

    store = backend.open()
    shared = store.shared()
    tokens = {n: shared.acquire_lease(f"test:s{n}", "n1", 30, incarnation="i1") for n in range(4)}
    shared.release_leases(["test:s2"], "n1", incarnation="i1")
    shared.acquire_lease("test:s2", "n2", 30, incarnation="i2")  # taken over

    gate = GatedCommits(store)
    held = store.append_async("gate", 0, [happened(0)])
    assert gate.entered.wait(10)
    futures = [
        store.append_async(f"s{n}", 0, [happened(n)], fence=Fence(f"test:s{n}", "n1", tokens[n]))
        for n in range(4)
    ]
    gate.release()
    held.result(timeout=30)

    assert gate.sizes[:2] == [1, 4]  # one group for the four fenced appends
    stale = futures[2].exception(timeout=30)
    assert isinstance(stale, LeaseUnavailable)
    assert (stale.name, stale.owner) == ("test:s2", "n2")
    for n in (0, 1, 3):
        assert [e.version for e in futures[n].result(timeout=30)] == [1]
    assert store.session_version("s2") == 0
