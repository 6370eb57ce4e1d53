"""Run one benchmark on two versions of the package in the same run: before/after ratios.

    python benchmarks/compare.py --baseline REV|DIR [--rounds 2] [--metrics a,b] \\
        -- accept_bench.py --backends sqlite --seconds 3

``REV`` is a git revision (unpacked with ``git archive`` into a temporary
directory), ``DIR`` a source tree. Each round runs the benchmark script once
per version, each in a fresh process whose ``meerkat_runtime`` and benchmark
script come from that version's tree, alternating which goes first; the
median of the rounds is kept. The script must write its results with
``--json`` in the ``_benchlib.write_results`` layout (lists of rows, such as
``results``); rows are matched by their section and their text, flag and size
fields (backend, mode, snapshot, sessions, ...) and every ``--metrics`` field is printed with its ratio
after/before. Both versions share the machine at the same time of day, so the
ratio is what to read, not the absolute figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import _benchlib as bl

HERE = Path(__file__).resolve().parents[1]
DEFAULT_METRICS = "accepts_per_second,p99_ms,cpu_user_us_per_accept"


def run_once(tree: Path, script: str, args: list[str], out: Path) -> list[dict[str, Any]]:
    """The benchmark's result rows, run from ``tree`` in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, str(tree / "benchmarks" / script), *args, "--json", str(out)]
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    doc = json.loads(out.read_text())
    rows: list[dict[str, Any]] = []
    for section, value in doc.items():
        if section != "targets" and isinstance(value, list):
            rows += [{"section": section, **row} for row in value if isinstance(row, dict)]
    return rows


def _key(row: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(
        (k, v)
        for k, v in row.items()
        if isinstance(v, (str, bool)) or (isinstance(v, int) and k in _IDS)
    )


_IDS = {"sessions", "threads", "events", "size", "batch", "processes", "round"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--baseline", required=True, help="git revision or source directory")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--metrics", default=DEFAULT_METRICS)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("script", help="benchmark script in benchmarks/, e.g. accept_bench.py")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="its arguments (after --)")
    ns = parser.parse_args(argv)
    args = [a for a in ns.args if a != "--"]
    metrics = [m for m in ns.metrics.split(",") if m]
    measured: dict[str, dict[tuple[tuple[str, Any], ...], dict[str, list[float]]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as tmp:
        (Path(tmp) / "tree").mkdir()
        trees = {"before": bl.source_tree(ns.baseline, Path(tmp) / "tree"), "after": HERE}
        for round_ in range(ns.rounds):
            order = ("before", "after") if round_ % 2 == 0 else ("after", "before")
            for which in order:
                bl.log(f"round {round_ + 1}/{ns.rounds}: {which}")
                rows = run_once(trees[which], ns.script, args, Path(tmp) / f"{which}.json")
                for row in rows:
                    slot = measured.setdefault(which, {}).setdefault(_key(row), {})
                    for m in metrics:
                        if isinstance(row.get(m), (int, float)):
                            slot.setdefault(m, []).append(float(row[m]))
    table_rows = []
    summary = []
    for key, after in measured.get("after", {}).items():
        before = measured.get("before", {}).get(key)
        if before is None:
            continue
        label = " ".join(str(v) for _, v in key)
        for m in metrics:
            if m in after and m in before:
                b, a = statistics.median(before[m]), statistics.median(after[m])
                ratio = f"{a / b:.2f}x" if b else "-"
                table_rows.append([label, m, round(b, 1), round(a, 1), ratio])
                summary.append(
                    {
                        "row": dict(key),
                        "metric": m,
                        "before": b,
                        "after": a,
                        "before_rounds": before[m],
                        "after_rounds": after[m],
                    }
                )
    print(f"\nbefore: {ns.baseline}; after: {HERE} ({bl.source_revision()})\n")
    print(bl.table(["row", "metric", "before", "after", "after / before"], table_rows))
    print(
        f"(median of {ns.rounds} rounds per version, alternating order, each in a fresh "
        f"process: {ns.script} {' '.join(args)})"
    )
    out = bl.write_results(
        "compare",
        {
            "machine": bl.machine_info(),
            "args": {"baseline": ns.baseline, "script": ns.script, "args": args},
            "results": summary,
        },
        ns.json,
    )
    print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
