"""Memory and OS threads per *live* session (no passivation), against the store alone.

    python benchmarks/live_sessions_bench.py [--sessions 10000] [--threads 8]

Two fresh child processes, so their memory never mixes:

* **store** (the baseline): the events of one first accept per session
  (``runtime_created``, ``input.accepted``, ``input.queued``) appended straight
  to a ``memory://`` store. Its RSS growth per session is what any runtime must
  keep for those events on a memory store.
* **runtime**: ``Runtime.open("memory://", max_live_sessions=N, idle_timeout=1 h)``,
  projections off; host threads accept one prompt into each of N new sessions,
  so all N session actors are live at the end.

The runtime's memory per live session is its RSS growth per session minus the
store's; the thread count is read at the end, with every session live.
Targets (issue: lightweight session actors): 10,000 live sessions on at most
2x cores + executor threads of OS threads (plus the host app's own), and at
most 5 KiB per live session. Prints a table; writes
benchmarks/results/live_sessions_bench.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import _benchlib as bl

from meerkat_runtime import Runtime

KIB = 1024


def _store_child(sessions: int) -> dict[str, Any]:
    from meerkat_runtime.runtime import event_codec
    from meerkat_runtime.store import NewEvent, open_store

    events = [NewEvent(t, d) for t, d in bl.cycle_records(attached=False).first_accept]
    store = open_store("memory://", codec=event_codec(), group_commit=False)
    gc.collect()
    before = bl.proc_status()
    for n in range(sessions):
        store.append(f"s-{n:06d}", 0, events)
    gc.collect()
    after = bl.proc_status()
    return {"rss_kib": after["rss_kib"] - before["rss_kib"], "threads": after["threads"]}


def _runtime_child(sessions: int, threads: int) -> dict[str, Any]:
    rt = Runtime.open(
        "memory://",
        executor=None,
        projections=False,
        max_live_sessions=sessions,
        idle_timeout=3600.0,
    )
    gc.collect()
    before = bl.proc_status()

    def touch(t: int) -> None:
        for n in range(t, sessions, threads):
            rt.session(f"s-{n:06d}").accept(bl.prompt_input())

    pool = [threading.Thread(target=touch, args=(t,)) for t in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    gc.collect()
    after = bl.proc_status()
    live = rt.live_session_count()
    runtime_threads = threading.active_count()
    rt.close()
    return {
        "rss_kib": after["rss_kib"] - before["rss_kib"],
        "threads": runtime_threads,
        "live": live,
        "cores": os.cpu_count(),
    }


def _child(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", kind, "--sessions", str(args.sessions)]
    cmd += ["--threads", str(args.threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=8, help="host threads accepting")
    parser.add_argument("--child", choices=["store", "runtime"], help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.child == "store":
        print(json.dumps(_store_child(args.sessions)))
        return 0
    if args.child == "runtime":
        print(json.dumps(_runtime_child(args.sessions, args.threads)))
        return 0

    bl.log(f"store baseline: {args.sessions:,} sessions (child process)...")
    store = _child("store", args)
    bl.log(f"runtime: {args.sessions:,} live sessions (child process)...")
    runtime = _child("runtime", args)
    n = args.sessions
    per_session = (runtime["rss_kib"] - store["rss_kib"]) * KIB / n
    cores = runtime["cores"] or 1
    # Session hosts (2x cores) + executor pool (started lazily, not here) + the store's
    # writer, the scheduler and the main thread; the host app's accept threads on top.
    allowed = 2 * cores + 8 + 4 + args.threads
    rows = [
        ["store alone", f"{store['rss_kib'] / KIB:,.1f}", "", store["threads"]],
        ["runtime", f"{runtime['rss_kib'] / KIB:,.1f}", runtime["live"], runtime["threads"]],
    ]
    print(bl.table(["process", "RSS growth (MiB)", "live sessions", "threads"], rows))
    targets = [
        bl.Target(
            "memory per live session",
            "<= 5 KiB beyond its events",
            f"{per_session / KIB:.2f} KiB",
            per_session <= 5 * KIB,
            f"runtime {runtime['rss_kib'] * KIB / n / KIB:.2f} KiB/session, store "
            f"{store['rss_kib'] * KIB / n / KIB:.2f} KiB/session (same events, same run)",
        ),
        bl.Target(
            f"threads with {n:,} live sessions",
            f"<= 2x cores + executor threads (+ {args.threads} host threads)",
            str(runtime["threads"]),
            runtime["threads"] <= allowed,
            f"{cores} cores; allowed {allowed}",
        ),
    ]
    print(bl.targets_table(targets))
    path = bl.write_results(
        "live_sessions_bench",
        {
            "machine": bl.machine_info(),
            "sessions": n,
            "store": store,
            "runtime": runtime,
            "bytes_per_live_session": round(per_session),
            "targets": [t.__dict__ for t in targets],
        },
        args.json,
    )
    bl.log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
