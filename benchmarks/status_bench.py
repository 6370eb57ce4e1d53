"""Terminal status: what each witness costs, against reading the session's log.

    python benchmarks/status_bench.py [--inputs 100,1000] [--repeat N] [--backend sqlite]

A session's log is filled with ``--inputs`` prompts run to completion by
``EchoExecutor`` (about five events each). Then, per query, in the same run:

* read log: ``SessionJournal.records`` of the whole log, undecoded (the floor
  of anything that reads the log);
* durable: ``session.interaction_status(input_id)`` on a runtime where the
  session is not live (the log read and its input events folded);
* durable run: ``session.run_status(run_id)`` likewise;
* live: ``interaction_status`` answered by the live session (no store read).

Each figure is wall time, the fastest of ``--repeat`` rounds (the machine may be
shared and noisy); ratios are against "read log" of the same size. Writes
benchmarks/results/status_bench.json.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import _benchlib as bl

from meerkat_runtime import EchoExecutor, Runtime
from meerkat_runtime.store import SessionJournal


def fastest(fn: Callable[[], Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measure(url: str, inputs: int, repeat: int) -> dict[str, Any]:
    with Runtime.open(url, executor=EchoExecutor()) as rt:
        s = rt.session("status")
        outcomes = [s.accept(bl.prompt_input()) for _ in range(inputs)]
        for out in outcomes:
            assert out.completion is not None
            out.completion.wait(60)
        first = outcomes[0].input_id
        live = fastest(lambda: s.interaction_status(first), repeat)
        report = s.interaction_status(first)
        assert report is not None and report.resolving_run_id is not None
        run_id = report.resolving_run_id
    with Runtime.open(url) as rt:
        s = rt.session("status")
        journal = SessionJournal(rt.store)
        events = len(list(journal.records("status")))
        read = fastest(lambda: list(journal.records("status")), repeat)
        durable = fastest(lambda: s.interaction_status(first), repeat)
        durable_run = fastest(lambda: s.run_status(run_id), repeat)
        assert rt.live_session_count() == 0
    return {
        "inputs": inputs,
        "events": events,
        "read_log_ms": bl.ms(read),
        "durable_ms": bl.ms(durable),
        "durable_run_ms": bl.ms(durable_run),
        "live_ms": bl.ms(live),
        "durable_over_read": durable / read,
        "durable_run_over_read": durable_run / read,
        "live_over_read": live / read,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", default="100,1000")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--backend", default="sqlite", choices=["sqlite", "postgres", "memory"])
    args = parser.parse_args()
    rows = []
    for n in (int(x) for x in args.inputs.split(",")):
        with bl.database(args.backend, bl.postgres_url()) as url:
            bl.log(f"{args.backend}: {n} inputs")
            rows.append(measure(url, n, args.repeat))
    print(
        bl.table(
            [
                "inputs",
                "events",
                "read log ms",
                "durable ms",
                "x read",
                "durable run ms",
                "x read",
                "live ms",
                "x read",
            ],
            [
                [
                    r["inputs"],
                    r["events"],
                    r["read_log_ms"],
                    r["durable_ms"],
                    r["durable_over_read"],
                    r["durable_run_ms"],
                    r["durable_run_over_read"],
                    r["live_ms"],
                    r["live_over_read"],
                ]
                for r in rows
            ],
        )
    )
    path = bl.write_results(
        "status_bench", {"backend": args.backend, "rows": rows, "machine": bl.machine_info()}
    )
    bl.log(f"wrote {path}")


if __name__ == "__main__":
    main()
