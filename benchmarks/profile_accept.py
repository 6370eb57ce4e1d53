"""Profile the accept path under load: where does the CPU of one accept go?

    python benchmarks/profile_accept.py [--backend sqlite] [--sessions 100] [--seconds 10]
                                        [--mode gil|wall|cprofile] [--py-spy PATH] [--top 30]

Runs the load of accept_bench.py (one host thread per session calling
``session.accept`` in a loop, ``executor=None``, projections off) and
samples the whole process, every thread, while it runs:

* ``--mode gil`` (default): py-spy with ``--gil``, only the thread holding
  the GIL is sampled. Shares are shares of the Python CPU time, which the
  GIL serialises: what bounds the accept rate once commits are batched.
* ``--mode wall``: py-spy on every active thread (waits in C included).
* ``--mode cprofile``: no py-spy needed; a cProfile per thread, merged
  (deterministic, slower, and its times include waiting for the GIL).

py-spy: ``pip install py-spy`` (any environment; pass ``--py-spy`` or put it
on PATH; it attaches to this process with ptrace, so it needs the right to:
root, or ``kernel.yama.ptrace_scope=0``). Not a ``*_bench.py`` script: it is
not run by ``meerkat-runtime bench``. Prints the top functions by cumulative
and by self share, the share per thread role, and microseconds per accept;
writes benchmarks/results/profile_accept.json (and the raw py-spy stacks next
to it, for flame graphs).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import _benchlib as bl

from meerkat_runtime import Runtime
from meerkat_runtime.store import CommitStats

# Root frames that tell which kind of thread a stack belongs to.
ROLES = (
    ("Actor._actor_loop", "session actors"),
    ("EventStore._run_writer", "store writer (group commit)"),
    ("run_load.<locals>.work", "host threads (accept callers)"),
    ("work (", "host threads (accept callers)"),
    ("Scheduler._loop", "scheduler"),
)
_LINE = re.compile(r":\d+\)$")


def frame_key(frame: str) -> str:
    """``func (path/file.py:123)`` -> ``func (path/file.py)``: one entry per function."""
    return _LINE.sub(")", frame.strip())


def result_name(args: argparse.Namespace) -> str:
    name = f"profile_accept_{args.backend}_{args.sessions}_{args.mode}"
    if args.blocking:
        name += "_blocking"
    if args.snapshot_interval is not None:
        name += f"_snap{args.snapshot_interval}"
    return name


def find_py_spy(given: str | None) -> str | None:
    candidates = [given, os.environ.get("MEERKAT_PYSPY"), shutil.which("py-spy")]
    candidates.append(str(Path(sys.executable).with_name("py-spy")))
    for c in candidates:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return c
    return None


def aggregate(raw_path: Path) -> dict[str, Any]:
    """Cumulative and self sample counts per function, and per thread role."""
    cumulative: Counter[str] = Counter()
    self_counts: Counter[str] = Counter()
    roles: Counter[str] = Counter()
    total = 0
    for line in raw_path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [frame_key(f) for f in stack.split(";") if f.strip()]
        for key in set(frames):
            cumulative[key] += n
        if frames:
            self_counts[frames[-1]] += n
        role = "other"
        for marker, name in ROLES:
            if any(f.startswith(marker) for f in frames):
                role = name
                break
        roles[role] += n
    return {"total": total, "cumulative": cumulative, "self": self_counts, "roles": roles}


def stage_costs(prior_inputs: int, iterations: int, repeat: int) -> list[tuple[str, float, float]]:
    """Single-threaded CPU cost of each stage of one accept: (stage, us per call, calls per accept).

    No threads, no I/O: what one accept costs in pure Python before any
    hand-off. The session state holds ``prior_inputs`` queued inputs (what a
    session of the load has after a few seconds), which only the snapshot
    stage depends on. Timed with the thread's CPU clock; fastest round kept.
    """
    import queue
    from concurrent.futures import Future

    from meerkat_runtime.actors import CompletionRegistry
    from meerkat_runtime.events.catalogue import envelope_to_record
    from meerkat_runtime.events.ids import uuid7
    from meerkat_runtime.events.session import (
        Accept,
        DecisionContext,
        SessionState,
        decide,
        evolve,
        execute,
        state_to_snapshot,
    )
    from meerkat_runtime.events.timefmt import utc_now
    from meerkat_runtime.runtime import coerce_input, event_codec
    from meerkat_runtime.store import NewEvent, open_store

    def ctx() -> DecisionContext:
        return DecisionContext(now=utc_now(), new_id=uuid7, attached=False)

    st = SessionState(session_id="s-1")
    for n in range(prior_inputs + 1):
        execute(st, Accept(coerce_input(bl.prompt_input(f"p-{n}"))), ctx())
    inp = coerce_input(bl.prompt_input("k-x"))
    decision = decide(st, Accept(inp), ctx())
    records = [envelope_to_record(env) for env in decision.events]
    store = open_store("memory://", codec=event_codec(), group_commit=False)
    ser, writer = store.serializer, store.incarnation  # snapshot encoding
    completions = CompletionRegistry()
    interval = store.snapshot_interval
    events_per_accept = len(decision.events)

    # evolve mutates the state: fold fresh decisions (distinct inputs) one after another.
    fresh = []
    scratch = SessionState(session_id="s-1")
    execute(scratch, Accept(coerce_input(bl.prompt_input("first"))), ctx())
    shadow = SessionState(session_id="s-1")
    execute(shadow, Accept(coerce_input(bl.prompt_input("first"))), ctx())
    for n in range(iterations * (repeat + 1) + 1):
        d, _ = execute(shadow, Accept(coerce_input(bl.prompt_input(f"e-{n}"))), ctx())
        fresh.append(d.events)
    pending_folds = iter(fresh)

    def evolve_next() -> None:
        for env in next(pending_folds):
            evolve(scratch, env)

    sync_store = open_store("memory://", codec=event_codec(), group_commit=False)
    new_events = [NewEvent(t, d) for t, d in records]
    appended = [0]

    def append_next() -> None:
        sync_store.append("s-1", appended[0], new_events)
        appended[0] += len(new_events)

    pipelined = open_store("memory://", codec=event_codec(), group_commit=False)
    submitted = [0]

    def submit_next() -> None:
        pipelined.submit_append("s-1", submitted[0], new_events, on_done=_ignore, verified=True)
        submitted[0] += len(new_events)

    def future_round_trip() -> None:
        f: Future[int] = Future()
        f.set_result(1)
        f.result()

    q: queue.Queue[int] = queue.Queue()

    def queue_round_trip() -> None:
        q.put(1)
        q.get()

    cases: list[tuple[str, Any, float]] = [
        ("coerce_input (wire dict -> Input)", lambda: coerce_input(bl.prompt_input("k")), 1),
        ("decide(Accept)", lambda: decide(st, Accept(inp), ctx()), 1),
        (
            "envelope_to_record (to_wire), all events",
            lambda: [envelope_to_record(env) for env in decision.events],
            1,
        ),
        ("evolve, all events", evolve_next, 1),
        (
            "store append, memory, no writer thread (check + encode + insert + bookkeeping)",
            append_next,
            0,
        ),
        (
            "store submit_append, verified (the actor's pipelined accept), memory, no writer",
            submit_next,
            1,
        ),
        ("completion handle (pending Future)", lambda: completions.handle("s", uuid7(), None), 1),
        ("uuid7()", uuid7, 3),
        ("Future create/set/result (uncontended)", future_round_trip, 3),
        ("queue.Queue put/get (uncontended)", queue_round_trip, 1),
        (
            "snapshot (state_to_snapshot + encode), every interval",
            lambda: ser.encode_snapshot({"state": state_to_snapshot(st), "writer": writer}, writer),
            events_per_accept / interval if interval else 0.0,
        ),
    ]
    out: list[tuple[str, float, float]] = []
    for name, fn, calls in cases:
        fn()
        best = float("inf")
        for _ in range(repeat):
            started = time.thread_time()
            for _ in range(iterations):
                fn()
            best = min(best, (time.thread_time() - started) / iterations * 1e6)
        out.append((name, round(best, 2), calls))
    store.close()
    sync_store.close()
    pipelined.close()
    return out


def _ignore(error: BaseException | None) -> None:
    pass


def run_load_with(args: argparse.Namespace, on_started: Any = None) -> tuple[bl.Load, CommitStats]:
    with bl.database(args.backend, bl.postgres_url()) as url:
        rt = Runtime.open(
            url,
            executor=None,
            projections=False,
            max_live_sessions=max(1000, 2 * args.sessions),
            **bl.store_options(args.backend),
            **(
                {}
                if args.snapshot_interval is None
                else {"snapshot_interval": args.snapshot_interval}
            ),
        )
        commits = rt.store.commit_stats
        try:
            handles = [rt.session(f"s-{t}") for t in range(args.sessions)]

            def warmup(t: int) -> None:
                handles[t].accept(bl.prompt_input(f"warm-{t}"))

            def op(t: int, n: int) -> None:
                handles[t].accept(bl.prompt_input(f"k-{t}-{n}"))

            def start() -> None:
                commits.groups = commits.appends = 0
                if on_started is not None:
                    on_started()

            # The window outlasts the sampler (which starts in ``start``) by a second,
            # so no sample falls on shutdown.
            window = args.seconds + (1.5 if on_started is not None else 0.0)
            load = bl.run_load(args.sessions, op, window, 10**9, warmup, start)
        finally:
            rt.close()
    return load, commits


def profile_py_spy(args: argparse.Namespace, py_spy: str) -> dict[str, Any]:
    raw_path = bl.RESULTS_DIR / f"{result_name(args)}.txt"
    raw_path.parent.mkdir(parents=True, exist_ok=True)
    command = [
        py_spy,
        "record",
        "--pid",
        str(os.getpid()),
        "--duration",
        str(max(1, int(args.seconds))),
        "--rate",
        str(args.rate),
        "--format",
        "raw",
        "--output",
        str(raw_path),
    ]
    if not args.blocking:
        # Never pause the process: pausing 200+ threads per sample slows the load down.
        # Stacks read on the fly may be torn; --blocking (at a low --rate) cross-checks.
        command.append("--nonblocking")
    if args.mode == "gil":
        command.append("--gil")
    spy: list[subprocess.Popen[bytes]] = []

    def attach() -> None:
        spy.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        time.sleep(0.5)  # let it attach before the window opens

    load, stats = run_load_with(args, attach)
    _, err = spy[0].communicate(timeout=60)
    if spy[0].returncode != 0 or not raw_path.exists():
        raise SystemExit(f"py-spy failed: {err.decode(errors='replace').strip()}")
    agg = aggregate(raw_path)
    return {"load": load, "stats": stats, "agg": agg, "raw": str(raw_path)}


def profile_cprofile(args: argparse.Namespace) -> dict[str, Any]:
    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()

    def hook(frame: Any, event: str, arg: Any) -> None:
        sys.setprofile(None)
        p = cProfile.Profile()
        with lock:
            profiles.append(p)
        p.enable()

    threading.setprofile(hook)  # every thread started from now on profiles itself
    try:
        load, stats = run_load_with(args)
    finally:
        threading.setprofile(None)
    time.sleep(0.5)  # actor threads end after close
    merged = pstats.Stats(*profiles) if profiles else None
    cumulative: Counter[str] = Counter()
    self_counts: Counter[str] = Counter()
    calls: Counter[str] = Counter()
    total = 0.0
    if merged is not None:
        for (path, line, name), (_cc, nc, tt, ct, _callers) in merged.stats.items():  # type: ignore[attr-defined]
            key = f"{name} ({'/'.join(Path(path).parts[-2:])}:{line})"
            cumulative[key] += int(ct * 1e6)
            self_counts[key] += int(tt * 1e6)
            calls[key] += nc
            total += tt
    agg = {
        "total": int(total * 1e6),
        "cumulative": cumulative,
        "self": self_counts,
        "calls": calls,
        "roles": Counter(),
    }
    return {"load": load, "stats": stats, "agg": agg, "raw": None}


def stage_rows(stages: list[tuple[str, float, float]]) -> tuple[list[list[Any]], float]:
    """Table rows of the stage breakdown (without the sum) and the sum of us per accept."""
    rows: list[list[Any]] = []
    total_us = 0.0
    for name, us, calls in stages:
        per = us * calls
        total_us += per
        shown = f"1/{round(1 / calls)}" if 0 < calls < 1 else calls
        rows.append([name, us, shown, round(per, 1)])
    return rows, total_us


def stages_only(args: argparse.Namespace) -> int:
    """Print the stage breakdown and write it as ``stages`` rows (compare.py's layout)."""
    stages = stage_costs(args.stage_inputs, 300, 5)
    rows, total_us = stage_rows(stages)
    rows.append(["sum (one thread, no hand-offs)", "", "", round(total_us, 1)])
    print(
        f"stages of one accept, single-threaded CPU (state with {args.stage_inputs} queued inputs)"
    )
    print(bl.table(["stage", "us/call", "calls/accept", "us/accept"], rows))
    records = [
        {"stage": n, "us_per_call": u, "calls_per_accept": c, "us_per_accept": round(u * c, 2)}
        for n, u, c in stages
    ]
    records.append({"stage": "sum (one thread, no hand-offs)", "us_per_accept": total_us})
    out = bl.write_results(
        "profile_accept_stages",
        {
            "machine": bl.machine_info(),
            "args": {"stage_inputs": args.stage_inputs},
            "stages": records,
        },
        args.json,
    )
    print(f"\nresults written to {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--backend", default="sqlite", choices=["sqlite", "sqlite-normal", "postgres", "memory"]
    )
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--mode", default="gil", choices=["gil", "wall", "cprofile"])
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--py-spy", dest="py_spy", default=None)
    parser.add_argument(
        "--blocking", action="store_true", help="py-spy pauses the process for each sample"
    )
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--no-stages", action="store_true", help="skip the stage breakdown")
    parser.add_argument(
        "--stage-inputs", type=int, default=20, help="queued inputs in the stage breakdown's state"
    )
    parser.add_argument(
        "--snapshot-interval",
        type=int,
        default=None,
        help="store option (default: the store's, 100; 0 = no snapshots)",
    )
    parser.add_argument(
        "--stages-only",
        action="store_true",
        help="only the single-threaded stage breakdown (no load, no profiler)",
    )
    parser.add_argument(
        "--json", type=Path, default=None, help="write the results here (for compare.py)"
    )
    args = parser.parse_args(argv)

    if args.stages_only:
        return stages_only(args)
    if args.mode == "cprofile":
        result = profile_cprofile(args)
        unit = "us of thread time (cProfile)"
    else:
        py_spy = find_py_spy(args.py_spy)
        if py_spy is None:
            print(
                "py-spy not found: pip install py-spy, then pass --py-spy PATH (or use "
                "--mode cprofile)",
                file=sys.stderr,
            )
            return 2
        result = profile_py_spy(args, py_spy)
        unit = "samples"
    load: bl.Load = result["load"]
    stats = result["stats"]
    agg = result["agg"]
    total = agg["total"] or 1
    cpu_us = load.cpu_user / max(1, load.ops) * 1e6
    busy = ""
    if args.mode == "gil":
        possible = args.rate * max(1, int(args.seconds))
        busy = f"; GIL held in {agg['total'] / possible:.0%} of the samples"
    snap = "" if args.snapshot_interval is None else f", snapshot_interval {args.snapshot_interval}"
    print(
        f"\n{args.backend}, {args.sessions} sessions{snap}, {args.mode}: {load.ops:,} accepts in "
        f"{load.seconds:.1f} s = {load.rate:,.0f}/s (p50 {load.p50_ms:.1f} ms, p99 "
        f"{load.p99_ms:.1f} ms), {stats.appends / max(1, stats.groups):.1f} accepts per "
        f"group commit, user CPU {cpu_us:.0f} us/accept{busy}; {agg['total']:,} {unit}\n"
    )
    per_accept = cpu_us if args.mode == "gil" else None

    def rows(counter: Counter[str]) -> list[list[Any]]:
        out = []
        for key, n in counter.most_common(args.top):
            share = n / total
            row: list[Any] = [key[:110], f"{share:.1%}"]
            if per_accept is not None:
                row.append(round(share * per_accept))
            out.append(row)
        return out

    if not args.no_stages:
        stages = stage_costs(args.stage_inputs, 300, 5)
        table_rows, total_us = stage_rows(stages)
        table_rows.append(["sum (one thread, no hand-offs)", "", "", round(total_us, 1)])
        table_rows.append(
            [
                "measured user CPU per accept under load",
                "",
                "",
                round(cpu_us, 1),
            ]
        )
        table_rows.append(
            [
                "  => threads, hand-offs, GIL and store writer",
                "",
                "",
                round(cpu_us - total_us, 1),
            ]
        )
        print(
            f"stages of one accept, single-threaded CPU (state with {args.stage_inputs} "
            f"queued inputs)"
        )
        print(bl.table(["stage", "us/call", "calls/accept", "us/accept"], table_rows))
        print()
    else:
        stages = []

    headers = ["function", "share"] + (["~us/accept"] if per_accept is not None else [])
    print("top by cumulative share")
    print(bl.table(headers, rows(agg["cumulative"])))
    print("\ntop by self share")
    print(bl.table(headers, rows(agg["self"])))
    if agg.get("calls"):
        # Includes the warm-up accepts and shutdown; close enough per accept.
        print("\nmost called functions (cProfile, all threads)")
        print(
            bl.table(
                ["function", "calls/accept"],
                [
                    [k[:110], round(n / max(1, load.ops), 2)]
                    for k, n in agg["calls"].most_common(args.top)
                ],
            )
        )
    if agg["roles"]:
        print("\nby thread role")
        print(
            bl.table(
                ["role", "share"], [[r, f"{n / total:.1%}"] for r, n in agg["roles"].most_common()]
            )
        )
    out = bl.write_results(
        result_name(args),
        {
            "machine": bl.machine_info(),
            "args": vars(args),
            "accepts": load.ops,
            "seconds": load.seconds,
            "accepts_per_second": load.rate,
            "p50_ms": load.p50_ms,
            "p99_ms": load.p99_ms,
            "cpu_user_us_per_accept": cpu_us,
            "accepts_per_group_commit": stats.appends / max(1, stats.groups),
            "total": agg["total"],
            "unit": unit,
            "raw_stacks": result["raw"],
            "cumulative": [[k, n / total] for k, n in agg["cumulative"].most_common(100)],
            "self": [[k, n / total] for k, n in agg["self"].most_common(100)],
            "calls_per_accept": [
                [k, n / max(1, load.ops)] for k, n in agg.get("calls", Counter()).most_common(200)
            ],
            "roles": {k: n / total for k, n in agg["roles"].items()},
            "stages_us": [
                {"stage": n, "us_per_call": u, "calls_per_accept": c} for n, u, c in stages
            ],
        },
        args.json,
    )
    print(f"\nresults written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
