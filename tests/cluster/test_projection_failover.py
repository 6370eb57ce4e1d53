"""Projections run once across the cluster, and fail over when their node dies.

Three runtime processes share one store; each runs the ledger, the views and
a counting projection (``cluster_seen``: one row per log position with how
many times it was applied), but only the holder of ``projection:<name>``
runs each; the others stand by. The holder is SIGKILLed while events flow
(its pages are slow, so the kill often lands between a page's handler and
its commit). After the lease expires another node takes every projection
over from the stored offset, ``rt.cluster().projection_owners`` names it, and
once everything is quiet every log position was applied exactly once, the
ledger has one row per accepted input, and ``verify`` passes.
"""

from __future__ import annotations

import functools
import time

from meerkat_runtime import Runtime

from ..waiting import WAIT, wait_until
from ._support import Node, all_accepted, nodes, open_plain_store, quiesce, start_nodes

TTL = 2.0
BOUND = 10.0
PROJECTIONS = ("ledger", "views", "cluster_seen")
COUNTING = ("--counting", "--apply-sleep", "0.03", "--page-size", "15")


def test_projection_leader_killed_under_load_fails_over_exactly_once(postgres_url: str) -> None:
    store = open_plain_store(postgres_url)
    with nodes() as started:
        # The first node to start runs every projection.
        (leader,) = start_nodes(started, postgres_url, ["proj-0"], TTL, *COUNTING)
        wait_until(
            lambda: all(o == "proj-0" for o in leader.call("info")["owners"].values()),
            what="proj-0 to hold the projection leases",
        )
        others = start_nodes(started, postgres_url, ["proj-1", "proj-2"], TTL, *COUNTING)

        def standing_by(node: Node) -> bool:
            return {s[0] for s in node.call("info")["projections"].values()} == {"standby"}

        for node in others:
            wait_until(functools.partial(standing_by, node), what=f"{node.node_id} standing by")
        assert others[0].call("info")["owners"] == dict.fromkeys(PROJECTIONS, "proj-0")

        for k, node in enumerate([leader, *others]):
            node.call("load", sessions=[f"q{k}-{i}" for i in range(10)], threads=4)
        # Events flow and the leader is busy applying them.
        wait_until(
            lambda: (
                leader.call("info")["projections"]["cluster_seen"][1] > 200
                and all(len(n.acks_snapshot()) > 30 for n in others)
            ),
            what="the projections to make progress under load",
        )
        leader.kill()
        leases = {x.name: x for x in store.shared().list_leases("projection:")}
        assert {leases[f"projection:{p}"].owner for p in PROJECTIONS} == {"proj-0"}

        # Another node takes each projection over once its lease has expired.
        def moved() -> bool:
            owners = others[0].call("info")["owners"]
            return all(owners[p] in ("proj-1", "proj-2") for p in PROJECTIONS)

        wait_until(moved, TTL + BOUND, "the projections to move to a live node")
        moved_at = time.time()
        assert moved_at >= min(x.expires_at.timestamp() for x in leases.values()) - 0.05
        new_owners = others[1].call("info")["owners"]
        assert set(new_owners) >= set(PROJECTIONS)
        # The new owner runs them from the stored offset and keeps up with the load.
        runner = {p: new_owners[p] for p in PROJECTIONS}

        def running(p: str) -> bool:
            owner = next(n for n in others if n.node_id == runner[p])
            return bool(owner.call("info")["projections"][p][0] == "running")

        for p in PROJECTIONS:
            wait_until(functools.partial(running, p), what=f"{p} running on {runner[p]}")
        time.sleep(1.0)  # more events under the new owner
        for node in others:
            node.call("stop_load")
        # Sessions move only when asked for: a survivor takes the dead node's over, so
        # their queued inputs run too.
        dead_sessions = [f"q0-{i}" for i in range(10)]
        results = others[0].call("takeover", sessions=dead_sessions, limit=BOUND)["results"]
        assert all(r["ok_at"] is not None for r in results.values()), results

        acked = leader.acks_snapshot() + [a for n in others for a in n.acks_snapshot()]
        acked += [(sid, r["id"]) for sid, r in results.items()]
        counts = all_accepted(store)
        assert all(c == 1 for c in counts.values())
        assert {iid for _, iid in acked} <= set(counts)
        assert len(counts) - len(acked) <= 4  # the leader's in-flight accepts at the kill

        with Runtime.open(postgres_url, node_id="checker", lease_ttl=TTL) as rt:
            quiesce(rt, len(counts))
            view = rt.cluster()
            assert view.projection_owners == {p: runner[p] for p in ("ledger", "views")}
            report = others[0].call("verify", timeout=WAIT)  # also waits for cluster_seen
            assert report["ok"], report["mismatches"]
            assert report["inputs"] == len(counts) == rt.ledger.count()
            # Exactly once: every log position applied once by the counting projection,
            # across the failover (a page the dead leader had applied but not committed
            # was rolled back with its offset, and applied again by the new owner).
            positions = [e.position for e in store.read_all(after_position=0, limit=10**7)]
            with store.transaction() as cur:
                cur.execute(
                    f"SELECT position, applied FROM {store.table_name('cluster_test_seen')} "
                    "ORDER BY position"
                )
                seen = {int(r["position"]): int(r["applied"]) for r in cur.fetchall()}
            assert sorted(seen) == positions
            assert set(seen.values()) == {1}
            mine = rt.verify()
            assert mine.ok, mine.mismatches
    store.close()
