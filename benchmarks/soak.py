"""Crash soak: thousands of SIGKILL trials, each on a fresh store, with totals at the end.

Each trial forks a runtime process (from a zygote that imported everything
once), lets it run a random workload through the public API, SIGKILLs it at
a random moment, reopens the store, recovers and checks that every
acknowledged input is in the log exactly once and in the ledger, that no
decision is torn, that states are what the recovery rules allow, and that
the projections equal a fresh fold (``tests/reliability/_crash.py`` has the
details; the test suite runs the same trials, fewer of them).

    python benchmarks/soak.py --trials 1000                    # SQLite files in a temp dir
    python benchmarks/soak.py --backend postgresql --trials 200 --url postgresql://...

Prints the counts (trials, acked inputs, lost, duplicated, mismatches,
executor calls and duplicate calls outside the documented window) and
exits 1 if anything was lost or duplicated or any check failed (the failed
trials' stores are kept for inspection), 0 otherwise.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.reliability._crash import (
    CampaignTotals,
    TrialResult,
    run_campaign,
    zygote_process,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument(
        "--url",
        default=os.environ.get("MEERKAT_TEST_POSTGRES_URL", ""),
        help="PostgreSQL server URL (each trial uses a fresh schema); "
        "default $MEERKAT_TEST_POSTGRES_URL",
    )
    parser.add_argument("--seed", type=int, default=None, help="campaign seed (default: random)")
    parser.add_argument("--dir", type=Path, default=None, help="where SQLite files go")
    parser.add_argument("--every", type=int, default=50, help="print progress every N trials")
    args = parser.parse_args(argv)
    if args.backend == "postgresql" and not args.url:
        parser.error("--backend postgresql needs --url or $MEERKAT_TEST_POSTGRES_URL")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    directory = args.dir or Path(tempfile.mkdtemp(prefix="meerkat-soak-"))
    directory.mkdir(parents=True, exist_ok=True)
    print(f"soak: backend={args.backend} trials={args.trials} seed={seed} dir={directory}")
    started = time.monotonic()

    def progress(totals: CampaignTotals, result: TrialResult) -> None:
        if not result.ok:
            print("FAILED " + result.describe(), flush=True)
        if totals.trials % args.every == 0 or not result.ok:
            print(
                f"  {totals.trials:5d} trials  {totals.acked:7d} acked  {totals.lost} lost  "
                f"{totals.duplicated} duplicated  {totals.mismatches} mismatches  "
                f"{totals.calls} executor calls  {totals.duplicate_calls} duplicate calls  "
                f"({time.monotonic() - started:.0f} s)",
                flush=True,
            )

    with zygote_process(directory / "zygote.log") as zyg:
        totals = run_campaign(
            zyg, args.backend, args.url, directory, args.trials, seed, progress=progress
        )
    elapsed = time.monotonic() - started
    print(
        f"soak result: backend={args.backend} trials={totals.trials} acked={totals.acked} "
        f"lost={totals.lost} duplicated={totals.duplicated} mismatches={totals.mismatches} "
        f"executor_calls={totals.calls} reexecuted_in_window={totals.reexecuted} "
        f"duplicate_calls_outside_window={totals.duplicate_calls} "
        f"failed_trials={len(totals.failed)} seed={seed} elapsed={elapsed:.0f}s"
    )
    for failure in totals.failed:
        print(failure)
    return 1 if totals.failed else 0


if __name__ == "__main__":
    sys.exit(main())
