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


def run_load_with(
    args: argparse.Namespace, on_started: Any = None
) -> tuple[bl.Load, dict[str, int]]:
    with bl.database(args.backend, bl.postgres_url()) as url:
        rt = Runtime.open(
            url,
            executor=None,
            projections=False,
            max_live_sessions=max(1000, 2 * args.sessions),
            **bl.store_options(args.backend),
        )
        stats = {"groups": 0, "appends": 0}
        original = rt.store._commit_group  # type: ignore[attr-defined]

        def counting(group: list[Any]) -> None:
            stats["groups"] += 1
            stats["appends"] += len(group)
            original(group)

        rt.store._commit_group = counting  # type: ignore[attr-defined]
        try:
            handles = [rt.session(f"s-{t}") for t in range(args.sessions)]

            def warmup(t: int) -> None:
                handles[t].accept(bl.prompt_input(f"warm-{t}"))

            def op(t: int, n: int) -> None:
                handles[t].accept(bl.prompt_input(f"k-{t}-{n}"))

            def start() -> None:
                stats["groups"] = stats["appends"] = 0
                if on_started is not None:
                    on_started()

            # The window outlasts the sampler (which starts in ``start``) by a second,
            # so no sample falls on shutdown.
            window = args.seconds + (1.5 if on_started is not None else 0.0)
            load = bl.run_load(args.sessions, op, window, 10**9, warmup, start)
        finally:
            rt.close()
    return load, stats


def profile_py_spy(args: argparse.Namespace, py_spy: str) -> dict[str, Any]:
    raw_path = bl.RESULTS_DIR / f"profile_accept_{args.mode}.txt"
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
        "--nonblocking",  # never pause the process: sampling 200+ threads would slow it down
    ]
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
        threading.setprofile(None)  # type: ignore[arg-type]
    time.sleep(0.5)  # actor threads end after close
    merged = pstats.Stats(*profiles) if profiles else None
    cumulative: Counter[str] = Counter()
    self_counts: Counter[str] = Counter()
    total = 0.0
    if merged is not None:
        for (path, line, name), (_cc, _nc, tt, ct, _callers) in merged.stats.items():  # type: ignore[attr-defined]
            key = f"{name} ({'/'.join(Path(path).parts[-2:])}:{line})"
            cumulative[key] += int(ct * 1e6)
            self_counts[key] += int(tt * 1e6)
            total += tt
    agg = {
        "total": int(total * 1e6),
        "cumulative": cumulative,
        "self": self_counts,
        "roles": Counter(),
    }
    return {"load": load, "stats": stats, "agg": agg, "raw": None}


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
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args(argv)

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
    print(
        f"\n{args.backend}, {args.sessions} sessions, {args.mode}: {load.ops:,} accepts in "
        f"{load.seconds:.1f} s = {load.rate:,.0f}/s (p50 {load.p50_ms:.1f} ms, p99 "
        f"{load.p99_ms:.1f} ms), {stats['appends'] / max(1, stats['groups']):.1f} accepts per "
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

    headers = ["function", "share"] + (["~us/accept"] if per_accept is not None else [])
    print("top by cumulative share")
    print(bl.table(headers, rows(agg["cumulative"])))
    print("\ntop by self share")
    print(bl.table(headers, rows(agg["self"])))
    if agg["roles"]:
        print("\nby thread role")
        print(
            bl.table(
                ["role", "share"], [[r, f"{n / total:.1%}"] for r, n in agg["roles"].most_common()]
            )
        )
    out = bl.write_results(
        f"profile_accept_{args.mode}",
        {
            "machine": bl.machine_info(),
            "args": vars(args),
            "accepts": load.ops,
            "seconds": load.seconds,
            "accepts_per_second": load.rate,
            "p50_ms": load.p50_ms,
            "p99_ms": load.p99_ms,
            "cpu_user_us_per_accept": cpu_us,
            "accepts_per_group_commit": stats["appends"] / max(1, stats["groups"]),
            "total": agg["total"],
            "unit": unit,
            "raw_stacks": result["raw"],
            "cumulative": [[k, n / total] for k, n in agg["cumulative"].most_common(100)],
            "self": [[k, n / total] for k, n in agg["self"].most_common(100)],
            "roles": {k: n / total for k, n in agg["roles"].items()},
        },
    )
    print(f"\nresults written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
