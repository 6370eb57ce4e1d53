"""Memory and threads for many sessions in one process, with passivation.

    python benchmarks/scale_bench.py [--counts 1000,10000,20000] [--full]
                                     [--threads 16] [--max-live 10000] [--idle-timeout 2]
                                     [--cap-extra 2000]

One runtime on a ``memory://`` store (``executor=None``, projections off,
``max_live_sessions=10,000``, a small ``idle_timeout``) in this process.
Host threads touch sessions (one accept each, new session ids) until the
total reaches each count of ``--counts`` (cumulative; 100,000 with
``--full``). At each count it records RSS and thread count (from
/proc/self/status) and live actors right after touching, then waits until
every actor has passivated and records them again. A monitor thread keeps
the peak live actors and threads seen.

Baseline (same run, in a child process so its memory does not mix with
ours): the same events (``topology.runtime_created`` + ``input.accepted``
+ ``input.queued`` per session, the payload of a first accept) appended
straight to a ``memory://`` store. The RSS per session of that store is what
any runtime must keep for a memory store; the runtime's overhead per
passivated session is its RSS per session minus that.

With a small idle timeout, idleness passivates actors long before 10,000
are live, so a last phase checks the cap itself: a second runtime with a
one-hour idle timeout touches ``max_live + --cap-extra`` sessions; the
LRU cap alone must keep the live actors (and threads) at ``max_live``.
The heap size of one pending completion (a future the registry keeps for
each accepted, unfinished input) is measured with tracemalloc.

Targets: 100,000 sessions touched with a 10,000 live-actor cap; memory per
passivated session near zero (read here as: runtime overhead < 1 KiB per
passivated session beyond the stored events). Prints a table; writes
benchmarks/results/scale_bench.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import _benchlib as bl

from meerkat_runtime import Runtime
from meerkat_runtime.runtime import event_codec
from meerkat_runtime.store import NewEvent, open_store

KIB = 1024


class PeakWatch:
    """Samples a runtime's live actors and the process's threads every 50 ms, keeping the peaks."""

    def __init__(self, rt: Runtime) -> None:
        self.peaks = {"live": 0, "threads": 0}
        self._rt = rt
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="bench-monitor")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peaks["live"] = max(self.peaks["live"], self._rt.live_session_count())
            threads = bl.proc_status().get("threads", 0)
            self.peaks["threads"] = max(self.peaks["threads"], threads)
            self._stop.wait(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Point:
    sessions: int
    touch_seconds: float
    touches_per_second: float
    rss_touched_kib: int
    threads_touched: int
    live_touched: int
    rss_passivated_kib: int
    threads_passivated: int
    live_passivated: int
    passivate_seconds: float
    blocks_passivated: int  # sys.getallocatedblocks()
    pending_completions: int
    peak_live: int
    peak_threads: int
    store_rss_kib: int = 0  # baseline child: store-only RSS at this count
    store_blocks: int = 0


def store_only(counts: list[int]) -> dict[str, Any]:
    """Child-process mode: RSS of a memory store holding the same events, at each count."""
    recs = bl.cycle_records(attached=False)
    store = open_store("memory://", codec=event_codec())
    gc.collect()
    base = bl.proc_status()
    out: dict[str, Any] = {"base_rss_kib": base["rss_kib"], "base_blocks": sys.getallocatedblocks()}
    done = 0
    points = []
    for count in counts:
        while done < count:
            sid = f"s-{done:07d}"
            store.append(sid, 0, [NewEvent(t, d) for t, d in recs.first_accept])
            done += 1
        gc.collect()
        points.append(
            {
                "sessions": count,
                "rss_kib": bl.proc_status()["rss_kib"],
                "blocks": sys.getallocatedblocks(),
            }
        )
    store.close()
    out["points"] = points
    return out


def baseline(counts: list[int]) -> dict[str, Any]:
    child = subprocess.run(
        [sys.executable, __file__, "--store-only", "--counts", ",".join(map(str, counts))],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(child.stdout.strip().splitlines()[-1])
    return result


def run(args: argparse.Namespace, counts: list[int]) -> tuple[list[Point], dict[str, Any]]:
    gc.collect()
    before_open = bl.proc_status()
    rt = Runtime.open(
        "memory://",
        executor=None,
        projections=False,
        max_live_sessions=args.max_live,
        idle_timeout=args.idle_timeout,
    )
    gc.collect()
    base = bl.proc_status()
    base_blocks = sys.getallocatedblocks()
    watch = PeakWatch(rt)
    peaks = watch.peaks
    points: list[Point] = []
    done = 0
    try:
        for count in counts:
            first, last = done, count
            errors: list[BaseException] = []

            def touch(
                t: int, first: int = first, last: int = last, errors: list[BaseException] = errors
            ) -> None:
                try:
                    for n in range(first + t, last, args.threads):
                        outcome = rt.session(f"s-{n:07d}").accept(bl.prompt_input())
                        if outcome.kind != "accepted":
                            raise RuntimeError(f"accept was {outcome.kind}")
                except BaseException as e:
                    errors.append(e)

            started = time.perf_counter()
            pool = [threading.Thread(target=touch, args=(t,)) for t in range(args.threads)]
            for thread in pool:
                thread.start()
            for thread in pool:
                thread.join()
            touch_seconds = time.perf_counter() - started
            if errors:
                raise errors[0]
            done = count
            touched = bl.proc_status()
            live_touched = rt.live_session_count()
            started = time.perf_counter()
            deadline = started + max(30.0, 10 * args.idle_timeout)
            while rt.live_session_count() > 0 and time.perf_counter() < deadline:
                time.sleep(0.1)
            time.sleep(0.5)  # stopped actors' threads finish exiting
            passivate_seconds = time.perf_counter() - started
            gc.collect()
            passivated = bl.proc_status()
            p = Point(
                sessions=count,
                touch_seconds=round(touch_seconds, 2),
                touches_per_second=round((count - first) / touch_seconds, 1),
                rss_touched_kib=touched["rss_kib"],
                threads_touched=touched["threads"],
                live_touched=live_touched,
                rss_passivated_kib=passivated["rss_kib"],
                threads_passivated=passivated["threads"],
                live_passivated=rt.live_session_count(),
                passivate_seconds=round(passivate_seconds, 2),
                blocks_passivated=sys.getallocatedblocks(),
                pending_completions=rt.completions.pending_count(),
                peak_live=peaks["live"],
                peak_threads=peaks["threads"],
            )
            bl.log(
                f"  {count:>7,} sessions: touched in {p.touch_seconds:.1f} s "
                f"({p.touches_per_second:,.0f}/s), live {p.live_touched:,}, threads "
                f"{p.threads_touched:,}, RSS {p.rss_touched_kib / KIB:,.0f} MiB; passivated: "
                f"live {p.live_passivated}, threads {p.threads_passivated}, RSS "
                f"{p.rss_passivated_kib / KIB:,.0f} MiB (peak live {p.peak_live:,})"
            )
            points.append(p)
    finally:
        watch.stop()
        rt.close()
    info = {
        "rss_before_open_kib": before_open["rss_kib"],
        "base_rss_kib": base["rss_kib"],
        "base_threads": base["threads"],
        "base_blocks": base_blocks,
    }
    return points, info


def cap_phase(args: argparse.Namespace) -> dict[str, Any]:
    """Touch ``max_live + extra`` sessions with passivation by idleness off (a 1-hour
    idle timeout): only the live-actor cap (LRU eviction) keeps the actors bounded."""
    total = args.max_live + args.cap_extra
    rt = Runtime.open(
        "memory://",
        executor=None,
        projections=False,
        max_live_sessions=args.max_live,
        idle_timeout=3600.0,
    )
    watch = PeakWatch(rt)
    peaks = watch.peaks
    errors: list[BaseException] = []

    def touch(t: int) -> None:
        try:
            for n in range(t, total, args.threads):
                rt.session(f"cap-{n:07d}").accept(bl.prompt_input())
        except BaseException as e:
            errors.append(e)

    started = time.perf_counter()
    try:
        pool = [threading.Thread(target=touch, args=(t,)) for t in range(args.threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        if errors:
            raise errors[0]
        time.sleep(0.2)
        result = {
            "touched": total,
            "seconds": round(time.perf_counter() - started, 1),
            "live_at_end": rt.live_session_count(),
            "peak_live": peaks["live"],
            "peak_threads": peaks["threads"],
            "evicted": rt._registry.stopped,  # benchmark only
        }
    finally:
        watch.stop()
        rt.close()
    bl.log(
        f"  cap phase: {total:,} sessions touched with idle_timeout 3600 s: peak live "
        f"{result['peak_live']:,}, peak threads {result['peak_threads']:,}, "
        f"{result['evicted']:,} evicted by the cap"
    )
    return result


def pending_completion_bytes(n: int = 2000) -> float:
    """Heap bytes of one pending completion (a Future in the CompletionRegistry)."""
    import tracemalloc

    from meerkat_runtime.actors import CompletionRegistry
    from meerkat_runtime.events.ids import uuid7

    ids = [uuid7() for _ in range(n)]
    registry = CompletionRegistry()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    handles = [registry.handle("s", i, None) for i in ids]
    del handles  # the host drops its handle; the registry keeps the future
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before) / n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--counts", default="1000,10000,20000", help="cumulative sessions")
    parser.add_argument("--full", action="store_true", help="counts 1,000, 10,000 and 100,000")
    parser.add_argument("--threads", type=int, default=16, help="host threads touching")
    parser.add_argument("--max-live", type=int, default=10_000)
    parser.add_argument("--idle-timeout", type=float, default=2.0)
    parser.add_argument(
        "--cap-extra",
        type=int,
        default=2000,
        help="cap phase: touch max-live + this many sessions with no idle passivation (0 = skip)",
    )
    parser.add_argument("--store-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    counts = [1000, 10_000, 100_000] if args.full else [int(c) for c in args.counts.split(",")]
    if args.store_only:
        print(json.dumps(store_only(counts)))
        return 0
    notes = (
        [] if args.full else [f"capped at {counts[-1]:,} sessions (run with --full for 100,000)"]
    )

    started = time.perf_counter()
    machine = bl.machine_info()
    bl.log("store-only baseline (child process)...")
    base = baseline(counts)
    bl.log("runtime:")
    points, info = run(args, counts)
    cap = cap_phase(args) if args.cap_extra > 0 else None
    completion_bytes = pending_completion_bytes()
    store_points = {p["sessions"]: p for p in base["points"]}
    rows = []
    for p in points:
        sp = store_points[p.sessions]
        p.store_rss_kib = sp["rss_kib"]
        p.store_blocks = sp["blocks"]
        rt_per = (p.rss_passivated_kib - info["base_rss_kib"]) * KIB / p.sessions
        store_per = (sp["rss_kib"] - base["base_rss_kib"]) * KIB / p.sessions
        blocks_rt = (p.blocks_passivated - info["base_blocks"]) / p.sessions
        blocks_store = (sp["blocks"] - base["base_blocks"]) / p.sessions
        live_per = (
            (p.rss_touched_kib - p.rss_passivated_kib) * KIB / p.live_touched
            if p.live_touched
            else 0.0
        )
        rows.append(
            [
                p.sessions,
                p.touches_per_second,
                f"{p.live_touched:,}/{p.peak_live:,}",
                f"{p.threads_touched:,}/{p.peak_threads:,}",
                round(p.rss_touched_kib / KIB),
                p.live_passivated,
                p.threads_passivated,
                round(p.rss_passivated_kib / KIB),
                round(rt_per),
                round(store_per),
                round(rt_per - store_per),
                f"{rt_per / store_per:.2f}x" if store_per > 0 else "-",
                f"{blocks_rt:.0f}/{blocks_store:.0f}",
                round(live_per),
                p.pending_completions,
            ]
        )
    print()
    print(
        bl.table(
            [
                "sessions",
                "touch/s",
                "live now/peak",
                "threads now/peak",
                "RSS MiB",
                "live after",
                "threads after",
                "RSS after MiB",
                "B/session after",
                "store-only B/s",
                "overhead B/s",
                "vs store",
                "blocks/s rt/store",
                "B/live actor",
                "pending completions",
            ],
            rows,
        )
    )
    last = points[-1]
    overhead = (last.rss_passivated_kib - info["base_rss_kib"]) * KIB / last.sessions - (
        last.store_rss_kib - base["base_rss_kib"]
    ) * KIB / last.sessions
    cap_ok = cap is None or cap["peak_live"] <= args.max_live
    cap_text = (
        ""
        if cap is None
        else f"; cap phase: {cap['touched']:,} touched without idle passivation, peak live "
        f"{cap['peak_live']:,}, {cap['evicted']:,} evicted"
    )
    targets = [
        bl.Target(
            f"{last.sessions:,} sessions touched, live-actor cap {args.max_live:,}",
            "100,000 touched, live <= 10,000",
            f"{last.sessions:,} touched, peak live {last.peak_live:,}, peak threads "
            f"{last.peak_threads:,}{cap_text}",
            last.peak_live <= args.max_live and cap_ok and last.sessions >= 100_000,
            "" if last.sessions >= 100_000 else "run with --full for 100,000",
        ),
        bl.Target(
            "memory per passivated session (beyond its stored events)",
            "near zero (< 1 KiB)",
            f"{overhead:,.0f} B/session ({points[-1].pending_completions:,} pending "
            f"completions of {completion_bytes:,.0f} B each)",
            overhead < 1024,
        ),
    ]
    print()
    print(bl.targets_table(targets))
    for note in notes:
        print(f"note: {note}")
    print(
        f"(total {time.perf_counter() - started:.0f} s; base RSS after open "
        f"{info['base_rss_kib'] / KIB:.0f} MiB, {info['base_threads']} threads; 'after' = once "
        f"every actor passivated (idle_timeout {args.idle_timeout:g} s); B/session = RSS growth "
        f"since open / sessions; store-only = the same events in a memory store, child process; "
        f"B/live actor = RSS freed by passivation / live actors)"
    )
    out = bl.write_results(
        "scale_bench",
        {
            "machine": machine,
            "args": {k: v for k, v in vars(args).items() if k not in ("json", "store_only")},
            "notes": notes,
            "runtime": info,
            "store_only": base,
            "points": [asdict(p) for p in points],
            "cap_phase": cap,
            "pending_completion_bytes": completion_bytes,
            "targets": [asdict(t) for t in targets],
        },
        args.json,
    )
    print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
