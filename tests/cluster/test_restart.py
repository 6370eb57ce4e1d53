"""A node that restarts: a new incarnation, its sessions back at once, its old life fenced.

Every process start is a new incarnation of its node, with new fencing tokens.
A process that starts with the node id of one before it (``node_id=``, or
``MEERKAT_NODE_ID``) takes that node's sessions back at once, however long
their leases would still run, and the earlier process, should it still be
alive, can no longer write them. A process started with the default node id
(host name and pid, so a new one each start) on the host of a killed one
sees that the killed process is gone and does not wait for its leases either.
On SQLite files and PostgreSQL alike.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ._support import nodes, open_plain_store, start_nodes, writers

LONG_TTL = 30.0
"""Longer than any test here waits: whatever is taken over is not taken by expiry."""

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def _url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'restart.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_restart_with_the_same_node_id_takes_over_at_once_and_fences_the_old_life(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = _url(backend, tmp_path, request)
    store = open_plain_store(url)
    with nodes() as started:
        (old,) = start_nodes(started, url, ["svc"], LONG_TTL)
        first = old.call("accept", sid="s", count=2)
        assert first["error"] is None and len(first["acked"]) == 2
        token = next(x.token for x in store.shared().list_leases("session:s"))

        # A second process with the same node id (the first one hangs, or is being
        # replaced): it takes the session at once, with a new token.
        (new,) = start_nodes(started, url, ["svc"], LONG_TTL)
        assert new.incarnation != old.incarnation
        second = new.call("accept", sid="s", count=1)
        assert second["error"] is None and len(second["acked"]) == 1
        (lease,) = store.shared().list_leases("session:s")
        assert (lease.owner, lease.live) == ("svc", True)
        assert lease.token > token

        # The old life still believes it owns the session: its append is fenced off.
        stale = old.call("accept", sid="s", count=1)
        assert stale["acked"] == [] and stale["error"] == "SessionOwnedElsewhere", stale
        assert stale["owner"] == "svc"
        assert lease.incarnation == new.incarnation
        ids = [r.data["event"]["data"].get("input_id") for r in store.read_session("s")]
        assert stale["failed_id"] not in {str(i) for i in ids if i}
        w = writers(store, "s")
        first_new = w.index(new.incarnation)
        assert old.incarnation not in w[first_new:]
    store.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_killed_node_restarted_with_the_default_node_id_gets_its_sessions_at_once(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Default node ids differ between starts (host name and pid), but on one host the
    new process sees the old one is gone: no ``SessionOwnedElsewhere`` for ``lease_ttl``."""
    url = _url(backend, tmp_path, request)
    sessions = [f"d{i}" for i in range(5)]
    with nodes() as started:
        (first,) = start_nodes(started, url, ["-"], LONG_TTL, "--same-host")
        for sid in sessions:
            assert first.call("accept", sid=sid, count=1)["error"] is None
        first.kill()
        (second,) = start_nodes(started, url, ["-"], LONG_TTL, "--same-host")
        assert second.ready is not None and first.ready is not None
        assert second.ready["node_id"] != first.ready["node_id"]
        for sid in sessions:
            reply = second.call("accept", sid=sid, count=1)
            assert reply["error"] is None, reply


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_node_on_another_host_is_waited_for(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Whose process cannot be seen (another host) holds its sessions until they expire."""
    url = _url(backend, tmp_path, request)
    with nodes() as started:
        (far,) = start_nodes(started, url, ["far"], LONG_TTL)  # no --same-host
        assert far.call("accept", sid="f", count=1)["error"] is None
        far.kill()
        (near,) = start_nodes(started, url, ["near"], LONG_TTL, "--same-host")
        reply = near.call("accept", sid="f", count=1)
        assert (reply["error"], reply["owner"]) == ("SessionOwnedElsewhere", "far"), reply
