"""Durable accept throughput and latency of the runtime, against the raw recorder.

    python benchmarks/accept_bench.py [--backends sqlite,sqlite-normal,postgres,memory]
                                      [--sessions 1,10,100,1000] [--threads T]
                                      [--projections] [--seconds S]
                                      [--max-per-session N] [--batch N] [--repeat N]
    python benchmarks/accept_bench.py --issue-targets     # the performance issue's setup

For each backend and each number of concurrent sessions (one host thread per
session unless ``--threads``, each calling ``session.accept`` in a loop;
``executor=None`` so the inputs just queue), it measures in the same run,
each on a fresh database:

* naive (a baseline): eventsourcing's own recorder class inserting the
  events of one accept per transaction from one thread, as a program without
  group commit would. The events are what the runtime writes for an accept
  (``input.accepted`` + ``input.queued``, made by the pure decider, encoded by
  the store's serializer: the same payload bytes);
* raw (a baseline): the same recorder and events, one transaction per accept,
  from as many threads as the runtime run has;
* runtime: ``Runtime.open(url, executor=None, projections=False)``,
  ``session.accept(dict)``: coerce_input -> session host -> decide -> group
  commit -> evolve -> reply;
* runtime+proj (with ``--projections``): the same with the ledger and views
  following live in the process, as ``Runtime.open(url)`` opens by default;
* ceiling: the raw recorder inserting the same events in large batches from
  one thread (``--batch`` accepts per transaction): what the disk and
  database allow at best.

With ``--threads T`` (fewer threads than sessions) thread ``t`` drives
sessions ``t, t+T, t+2T, ...`` in turn, one accept at a time.
``--issue-targets`` is the performance issue's setup: SQLite FULL and
PostgreSQL, 100 sessions, 32 host threads, with and without projections.

Also per runtime run: accepts per group commit, process CPU time and
context switches per accept (the GIL serialises Python: 1 s / user CPU per
accept bounds the accept rate on any number of cores), and per backend
the durable-commit rate of the machine (a tiny fsync loop for SQLite, a
one-connection insert loop for PostgreSQL).

``sqlite`` is ``synchronous=FULL`` (the default), ``sqlite-normal`` is
``synchronous=NORMAL``, each against a raw baseline of the same mode.
PostgreSQL comes from MEERKAT_BENCH_POSTGRES_URL or MEERKAT_TEST_POSTGRES_URL
(``eval "$(bash scripts/test-postgres.sh)"``); without one it is skipped.
Prints a table and the targets; writes benchmarks/results/accept_bench.json.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import _benchlib as bl
from eventsourcing.persistence import StoredEvent

from meerkat_runtime import Runtime
from meerkat_runtime.runtime import event_codec
from meerkat_runtime.store import open_store

BACKENDS = ("sqlite", "sqlite-normal", "postgres", "memory")


@dataclass
class Measurement:
    backend: str
    mode: str  # "naive", "raw", "runtime", "runtime+proj", "ceiling"
    sessions: int
    accepts: int
    seconds: float
    accepts_per_second: float
    p50_ms: float
    p99_ms: float
    cpu_user_us_per_accept: float
    cpu_system_us_per_accept: float
    context_switches_per_accept: float
    commits: int = 0  # group commits (runtime) / transactions (raw, ceiling)
    accepts_per_commit: float = 0.0
    threads: int = 0
    per_call: int = 1  # inputs per host call (``--accept-many``)
    full_gcs: int = 0  # full garbage collections in the window (each stops every thread)
    full_gc_max_ms: float = 0.0


def measure_raw(
    backend: str,
    url: str,
    sessions: int,
    args: argparse.Namespace,
    recs: bl.CycleRecords,
    threads: int | None = None,
) -> Measurement:
    """The recorder, one transaction per accept, from ``threads`` threads (one per
    session by default); ``threads=1`` is the naive baseline."""
    threads = threads or _threads(sessions, args)
    store = open_store(url, codec=event_codec(), group_commit=False, **bl.store_options(backend))
    try:
        recorder = bl.raw_recorder(store)
        first = bl.encoded(store, recs.first_accept)
        accept = bl.encoded(store, recs.accept)
        run = uuid.uuid4().hex[:8]
        mine = _partition(sessions, threads)
        done = [0] * sessions  # accepts so far per session (each session is one thread's)

        def warmup(t: int) -> None:
            for s in mine[t]:
                recorder.insert_events(
                    [
                        StoredEvent(f"{run}-{s}", v, topic, b)
                        for v, (topic, b) in enumerate(first, 1)
                    ]
                )

        def op(t: int, n: int) -> None:
            s = mine[t][n % len(mine[t])]
            base = len(first) + done[s] * len(accept)
            done[s] += 1
            recorder.insert_events(
                [
                    StoredEvent(f"{run}-{s}", base + v, topic, b)
                    for v, (topic, b) in enumerate(accept, 1)
                ]
            )

        load = bl.run_load(threads, op, args.seconds, _cap(sessions, threads, args), warmup)
    finally:
        store.close()
    m = _measurement(backend, "raw", sessions, load, load.ops)
    m.threads = threads
    return m


def _threads(sessions: int, args: argparse.Namespace) -> int:
    return min(args.threads, sessions) if args.threads else sessions


def _partition(sessions: int, threads: int) -> list[list[int]]:
    """Thread ``t`` drives sessions ``t, t + threads, ...``."""
    return [list(range(t, sessions, threads)) for t in range(threads)]


def _cap(sessions: int, threads: int, args: argparse.Namespace) -> int:
    """Accepts per thread: ``--max-per-session`` for each of its sessions."""
    return int(args.max_per_session) * -(-sessions // threads)


def measure_ceiling(
    backend: str, url: str, args: argparse.Namespace, recs: bl.CycleRecords
) -> Measurement:
    store = open_store(url, codec=event_codec(), group_commit=False, **bl.store_options(backend))
    try:
        recorder = bl.raw_recorder(store)
        accept = bl.encoded(store, recs.accept)
        run = uuid.uuid4().hex[:8]
        per_batch = args.batch

        def op(t: int, n: int) -> None:
            # ``per_batch`` accepts of distinct sessions, as a group commit would hold.
            recorder.insert_events(
                [
                    StoredEvent(f"{run}-{n}-{i}", v, topic, s)
                    for i in range(per_batch)
                    for v, (topic, s) in enumerate(accept, 1)
                ]
            )

        load = bl.run_load(1, op, args.seconds, 1_000_000)
    finally:
        store.close()
    m = _measurement(backend, "ceiling", 1, load, load.ops * per_batch)
    m.commits = load.ops
    m.accepts_per_commit = float(per_batch)
    return m


def measure_runtime(
    backend: str, url: str, sessions: int, args: argparse.Namespace, projections: bool = False
) -> Measurement:
    threads = _threads(sessions, args)
    rt = Runtime.open(
        url,
        executor=None,
        projections=projections,
        max_live_sessions=max(1000, 2 * sessions),
        **({"session_threads": args.session_threads} if args.session_threads else {}),
        **bl.store_options(backend),
    )
    try:
        commits = rt.store.commit_stats
        handles = [rt.session(f"s-{s}") for s in range(sessions)]
        mine = _partition(sessions, threads)

        def warmup(t: int) -> None:
            for s in mine[t]:
                outcome = handles[s].accept(bl.prompt_input(f"warm-{s}"))
                if outcome.kind != "accepted":
                    raise RuntimeError(f"warm-up accept was {outcome.kind}")

        per_call = args.accept_many

        def op(t: int, n: int) -> None:
            if per_call:
                # One rt.accept_many call: the thread's sessions in turn, one input each.
                own = mine[t]
                items = [
                    (f"s-{own[(n * per_call + j) % len(own)]}", bl.prompt_input(f"k-{t}-{n}-{j}"))
                    for j in range(per_call)
                ]
                kinds = {o.kind for o in rt.accept_many(items)}
                if kinds != {"accepted"}:
                    raise RuntimeError(f"accept_many outcomes were {kinds}")
                return
            outcome = handles[mine[t][n % len(mine[t])]].accept(bl.prompt_input(f"k-{t}-{n}"))
            if outcome.kind != "accepted":
                raise RuntimeError(f"accept was {outcome.kind}")

        def reset() -> None:
            commits.groups = commits.appends = 0

        load = bl.run_load(threads, op, args.seconds, _cap(sessions, threads, args), warmup, reset)
    finally:
        rt.close()
    m = _measurement(
        backend,
        "runtime+proj" if projections else "runtime",
        sessions,
        load,
        load.ops * max(1, per_call),
    )
    m.per_call = max(1, per_call)
    m.threads = threads
    m.commits = commits.groups
    m.accepts_per_commit = round(commits.appends / commits.groups, 2) if commits.groups else 0
    return m


def _measurement(
    backend: str, mode: str, sessions: int, load: bl.Load, accepts: int
) -> Measurement:
    rate = accepts / load.seconds if load.seconds else 0.0
    m = Measurement(
        backend=backend,
        mode=mode,
        sessions=sessions,
        accepts=accepts,
        seconds=round(load.seconds, 3),
        accepts_per_second=round(rate, 1),
        p50_ms=load.p50_ms,
        p99_ms=load.p99_ms,
        cpu_user_us_per_accept=round(load.cpu_user / accepts * 1e6, 1) if accepts else 0,
        cpu_system_us_per_accept=round(load.cpu_system / accepts * 1e6, 1) if accepts else 0,
        context_switches_per_accept=round(load.context_switches / accepts, 1) if accepts else 0,
        commits=load.ops,
        accepts_per_commit=1.0,
        full_gcs=load.full_gcs.count,
        full_gc_max_ms=round(load.full_gcs.longest_ms, 1),
    )
    bl.log(
        f"  {backend:<13} {mode:<12} {sessions:>5} sessions: {m.accepts_per_second:>9,.0f} acc/s "
        f"p50 {m.p50_ms:.2f} ms p99 {m.p99_ms:.2f} ms ({m.accepts} in {m.seconds:.2f} s)"
    )
    return m


def median_of(ms: list[Measurement]) -> Measurement:
    """The run with the median rate (``--repeat``): a real run, not a blend."""
    return sorted(ms, key=lambda m: m.accepts_per_second)[len(ms) // 2]


def bench_backend(
    backend: str, args: argparse.Namespace, pg_url: str | None, recs: bl.CycleRecords
) -> tuple[list[Measurement], dict[str, float]]:
    bl.log(f"{backend}:")
    probe: dict[str, float] = {}
    if backend.startswith("sqlite"):
        probe = bl.fsync_rate(bl.bench_dir())
    elif backend == "postgres":
        assert pg_url is not None
        probe = {"commits_per_second_one_connection": bl.postgres_commit_rate(pg_url)}
    if probe:
        bl.log(f"  durable commit probe: {probe}")
    results: list[Measurement] = []
    with bl.database(backend, pg_url) as url:
        results.append(measure_ceiling(backend, url, args, recs))
    with bl.database(backend, pg_url) as url:
        naive = measure_raw(backend, url, 1, args, recs, threads=1)
    naive.mode = "naive"
    results.append(naive)
    modes = [False, True] if args.projections else [False]
    for sessions in args.sessions:
        runs: dict[str, list[Measurement]] = {}
        for _ in range(args.repeat):  # interleaved, so a noisy minute hits them all
            with bl.database(backend, pg_url) as url:
                runs.setdefault("raw", []).append(measure_raw(backend, url, sessions, args, recs))
            for projections in modes:
                with bl.database(backend, pg_url) as url:
                    m = measure_runtime(backend, url, sessions, args, projections)
                runs.setdefault(m.mode, []).append(m)
        results += [median_of(ms) for ms in runs.values()]
    return results, probe


def report(
    results: list[Measurement], probes: dict[str, dict[str, float]]
) -> tuple[str, list[bl.Target]]:
    by = {(m.backend, m.mode, m.sessions): m for m in results}
    rows = []
    for backend in dict.fromkeys(m.backend for m in results):
        ceiling = by[(backend, "ceiling", 1)]
        naive = by[(backend, "naive", 1)]
        for sessions in sorted({m.sessions for m in results if m.backend == backend}):
            raw = by.get((backend, "raw", sessions))
            for mode in ("runtime", "runtime+proj"):
                rt = by.get((backend, mode, sessions))
                if raw is None or rt is None:
                    continue
                cpu = rt.cpu_user_us_per_accept
                rows.append(
                    [
                        backend,
                        sessions,
                        rt.threads,
                        rt.per_call,
                        "on" if mode == "runtime+proj" else "off",
                        rt.accepts_per_second,
                        f"{rt.p50_ms:.2f}/{rt.p99_ms:.2f}",
                        f"{rt.accepts_per_second / naive.accepts_per_second:.2f}x",
                        f"{rt.accepts_per_second / raw.accepts_per_second:.2f}x",
                        f"{rt.accepts_per_second / ceiling.accepts_per_second:.3f}",
                        rt.accepts_per_commit,
                        f"{cpu:.0f}+{rt.cpu_system_us_per_accept:.0f}",
                        round(1e6 / cpu) if cpu else 0,
                        rt.context_switches_per_accept,
                        f"{rt.full_gcs} ({rt.full_gc_max_ms:.0f})",
                    ]
                )
    text = bl.table(
        [
            "backend",
            "sessions",
            "threads",
            "per call",
            "proj",
            "runtime acc/s",
            "p50/p99 ms",
            "vs naive",
            "vs raw",
            "of ceiling",
            "acc/commit",
            "CPU us/acc usr+sys",
            "1-core bound",
            "ctxsw/acc",
            "full GCs (max ms)",
        ],
        rows,
    )
    base_rows = [
        [
            m.backend,
            m.mode,
            m.sessions,
            m.threads or 1,
            m.accepts_per_second,
            f"{m.p50_ms:.2f}/{m.p99_ms:.2f}",
            f"{m.cpu_user_us_per_accept:.0f}",
        ]
        for m in results
        if m.mode in ("naive", "raw", "ceiling")
    ]
    base = bl.table(
        ["backend", "baseline", "sessions", "threads", "acc/s", "p50/p99 ms", "CPU us/acc usr"],
        base_rows,
    )
    lines = [text, "", base, ""]
    for backend, probe in probes.items():
        if probe:
            lines.append(f"{backend}: durable commit probe {probe}")
    lines.append("")
    targets = issue_targets(by)
    lines.append(bl.targets_table(targets))
    return "\n".join(lines), targets


def issue_targets(by: dict[tuple[str, str, int], Measurement]) -> list[bl.Target]:
    """The performance issue's accept targets, for the rows this run measured (100 sessions)."""
    targets: list[bl.Target] = []
    with_proj = by.get(("sqlite", "runtime+proj", 100))
    naive = by.get(("sqlite", "naive", 1))
    if with_proj is not None and naive is not None:
        ratio = with_proj.accepts_per_second / naive.accepts_per_second
        targets.append(
            bl.Target(
                "sqlite FULL 100 sessions, projections on: vs naive one-txn loop",
                ">= 3x",
                f"{ratio:.2f}x ({with_proj.accepts_per_second:,.0f} vs "
                f"{naive.accepts_per_second:,.0f}/s, {with_proj.threads} threads)",
                ratio >= 3,
            )
        )
        targets.append(
            bl.Target(
                "sqlite FULL 100 sessions, projections on: p99",
                "<= 20 ms",
                f"{with_proj.p99_ms:.2f} ms",
                with_proj.p99_ms <= 20,
            )
        )
    for backend, wanted in (("sqlite", 0.5), ("postgres", 0.8)):
        rt = by.get((backend, "runtime", 100))
        ceiling = by.get((backend, "ceiling", 1))
        if rt is None or ceiling is None:
            continue
        share = rt.accepts_per_second / ceiling.accepts_per_second
        targets.append(
            bl.Target(
                f"{backend} 100 sessions, projections off: of the raw batch ceiling",
                f">= {wanted:.0%}",
                f"{share:.1%} ({rt.accepts_per_second:,.0f} of {ceiling.accepts_per_second:,.0f}/s)",
                share >= wanted,
            )
        )
    for mode in ("runtime", "runtime+proj"):
        rt = by.get(("sqlite", mode, 100))
        if rt is None:
            continue
        targets.append(
            bl.Target(
                f"sqlite 100 sessions ({mode}): user CPU per accept",
                "<= 100 us",
                f"{rt.cpu_user_us_per_accept:.0f} us",
                rt.cpu_user_us_per_accept <= 100,
            )
        )
    return targets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--backends", default="sqlite,sqlite-normal,postgres,memory")
    parser.add_argument("--sessions", default="1,10,100,1000", help="concurrent sessions")
    parser.add_argument("--seconds", type=float, default=3.0, help="window per measurement")
    parser.add_argument(
        "--max-per-session", type=int, default=3000, help="cap of accepts per session per run"
    )
    parser.add_argument("--batch", type=int, default=500, help="accepts per ceiling transaction")
    parser.add_argument("--repeat", type=int, default=1, help="interleaved runs; median kept")
    parser.add_argument(
        "--threads", type=int, default=0, help="host threads (default: one per session)"
    )
    parser.add_argument(
        "--projections", action="store_true", help="also run the runtime with projections on"
    )
    parser.add_argument(
        "--session-threads",
        type=int,
        default=0,
        help="the runtime's session hosts (Runtime.open(session_threads=N); default: its own)",
    )
    parser.add_argument(
        "--accept-many",
        type=int,
        default=0,
        help="the runtime runs call rt.accept_many with this many inputs (the thread's "
        "sessions in turn) instead of session.accept; p50/p99 are per call",
    )
    parser.add_argument(
        "--issue-targets",
        action="store_true",
        help="the performance issue's setup: sqlite,postgres; 100 sessions; 32 threads; "
        "projections off and on",
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.issue_targets:
        args.backends, args.sessions, args.threads, args.projections = (
            "sqlite,postgres",
            "100",
            32,
            True,
        )
    args.sessions = [int(s) for s in args.sessions.split(",")]
    backends = bl.split_backends(args.backends, BACKENDS)
    pg_url = bl.postgres_url()
    notes: list[str] = []
    if "postgres" in backends and not pg_url:
        backends.remove("postgres")
        notes.append(bl.POSTGRES_HINT)

    started = time.perf_counter()
    machine = bl.machine_info(pg_url)
    recs = bl.cycle_records(attached=False)
    results: list[Measurement] = []
    probes: dict[str, dict[str, float]] = {}
    for backend in backends:
        measured, probe = bench_backend(backend, args, pg_url, recs)
        results += measured
        probes[backend] = probe
    text, targets = report(results, probes)
    print()
    print(text)
    for note in notes:
        print(f"note: {note}")
    print(
        f"(total {time.perf_counter() - started:.0f} s; {args.seconds:g} s per measurement; "
        f"'vs naive' = runtime / eventsourcing recorder with one transaction per accept from "
        f"one thread; 'vs raw' = the same from the runtime run's threads; ceiling = raw "
        f"recorder, {args.batch} accepts per transaction, one thread; p50/p99 per accept "
        f"call; 1-core bound = 1 s / user CPU per accept)"
    )
    out = bl.write_results(
        "accept_bench",
        {
            "machine": machine,
            "args": {k: v for k, v in vars(args).items() if k != "json"},
            "notes": notes,
            "probes": probes,
            "results": [asdict(m) for m in results],
            "targets": [asdict(t) for t in targets],
        },
        args.json,
    )
    print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
