"""What OpenTelemetry costs on the accept path, against no telemetry package at all.

    python benchmarks/telemetry_bench.py [--backends sqlite,memory] [--sessions 1,10]
                                         [--seconds S] [--rounds N] [--calls N]

Six set-ups, each in a fresh child process (OpenTelemetry's global state and
imports never leak between them), measured in the same run:

* **absent** (the baseline): ``opentelemetry`` cannot be imported (the ``otel``
  extra left out);
* **api**: ``opentelemetry-api`` installed, no SDK configured (the global
  providers are the API's defaults): the runtime turns telemetry off;
* **api-noop**: the API's ``NoOpMeterProvider`` and ``NoOpTracerProvider``
  passed to ``Runtime.open``: every hook runs, into the API's no-op
  instruments (what instrumenting through the API costs when it cannot be
  skipped);
* **sdk**: the SDK, a ``MeterProvider`` with an ``InMemoryMetricReader`` and a
  ``TracerProvider`` (always sampling) with a ``BatchSpanProcessor`` into an
  exporter that drops what it gets: every metric and span recorded, nothing
  sent anywhere. (The SDK's ``InMemorySpanExporter`` keeps every span, and the
  garbage collector then scans a heap that grows by thousands of spans a
  second: that measures the exporter, not the instrumentation.)
* **sdk-metrics** and **sdk-traces**: the same with one provider only.

Two measurements per set-up:

* **accept loop**: ``session.accept(dict)`` in a loop from ``--sessions``
  host threads, one session each (``executor=None``, projections off), for
  ``--seconds`` on a fresh store: accepts/s, latency, process CPU per accept;
* **hook**: ``session.accept`` of a prebuilt input with the session registry
  stubbed to answer at once (``--calls`` calls, one thread): the facade's own
  CPU per call, where the telemetry hook is most of the difference.

``--rounds`` rounds alternate the order of the set-ups; the median round of
each is kept. Ratios are against ``absent`` in the same run. Prints tables;
writes benchmarks/results/telemetry_bench.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import _benchlib as bl

MODES = ("absent", "api", "api-noop", "sdk-metrics", "sdk-traces", "sdk")
BACKENDS = ("sqlite", "memory")


def _providers(mode: str) -> dict[str, Any]:
    """What the child passes to ``Runtime.open`` (and checks the runtime made of it)."""
    if mode == "absent":
        sys.modules["opentelemetry"] = None  # type: ignore[assignment]  # blocks the import
        return {}
    if mode == "api":
        return {}
    if mode == "api-noop":
        from opentelemetry.metrics import NoOpMeterProvider
        from opentelemetry.trace import NoOpTracerProvider

        return {"meter_provider": NoOpMeterProvider(), "tracer_provider": NoOpTracerProvider()}
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class Dropping(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    providers: dict[str, Any] = {}
    if mode in ("sdk", "sdk-metrics"):
        providers["meter_provider"] = MeterProvider(metric_readers=[InMemoryMetricReader()])
    if mode in ("sdk", "sdk-traces"):
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(BatchSpanProcessor(Dropping()))
        providers["tracer_provider"] = tracer_provider
    return providers


def _check_mode(mode: str, rt: Any) -> None:
    on = rt._telemetry is not None
    if on != (mode not in ("absent", "api")):
        raise RuntimeError(f"mode {mode}: telemetry {'on' if on else 'off'}")
    imported = sys.modules.get("opentelemetry") is not None
    if imported != (mode != "absent"):
        raise RuntimeError(f"mode {mode}: opentelemetry imported = {imported}")


def _child(args: argparse.Namespace) -> dict[str, Any]:
    mode = args.child
    providers = _providers(mode)
    from meerkat_runtime import Runtime
    from meerkat_runtime.actors import AcceptOutcome
    from meerkat_runtime.runtime import coerce_input

    out: dict[str, Any] = {"mode": mode}
    with bl.database(args.backend) as url:
        rt = Runtime.open(
            url,
            executor=None,
            projections=False,
            max_live_sessions=max(1000, 2 * args.sessions),
            **providers,
            **bl.store_options(args.backend),
        )
        try:
            _check_mode(mode, rt)
            handles = [rt.session(f"s-{t}") for t in range(args.sessions)]

            def warmup(t: int) -> None:
                handles[t].accept(bl.prompt_input(f"warm-{t}"))

            def op(t: int, n: int) -> None:
                outcome = handles[t].accept(bl.prompt_input(f"k-{t}-{n}"))
                if outcome.kind != "accepted":
                    raise RuntimeError(f"accept was {outcome.kind}")

            load = bl.run_load(args.sessions, op, args.seconds, 1_000_000, warmup)
            out["loop"] = {
                "accepts": load.ops,
                "accepts_per_second": round(load.rate, 1),
                "p50_ms": load.p50_ms,
                "p99_ms": load.p99_ms,
                "cpu_us_per_accept": round((load.cpu_user + load.cpu_system) / load.ops * 1e6, 1),
            }
        finally:
            rt.close()
    with bl.database("memory") as url:
        rt = Runtime.open(url, executor=None, projections=False, **providers)
        try:
            inp = coerce_input(bl.prompt_input())
            answer = AcceptOutcome(kind="accepted", input_id=inp.input_header.id)
            rt._registry.call = lambda *_a, **_k: answer  # type: ignore[method-assign]
            session = rt.session("hook")
            for _ in range(1000):
                session.accept(inp)
            started = time.process_time()
            for _ in range(args.calls):
                session.accept(inp)
            out["hook_us_per_call"] = round((time.process_time() - started) / args.calls * 1e6, 2)
        finally:
            rt.close()
    return out


def _run_child(mode: str, backend: str, sessions: int, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", mode, "--backend", backend]
    cmd += ["--sessions", str(sessions), "--seconds", str(args.seconds), "--calls", str(args.calls)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median CPU per accept: a real run, not a blend."""
    ordered = sorted(runs, key=lambda r: r["loop"]["cpu_us_per_accept"])
    return ordered[len(ordered) // 2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--backends", default="sqlite,memory")
    parser.add_argument("--sessions", default="1,10", help="host threads (one session each)")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=20_000, help="hook calls per set-up")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--backend", default="memory", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        args.sessions = int(args.sessions)
        print(json.dumps(_child(args)))
        return 0

    backends = bl.split_backends(args.backends, BACKENDS)
    session_counts = [int(s) for s in args.sessions.split(",") if s.strip()]
    results: list[dict[str, Any]] = []
    loop_rows: list[list[Any]] = []
    hooks: dict[str, list[float]] = {m: [] for m in MODES}
    for backend in backends:
        for sessions in session_counts:
            runs: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
            for r in range(args.rounds):
                order = MODES if r % 2 == 0 else tuple(reversed(MODES))
                for mode in order:
                    run = _run_child(mode, backend, sessions, args)
                    runs[mode].append(run)
                    hooks[mode].append(run["hook_us_per_call"])
                    loop = run["loop"]
                    bl.log(
                        f"  {backend:<7} {sessions:>3} sessions round {r + 1} {mode:<9}"
                        f" {loop['accepts_per_second']:>8,.0f} acc/s"
                        f" cpu {loop['cpu_us_per_accept']:.0f} us/acc"
                    )
            base = _median_run(runs["absent"])["loop"]
            for mode in MODES:
                kept = _median_run(runs[mode])["loop"]
                results.append({"backend": backend, "sessions": sessions, "mode": mode, **kept})
                loop_rows.append(
                    [
                        backend,
                        sessions,
                        mode,
                        kept["accepts_per_second"],
                        f"{kept['accepts_per_second'] / base['accepts_per_second']:.2f}x",
                        f"{kept['p50_ms']:.2f}/{kept['p99_ms']:.2f}",
                        kept["cpu_us_per_accept"],
                        f"{kept['cpu_us_per_accept'] - base['cpu_us_per_accept']:+.1f}",
                        f"{kept['cpu_us_per_accept'] / base['cpu_us_per_accept']:.2f}x",
                    ]
                )
    print(
        bl.table(
            [
                "backend",
                "sessions",
                "set-up",
                "acc/s",
                "vs absent",
                "p50/p99 ms",
                "CPU us/acc",
                "CPU diff",
                "CPU vs absent",
            ],
            loop_rows,
        )
    )
    hook_base = statistics.median(hooks["absent"])
    hook_rows = []
    hook_results = {}
    for mode in MODES:
        us = statistics.median(hooks[mode])
        hook_results[mode] = us
        hook_rows.append([mode, us, f"{us - hook_base:+.2f}", f"{us / hook_base:.2f}x"])
    print()
    print(bl.table(["set-up", "accept call us (stubbed)", "diff us", "vs absent"], hook_rows))
    path = bl.write_results(
        "telemetry_bench",
        {
            "machine": bl.machine_info(),
            "settings": {
                "backends": backends,
                "sessions": session_counts,
                "seconds": args.seconds,
                "rounds": args.rounds,
                "calls": args.calls,
            },
            "accept_loop": results,
            "hook_us_per_call": hook_results,
        },
        args.json,
    )
    bl.log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
