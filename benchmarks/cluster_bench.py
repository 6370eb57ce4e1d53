"""Durable accept throughput of 1, 2 and 3 runtime processes sharing one store.

    python benchmarks/cluster_bench.py [--processes 1,2,3] [--seconds S] [--threads T]
                                       [--sessions N] [--projections] [--lease-ttl S]
                                       [--backend postgres|sqlite]
                                       [--offered per-process|total]

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
1-process figure of the same run. ``--offered total`` makes ``--threads`` and
``--sessions`` the run's totals, split evenly over the processes (one process
gets them all): every process count then has the same callers, so the ratio
compares 2 processes with 1 under the same offered load. By default
(``per-process``, the earlier figures) each process has its own, so 2
processes also have twice the callers of 1. Projections are off unless
``--projections`` (then one node of the cluster runs them, the others stand by).

Context printed with the table: CPUs of the machine (the processes and the
server share them) and PostgreSQL's single-connection commit rate. Scaling
out across processes adds Python interpreters (each has its own GIL); all
appends still serialise on the events table lock, each group commit waiting
for its WAL flush. PostgreSQL comes from MEERKAT_BENCH_POSTGRES_URL or
MEERKAT_TEST_POSTGRES_URL (``eval "$(bash scripts/test-postgres.sh)"``).
``--backend sqlite`` runs the same on one SQLite file (FULL) instead: the
processes share the file's single writer lock.

What bounds the ratio, measured over each window (second table): every
node's CPU per accept (user + system), its commits (group commits) and
appends per commit; the machine's busy CPU (``/proc/stat``: the 2 cores are
shared by the nodes and the server), the cores busy with anything else
(``other cores``: other work on a shared machine), the cores the nodes and
the server used (``bench cores``) and the accepts per such core-second; on
PostgreSQL the server's CPU (its processes in ``/proc``, when the server is
local and readable; all of its clients count, other benchmarks' and tests'
too), its transactions per second (``pg_stat_database``: reads too, and
the whole database's) and, sampled every 20 ms, what the holder of the
events table lock was doing (waiting for its client, running, waiting for
the WAL flush) and how many appends were queued behind it.
Prints the tables; writes benchmarks/results/cluster_bench.json.
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
        commits = rt.store.commit_stats
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
            commits.groups = commits.appends = 0

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
                    "commits": commits.groups,
                    "appends": commits.appends,
                }
            ),
            flush=True,
        )
    finally:
        rt.close()
    return 0


# ---------------------------------------------------------------- what bounds it (parent)

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_fields(pid: int | str) -> list[str]:
    """Fields of /proc/PID/stat after the command name ([] if unreadable)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rpartition(")")[2].split()
    except (OSError, UnicodeDecodeError):
        return []


def machine_cpu() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            cpu = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = cpu[3] + (cpu[4] if len(cpu) > 4 else 0)  # idle + iowait
    return (sum(cpu) - idle) / _TICK, sum(cpu) / _TICK


class ServerProbe:
    """The PostgreSQL server's CPU and commits, and what the events table lock's holder does.

    Server CPU is read from /proc (the postmaster and its children, plus the
    children already reaped), so only for a server on this machine that we may
    read; otherwise None.
    """

    def __init__(self, pg_url: str) -> None:
        import psycopg

        self.pg_url = pg_url
        self.conn = psycopg.connect(pg_url, autocommit=True)
        backend = self.conn.execute("SELECT pg_backend_pid()").fetchone()
        assert backend is not None
        fields = _stat_fields(backend[0])
        self.postmaster = int(fields[1]) if len(fields) > 1 else None  # ppid
        self.samples: list[tuple[str, int]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def server_cpu(self) -> float | None:
        pm = self.postmaster
        if pm is None:
            return None
        fields = _stat_fields(pm)
        if len(fields) < 15:
            return None
        # utime, stime, cutime, cstime (fields 14-17 of stat; 11-14 after the name)
        ticks = sum(int(x) for x in fields[11:15])
        for entry in os.listdir("/proc"):
            if entry.isdigit() and entry != str(pm):
                f = _stat_fields(entry)
                if len(f) > 12 and f[1] == str(pm):
                    ticks += int(f[11]) + int(f[12])
        return ticks / _TICK

    def commits(self) -> int:
        row = self.conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
        return int(row[0]) if row else 0

    def start_sampling(self, schema: str, interval: float = 0.02) -> None:
        """Sample, every ``interval``, the events table lock: its holder's state and waiters."""
        self.samples = []
        self._stop.clear()
        query = (
            "SELECT l.granted, a.state, a.wait_event_type, a.wait_event "
            "FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
            "WHERE l.locktype = 'relation' AND l.relation = %s::regclass "
            "AND l.mode = 'ExclusiveLock'"
        )
        table = f'"{schema}".meerkat_events'

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    rows = self.conn.execute(query, (table,)).fetchall()
                except Exception:  # the schema is not there yet or is gone
                    continue
                holder = "free"
                waiters = 0
                for granted, state, wtype, wevent in rows:
                    if not granted:
                        waiters += 1
                    elif state == "idle in transaction" or wevent == "ClientRead":
                        holder = "client"  # the server waits for the node's next message
                    elif wtype is None:
                        holder = "running"
                    elif wevent in ("WALSync", "WALWrite", "WalSync", "WalWrite") or (
                        wtype == "LWLock" and wevent.startswith("WAL")
                    ):
                        holder = "WAL flush"
                    else:
                        holder = f"{wtype}:{wevent}"
                self.samples.append((holder, waiters))

        self._thread = threading.Thread(target=loop, daemon=True, name="lock-sampler")
        self._thread.start()

    def stop_sampling(self) -> dict[str, Any]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        n = len(self.samples)
        if not n:
            return {"samples": 0}
        states: dict[str, int] = {}
        for holder, _ in self.samples:
            states[holder] = states.get(holder, 0) + 1
        return {
            "samples": n,
            "holder": {k: round(v / n, 3) for k, v in sorted(states.items())},
            "mean_waiters": round(sum(w for _, w in self.samples) / n, 2),
        }

    def close(self) -> None:
        self._stop.set()
        self.conn.close()


# ---------------------------------------------------------------- the parent


def run_cluster(
    processes: int, url: str, args: argparse.Namespace, probe: ServerProbe | None
) -> tuple[list[dict[str, Any]], float, dict[str, Any]]:
    """Start ``processes`` nodes on ``url``, open their windows together, collect results.

    Also returns what was measured over the window beside the nodes (machine and
    server CPU, server commits, the events table lock).
    """
    threads, sessions = args.threads, args.sessions
    if args.offered == "total":
        threads, sessions = threads // processes, sessions // processes
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--seconds", str(args.seconds),
        "--threads", str(threads),
        "--sessions", str(sessions),
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
        schema = url.rpartition("schema=")[2] if "schema=" in url else ""
        if probe is not None:
            probe.start_sampling(schema)
            server0, commits0 = probe.server_cpu(), probe.commits()
        machine0 = machine_cpu()
        started = time.perf_counter()
        for p in procs:  # all windows open together
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        results = [_expect(p, "result") for p in procs]
        wall = time.perf_counter() - started
        machine1 = machine_cpu()
        around: dict[str, Any] = {}
        if machine0 is not None and machine1 is not None:
            busy, total = machine1[0] - machine0[0], machine1[1] - machine0[1]
            around["machine_busy"] = round(busy / total, 3) if total else None
            around["machine_cpu_seconds"] = round(busy, 2)
        if probe is not None:
            server1, commits1 = probe.server_cpu(), probe.commits()
            around["lock"] = probe.stop_sampling()
            around["server_commits"] = commits1 - commits0
            if server0 is not None and server1 is not None:
                around["server_cpu_seconds"] = round(server1 - server0, 2)
        for p in procs:
            p.wait(60)
        return results, wall, around
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


def summarise(
    processes: int, results: list[dict[str, Any]], wall: float, around: dict[str, Any]
) -> dict[str, Any]:
    latencies = sorted(x for r in results for x in r["latencies_ms"])
    accepts = sum(r["accepts"] for r in results)
    rate = sum(r["rate"] for r in results)  # windows overlap: each measured its own
    cpu = sum(r["cpu_user"] + r["cpu_system"] for r in results)
    commits = sum(r["commits"] for r in results)
    row: dict[str, Any] = {
        "processes": processes,
        "accepts": accepts,
        "accepts_per_second": round(rate, 1),
        "per_process": [round(r["rate"], 1) for r in results],
        "p50_ms": round(bl.percentile(latencies, 50), 2),
        "p99_ms": round(bl.percentile(latencies, 99), 2),
        "cpu_seconds": round(cpu, 2),
        "node_cpu_us_per_accept": round(cpu / accepts * 1e6, 1) if accepts else None,
        "node_cpu_us_per_accept_each": [
            round((r["cpu_user"] + r["cpu_system"]) / r["accepts"] * 1e6, 1)
            if r["accepts"]
            else None
            for r in results
        ],
        "commits_per_second": round(commits / wall, 1),
        "appends_per_commit": round(sum(r["appends"] for r in results) / commits, 1)
        if commits
        else None,
        "wall_seconds": round(wall, 2),
        **around,
    }
    if "server_cpu_seconds" in around and accepts:
        row["server_cpu_us_per_accept"] = round(around["server_cpu_seconds"] / accepts * 1e6, 1)
    if "server_commits" in around:
        row["server_commits_per_second"] = round(around["server_commits"] / wall, 1)
    if "machine_cpu_seconds" in around:
        # Cores busy with anything but the nodes and the server: this script's sampler,
        # and whatever else shares the machine (other benchmarks, test suites).
        others = around["machine_cpu_seconds"] - cpu - around.get("server_cpu_seconds", 0.0)
        row["other_cores"] = round(max(0.0, others) / wall, 2)
    # Cores the nodes and the server used, and accepts per such core-second: on a shared
    # machine, where the others' share moves from run to run, the steadier figure.
    used = cpu + around.get("server_cpu_seconds", 0.0)
    row["bench_cores"] = round(used / wall, 2)
    row["accepts_per_core_second"] = round(accepts / used, 1) if used else None
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--processes", default="1,2,3", help="process counts (default 1,2,3)")
    parser.add_argument("--seconds", type=float, default=8.0, help="window per count (8 s)")
    parser.add_argument("--threads", type=int, default=16, help="host threads per process (16)")
    parser.add_argument("--sessions", type=int, default=64, help="sessions per process (64)")
    parser.add_argument("--lease-ttl", type=float, default=10.0)
    parser.add_argument("--projections", action="store_true", help="run the read models too")
    parser.add_argument(
        "--backend", choices=("postgres", "sqlite"), default="postgres", help="(postgres)"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds of the process counts, ratios per round (1)"
    )
    parser.add_argument(
        "--offered",
        choices=("per-process", "total"),
        default="per-process",
        help="--threads/--sessions per process (default), or the run's totals split "
        "over its processes (the same callers for every process count)",
    )
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", nargs=2, metavar=("URL", "NODE_ID"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads < 1 or args.sessions < args.threads:
        parser.error("need --threads >= 1 and --sessions >= --threads")
    if args.child:
        args.child_url, args.child_node = args.child
        return child(args)

    counts = [int(x) for x in args.processes.split(",") if x.strip()]
    if args.offered == "total" and any(
        n < 1 or args.threads % n or args.sessions % n for n in counts
    ):
        parser.error("--offered total needs --threads and --sessions divisible by each count")
    pg_url = bl.postgres_url()
    if args.backend == "postgres" and not pg_url:
        print(f"note: {bl.POSTGRES_HINT}")
        return 0
    machine = bl.machine_info(pg_url if args.backend == "postgres" else None)
    commit_rate = bl.postgres_commit_rate(pg_url) if args.backend == "postgres" and pg_url else None
    probe = ServerProbe(pg_url) if args.backend == "postgres" and pg_url else None
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    try:
        for rnd in range(1, args.repeat + 1):
            for n in counts:
                bl.log(
                    f"cluster_bench: {args.backend}, round {rnd}, {n} process(es), "
                    f"{args.threads} threads ({args.offered}), {args.seconds:g} s, "
                    f"load {os.getloadavg()[0]:.2f}"
                )
                load0 = os.getloadavg()[0]
                with bl.database(args.backend, pg_url) as url:
                    results, wall, around = run_cluster(n, url, args, probe)
                row = summarise(n, results, wall, around)
                row["round"] = rnd
                row["loadavg_1min"] = [load0, round(os.getloadavg()[0], 2)]
                rows.append(row)
    finally:
        if probe is not None:
            probe.close()
    for r in rows:
        base = next(
            (
                x["accepts_per_second"]
                for x in rows
                if x["round"] == r["round"] and x["processes"] == 1
            ),
            None,
        )
        r["ratio_to_1"] = round(r["accepts_per_second"] / base, 2) if base else None

    print()
    print(
        bl.table(
            ["round", "processes", "accepts/s", "x 1 process", "per process", "p50 ms", "p99 ms"],
            [
                [
                    r["round"],
                    r["processes"],
                    r["accepts_per_second"],
                    "-" if r["ratio_to_1"] is None else f"{r['ratio_to_1']:.2f}",
                    " / ".join(f"{x:,.0f}" for x in r["per_process"]),
                    r["p50_ms"],
                    r["p99_ms"],
                ]
                for r in rows
            ],
        )
    )
    print()
    print(
        bl.table(
            [
                "round",
                "processes",
                "node CPU us/accept",
                "server CPU us/accept",
                "machine busy",
                "other cores",
                "bench cores",
                "accepts/core-s",
                "commits/s",
                "appends/commit",
                "server xacts/s",
                "lock holder (client/running/WAL/free)",
                "waiters",
            ],
            [
                [
                    r["round"],
                    r["processes"],
                    " / ".join(f"{x:,.0f}" for x in r["node_cpu_us_per_accept_each"]),
                    r.get("server_cpu_us_per_accept", "-"),
                    f"{r['machine_busy']:.0%}" if r.get("machine_busy") is not None else "-",
                    r.get("other_cores", "-"),
                    r["bench_cores"],
                    r["accepts_per_core_second"],
                    r["commits_per_second"],
                    r["appends_per_commit"],
                    r.get("server_commits_per_second", "-"),
                    _holder(r.get("lock")),
                    (r.get("lock") or {}).get("mean_waiters", "-"),
                ]
                for r in rows
            ],
        )
    )
    rate = f"PostgreSQL one-connection commits: {commit_rate:,.0f}/s; " if commit_rate else ""
    print(
        f"({args.backend}; {args.threads} threads x {args.sessions} sessions "
        f"{'in all, split over the processes' if args.offered == 'total' else 'per process'}, "
        f"executor=None, projections {'on' if args.projections else 'off'}; {machine['nproc']} "
        f"CPUs shared by the nodes and the server; {rate}"
        f"total {time.perf_counter() - started:.0f} s)"
    )
    out = bl.write_results(
        "cluster_bench",
        {
            "machine": machine,
            "postgres_commits_per_second": commit_rate,
            "params": {
                "backend": args.backend,
                "seconds": args.seconds,
                "threads_per_process": args.threads,
                "sessions_per_process": args.sessions,
                "offered": args.offered,
                "lease_ttl": args.lease_ttl,
                "projections": args.projections,
                "executor": None,
                "repeat": args.repeat,
            },
            "results": rows,
        },
        args.json,
    )
    print(f"results written to {out}")
    return 0


def _holder(lock: dict[str, Any] | None) -> str:
    """Shares of the samples in which the events table lock's holder waited for its client,
    ran, waited for the WAL, or no one held it (other states are in the JSON)."""
    if not lock or not lock.get("samples"):
        return "-"
    h = lock["holder"]
    return " / ".join(f"{h.get(k, 0.0):.0%}" for k in ("client", "running", "WAL flush", "free"))


if __name__ == "__main__":
    threading.current_thread().name = "cluster-bench"
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
