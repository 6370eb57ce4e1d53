"""Several runtime processes on one PostgreSQL store: a dead node's sessions are taken over.

Three real runtime processes (``_worker.py``) share one database and split
300 sessions, 100 each, accepting prompts continuously (``EchoExecutor``
runs them). One is SIGKILLed. A survivor that asks for one of the dead
node's sessions gets ``SessionOwnedElsewhere`` naming the dead node until
that session's lease expires (``lease_ttl`` = 2 s), and gets it within the
expiry plus a bound afterwards. Then nothing the dead node acknowledged is
lost: each input it printed as acknowledged is in its session's log exactly
once and in the ledger, and runs to completion on its new owner; ``verify``
passes once the projections have caught up.
"""

from __future__ import annotations

import functools
import time
from datetime import datetime

from meerkat_runtime import Runtime
from meerkat_runtime.cluster import session_lease

from ..waiting import wait_until
from ._support import Node, all_accepted, nodes, open_plain_store, quiesce, start_nodes, writers

TTL = 2.0
BOUND = 10.0
"""How long after its lease expired a dead node's session may take to be taken over."""


def test_sigkilled_node_sessions_are_taken_over_with_nothing_acknowledged_lost(
    postgres_url: str,
) -> None:
    sessions = {f"node-{k}": [f"s{k}-{i:03d}" for i in range(100)] for k in range(3)}
    dead_sessions = sessions["node-0"]
    store = open_plain_store(postgres_url)
    with nodes() as started:
        dead, n1, n2 = start_nodes(started, postgres_url, list(sessions), TTL)
        for node in (dead, n1, n2):
            node.call("load", sessions=sessions[node.node_id], threads=8)

        # Every session has been used (its lease taken), and a fair amount acknowledged.
        def busy(node: Node) -> bool:
            acks = node.acks_snapshot()
            return len({s for s, _ in acks}) == 100 and len(acks) >= 150

        for node in (dead, n1, n2):
            wait_until(functools.partial(busy, node), what=f"{node.node_id} to be busy")
        assert not dead.refused_snapshot(), dead.refused_snapshot()[:3]

        dead.kill()
        killed_at = time.time()
        acked_by_dead = dead.acks_snapshot()
        leases = {x.name: x for x in store.shared().list_leases("session:")}
        expiry = {sid: leases[session_lease(sid)].expires_at for sid in dead_sessions}
        assert all(leases[session_lease(sid)].owner == "node-0" for sid in dead_sessions)

        # The survivors split the dead node's sessions while their own load goes on.
        half = len(dead_sessions) // 2
        r1 = n1.send("takeover", sessions=dead_sessions[:half], threads=10, limit=TTL + BOUND)
        r2 = n2.send("takeover", sessions=dead_sessions[half:], threads=10, limit=TTL + BOUND)
        results = {**n1.reply(r1)["results"], **n2.reply(r2)["results"]}
        for node in (n1, n2):
            node.call("stop_load")

        refused_before_expiry = 0
        lags = []
        for sid in dead_sessions:
            res = results[sid]
            expires = expiry[sid].timestamp()
            assert res["ok_at"] is not None, (sid, res["refusals"][-3:])
            # Held by the dead node until its lease expired: every refusal names it...
            assert [r for r in res["refusals"] if r.get("owner") != "node-0"] == [], sid
            refused_before_expiry += bool(res["refusals"])
            # ...no call got in before the expiry (same host, so one clock; 50 ms of slack
            # between PostgreSQL's now() and the worker's time.time())...
            assert res["ok_at"] >= expires - 0.05, (sid, datetime.fromtimestamp(res["ok_at"]))
            # ...and the session was taken over within the expiry plus a bound.
            assert res["ok_at"] <= expires + BOUND, (sid, res["ok_at"] - expires)
            lags.append(res["ok_at"] - expires)
        print(f"taken over {min(lags):.2f}..{max(lags):.2f}s after expiry")
        # The first calls came well before the earliest expiry (2/3 of the TTL after the
        # last heartbeat), so most sessions were refused at least once.
        assert refused_before_expiry >= len(dead_sessions) // 2, refused_before_expiry
        assert min(e.timestamp() for e in expiry.values()) > killed_at - 0.5

        # Every input is in the log exactly once, acknowledged or (at most the dead node's
        # 8 in-flight accepts: durable, killed before the print) not.
        live_acks = [a for node in (n1, n2) for a in node.acks_snapshot()]
        takeover_acks = [(sid, res["id"]) for sid, res in results.items()]
        printed = acked_by_dead + live_acks + takeover_acks
        counts = all_accepted(store)
        for sid, iid in printed:
            assert counts[iid] == 1, (sid, iid, counts[iid])
        assert all(c == 1 for c in counts.values())
        unprinted = set(counts) - {iid for _, iid in printed}
        assert len(unprinted) <= 8, len(unprinted)

        # The dead node's sessions: its writes first, then the new owner's, never mixed.
        dead_inc = dead.incarnation
        for sid in dead_sessions:
            w = writers(store, sid)
            first_other = next(i for i, x in enumerate(w) if x != dead_inc)
            assert dead_inc not in w[first_other:], sid
            assert w[first_other] in (n1.incarnation, n2.incarnation)

        # The survivors run every input to the end; then the ledger and views agree with
        # the log (checked by a fourth node).
        with Runtime.open(postgres_url, node_id="checker", lease_ttl=TTL) as rt:
            quiesce(rt, len(counts))
            for sid, iid in acked_by_dead:
                row = rt.ledger.get(iid)
                assert row is not None and row.session_id == sid
                assert row.state == "consumed", (iid, row.state, row.terminal_outcome)
            assert rt.ledger.count() == len(counts)
            report = rt.verify()
            assert report.ok, report.mismatches
            assert report.inputs == len(counts)
    store.close()
