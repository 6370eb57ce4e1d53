"""The asyncio counterparts of the operations registry and the user interrupt: awaited
reads, ``wait_operations`` awaited without a thread per wait, refusals as in the sync API."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from meerkat_runtime import (
    CompletionWaitError,
    OperationLifecycleError,
    OperationStatus,
    UserInterruptObservation,
    UserInterruptPublicResult,
)
from meerkat_runtime.aio import AsyncRuntime

from ._support import HeldAsync, prompt, until

pytestmark = pytest.mark.anyio


def op(op_id: str, event: dict[str, Any]) -> dict[str, Any]:
    return {"input_type": "operation", "operation_id": op_id, "event": {**event, "id": op_id}}


def started(op_id: str) -> dict[str, Any]:
    return op(op_id, {"type": "started", "kind": "tool"})


def completed(op_id: str, result: Any = "done") -> dict[str, Any]:
    return op(op_id, {"type": "completed", "result": result})


async def test_reads_and_refusals(store_url: str) -> None:
    async with AsyncRuntime.open(store_url) as rt:
        s = rt.session("s")
        await s.accept_many([started("a"), started("b"), completed("b", 2)])
        assert [r.operation_id for r in await s.operations()] == ["a", "b"]
        b = await s.operation("b")
        assert b is not None and b.status is OperationStatus.COMPLETED and b.result == 2
        assert await s.operation("ghost") is None
        batch = await s.operation_completions()
        assert [e.operation.operation_id for e in batch.entries] == ["b"]
        assert (await s.operation_completions(after=batch.watermark)).entries == ()
        refused = await s.accept(completed("b"))
        assert refused.is_accepted and refused.operation_error is not None
        assert refused.operation_error.kind == "invalid_transition"
        with pytest.raises(OperationLifecycleError, match="not found"):
            await s.wait_operations(["ghost"])
        with pytest.raises(CompletionWaitError) as info:
            await s.wait_operations(["a"], timeout=0.01)
        assert info.value.kind == "timeout"
        assert rt.sync._services.operations.pending_count() == 0


async def test_wait_operations_costs_no_thread_and_resolves_each_waiter(store_url: str) -> None:
    async with AsyncRuntime.open(store_url) as rt:
        n = 50
        sessions = [rt.session(f"s{i}") for i in range(n)]
        for s in sessions:
            await s.accept(started("op"))
        before = threading.active_count()
        waiters = [asyncio.ensure_future(s.wait_operations(["op"], timeout=30)) for s in sessions]
        await until(lambda: rt.sync._services.operations.pending_count() == n)
        during = threading.active_count()
        for s in sessions:
            await s.accept(completed("op", s.id))
        results = await asyncio.gather(*waiters)
    assert during == before, f"{during - before} threads for {n} waits"
    assert [r[0].result for r in results] == [s.id for s in sessions]


async def test_a_cancelled_wait_leaves_no_waiter_and_others_still_resolve(store_url: str) -> None:
    async with AsyncRuntime.open(store_url) as rt:
        s = rt.session("s")
        await s.accept(started("op"))
        gone = asyncio.ensure_future(s.wait_operations(["op"]))
        kept = asyncio.ensure_future(s.wait_operations(["op"]))
        await until(lambda: rt.sync._services.operations.pending_count() == 2)
        gone.cancel()
        await until(lambda: rt.sync._services.operations.pending_count() == 1)
        await s.accept(completed("op"))
        (rec,) = await kept
        assert rec.status is OperationStatus.COMPLETED and gone.cancelled()


async def test_interrupt_cancels_the_run_in_flight(store_url: str) -> None:
    held = HeldAsync()
    async with AsyncRuntime.open(store_url, executor=held) as rt:
        s = rt.session("s")
        out = await s.accept(prompt("hi"))
        await until(lambda: held.started == 1)
        got = await s.interrupt("stop that")
        assert got.result is UserInterruptPublicResult.INTERRUPTED and got.interrupted
        assert got.observation is UserInterruptObservation.ACCEPTED and got.run_id is not None
        assert out.completion is not None
        assert (await out.completion).__class__.__name__ == "Cancelled"
        again = await s.interrupt()
        assert again.observation is UserInterruptObservation.ATTACHED_NOOP
        assert again.result is UserInterruptPublicResult.INTERRUPTED and not again.interrupted
        assert await s.interrupt_if_current(got.run_id) is False
        held.release()
        ghost = await rt.session("ghost").interrupt()
        assert ghost.result is UserInterruptPublicResult.NOT_FOUND
