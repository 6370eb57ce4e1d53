"""Append throughput of the event store, with and without group commit, against the raw recorder.

    python benchmarks/store_bench.py [--backends sqlite,sqlite-normal,postgres,memory]
                                     [--events N] [--sessions 1,10,100] [--max-seconds S]

For each backend and each number of concurrent sessions (one thread per
session, one event per append call) it measures, in the same run:

* raw: eventsourcing's own recorder class, one ``insert_events`` per event
  (same payload bytes, same thread count) -- the baseline;
* store, group_commit=False: each append its own transaction;
* store, group_commit=True: the writer thread batches what is queued.

``sqlite`` is ``synchronous=FULL`` (the default), ``sqlite-normal`` is
``synchronous=NORMAL``; each is compared with a raw baseline of the same mode.
PostgreSQL comes from MEERKAT_BENCH_POSTGRES_URL or MEERKAT_TEST_POSTGRES_URL
(``eval "$(bash scripts/test-postgres.sh)"``); without one it is skipped.
Results are printed as a table and written to benchmarks/results/store_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import _benchlib as bl
import psycopg
from eventsourcing.persistence import StoredEvent
from psycopg import sql

from meerkat_runtime.errors import mask_url
from meerkat_runtime.store import EventCodec, EventStore, NewEvent, open_store

RESULTS = Path(__file__).parent / "results" / "store_bench.json"
TOPIC = "bench.appended"
PAYLOAD: dict[str, Any] = {
    "input_id": "0190f3b4-8a1e-7c3d-9f00-5e2a1b3c4d5e",
    "kind": "prompt",
    "content": "x" * 120,
    "sequence": 0,
}


@dataclass
class Measurement:
    backend: str
    mode: str  # "raw", "store", "store+group"
    sessions: int
    events: int
    seconds: float
    events_per_second: float
    p50_ms: float
    p99_ms: float


def codec() -> EventCodec:
    c = EventCodec()
    c.register(TOPIC)
    return c


def run_threads(
    sessions: int, total_events: int, max_seconds: float, append_one: Callable[[int, int], None]
) -> tuple[int, float, list[float]]:
    """Run ``append_one(thread, n)`` from one thread per session; return (events, seconds, latencies)."""
    per_thread = max(1, total_events // sessions)
    barrier = threading.Barrier(sessions + 1)
    counts = [0] * sessions
    latencies: list[list[float]] = [[] for _ in range(sessions)]
    errors: list[BaseException] = []
    deadline = [0.0]

    def work(t: int) -> None:
        barrier.wait()
        try:
            for n in range(per_thread):
                if time.perf_counter() > deadline[0]:
                    break
                started = time.perf_counter()
                append_one(t, n)
                latencies[t].append(time.perf_counter() - started)
                counts[t] += 1
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,), daemon=True) for t in range(sessions)]
    for thread in threads:
        thread.start()
    started = time.perf_counter()
    deadline[0] = started + max_seconds
    barrier.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return sum(counts), elapsed, [x for lat in latencies for x in lat]


def measure(
    backend: str,
    mode: str,
    sessions: int,
    total_events: int,
    max_seconds: float,
    append_one: Callable[[int, int], None],
) -> Measurement:
    events, seconds, latencies = run_threads(sessions, total_events, max_seconds, append_one)
    latencies.sort()
    return Measurement(
        backend=backend,
        mode=mode,
        sessions=sessions,
        events=events,
        seconds=round(seconds, 3),
        events_per_second=round(events / seconds, 1),
        p50_ms=round(statistics.median(latencies) * 1000, 3),
        p99_ms=round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, 3),
    )


@contextmanager
def database(backend: str, postgres_url: str | None) -> Iterator[str]:
    """Yield a fresh store URL for ``backend``; clean up afterwards."""
    if backend == "memory":
        yield f"memory://bench-{uuid.uuid4().hex}"
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


def bench_backend(
    backend: str,
    sessions_list: list[int],
    total_events: int,
    max_seconds: float,
    pg_url: str | None,
) -> list[Measurement]:
    options: dict[str, Any] = {"sqlite_synchronous": "normal"} if backend == "sqlite-normal" else {}
    results: list[Measurement] = []
    with database(backend, pg_url) as url:
        stores = {
            "raw": open_store(url, codec=codec(), group_commit=False, pool_size=10, **options),
            "store": open_store(url, codec=codec(), group_commit=False, pool_size=10, **options),
            "store+group": open_store(
                url, codec=codec(), group_commit=True, pool_size=10, **options
            ),
        }
        try:
            state, _ = stores["raw"].serializer.encode_event(
                TOPIC, PAYLOAD, stores["raw"].incarnation
            )
            recorder = bl.raw_recorder(stores["raw"])
            for sessions in sessions_list:
                for mode, store in stores.items():
                    run = uuid.uuid4().hex[:8]
                    append_one: Callable[[int, int], None]
                    if mode == "raw":

                        def append_raw(t: int, n: int, run: str = run) -> None:
                            recorder.insert_events([StoredEvent(f"{run}-{t}", n + 1, TOPIC, state)])

                        append_one = append_raw
                    else:

                        def append_store(
                            t: int, n: int, run: str = run, store: EventStore = store
                        ) -> None:
                            store.append(f"{run}-{t}", n, [NewEvent(TOPIC, PAYLOAD)])

                        append_one = append_store

                    m = measure(backend, mode, sessions, total_events, max_seconds, append_one)
                    results.append(m)
                    print(
                        f"  {backend:<14} {mode:<12} {sessions:>4} sessions: "
                        f"{m.events_per_second:>10,.0f} ev/s ({m.events} events in {m.seconds:.2f} s)",
                        file=sys.stderr,
                    )
        finally:
            for store in stores.values():
                store.close()
    return results


def table(results: list[Measurement]) -> str:
    by_key = {(m.backend, m.mode, m.sessions): m for m in results}
    header = (
        f"{'backend':<14} {'sessions':>8} {'raw ev/s':>10} {'store ev/s':>11} {'vs raw':>7} "
        f"{'group ev/s':>11} {'vs raw':>7} {'group/store':>11} {'group p50/p99 ms':>17}"
    )
    lines = [header, "-" * len(header)]
    for backend, _, sessions in sorted(
        {(m.backend, "", m.sessions) for m in results}, key=lambda k: (k[0], k[2])
    ):
        raw = by_key[(backend, "raw", sessions)]
        plain = by_key[(backend, "store", sessions)]
        group = by_key[(backend, "store+group", sessions)]
        lines.append(
            f"{backend:<14} {sessions:>8} {raw.events_per_second:>10,.0f} "
            f"{plain.events_per_second:>11,.0f} {plain.events_per_second / raw.events_per_second:>6.2f}x "
            f"{group.events_per_second:>11,.0f} {group.events_per_second / raw.events_per_second:>6.2f}x "
            f"{group.events_per_second / plain.events_per_second:>10.2f}x "
            f"{group.p50_ms:>8.2f}/{group.p99_ms:<8.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="memory,sqlite,sqlite-normal,postgres")
    parser.add_argument(
        "--events", type=int, default=2000, help="events per measurement (default 2000)"
    )
    parser.add_argument("--sessions", default="1,10,100", help="concurrent sessions (threads)")
    parser.add_argument(
        "--max-seconds", type=float, default=2.0, help="time cap per measurement (default 2 s)"
    )
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(backends) - {"memory", "sqlite", "sqlite-normal", "postgres"}
    if unknown:
        parser.error(f"unknown backend(s): {', '.join(sorted(unknown))}")
    sessions_list = [int(s) for s in args.sessions.split(",")]
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
    results: list[Measurement] = []
    for backend in backends:
        results.extend(bench_backend(backend, sessions_list, args.events, args.max_seconds, pg_url))
    print()
    print(table(results))
    for note in notes:
        print(f"note: {note}")
    print(
        f"(total {time.perf_counter() - started:.0f} s; one event per append; 'vs raw' = "
        f"ratio to eventsourcing's recorder, one insert_events per event, same threads)"
    )

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "benchmark": "store_bench",
                "python": platform.python_version(),
                "machine": platform.machine(),
                "cpus": os.cpu_count(),
                "postgres": mask_url(pg_url) if pg_url else None,
                "events_per_measurement": args.events,
                "max_seconds": args.max_seconds,
                "notes": notes,
                "results": [asdict(m) for m in results],
            },
            indent=2,
        )
        + "\n"
    )
    print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
