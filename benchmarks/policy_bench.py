"""What admission policy costs per accept: the pure decider with the default table against a
policy of the host's, a silent-intent match and an accept without wake.

    python benchmarks/policy_bench.py [--iterations N] [--repeat N] [--json PATH]

Each case decides ``Accept`` of a fresh input on an idle session (``decide`` only:
no evolve, no store), so the figure is the decision's CPU time and the
differences are the policy's:

* default table, prompt (the baseline);
* a host policy (a ``DefaultPolicyTable`` subclass of another version that calls
  ``super().resolve``), prompt: the subclass call and the version stamped on the
  decision;
* peer request, no silent intents set; the same request whose intent the session
  made silent (the match and the wake-none override);
* prompt accepted with ``wake=False``.

Each figure is CPU time (``time.thread_time``), the fastest of ``--repeat`` rounds of
``--iterations`` decisions; rounds interleave the cases (the machine may be shared
and noisy). Prints microseconds per decision and the ratio to the baseline; writes
benchmarks/results/policy_bench.json.
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _benchlib as bl

from meerkat_runtime.events import (
    Accept,
    AdmissionPlan,
    DecisionContext,
    DefaultPolicyTable,
    Input,
    PeerInput,
    PeerRequest,
    PromptInput,
    SessionState,
    decide,
)
from meerkat_runtime.events.inputs import InputHeader, PeerOrigin
from meerkat_runtime.events.timefmt import utc_now

BASELINE = "default table, prompt"


class HostPolicy(DefaultPolicyTable):
    """A host's policy as the docs suggest writing one: a subclass of another version."""

    version = 2

    def resolve(self, input: Input, runtime_idle: bool, **facts: bool) -> AdmissionPlan:
        return super().resolve(input, runtime_idle, **facts)


def build_cases(n: int) -> dict[str, Callable[[], None]]:
    now = utc_now()
    default = DecisionContext(now=now, new_id=uuid.uuid4)
    host = DecisionContext(now=now, new_id=uuid.uuid4, policy=HostPolicy())
    plain = SessionState(session_id="bench")
    silent = SessionState(session_id="bench", silent_intents=frozenset({"mob.peer_added"}))

    def prompts() -> list[Input]:
        return [PromptInput(content="hello", header=InputHeader()) for _ in range(n)]

    def requests() -> list[Input]:
        origin = PeerOrigin(peer_id="peer-b")
        conv = PeerRequest(request_id="r-1", intent="mob.peer_added")
        return [
            PeerInput(content="joined", header=InputHeader(source=origin), convention=conv)
            for _ in range(n)
        ]

    def case(
        state: SessionState, inputs: list[Input], ctx: DecisionContext, wake: bool = True
    ) -> Callable[[], None]:
        def run() -> None:
            for inp in inputs:
                decide(state, Accept(inp, wake=wake), ctx)

        return run

    return {
        BASELINE: case(plain, prompts(), default),
        "host policy (subclass, version 2), prompt": case(plain, prompts(), host),
        "peer request, no silent intents": case(plain, requests(), default),
        "peer request, silent intent match": case(silent, requests(), default),
        "prompt, accept(wake=False)": case(plain, prompts(), default, wake=False),
    }


def measure(cases: dict[str, Callable[[], None]], n: int, repeat: int) -> dict[str, float]:
    best = {name: float("inf") for name in cases}
    for _ in range(repeat):
        for name, run in cases.items():
            start = time.thread_time()
            run()
            best[name] = min(best[name], (time.thread_time() - start) / n * 1e6)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    n, r = args.iterations, args.repeat
    best = measure(build_cases(n), n, r)
    base = best[BASELINE]
    rows: list[list[Any]] = [[name, us, f"{us / base:.2f}x"] for name, us in best.items()]
    print(bl.table(["case", "decide us", "vs default"], rows))
    print(f"(thread CPU time, fastest of {r} interleaved rounds of {n:,} decisions)")
    out = bl.write_results(
        "policy_bench",
        {
            "machine": bl.machine_info(),
            "args": {"iterations": n, "repeat": r},
            "decide_us": best,
            "ratio_to_default": {name: us / base for name, us in best.items()},
        },
        args.json,
    )
    print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
