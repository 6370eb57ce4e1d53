"""What the operations registry costs the pure core, against the same work without it.

    python benchmarks/operations_bench.py [--operations N] [--repeat N]

A session log of N operations, each ``started``, two ``progress`` and a terminal
event (4N operation inputs, 4N ``input.accepted`` envelopes), made by the pure
decider. Measured in the same run, CPU time (``time.thread_time``), fastest of
``--repeat`` interleaved rounds:

* decide+evolve: accepting the 4N inputs one by one (``execute``), with the
  registry's accept-time guard and fold, and again with both switched off (the
  baseline: what accepting an operation input cost before the registry);
* fold: refolding the log from scratch, with and without the registry's fold;
* snapshot: ``state_to_snapshot`` + ``state_from_snapshot`` of the final state,
  with and without the registry in it.

Prints microseconds per operation input and the ratio with/without; writes
benchmarks/results/operations_bench.json. Retention caps the registry at 256
terminal operations, so N above that measures the steady state.
"""

from __future__ import annotations

import argparse
import functools
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import _benchlib as bl

import meerkat_runtime.events.session as session_module
from meerkat_runtime.events.inputs import (
    InputHeader,
    OperationCancelled,
    OperationCompleted,
    OperationEvent,
    OperationFailed,
    OperationInput,
    OperationProgress,
    OperationStarted,
)
from meerkat_runtime.events.operations import OperationRegistry
from meerkat_runtime.events.session import (
    Accept,
    DecisionContext,
    SessionState,
    execute,
    fold,
    state_from_snapshot,
    state_to_snapshot,
)

SID = "bench-ops"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def inputs(n: int) -> list[OperationInput]:
    out: list[OperationInput] = []
    for i in range(n):
        op = f"op-{i}"
        end: OperationEvent = (
            OperationCompleted(id=op, result={"n": i}),
            OperationFailed(id=op, error="boom"),
            OperationCancelled(id=op),
        )[i % 3]
        for ev in (
            OperationStarted(id=op, kind="tool"),
            OperationProgress(id=op, message="a", percent=10.0),
            OperationProgress(id=op, message="b", percent=None),
            end,
        ):
            out.append(OperationInput(operation_id=op, event=ev, header=InputHeader()))
    return out


class _NoRegistry(OperationRegistry):
    """A registry that keeps nothing: the baseline (an operation input before the registry)."""

    def apply(self, operation_id: str, event: OperationEvent, at: datetime, sequence: int) -> None:
        pass

    def terminate(self, reason: str, at: datetime, sequence: int) -> None:
        pass


@contextmanager
def registry(on: bool) -> Iterator[None]:
    """Switch the accept-time guard off when ``on`` is False (the fold: see ``state``)."""
    name = "check_operation_input"
    saved = getattr(session_module, name)
    if not on:
        setattr(session_module, name, lambda registry, inp: None)
    try:
        yield
    finally:
        setattr(session_module, name, saved)


def state(on: bool) -> SessionState:
    st = SessionState(session_id=SID)
    if not on:
        st.operations = _NoRegistry()
    return st


def accept_all(items: list[OperationInput], on: bool) -> tuple[SessionState, list[Any]]:
    st = state(on)
    log: list[Any] = []
    clock = iter(T0 + timedelta(microseconds=k) for k in range(10**9))
    ctx = DecisionContext(now=T0, new_id=uuid.uuid4)
    for inp in items:
        ctx.now = next(clock)
        decision, _ = execute(st, Accept(inp), ctx)
        log.extend(decision.events)
    return st, log


def round_trip(st: SessionState) -> SessionState:
    return state_from_snapshot(state_to_snapshot(st))


def cpu(fn: Callable[[], object]) -> float:
    start = time.thread_time()
    fn()
    return time.thread_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--operations", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    items = inputs(args.operations)
    n = len(items)
    best: dict[str, float] = {}

    def keep(name: str, seconds: float) -> None:
        best[name] = min(best.get(name, seconds), seconds)

    for _ in range(args.repeat):
        for on in (True, False):
            tag = "with" if on else "without"
            with registry(on):
                keep(f"decide_{tag}", cpu(functools.partial(accept_all, items, on)))
                final, log = accept_all(items, on)
                keep(f"fold_{tag}", cpu(functools.partial(fold, log, state(on))))
                keep(f"snapshot_{tag}", cpu(functools.partial(round_trip, final)))
    rows = []
    for what in ("decide", "fold", "snapshot"):
        with_, without = best[f"{what}_with"], best[f"{what}_without"]
        rows.append(
            {
                "step": what,
                "us_per_input_with": with_ / n * 1e6,
                "us_per_input_without": without / n * 1e6,
                "ratio": with_ / without,
            }
        )
    print(
        bl.table(
            ["step", "us/input with registry", "without", "with / without"],
            [
                [r["step"], r["us_per_input_with"], r["us_per_input_without"], r["ratio"]]
                for r in rows
            ],
        )
    )
    path = bl.write_results(
        "operations_bench",
        {"operations": args.operations, "inputs": n, "rows": rows, "machine": bl.machine_info()},
    )
    bl.log(f"wrote {path}")


if __name__ == "__main__":
    main()
