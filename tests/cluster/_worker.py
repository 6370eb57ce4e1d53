"""One runtime node in its own process, driven over stdin/stdout (cluster tests and benchmark).

Usage::

    python _worker.py STORE_URL NODE_ID LEASE_TTL [--executor echo|none]
                      [--counting] [--apply-sleep SECONDS] [--page-size N] [--same-host]

Opens ``Runtime.open(STORE_URL, node_id=NODE_ID, lease_ttl=LEASE_TTL)`` on a
shared store and prints ``{"ev": "ready", ...}``. Unless ``--same-host``, it
records no process identity with its leases, as a node on another host would:
then its leases, once it is killed, are free only when they expire. Then it reads one
JSON command per line on stdin and writes JSON lines on stdout, each flushed
at once (so a parent that SIGKILLs this process has seen every line printed
before the kill). Every command may carry ``"req"``, echoed in its reply.

* ``load`` (``sessions``, ``threads``, ``report`` = true, ``duration`` = none,
  ``delay`` = 0): threads that accept prompts into their share of
  ``sessions`` round robin until ``stop_load`` (or for ``duration`` seconds,
  then ``{"ev": "load_done", "acked": n, "seconds": s}``). With ``report``,
  every accepted input is printed as ``{"ev": "ack", "sid", "id"}`` right
  after ``accept`` returned, i.e. once it is durable; every failure as
  ``{"ev": "refused", "sid", "id", "error", "owner"}`` (then the thread waits
  a little and goes on).
* ``stop_load``: stop and join the load threads; reply ``acked``.
* ``takeover`` (``sessions``, ``threads``, ``limit``): accept one prompt into
  each session, retrying every 50 ms while it is owned elsewhere, for at most
  ``limit`` seconds; reply per session the refusals seen (time, owner) and the
  time of success (wall clock).
* ``accept`` (``sid``, ``count``): accept ``count`` prompts now; reply the ids
  acknowledged and the first error.
* ``info``: node id, store incarnation, projection status, ``rt.cluster()``.
* ``verify``: ``wait_caught_up`` then ``rt.verify()``; reply the report.
* ``close``: close the runtime, reply, exit 0.

``--counting`` adds a projection (run under the cluster's projection lease,
like the built-in ones) that counts how many times each log position was
applied: the exactly-once detector of the failover test.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from meerkat_runtime import EchoExecutor, Runtime, SessionOwnedElsewhere, cluster
from meerkat_runtime.errors import LeaseUnavailable, MeerkatRuntimeError
from meerkat_runtime.events.ids import uuid7
from meerkat_runtime.projections import Cursor, Projection, ProjectionSet
from meerkat_runtime.store import RecordedEvent

SEEN_TABLE = "cluster_test_seen"

_out_lock = threading.Lock()


def emit(**fields: Any) -> None:
    line = json.dumps(fields, default=str)
    with _out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class SeenProjection(Projection):
    """Counts applications per log position: after catch-up each must be exactly 1."""

    name = "cluster_seen"
    tables = (SEEN_TABLE,)

    def __init__(self, sleep: float = 0.0) -> None:
        self.sleep = sleep

    def create_schema(self, cur: Cursor) -> None:
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {cur.table(SEEN_TABLE)} "
            "(position BIGINT PRIMARY KEY, applied INTEGER NOT NULL)"
        )

    def apply(self, cur: Cursor, events: Sequence[RecordedEvent]) -> None:
        cur.executemany(
            f"INSERT INTO {cur.table(SEEN_TABLE)} (position, applied) VALUES (?, 1) "
            "ON CONFLICT (position) DO UPDATE SET applied = "
            f"{cur.table(SEEN_TABLE)}.applied + 1",
            [(e.position,) for e in events],
        )
        if self.sleep:
            time.sleep(self.sleep)  # widen the window between the handler and the commit


def describe(exc: BaseException) -> dict[str, Any]:
    owner = getattr(exc, "owner", None)
    return {"error": type(exc).__name__, "owner": owner, "message": str(exc)}


def prompt(text: str) -> tuple[str, dict[str, Any]]:
    iid = str(uuid7())
    return iid, {"input_type": "prompt", "content": text, "header": {"id": iid}}


class Worker:
    def __init__(self, rt: Runtime, extra: ProjectionSet | None) -> None:
        self.rt = rt
        self.extra = extra
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.acked = 0
        self.count_lock = threading.Lock()

    # ------------------------------------------------------------ load

    def load(self, cmd: dict[str, Any]) -> None:
        sessions: list[str] = cmd["sessions"]
        n = max(1, min(int(cmd.get("threads", 8)), len(sessions)))
        report = bool(cmd.get("report", True))
        delay = float(cmd.get("delay", 0.0))
        duration = cmd.get("duration")
        self.stop.clear()
        self.acked = 0
        started = time.monotonic()
        deadline = None if duration is None else started + float(duration)

        def run(mine: list[str]) -> None:
            i = 0
            while not self.stop.is_set():
                if deadline is not None and time.monotonic() >= deadline:
                    return
                sid = mine[i % len(mine)]
                i += 1
                iid, doc = prompt(f"load {i}")
                try:
                    outcome = self.rt.session(sid).accept(doc)
                except (MeerkatRuntimeError, TimeoutError) as exc:
                    if report:
                        emit(ev="refused", sid=sid, id=iid, t=time.time(), **describe(exc))
                    self.stop.wait(0.05)
                    continue
                if outcome.kind == "accepted":
                    with self.count_lock:
                        self.acked += 1
                    if report:
                        emit(ev="ack", sid=sid, id=iid)
                elif report:
                    emit(ev="refused", sid=sid, id=iid, error=outcome.kind, owner=None)
                if delay:
                    self.stop.wait(delay)

        self.threads = [
            threading.Thread(target=run, args=(sessions[k::n],), daemon=True) for k in range(n)
        ]
        for t in self.threads:
            t.start()
        if deadline is not None:

            def finish() -> None:
                for t in self.threads:
                    t.join()
                emit(ev="load_done", req=cmd.get("req"), acked=self.acked,
                     seconds=time.monotonic() - started)  # fmt: skip

            threading.Thread(target=finish, daemon=True).start()

    def stop_load(self) -> dict[str, Any]:
        self.stop.set()
        for t in self.threads:
            t.join()
        self.threads = []
        return {"acked": self.acked}

    # ------------------------------------------------------------ single calls

    def takeover(self, cmd: dict[str, Any]) -> dict[str, Any]:
        sessions: list[str] = cmd["sessions"]
        timeout = float(cmd.get("limit", 60.0))
        n = max(1, min(int(cmd.get("threads", 8)), len(sessions)))
        results: dict[str, dict[str, Any]] = {}
        lock = threading.Lock()

        def run(mine: list[str]) -> None:
            # Passes over every pending session (so each is tried at once), 50 ms apart.
            pending = list(mine)
            mine_results: dict[str, dict[str, Any]] = {
                sid: {"refusals": [], "ok_at": None, "id": None} for sid in mine
            }
            deadline = time.monotonic() + timeout
            while pending and time.monotonic() < deadline:
                for sid in list(pending):
                    result = mine_results[sid]
                    iid, doc = prompt("takeover")
                    t0 = time.time()
                    try:
                        outcome = self.rt.session(sid).accept(doc)
                    except SessionOwnedElsewhere as exc:
                        result["refusals"].append({"t": t0, "owner": exc.owner})
                        continue
                    except MeerkatRuntimeError as exc:
                        result["refusals"].append({"t": t0, **describe(exc)})
                        continue
                    result.update(ok_at=time.time(), attempt_at=t0, id=iid, kind=outcome.kind)
                    pending.remove(sid)
                time.sleep(0.05)
            with lock:
                results.update(mine_results)

        threads = [threading.Thread(target=run, args=(sessions[k::n],)) for k in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return {"results": results}

    def accept(self, cmd: dict[str, Any]) -> dict[str, Any]:
        sid = cmd["sid"]
        acked: list[str] = []
        for i in range(int(cmd.get("count", 1))):
            iid, doc = prompt(f"accept {i}")
            try:
                outcome = self.rt.session(sid).accept(doc)
            except (MeerkatRuntimeError, TimeoutError) as exc:
                return {"acked": acked, "failed_id": iid, **describe(exc)}
            if outcome.kind == "accepted":
                acked.append(iid)
        return {"acked": acked, "error": None}

    def info(self) -> dict[str, Any]:
        view = self.rt.cluster()
        activity = self.rt.activity()
        sets = [self.rt.projections] + ([self.extra] if self.extra is not None else [])
        status = [s for ps in sets for s in ps.status()]
        owners = dict(view.projection_owners)
        if self.extra is not None:
            owners.update(self.rt.membership.view(["cluster_seen"]).projection_owners)  # type: ignore[union-attr]
        return {
            "node_id": view.node_id,
            "incarnation": self.rt.store.incarnation,
            "projections": {s.name: [s.status, s.position] for s in status},
            "owners": owners,
            "nodes": [n.node_id for n in view.nodes],
            "leases": [[x.name, x.owner, x.token, x.live] for x in view.leases],
            "live_sessions": activity.live_sessions,
            # Runs this node still waits for (a leak would stall close()), and its
            # scheduled session retries (zero: it has given up what it lost).
            "active_runs": activity.active_runs,
            "retries_pending": activity.retries_pending,
        }

    def verify(self, cmd: dict[str, Any]) -> dict[str, Any]:
        timeout = float(cmd.get("timeout", 60.0))
        self.rt.projections.wait_caught_up(timeout)
        if self.extra is not None:
            self.extra.wait_caught_up(timeout)
        report = self.rt.verify()
        return {"ok": report.ok, "mismatches": report.mismatches[:20], "notes": len(report.notes),
                "sessions": report.sessions, "inputs": report.inputs, "events": report.events}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("node_id")
    parser.add_argument("lease_ttl", type=float)
    parser.add_argument("--executor", choices=["echo", "none"], default="echo")
    parser.add_argument("--counting", action="store_true")
    parser.add_argument("--apply-sleep", type=float, default=0.0)
    parser.add_argument("--page-size", type=int, default=500)
    parser.add_argument("--pool-size", type=int, default=5)
    parser.add_argument("--same-host", action="store_true")
    args = parser.parse_args()
    if not args.same_host:
        # Act as a node on a host of its own: the others cannot see whether this
        # process runs, so what it held is free only once its leases have expired.
        cluster.process_key = lambda: ""
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )

    rt = Runtime.open(
        args.url,
        executor=EchoExecutor() if args.executor == "echo" else None,
        node_id=None if args.node_id == "-" else args.node_id,  # "-": the default one
        lease_ttl=args.lease_ttl,
        pool_size=args.pool_size,
    )
    extra = None
    if args.counting:
        extra = ProjectionSet(
            rt.store,
            [SeenProjection(args.apply_sleep)],
            poll_interval=0.05,
            page_size=args.page_size,
            membership=rt.membership,
        )
    worker = Worker(rt, extra)
    assert rt.membership is not None
    emit(ev="ready", node_id=rt.membership.node_id, incarnation=rt.store.incarnation)
    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        op = cmd["op"]
        req = cmd.get("req")
        try:
            if op == "load":
                worker.load(cmd)
                reply: dict[str, Any] = {}
            elif op == "stop_load":
                reply = worker.stop_load()
            elif op == "takeover":
                reply = worker.takeover(cmd)
            elif op == "accept":
                reply = worker.accept(cmd)
            elif op == "info":
                reply = worker.info()
            elif op == "verify":
                reply = worker.verify(cmd)
            elif op == "close":
                worker.stop_load()
                if extra is not None:
                    extra.close()
                rt.close()
                emit(ev="reply", req=req, op=op, closed=True)
                return
            else:
                raise ValueError(f"unknown op {op!r}")
        except (MeerkatRuntimeError, LeaseUnavailable, TimeoutError, ValueError) as exc:
            emit(ev="reply", req=req, op=op, failed=True, **describe(exc))
            continue
        emit(ev="reply", req=req, op=op, **reply)
    rt.close()  # stdin closed: the parent is gone


if __name__ == "__main__":
    main()
