"""Durable accept throughput of 1, 2 and 3 runtime processes sharing one PostgreSQL server.

    python benchmarks/cluster_bench.py [--processes 1,2,3] [--seconds S] [--threads T]
                                       [--sessions N] [--projections] [--lease-ttl S]

For each process count (in one run, each on a fresh schema of the same
server) it starts that many runtime processes (this script with ``--child``),
each ``Runtime.open(url, node_id=..., executor=None)`` with its own
``node_id``: a node of the cluster, holding a lease per live session,
renewed by its heartbeat, every append fenced. Each process owns its own
``--sessions`` sessions and drives them from ``--threads`` host threads
(each thread its own sessions), calling ``session.accept`` in a loop. Every
session is touched once before the window opens (lease acquired, actor
live); then all processes start together and accept for ``--seconds``.
Throughput is accepts acknowledged (durable) per second, summed over the
processes, with per-call latency percentiles; the ratio is to the
1-process figure of the same run. Projections are off unless
``--projections`` (then one node of the cluster runs them, the others stand by).

Context printed with the table: CPUs of the machine (the processes and the
server share them) and PostgreSQL's single-connection commit rate. Scaling
out across processes adds Python interpreters (each has its own GIL); all
appends still serialise on the events table lock, each group commit waiting
for its WAL flush. PostgreSQL comes from MEERKAT_BENCH_POSTGRES_URL or
MEERKAT_TEST_POSTGRES_URL (``eval "$(bash scripts/test-postgres.sh)"``).
Prints a table; writes benchmarks/results/cluster_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _benchlib as bl

from meerkat_runtime import Runtime

# ---------------------------------------------------------------- one process (child)


def child(args: argparse.Namespace) -> int:
    """One runtime node: warm up, say ``ready``, wait for ``go``, accept, print the result."""
    rt = Runtime.open(
        args.child_url,
        node_id=args.child_node,
        lease_ttl=args.lease_ttl,
        executor=None,
        projections=args.projections,
        max_live_sessions=max(1000, args.sessions * 2),
    )
    try:
        sessions = [f"{args.child_node}-s{i}" for i in range(args.sessions)]
        mine = [sessions[t :: args.threads] for t in range(args.threads)]

        def warmup(t: int) -> None:
            for sid in mine[t]:
                rt.session(sid).accept(bl.prompt_input())

        def op(t: int, n: int) -> None:
            sids = mine[t]
            outcome = rt.session(sids[n % len(sids)]).accept(bl.prompt_input())
            if outcome.kind != "accepted":
                raise RuntimeError(f"not accepted: {outcome}")

        def on_start() -> None:
            print(json.dumps({"ev": "ready"}), flush=True)
            if sys.stdin.readline().strip() != "go":
                raise SystemExit("parent gone")

        load = bl.run_load(args.threads, op, args.seconds, 10**9, warmup, on_start)
        print(
            json.dumps(
                {
                    "ev": "result",
                    "node": args.child_node,
                    "accepts": load.ops,
                    "seconds": load.seconds,
                    "rate": load.rate,
                    "latencies_ms": [round(x * 1000, 3) for x in load.latencies],
                    "cpu_user": load.cpu_user,
                    "cpu_system": load.cpu_system,
                }
            ),
            flush=True,
        )
    finally:
        rt.close()
    return 0


# ---------------------------------------------------------------- the parent


def run_cluster(
    processes: int, url: str, args: argparse.Namespace
) -> tuple[list[dict[str, Any]], float]:
    """Start ``processes`` nodes on ``url``, open their windows together, collect results."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--seconds", str(args.seconds),
        "--threads", str(args.threads),
        "--sessions", str(args.sessions),
        "--lease-ttl", str(args.lease_ttl),
    ] + (["--projections"] if args.projections else [])  # fmt: skip
    procs: list[subprocess.Popen[str]] = []
    try:
        for k in range(processes):
            procs.append(
                subprocess.Popen(
                    [*cmd, "--child", url, f"node-{k}"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
            if k == 0:
                _expect(procs[0], "ready")  # the first creates the schema alone
        for p in procs[1:]:
            _expect(p, "ready")
        started = time.perf_counter()
        for p in procs:  # all windows open together
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        results = [_expect(p, "result") for p in procs]
        wall = time.perf_counter() - started
        for p in procs:
            p.wait(60)
        return results, wall
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(30)


def _expect(proc: subprocess.Popen[str], ev: str) -> dict[str, Any]:
    assert proc.stdout is not None
    for line in proc.stdout:
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("ev") == ev:
            return dict(msg)
    raise RuntimeError(f"a node exited (code {proc.wait()}) before {ev!r}")


def summarise(processes: int, results: list[dict[str, Any]], wall: float) -> dict[str, Any]:
    latencies = sorted(x for r in results for x in r["latencies_ms"])
    accepts = sum(r["accepts"] for r in results)
    rate = sum(r["rate"] for r in results)  # windows overlap: each measured its own
    return {
        "processes": processes,
        "accepts": accepts,
        "accepts_per_second": round(rate, 1),
        "per_process": [round(r["rate"], 1) for r in results],
        "p50_ms": round(bl.percentile(latencies, 50), 2),
        "p99_ms": round(bl.percentile(latencies, 99), 2),
        "cpu_seconds": round(sum(r["cpu_user"] + r["cpu_system"] for r in results), 2),
        "wall_seconds": round(wall, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--processes", default="1,2,3", help="process counts (default 1,2,3)")
    parser.add_argument("--seconds", type=float, default=8.0, help="window per count (8 s)")
    parser.add_argument("--threads", type=int, default=16, help="host threads per process (16)")
    parser.add_argument("--sessions", type=int, default=64, help="sessions per process (64)")
    parser.add_argument("--lease-ttl", type=float, default=10.0)
    parser.add_argument("--projections", action="store_true", help="run the read models too")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", nargs=2, metavar=("URL", "NODE_ID"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads < 1 or args.sessions < args.threads:
        parser.error("need --threads >= 1 and --sessions >= --threads")
    if args.child:
        args.child_url, args.child_node = args.child
        return child(args)

    counts = [int(x) for x in args.processes.split(",") if x.strip()]
    pg_url = bl.postgres_url()
    if not pg_url:
        print(f"note: {bl.POSTGRES_HINT}")
        return 0
    machine = bl.machine_info(pg_url)
    commit_rate = bl.postgres_commit_rate(pg_url)
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for n in counts:
        bl.log(f"cluster_bench: {n} process(es), {args.threads} threads each, {args.seconds:g} s")
        with bl.database("postgres", pg_url) as url:
            results, wall = run_cluster(n, url, args)
        rows.append(summarise(n, results, wall))
    base = next((r["accepts_per_second"] for r in rows if r["processes"] == 1), None)
    for r in rows:
        r["ratio_to_1"] = round(r["accepts_per_second"] / base, 2) if base else None

    print()
    print(
        bl.table(
            ["processes", "accepts/s", "x 1 process", "per process", "p50 ms", "p99 ms", "CPU s"],
            [
                [
                    r["processes"],
                    r["accepts_per_second"],
                    "-" if r["ratio_to_1"] is None else f"{r['ratio_to_1']:.2f}",
                    " / ".join(f"{x:,.0f}" for x in r["per_process"]),
                    r["p50_ms"],
                    r["p99_ms"],
                    r["cpu_seconds"],
                ]
                for r in rows
            ],
        )
    )
    print(
        f"({args.threads} threads x {args.sessions} sessions per process, executor=None, "
        f"projections {'on' if args.projections else 'off'}; {machine['nproc']} CPUs shared "
        f"with the server; PostgreSQL one-connection commits: {commit_rate:,.0f}/s; "
        f"total {time.perf_counter() - started:.0f} s)"
    )
    out = bl.write_results(
        "cluster_bench",
        {
            "machine": machine,
            "postgres_commits_per_second": commit_rate,
            "params": {
                "seconds": args.seconds,
                "threads_per_process": args.threads,
                "sessions_per_process": args.sessions,
                "lease_ttl": args.lease_ttl,
                "projections": args.projections,
                "executor": None,
            },
            "results": rows,
        },
        args.json,
    )
    print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    threading.current_thread().name = "cluster-bench"
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
