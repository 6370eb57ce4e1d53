"""End-to-end input latency: accept -> run -> completion, with a zero-cost executor.

    python benchmarks/e2e_bench.py [--backends sqlite,memory] [--sessions 1,10]
                                   [--seconds S]

Each host thread (one per session) loops: ``outcome = session.accept(prompt)``
then ``outcome.completion.wait()``; the executor returns at once
(``RunResult(status="completed")``), so what is measured is the runtime's own
path: accept commit, the run's start commit, the hand-off to the executor
pool and back to the actor, the completion commit, and the waiter's wake-up.
Per backend and number of sessions, in the same run and each on a fresh
database:

* e2e: accept -> completion latency (p50/p99) and inputs completed per second;
* accept-only: the same loop with ``executor=None`` and only the accept
  timed (the baseline: what the run adds on top of an accept);
* raw: the three transactions the run writes (accept: 2 events, start: 3,
  completion: 4; the same payload bytes, made by the pure decider), one
  after the other through eventsourcing's recorder, from the same number of
  threads: the floor set by the database for three durable commits.

``sqlite`` is ``synchronous=FULL``; ``sqlite-normal`` and ``postgres`` may be
added with ``--backends``. Projections are off. Prints a table; writes
benchmarks/results/e2e_bench.json.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import _benchlib as bl
from eventsourcing.persistence import StoredEvent

from meerkat_runtime import RunResult, Runtime
from meerkat_runtime.actors import RunRequest
from meerkat_runtime.runtime import event_codec
from meerkat_runtime.store import open_store

BACKENDS = ("sqlite", "sqlite-normal", "postgres", "memory")


@dataclass
class Measurement:
    backend: str
    mode: str  # "e2e", "accept-only", "raw"
    sessions: int
    inputs: int
    seconds: float
    inputs_per_second: float
    p50_ms: float
    p99_ms: float
    cpu_user_us_per_input: float


def zero_cost(request: RunRequest) -> RunResult:
    return RunResult(status="completed")


def _m(backend: str, mode: str, sessions: int, load: bl.Load) -> Measurement:
    m = Measurement(
        backend=backend,
        mode=mode,
        sessions=sessions,
        inputs=load.ops,
        seconds=round(load.seconds, 3),
        inputs_per_second=round(load.rate, 1),
        p50_ms=load.p50_ms,
        p99_ms=load.p99_ms,
        cpu_user_us_per_input=load.per_op_us(load.cpu_user),
    )
    bl.log(
        f"  {backend:<13} {mode:<11} {sessions:>4} sessions: {m.inputs_per_second:>8,.0f}/s "
        f"p50 {m.p50_ms:.2f} ms p99 {m.p99_ms:.2f} ms ({m.inputs} in {m.seconds:.2f} s)"
    )
    return m


def measure_runtime(
    backend: str, url: str, sessions: int, args: argparse.Namespace, e2e: bool
) -> Measurement:
    rt = Runtime.open(
        url,
        executor=zero_cost if e2e else None,
        projections=False,
        max_live_sessions=max(1000, 2 * sessions),
        **bl.store_options(backend),
    )
    try:
        handles = [rt.session(f"s-{t}") for t in range(sessions)]

        def one(t: int, key: str) -> None:
            outcome = handles[t].accept(bl.prompt_input(key))
            if outcome.kind != "accepted":
                raise RuntimeError(f"accept was {outcome.kind}")
            if e2e:
                assert outcome.completion is not None
                outcome.completion.wait(args.timeout)

        load = bl.run_load(
            sessions,
            lambda t, n: one(t, f"k-{t}-{n}"),
            args.seconds,
            args.max_per_session,
            lambda t: one(t, f"warm-{t}"),
        )
    finally:
        rt.close()
    return _m(backend, "e2e" if e2e else "accept-only", sessions, load)


def measure_raw(
    backend: str, url: str, sessions: int, args: argparse.Namespace, recs: bl.CycleRecords
) -> Measurement:
    store = open_store(url, codec=event_codec(), group_commit=False, **bl.store_options(backend))
    try:
        recorder = bl.raw_recorder(store)
        groups = [bl.encoded(store, g) for g in (recs.accept, recs.start_run, recs.complete_run)]
        per_cycle = sum(len(g) for g in groups)
        run = uuid.uuid4().hex[:8]

        def cycle(t: int, n: int) -> None:
            version = n * per_cycle
            for group in groups:
                events = []
                for topic, state in group:
                    version += 1
                    events.append(StoredEvent(f"{run}-{t}", version, topic, state))
                recorder.insert_events(events)

        load = bl.run_load(sessions, cycle, args.seconds, args.max_per_session)
    finally:
        store.close()
    return _m(backend, "raw", sessions, load)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--backends", default="sqlite,memory")
    parser.add_argument("--sessions", default="1,10", help="concurrent sessions (host threads)")
    parser.add_argument("--seconds", type=float, default=3.0, help="window per measurement")
    parser.add_argument("--max-per-session", type=int, default=3000)
    parser.add_argument("--timeout", type=float, default=30.0, help="completion wait limit")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    sessions_list = [int(s) for s in args.sessions.split(",")]
    backends = bl.split_backends(args.backends, BACKENDS)
    pg_url = bl.postgres_url()
    notes: list[str] = []
    if "postgres" in backends and not pg_url:
        backends.remove("postgres")
        notes.append(bl.POSTGRES_HINT)

    started = time.perf_counter()
    machine = bl.machine_info(pg_url)
    recs = bl.cycle_records(attached=True)
    results: list[Measurement] = []
    for backend in backends:
        bl.log(f"{backend}:")
        for sessions in sessions_list:
            with bl.database(backend, pg_url) as url:
                raw = measure_raw(backend, url, sessions, args, recs)
            with bl.database(backend, pg_url) as url:
                accept = measure_runtime(backend, url, sessions, args, e2e=False)
            with bl.database(backend, pg_url) as url:
                e2e = measure_runtime(backend, url, sessions, args, e2e=True)
            results += [raw, accept, e2e]

    by = {(m.backend, m.mode, m.sessions): m for m in results}
    rows: list[list[Any]] = []
    for backend in backends:
        for sessions in sessions_list:
            raw, acc, e2e = (
                by[(backend, mode, sessions)] for mode in ("raw", "accept-only", "e2e")
            )
            rows.append(
                [
                    backend,
                    sessions,
                    f"{e2e.p50_ms:.2f}/{e2e.p99_ms:.2f}",
                    e2e.inputs_per_second,
                    f"{acc.p50_ms:.2f}/{acc.p99_ms:.2f}",
                    f"{e2e.p50_ms / acc.p50_ms:.2f}x" if acc.p50_ms else "-",
                    f"{raw.p50_ms:.2f}/{raw.p99_ms:.2f}",
                    f"{e2e.p50_ms / raw.p50_ms:.2f}x" if raw.p50_ms else "-",
                    e2e.cpu_user_us_per_input,
                ]
            )
    print()
    print(
        bl.table(
            [
                "backend",
                "sessions",
                "e2e p50/p99 ms",
                "e2e inputs/s",
                "accept-only p50/p99",
                "e2e/accept p50",
                "raw 3 txns p50/p99",
                "e2e/raw p50",
                "CPU us/input",
            ],
            rows,
        )
    )
    for note in notes:
        print(f"note: {note}")
    print(
        f"(total {time.perf_counter() - started:.0f} s; e2e = accept -> completion.wait() with "
        f"a zero-cost executor; raw = the run's 3 transactions (2+3+4 events) back to back "
        f"through eventsourcing's recorder, same threads)"
    )
    out = bl.write_results(
        "e2e_bench",
        {
            "machine": machine,
            "args": {k: v for k, v in vars(args).items() if k != "json"},
            "notes": notes,
            "results": [asdict(m) for m in results],
        },
        args.json,
    )
    print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
