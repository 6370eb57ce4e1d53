"""A node that lost its leases cannot write: a paused process, and stale fences at the store.

The process test SIGSTOPs a runtime process in the middle of a steady load
(often inside an append), keeps it stopped past its lease expiry while
another node takes its sessions over and writes to them, then SIGCONTs it.
The resumed node still believes it owns those sessions; every append it then
tries is refused (the caller sees ``SessionOwnedElsewhere`` naming the new
owner), nothing it attempts after resuming reaches the log, and ``verify``
passes. The store test does the same with bare fences: a stale token cannot
append after a takeover, even at the right expected version.
"""

from __future__ import annotations

import queue
import threading

import pytest

from meerkat_runtime import (
    EchoExecutor,
    RunRequest,
    RunResult,
    Runtime,
    SessionOwnedElsewhere,
)
from meerkat_runtime.cluster import session_lease
from meerkat_runtime.errors import LeaseUnavailable
from meerkat_runtime.store import EventCodec, Fence, NewEvent, open_store

from ..waiting import WAIT, wait_until
from ._support import (
    accepted_ids,
    all_accepted,
    nodes,
    open_plain_store,
    quiesce,
    start_nodes,
    writers,
)

TTL = 2.0
BOUND = 10.0


def test_paused_node_cannot_write_after_its_sessions_were_taken_over(postgres_url: str) -> None:
    paused_sessions = [f"p-{i:02d}" for i in range(20)]
    store = open_plain_store(postgres_url)
    with nodes() as started:
        a, b = start_nodes(started, postgres_url, ["node-a", "node-b"], TTL)
        a.call("load", sessions=paused_sessions, threads=8)
        wait_until(
            lambda: (
                len({s for s, _ in a.acks_snapshot()}) == len(paused_sessions)
                and len(a.acks_snapshot()) >= 60
            ),
            what="node-a to acknowledge inputs in all its sessions",
        )
        a.pause()  # mid-load: often inside an append transaction
        leases = {x.name: x for x in store.shared().list_leases("session:")}
        assert {leases[session_lease(s)].owner for s in paused_sessions} == {"node-a"}

        # node-b may have them once node-a's leases have expired, and writes to them.
        results = b.call("takeover", sessions=paused_sessions, threads=10, limit=TTL + BOUND + 10)[
            "results"
        ]
        for sid in paused_sessions:
            res = results[sid]
            assert res["ok_at"] is not None, (sid, res["refusals"][-3:])
            assert [r for r in res["refusals"] if r.get("owner") != "node-a"] == [], sid
            assert res["ok_at"] >= leases[session_lease(sid)].expires_at.timestamp() - 0.05
        b_acks = [(sid, res["id"]) for sid, res in results.items()]
        for sid in paused_sessions:
            reply = b.call("accept", sid=sid, count=2)
            assert reply["error"] is None, reply
            b_acks += [(sid, iid) for iid in reply["acked"]]
        leases = {x.name: x for x in store.shared().list_leases("session:")}
        assert {leases[session_lease(s)].owner for s in paused_sessions} == {"node-b"}
        versions_before_resume = {sid: store.session_version(sid) for sid in paused_sessions}

        # node-a wakes up still believing it owns them: its load threads go on.
        refused_before = len(a.refused_snapshot())
        a.resume()

        def refused_everywhere() -> bool:
            refused = a.refused_snapshot()[refused_before:]
            return {r["sid"] for r in refused} == set(paused_sessions)

        wait_until(refused_everywhere, what="node-a's calls on every lost session to fail")
        a.call("stop_load")
        after_resume = a.refused_snapshot()[refused_before:]
        for r in after_resume:
            # Surfaced to the caller, naming the new owner (the fence was checked in the
            # append's transaction, or the heartbeat had already noticed the loss).
            assert r["error"] == "SessionOwnedElsewhere", r
            assert r["owner"] in ("node-b", "nobody (lease expired)"), r
        assert any(r["owner"] == "node-b" for r in after_resume)
        single = a.call("accept", sid=paused_sessions[0], count=1)
        assert single["error"] == "SessionOwnedElsewhere" and single["owner"] == "node-b", single

        # The log: node-a's writes, then node-b's, never node-a's again; nothing node-a
        # attempted after it resumed is there; all it acknowledged (some acknowledgements
        # were printed only after SIGCONT, for appends committed before SIGSTOP) is there.
        for sid in paused_sessions:
            w = writers(store, sid)
            first_b = w.index(b.incarnation)
            assert a.incarnation not in w[first_b:], (sid, w)
        attempted_after = {r["id"] for r in after_resume} | {single["failed_id"]}
        counts = all_accepted(store)
        assert not attempted_after & set(counts)
        in_session = {sid: set(accepted_ids(store, sid)) for sid in paused_sessions}
        for sid, iid in a.acks_snapshot() + b_acks:
            assert counts[iid] == 1 and iid in in_session[sid], (sid, iid)
        assert all(c == 1 for c in counts.values())
        # node-a wrote nothing at all to those sessions after it resumed.
        for sid in paused_sessions:
            tail = store.read_session(sid, after_version=versions_before_resume[sid])
            assert all(rec.writer != a.incarnation for rec in tail), sid

        # Nor does it wait for runs of sessions it lost (close() would wait for them), and
        # it gives the lost sessions up instead of retrying them forever: no retry stays
        # scheduled (a node that kept retrying would always have the next one pending).
        wait_until(
            lambda: (info := a.call("info"))["active_runs"] == 0 and info["retries_pending"] == 0,
            what="node-a to drop the lost runs and stop retrying the lost sessions",
        )

        with Runtime.open(postgres_url, node_id="checker", lease_ttl=TTL) as rt:
            quiesce(rt, len(counts))
            report = rt.verify()
            assert report.ok, report.mismatches
    store.close()


# ---------------------------------------------------------------- lost in the middle of a run


class _HeldExecutor:
    """Holds every run until released; ``started`` is set once one is in flight."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.gate = threading.Event()
        self.signalled: queue.Queue[str | None] = queue.Queue()

    def run(self, request: RunRequest) -> RunResult:
        request.cancel.add_callback(lambda token: self.signalled.put(token.reason))
        self.started.set()
        self.gate.wait(30)
        return RunResult(output="late")


def test_node_that_lost_a_session_mid_run_lets_it_go(postgres_url: str) -> None:
    """A node whose lease was taken while a run was in flight (as after a pause) drops the
    run when it ends, leaves the session to its new owner, and does not keep retrying it."""
    held = _HeldExecutor()
    x = Runtime.open(postgres_url, executor=held, node_id="node-x", lease_ttl=0.6)
    y = None
    try:
        first = x.session("s").accept({"input_type": "prompt", "content": "slow"})
        assert first.kind == "accepted"
        assert held.started.wait(WAIT)
        # As if node-x had been paused past its expiry and node-y had taken the lease
        # meanwhile (the new owner, a new token); node-y then loads and recovers it.
        with x.store.transaction() as cur:
            cur.execute(
                f"UPDATE {x.store.table_name('meerkat_leases')} SET owner = 'node-y', "
                "token = token + 1, expires_at = now() + interval '30 seconds' WHERE name = %s",
                (session_lease("s"),),
            )
        y = Runtime.open(postgres_url, executor=EchoExecutor(), node_id="node-y", lease_ttl=30)
        assert y.session("s").state() is not None
        # node-x's heartbeat notices; then its run ends, too late to be recorded.
        wait_until(lambda: not x.membership.holds(session_lease("s")), what="the loss noticed")  # type: ignore[union-attr]
        # the run's executor is told (its result could no longer be recorded anyway)
        assert held.signalled.get(timeout=WAIT) == "lease lost"
        held.gate.set()
        wait_until(
            lambda: (act := x.activity()).active_runs == 0 and act.retries_pending == 0,
            what="node-x to drop the lost run and stop retrying the session node-y owns",
        )
        with pytest.raises(SessionOwnedElsewhere) as owned:
            x.session("s").accept({"input_type": "prompt", "content": "again"})
        assert owned.value.owner == "node-y"
        # The new owner ran the input to the end; node-x's result was never recorded.
        y.projections.wait_caught_up(WAIT)
        wait_until(lambda: (row := y.ledger.get(first.input_id)) is not None
                   and row.state == "consumed", what="node-y to run the input")  # fmt: skip
        assert all(r.writer != x.store.incarnation
                   for r in y.store.read_session("s") if "completed" in str(r.data["event"]))  # fmt: skip
    finally:
        held.gate.set()
        x.close()
        if y is not None:
            y.close()


# ---------------------------------------------------------------- the store alone


def _codec() -> EventCodec:
    codec = EventCodec()
    codec.register("test.happened")
    return codec


def test_stale_fence_cannot_append_after_a_takeover(postgres_url: str) -> None:
    """Two store instances (two processes' worth): fences, tokens, expiry, takeover."""
    s1 = open_store(postgres_url, codec=_codec())
    s2 = open_store(postgres_url, codec=_codec())
    lease = "session:x"
    try:
        t1 = s1.shared().acquire_lease(lease, "n1", 0.5)
        assert s1.shared().acquire_lease(lease, "n1", 0.5) == t1  # the holder renews: same token
        with pytest.raises(LeaseUnavailable) as held:
            s2.shared().acquire_lease(lease, "n2", 30)
        assert held.value.owner == "n1"
        s1.append("x", 0, [NewEvent("test.happened", {"n": 1})], fence=Fence(lease, "n1", t1))

        # The lease expires without renewal; nobody has it yet, and already the old
        # fence does not hold (no append on a lease past its expiry).
        wait_until(
            lambda: not any(x.live for x in s1.shared().list_leases(lease)), what="the expiry"
        )
        with pytest.raises(LeaseUnavailable) as expired:
            s1.append("x", 1, [NewEvent("test.happened", {"n": 2})], fence=Fence(lease, "n1", t1))
        assert expired.value.owner is None

        t2 = s2.shared().acquire_lease(lease, "n2", 30)
        assert t2 > t1
        # The stale holder, at the right expected version, with its old token: refused,
        # naming the new owner; and so is a forged fence with the new owner's name but
        # the old token, or the old owner with the new token.
        for fence in (Fence(lease, "n1", t1), Fence(lease, "n2", t1), Fence(lease, "n1", t2)):
            with pytest.raises(LeaseUnavailable) as stale:
                s1.append("x", 1, [NewEvent("test.happened", {"n": 2})], fence=fence)
            assert stale.value.owner in ("n2", None), fence
        assert s1.session_version("x") == 1
        assert s2.session_version("x") == 1

        # Group commit: a stale append queued with a good one fails alone.
        good = s2.append_async(
            "x", 1, [NewEvent("test.happened", {"n": 3})], fence=Fence(lease, "n2", t2)
        )
        bad = s2.append_async("y", 0, [NewEvent("test.happened", {"n": 4})], fence=Fence(lease, "n1", t1))  # fmt: skip
        good.result(10)
        with pytest.raises(LeaseUnavailable):
            bad.result(10)
        assert [r.data["n"] for r in s1.read_session("x")] == [1, 3]
        assert s1.read_session("y") == []

        # An append waiting for the events table (another node's append in flight, or a
        # paused one) does not hold its lease row meanwhile: the owner's renewals go on
        # and the lease stays live.
        (before,) = s2.shared().list_leases(lease)
        with s1.transaction() as cur:
            cur.execute(f"LOCK TABLE {s1.table_name('meerkat_events')} IN EXCLUSIVE MODE")
            waiting = s2.append_async(
                "x", 2, [NewEvent("test.happened", {"n": 4})], fence=Fence(lease, "n2", t2)
            )
            renewal: list[set[str]] = []
            renewer = threading.Thread(
                target=lambda: renewal.append(s2.shared().renew_leases([lease], "n2", 60))
            )
            renewer.start()
            renewer.join(WAIT)
            assert renewal == [{lease}], "the renewal waited for the append in flight"
            assert not waiting.done()
        waiting.result(WAIT)
        (after,) = s2.shared().list_leases(lease)
        assert after.expires_at > before.expires_at and after.live

        # The old owner renewing is no renewal; releasing is not its to release.
        assert s1.shared().renew_leases([lease], "n1", 30) == set()
        s1.shared().release_lease(lease, "n1")
        (row,) = s1.shared().list_leases(lease)
        assert (row.owner, row.token, row.live) == ("n2", t2, True)
        # The new owner releases: the lease is free at once and the next owner bumps it.
        s2.shared().release_lease(lease, "n2")
        assert s1.shared().acquire_lease(lease, "n1", 30) == t2 + 1
        s1.append("x", 3, [NewEvent("test.happened", {"n": 5})], fence=Fence(lease, "n1", t2 + 1))
        assert [r.writer for r in s1.read_session("x")] == [
            s1.incarnation,
            s2.incarnation,
            s2.incarnation,
            s1.incarnation,
        ]
    finally:
        s1.close()
        s2.close()
