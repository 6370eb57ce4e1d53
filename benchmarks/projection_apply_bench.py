"""The built-in read models' apply, per event: CPU time of ``apply`` over one log, in pages.

    python benchmarks/projection_apply_bench.py [--pages 10,50,500] [--rounds 6]
                                                [--baseline REV|DIR] [--backend sqlite]

A log of prompts and operations (40 sessions, 50 inputs each, written with
projections off) is applied page by page, one read-model transaction per page,
by the ledger and the views in this thread: CPU microseconds per event of
``apply`` and its transaction (reading the log is not counted; it is the
same for both versions). With ``--baseline``, the ledger and views modules of
``REV`` (unpacked with ``git archive``) or of a source tree ``DIR`` run beside
this tree's on the same log, alternating which goes first in each round (the
rest of the package is this tree's, so only the read models' own code differs);
the median of the rounds is printed with the ratio after/before, and the rows
both versions leave must be identical. ``projection_bench.py`` measures the
projections live, under accept load, with the framework's reads and batching.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import _benchlib as bl

from meerkat_runtime import Runtime
from meerkat_runtime.projections import _ledger, _views
from meerkat_runtime.projections._framework import ensure_framework_schema, prepare_projection
from meerkat_runtime.projections._sql import Sql

TABLES = {"ledger": ("meerkat_ledger",), "views": ("meerkat_views", "meerkat_view_inputs")}


def write_log(rt: Runtime, sessions: int = 40, inputs: int = 50) -> None:
    def work(t: int) -> None:
        for n in range(inputs):
            doc: dict[str, Any] = (
                {
                    "input_type": "operation",
                    "operation_id": f"op-{n}",
                    "event": {"type": "started", "id": f"op-{n}", "kind": "tool"},
                }
                if n % 10 == 9
                else bl.prompt_input()
            )
            rt.session(f"s-{t}").accept(doc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(sessions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def load_module(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def rows(sql: Sql, name: str) -> list[list[dict[str, Any]]]:
    with sql.transaction() as cur:
        return [
            [dict(r) for r in cur.execute(f"SELECT * FROM {cur.table(t)} ORDER BY 1, 2").fetchall()]
            for t in TABLES[name]
        ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", default="10,50,500", help="page sizes (events per transaction)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--baseline", default=None, help="git revision or source tree")
    parser.add_argument("--backend", default="sqlite", choices=["sqlite", "memory"])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    pages = [int(p) for p in args.pages.split(",")]

    with tempfile.TemporaryDirectory(prefix="apply-bench-") as tmp:
        versions: dict[str, dict[str, Any]] = {
            "after": {"ledger": _ledger.LedgerProjection(), "views": _views.ViewsProjection()}
        }
        if args.baseline is not None:
            base = bl.source_tree(args.baseline, Path(tmp))
            pkg = base / "meerkat_runtime" / "projections"
            old_ledger = load_module(pkg / "_ledger.py", "baseline_ledger")
            old_views = load_module(pkg / "_views.py", "baseline_views")
            versions["before"] = {
                "ledger": old_ledger.LedgerProjection(),
                "views": old_views.ViewsProjection(),
            }
        url = f"sqlite:///{tmp}/apply.db" if args.backend == "sqlite" else "memory://apply-bench"
        # synchronous=NORMAL: the commits' fsyncs are not what is compared here.
        options: dict[str, Any] = (
            {"sqlite_synchronous": "normal"} if args.backend == "sqlite" else {}
        )
        with Runtime.open(url, projections=False, **options) as rt:
            write_log(rt)
            events = rt.store.read_all(limit=1_000_000)
            sql = Sql(rt.store)
            ensure_framework_schema(sql)
            for projection in versions["after"].values():
                prepare_projection(sql, projection)
            results: list[dict[str, Any]] = []
            for size in pages:
                for name in ("ledger", "views"):
                    cpu: dict[str, list[float]] = {v: [] for v in versions}
                    left: dict[str, Any] = {}
                    order = list(versions)
                    for rnd in range(args.rounds):
                        for version in order if rnd % 2 == 0 else order[::-1]:
                            projection = versions[version][name]
                            with sql.transaction() as cur:
                                projection.clear(cur)
                            started = time.thread_time()
                            for i in range(0, len(events), size):
                                with sql.transaction() as cur:
                                    projection.apply(cur, events[i : i + size])
                            cpu[version].append((time.thread_time() - started) / len(events) * 1e6)
                            left[version] = rows(sql, name)
                    row: dict[str, Any] = {"projection": name, "page": size, "events": len(events)}
                    for version, values in cpu.items():
                        row[f"{version}_cpu_us_per_event"] = round(statistics.median(values), 1)
                        row[f"{version}_range"] = [round(min(values), 1), round(max(values), 1)]
                    if "before" in versions:
                        row["after_over_before"] = round(
                            row["after_cpu_us_per_event"] / row["before_cpu_us_per_event"], 2
                        )
                        row["identical_rows"] = left["before"] == left["after"]
                    results.append(row)
                    print(row, flush=True)
    if args.baseline is not None and not all(r["identical_rows"] for r in results):
        print("the two versions left different rows", file=sys.stderr)
        return 1
    bl.write_results(
        "projection_apply_bench",
        {"baseline": args.baseline, "backend": args.backend, "results": results},
        args.json,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
