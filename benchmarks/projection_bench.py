"""Projection throughput and lag under sustained accept load.

    python benchmarks/projection_bench.py [--backends sqlite,sqlite-normal,postgres,memory]
                                          [--seconds S] [--threads N] [--sessions M]

For each backend, in the same run:

* baseline: ``--threads`` threads accept prompts into ``--sessions`` sessions
  for ``--seconds`` on a runtime opened with ``projections=False``: the write
  rate without read models;
* live: the same load with the ledger and views following live: the write
  rate, each projection's throughput (events applied per second from the
  start of the load until it has caught up), and its lag: for every commit
  the store reports (a store listener, called right after each durable
  commit, gives its max position and the time), the time until the
  projection's committed offset passed that position (read from the
  projection set's progress callback, called right after each read-model
  commit). p50/p95/p99 over all commits. Also the largest lag in events seen
  by polling ``rt.projections.status()`` every 20 ms;
* catch-up: ``rt.projections.rebuild(name)`` of each read model over the
  whole log written so far: the rate at which a projection processes a
  backlog (its capacity, not limited by the write rate).

The projections' cost, as ratios of the accept rate measured in the same run
(issue 17's target: the ledger and views together cost at most 20% of it):

* **rate cost**: ``1 - live write rate / baseline write rate``, the share of the
  accept rate lost by running the read models in the accepting process;
* **CPU cost**: the CPU time of the projection runner threads per event written
  in the live phase (until they caught up), over the whole process's CPU time per event in the
  baseline (what an accepted event costs without read models). It does not
  count the contention the runners cause (GIL, the database's write lock),
  which the rate cost does.

``--external`` adds a third phase on SQLite and PostgreSQL: the same load on a
host opened with ``projections=False`` while a ``meerkat-runtime project``
process keeps the read models, its write rate over the baseline's and how long
that process needed after the load to catch up.

Full garbage collections (generation 2) stop every thread of the process, the
projection runners included, for a time that grows with the heap; each live
phase reports how many ran and how long the longest and all of them took.
``--no-gc`` is a diagnostic: it disables the collector during the measured
phases, to show what those collections add to the lag. Its figures are not the
runtime's: a real process collects.

``sqlite`` is ``synchronous=FULL`` (the default), ``sqlite-normal`` is
``synchronous=NORMAL``. PostgreSQL comes from MEERKAT_BENCH_POSTGRES_URL or
MEERKAT_TEST_POSTGRES_URL (``eval "$(bash scripts/test-postgres.sh)"``);
without one it is skipped. Results are printed as a table and written to
benchmarks/results/projection_bench.json.
"""

from __future__ import annotations

import argparse
import bisect
import gc
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import _benchlib as bl
import psycopg
from psycopg import sql

from meerkat_runtime import Runtime
from meerkat_runtime.errors import StoreError, mask_url
from meerkat_runtime.projections._framework import OFFSETS
from meerkat_runtime.projections._sql import Sql

RESULTS = Path(__file__).parent / "results" / "projection_bench.json"
PROJECTIONS = ("ledger", "views")


@dataclass
class ProjectionResult:
    name: str
    live_events_per_second: float
    caught_up_after_load_s: float
    lag_p50_ms: float
    lag_p95_ms: float
    lag_p99_ms: float
    lag_max_ms: float
    lag_samples: int
    max_lag_events: int
    catch_up_events: int
    catch_up_events_per_second: float


@dataclass
class BackendResult:
    backend: str
    rate_ratio: float
    """Live write rate over the baseline's (projections on / off)."""
    rate_cost: float
    """``1 - rate_ratio``: the share of the accept rate the read models take."""
    cpu_cost: float
    """Projection runner threads' CPU per live event / process CPU per baseline event."""
    baseline_cpu_us_per_event: float
    projection_cpu_us_per_event: float
    threads: int
    sessions: int
    seconds: float
    baseline_accepts: int
    baseline_events: int
    baseline_events_per_second: float
    live_accepts: int
    live_events: int
    live_events_per_second: float
    accept_p50_ms: float
    accept_p99_ms: float
    projections: list[ProjectionResult] = field(default_factory=list)
    external_rate_ratio: float | None = None
    """With ``--external``: the write rate of a ``projections=False`` host while a
    ``meerkat-runtime project`` process keeps the read models, over the baseline's."""
    external_caught_up_s: float | None = None
    """How long that process took, after the load, to have projected all of it."""
    full_gcs: int = 0
    """Full (generation 2) garbage collections from the live load's start until caught up."""
    full_gc_max_ms: float = 0.0
    full_gc_total_ms: float = 0.0
    gc_disabled: bool = False
    """``--no-gc``: the collector was off in the measured phases (a diagnostic)."""


def process_cpu() -> float:
    """CPU seconds (user + system) of this process so far."""
    t = os.times()
    return t.user + t.system


def runner_threads_cpu() -> float:
    """CPU seconds (user + system) of the live projection runner threads (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for thread in threading.enumerate():
        if not thread.name.startswith("ProjectionRunner") or thread.native_id is None:
            continue
        try:
            stat = Path(f"/proc/self/task/{thread.native_id}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


@contextmanager
def database(backend: str, postgres_url: str | None) -> Iterator[str]:
    """Yield a fresh store URL for ``backend``; clean up afterwards."""
    if backend == "memory":
        # Private to its runtime, so its log goes when the runtime closes: a named
        # memory database would keep the baseline's whole log alive (and walked by
        # every full garbage collection) through the live phase.
        yield "memory://"
    elif backend.startswith("sqlite"):
        with tempfile.TemporaryDirectory(prefix="meerkat-bench-") as tmp:
            yield f"sqlite:///{tmp}/bench.db"
    else:
        assert postgres_url is not None
        schema = f"bench_{uuid.uuid4().hex[:16]}"
        sep = "&" if "?" in postgres_url else "?"
        try:
            yield f"{postgres_url}{sep}schema={schema}"
        finally:
            with psycopg.connect(postgres_url, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
                )


def count_events(rt: Runtime, after: int = 0) -> int:
    """Events in the log with a position above ``after`` (positions may have gaps)."""
    n = 0
    while True:
        page = rt.store.read_all(after_position=after, limit=2000)
        n += len(page)
        if len(page) < 2000:
            return n
        after = page[-1].position


def accept_load(
    rt: Runtime, threads: int, sessions: int, seconds: float, tag: str
) -> tuple[int, float, list[float]]:
    """Accept from ``threads`` threads for ``seconds``; returns (accepts, elapsed, latencies)."""
    barrier = threading.Barrier(threads + 1)
    stop = threading.Event()
    counts = [0] * threads
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []
    per_thread = max(1, sessions // threads)

    def work(t: int) -> None:
        barrier.wait()
        n = 0
        try:
            while not stop.is_set():
                session = rt.session(f"{tag}-{t}-{n % per_thread}")
                doc: dict[str, Any] = (
                    {
                        "input_type": "operation",
                        "operation_id": f"op-{n}",
                        "event": {"type": "started", "id": f"op-{n}", "kind": "tool"},
                    }
                    if n % 10 == 9
                    else {"input_type": "prompt", "content": f"prompt {n} of thread {t}"}
                )
                started = time.perf_counter()
                session.accept(doc)
                latencies[t].append(time.perf_counter() - started)
                counts[t] += 1
                n += 1
        except BaseException as e:
            errors.append(e)

    pool = [threading.Thread(target=work, args=(t,), daemon=True) for t in range(threads)]
    for thread in pool:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return sum(counts), elapsed, sorted(x for lat in latencies for x in lat)


def stored_offsets(rt: Runtime) -> dict[str, int]:
    """The ledger's and views' committed offsets, as another process stored them."""
    sql = Sql(rt.store)
    try:
        with sql.transaction() as cur:
            rows = cur.execute(f"SELECT name, position FROM {cur.table(OFFSETS)}").fetchall()
    except StoreError:  # the tables are not there yet
        return {}
    return {r["name"]: int(r["position"]) for r in rows if r["name"] in PROJECTIONS}


def external_phase(
    url: str, options: dict[str, Any], threads: int, sessions: int, seconds: float
) -> tuple[float, float]:
    """The write rate (events/s) of a host without projections while a ``meerkat-runtime
    project`` process keeps them, and the seconds it needed after the load to catch up."""
    script = Path(sys.executable).with_name("meerkat-runtime")
    with Runtime.open(url, projections=False, **options) as rt:
        proc = subprocess.Popen(
            [str(script), "project", "--store", url, "--every", "60"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while len(stored_offsets(rt)) < len(PROJECTIONS):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("meerkat-runtime project did not start its projections")
                time.sleep(0.05)
            _, elapsed, _ = accept_load(rt, threads, sessions, seconds, "ext")
            load_ended = time.perf_counter()
            end = rt.store.max_position()
            deadline = time.monotonic() + 120
            while min(stored_offsets(rt).values()) < end:
                if time.monotonic() > deadline:
                    raise SystemExit("meerkat-runtime project did not catch up in 120 s")
                time.sleep(0.01)
            caught_up = time.perf_counter() - load_ended
            events = count_events(rt)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    return events / elapsed, caught_up


def bench_backend(
    backend: str,
    threads: int,
    sessions: int,
    seconds: float,
    pg_url: str | None,
    external: bool = False,
    no_gc: bool = False,
) -> BackendResult:
    with bl.FullCollections() as collections:
        if no_gc:
            gc.disable()
        try:
            return _bench_backend(
                backend, threads, sessions, seconds, pg_url, external, collections
            )
        finally:
            gc.enable()


def _bench_backend(
    backend: str,
    threads: int,
    sessions: int,
    seconds: float,
    pg_url: str | None,
    external: bool,
    collections: bl.FullCollections,
) -> BackendResult:
    options: dict[str, Any] = {"sqlite_synchronous": "normal"} if backend == "sqlite-normal" else {}

    # Baseline: no read models.
    with database(backend, pg_url) as url, Runtime.open(url, projections=False, **options) as rt:
        cpu0 = process_cpu()
        base_accepts, base_elapsed, _ = accept_load(rt, threads, sessions, seconds, "base")
        base_cpu = process_cpu() - cpu0
        base_events = count_events(rt)

    with database(backend, pg_url) as url, Runtime.open(url, **options) as rt:
        # Commit times (store listener) and read-model commit times (progress callback).
        commits: list[tuple[int, float]] = []
        progress: dict[str, list[tuple[int, float]]] = {n: [] for n in PROJECTIONS}
        recording = threading.Event()
        recording.set()
        rt.store.add_listener(
            lambda position: (
                commits.append((position, time.perf_counter())) if recording.is_set() else None
            )
        )
        pset = rt.projections
        original = pset.report_progress  # wrapped, for measurement only

        def on_progress(name: str, position: int, status: str, error: str | None) -> None:
            if recording.is_set() and name in progress:
                progress[name].append((position, time.perf_counter()))
            original(name, position, status, error)

        pset.report_progress = on_progress  # type: ignore[method-assign]
        pset.wait_caught_up(30)
        start_position = rt.store.max_position()
        max_lag = dict.fromkeys(PROJECTIONS, 0)
        polling = threading.Event()

        def poll_status() -> None:
            while not polling.wait(0.02):
                for st in pset.status():
                    if st.name in max_lag:
                        max_lag[st.name] = max(max_lag[st.name], st.lag)

        poller = threading.Thread(target=poll_status, daemon=True)
        load_started = time.perf_counter()
        poller.start()
        runners_cpu0 = runner_threads_cpu()
        collections.recording = True
        live_accepts, live_elapsed, accept_latencies = accept_load(
            rt, threads, sessions, seconds, "live"
        )
        load_ended = time.perf_counter()
        end_position = rt.store.max_position()  # every accept of the load is durable now
        pset.wait_caught_up(120)
        caught_up = time.perf_counter()
        collections.recording = False
        # Until caught up: the runners' whole cost of the live events, tail included.
        runners_cpu = runner_threads_cpu() - runners_cpu0
        polling.set()
        poller.join()
        recording.clear()
        live_events = count_events(rt, start_position)
        base_rate = base_events / base_elapsed
        live_rate = live_events / live_elapsed
        base_us = base_cpu / max(1, base_events) * 1e6
        proj_us = runners_cpu / max(1, live_events) * 1e6

        result = BackendResult(
            backend=backend,
            rate_ratio=round(live_rate / base_rate, 3),
            rate_cost=round(1 - live_rate / base_rate, 3),
            cpu_cost=round(proj_us / base_us, 3),
            baseline_cpu_us_per_event=round(base_us, 1),
            projection_cpu_us_per_event=round(proj_us, 1),
            threads=threads,
            sessions=sessions,
            seconds=round(seconds, 2),
            baseline_accepts=base_accepts,
            baseline_events=base_events,
            baseline_events_per_second=round(base_events / base_elapsed, 1),
            live_accepts=live_accepts,
            live_events=live_events,
            live_events_per_second=round(live_events / live_elapsed, 1),
            accept_p50_ms=round(percentile(accept_latencies, 0.5) * 1000, 2),
            accept_p99_ms=round(percentile(accept_latencies, 0.99) * 1000, 2),
            full_gcs=collections.count,
            full_gc_max_ms=round(collections.longest_ms, 1),
            full_gc_total_ms=round(collections.total_ms, 1),
            gc_disabled=not gc.isenabled(),
        )
        for name in PROJECTIONS:
            marks = progress[name]
            positions = [p for p, _ in marks]
            lags: list[float] = []
            for position, committed_at in commits:
                if position <= start_position:
                    continue
                i = bisect.bisect_left(positions, position)
                if i < len(marks):
                    lags.append(max(0.0, marks[i][1] - committed_at))
            lags.sort()
            # When this projection had applied everything the load wrote.
            done = bisect.bisect_left(positions, end_position)
            last_mark = marks[done][1] if done < len(marks) else caught_up
            live_span = max(last_mark, load_ended) - load_started
            # Catch-up capacity: replay the whole log into this read model.
            total = count_events(rt)
            t0 = time.perf_counter()
            pset.rebuild(name)
            pset.wait_caught_up(300)
            rebuild_s = time.perf_counter() - t0
            result.projections.append(
                ProjectionResult(
                    name=name,
                    live_events_per_second=round(live_events / live_span, 1),
                    caught_up_after_load_s=round(max(0.0, last_mark - load_ended), 3),
                    lag_p50_ms=round(percentile(lags, 0.5) * 1000, 2),
                    lag_p95_ms=round(percentile(lags, 0.95) * 1000, 2),
                    lag_p99_ms=round(percentile(lags, 0.99) * 1000, 2),
                    lag_max_ms=round((lags[-1] if lags else float("nan")) * 1000, 2),
                    lag_samples=len(lags),
                    max_lag_events=max_lag[name],
                    catch_up_events=total,
                    catch_up_events_per_second=round(total / rebuild_s, 1),
                )
            )
        report = rt.verify()
        if not report.ok:
            raise SystemExit(
                f"{backend}: verify failed after the benchmark: {report.mismatches[:5]}"
            )
    if external and backend != "memory":
        with database(backend, pg_url) as url:
            rate, caught_up = external_phase(url, options, threads, sessions, seconds)
        result.external_rate_ratio = round(rate / base_rate, 3)
        result.external_caught_up_s = round(caught_up, 3)
    return result


def table(results: list[BackendResult]) -> str:
    header = (
        f"{'backend':<14} {'no-proj ev/s':>12} {'write ev/s':>10} {'accept p50/p99 ms':>17} "
        f"{'proj':<7} {'proj ev/s':>9} {'lag p50/p95/p99 ms':>20} {'max lag ev':>10} "
        f"{'catch-up ev/s':>13}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        for i, p in enumerate(r.projections):
            left = (
                f"{r.backend:<14} {r.baseline_events_per_second:>12,.0f} "
                f"{r.live_events_per_second:>10,.0f} "
                f"{f'{r.accept_p50_ms:.1f}/{r.accept_p99_ms:.1f}':>17}"
                if i == 0
                else f"{'':<14} {'':>12} {'':>10} {'':>17}"
            )
            lag = f"{p.lag_p50_ms:.1f}/{p.lag_p95_ms:.1f}/{p.lag_p99_ms:.1f}"
            lines.append(
                f"{left} {p.name:<7} {p.live_events_per_second:>9,.0f} {lag:>20} "
                f"{p.max_lag_events:>10,} {p.catch_up_events_per_second:>13,.0f}"
            )
    return "\n".join(lines)


def cost_table(results: list[BackendResult]) -> str:
    """The projections' cost as ratios of the accept rate (target: <= 0.20)."""
    header = (
        f"{'backend':<14} {'on/off rate':>11} {'rate cost':>9} {'CPU us/ev off':>13} "
        f"{'proj CPU us/ev':>14} {'CPU cost':>8} {'lag p99 ms (ledger/views)':>25} "
        f"{'full GCs (max/total ms)':>23}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        lag = "/".join(f"{p.lag_p99_ms:.1f}" for p in r.projections)
        lines.append(
            f"{r.backend:<14} {r.rate_ratio:>10.2f}x {r.rate_cost:>9.2f} "
            f"{r.baseline_cpu_us_per_event:>13.1f} {r.projection_cpu_us_per_event:>14.1f} "
            f"{r.cpu_cost:>8.2f} {lag:>25} "
            + (
                f"{'off (--no-gc)':>23}"
                if r.gc_disabled
                else f"{f'{r.full_gcs} ({r.full_gc_max_ms:.0f}/{r.full_gc_total_ms:.0f})':>23}"
            )
            + (
                f"   external process: {r.external_rate_ratio:.2f}x, caught up "
                f"{r.external_caught_up_s:.2f} s after the load"
                if r.external_rate_ratio is not None and r.external_caught_up_s is not None
                else ""
            )
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="sqlite,sqlite-normal,postgres")
    parser.add_argument(
        "--seconds", type=float, default=4.0, help="load per measurement (default 4 s)"
    )
    parser.add_argument("--threads", type=int, default=8, help="accepting threads (default 8)")
    parser.add_argument("--sessions", type=int, default=200, help="sessions (default 200)")
    parser.add_argument("--json", type=Path, default=RESULTS)
    parser.add_argument(
        "--external",
        action="store_true",
        help="also: the same load on a projections=False host beside a "
        "'meerkat-runtime project' process (SQLite, PostgreSQL)",
    )
    parser.add_argument(
        "--no-gc",
        action="store_true",
        help="diagnostic: disable the garbage collector in the measured phases, to show "
        "what full collections add to the lag (not the runtime's figures)",
    )
    args = parser.parse_args(argv)

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(backends) - {"memory", "sqlite", "sqlite-normal", "postgres"}
    if unknown:
        parser.error(f"unknown backend(s): {', '.join(sorted(unknown))}")
    pg_url = os.environ.get("MEERKAT_BENCH_POSTGRES_URL") or os.environ.get(
        "MEERKAT_TEST_POSTGRES_URL"
    )
    notes: list[str] = []
    if "postgres" in backends and not pg_url:
        backends.remove("postgres")
        notes.append(
            "postgres skipped: set MEERKAT_BENCH_POSTGRES_URL or MEERKAT_TEST_POSTGRES_URL "
            '(eval "$(bash scripts/test-postgres.sh)")'
        )

    started = time.perf_counter()
    results: list[BackendResult] = []
    for backend in backends:
        print(
            f"  {backend}: {args.seconds:g} s baseline, {args.seconds:g} s live ...",
            file=sys.stderr,
        )
        results.append(
            bench_backend(
                backend,
                args.threads,
                args.sessions,
                args.seconds,
                pg_url,
                args.external,
                args.no_gc,
            )
        )
    print()
    print(table(results))
    print()
    print("projection cost (target: rate cost and CPU cost <= 0.20, lag p99 <= 100 ms)")
    print(cost_table(results))
    if args.no_gc:
        notes.append(
            "--no-gc: the garbage collector was off in the measured phases; a diagnostic "
            "of what full collections cost, not the runtime's figures"
        )
    for note in notes:
        print(f"note: {note}")
    print(
        f"(total {time.perf_counter() - started:.0f} s; {args.threads} threads, "
        f"{args.sessions} sessions, executor=None; 'no-proj' = same load with "
        f"projections=False; lag = store commit -> read-model commit covering it)"
    )

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "benchmark": "projection_bench",
                "python": platform.python_version(),
                "machine": platform.machine(),
                "cpus": os.cpu_count(),
                "postgres": mask_url(pg_url) if pg_url else None,
                "seconds": args.seconds,
                "threads": args.threads,
                "sessions": args.sessions,
                "no_gc": args.no_gc,
                "notes": notes,
                "results": [asdict(r) for r in results],
            },
            indent=2,
        )
        + "\n"
    )
    print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
