"""The asyncio API on real stores: awaiting costs no thread, async executors run on the
host's loop, cancellation never loses or duplicates an accepted input."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

import pytest

from meerkat_runtime import (
    Cancelled,
    Completed,
    CompletionWaitError,
    EchoExecutor,
    InvalidInput,
    RunRequest,
    RunResult,
    RuntimeState,
)
from meerkat_runtime.aio import AsyncCompletion, AsyncRuntime

from ..faulty_store import faulty_store
from ..waiting import WAIT
from ._support import HeldAsync, prompt, until

pytestmark = pytest.mark.anyio


async def test_accept_and_await_the_completion(store_url: str) -> None:
    async with AsyncRuntime.open(store_url, executor=EchoExecutor()) as rt:
        s = rt.session("chat")
        out = await s.accept(prompt("hi"))
        assert out.is_accepted and out.completion is not None
        done = await out.completion
        assert isinstance(done, Completed) and done.output == {"text": "hi"}
        again = await out.completion.wait(WAIT)  # a second await, the same outcome
        assert again == done
        assert await s.state() is RuntimeState.ATTACHED
        assert (await s.input_state(out.input_id)) is not None
        assert await s.active_input_ids() == []


async def test_async_executor_runs_on_the_hosts_loop(store_url: str) -> None:
    held = HeldAsync()
    async with AsyncRuntime.open(store_url, executor=held) as rt:
        out = await rt.session("s").accept(prompt("x"))
        assert out.completion is not None
        await until(lambda: held.started > 0)
        held.release()
        assert isinstance(await out.completion.wait(WAIT), Completed)
    assert held.loops == [asyncio.get_running_loop()]
    assert held.threads == [threading.get_ident()]


async def test_a_wait_that_times_out_cancels_only_itself(store_url: str) -> None:
    held = HeldAsync()
    async with AsyncRuntime.open(store_url, executor=held) as rt:
        out = await rt.session("s").accept(prompt("x"))
        assert out.completion is not None
        patient = asyncio.ensure_future(out.completion.wait(WAIT))
        with pytest.raises(CompletionWaitError) as timed_out:
            await out.completion.wait(0.05)
        assert timed_out.value.kind == "timeout"
        impatient = asyncio.ensure_future(out.completion.wait(WAIT))
        await asyncio.sleep(0)
        impatient.cancel()
        held.release()
        assert isinstance(await patient, Completed)
        assert impatient.cancelled()
        # The shared handle was never cancelled: the sync API still reads the outcome.
        assert isinstance(out.completion.handle.future.result(WAIT), Completed)


async def test_waiting_costs_no_thread(tmp_path: Any) -> None:
    held = HeldAsync()
    n = 200
    async with AsyncRuntime.open(f"sqlite:///{tmp_path / 'w.db'}", executor=held) as rt:
        outs = [await rt.session(f"s{i}").accept(prompt(str(i))) for i in range(n)]
        await until(lambda: held.started == n)
        before = threading.active_count()
        waiters = [asyncio.ensure_future(o.completion.wait(WAIT)) for o in outs if o.completion]
        await asyncio.sleep(0.05)  # every waiter is parked on its loop future now
        during = threading.active_count()
        assert not any(w.done() for w in waiters)
        held.release()
        results = await asyncio.gather(*waiters)
    assert during == before, f"{during - before} threads for {n} waiting completions"
    assert all(isinstance(r, Completed) for r in results)


async def test_a_cancelled_accept_is_accepted_once_and_a_retry_deduplicates(
    store_url: str,
) -> None:
    store, faults = faulty_store(store_url)
    try:
        async with AsyncRuntime.open(store) as rt:
            s = rt.session("s")
            await s.accept(prompt("first"))  # the session is loaded
            faults.hold_appends.set()
            doc = prompt("once", idempotency_key="k-1")
            task = asyncio.ensure_future(s.accept(doc))
            await until(faults.append_held.is_set)
            task.cancel()  # the caller goes away while the append is in the store
            with pytest.raises(asyncio.CancelledError):
                await task
            faults.release_appends.set()
            faults.hold_appends.clear()
            retry = await s.accept(prompt("once", idempotency_key="k-1"))
            assert retry.is_deduplicated
            keyed = [r for r in store.read_session("s") if "k-1" in str(r.data)]
            assert len(keyed) == 1  # accepted exactly once
            assert retry.existing_id is not None
            assert (await s.input_state(retry.existing_id)) is not None
    finally:
        faults.clear()
        store.close()


async def test_every_lifecycle_operation_and_query_is_awaitable(store_url: str) -> None:
    held = HeldAsync()
    async with AsyncRuntime.open(store_url, executor=held) as rt:
        s = rt.session("ops")
        first = await s.accept(prompt("one"))
        await until(lambda: held.started > 0)
        queued = await s.accept(prompt("two"))
        assert await s.state() is RuntimeState.RUNNING
        assert set(await s.active_input_ids()) == {first.input_id, queued.input_id}
        assert await s.cancel_run("enough")
        assert first.completion is not None
        assert isinstance(await first.completion.wait(WAIT), Cancelled)
        held.release()
        assert queued.completion is not None
        assert isinstance(await queued.completion.wait(WAIT), Completed)
        handle = await s.completion(queued.input_id)
        assert isinstance(handle, AsyncCompletion) and isinstance(await handle, Completed)
        assert await s.completion(uuid.uuid4()) is None
        assert await s.boundary_receipt(uuid.uuid4(), 1) is None
        assert (await s.recycle()) is not None
        assert (await s.reset()) is not None
        assert (await s.retire()) is not None
        assert (await s.recover()) is not None
        assert (await s.stop()) is not None
        assert (await s.recover()) is not None
        assert (await s.destroy()) is not None
        assert await s.state() is RuntimeState.DESTROYED
        events = [e async for e in s.events()]
        assert [e.sequence for e in events] == list(range(1, len(events) + 1))
        later = [e async for e in s.events(after=3)]
        assert later == events[3:]
        with pytest.raises(InvalidInput):
            s.events(after=-1)
        with pytest.raises(InvalidInput):
            await s.cancel_run("")

        batch = await rt.session("batch").accept_many([prompt("a"), prompt("b")])
        assert [o.kind for o in batch] == ["accepted", "accepted"]
        pairs = await rt.accept_many([("m1", prompt("x")), ("m2", prompt("y"))])
        assert [o.kind for o in pairs] == ["accepted", "accepted"]
        for o in batch + pairs:
            assert o.completion is not None
            assert isinstance(await o.completion.wait(WAIT), Completed)

        assert set(await rt.sessions()) == {"ops", "batch", "m1", "m2"}
        await rt.projections.wait_caught_up(WAIT)
        assert (await rt.ledger.get(first.input_id, "ops")) is not None
        assert await rt.ledger.count(session_id="batch") == 2
        assert len(await rt.ledger.list(session_id="m1")) == 1
        assert (await rt.views.get("ops")) is not None
        assert len(await rt.views.list()) == 4
        assert (await rt.verify()).ok
        assert len(await rt.recover()) == 3  # every session but the destroyed one
        assert rt.activity().active_runs == 0


async def test_await_open_then_close(tmp_path: Any) -> None:
    rt = await AsyncRuntime.open(f"sqlite:///{tmp_path / 'c.db'}")
    out = await rt.session("s").accept(prompt())
    assert out.is_accepted
    await rt.close()
    await rt.close()  # idempotent
    with pytest.raises(ValueError, match="own loop"):
        AsyncRuntime.open("memory://", executor_loop=asyncio.get_running_loop())


async def test_closing_cancels_its_executor_tasks_and_leaves_the_hosts_loop(tmp_path: Any) -> None:
    cancelled = asyncio.Event()
    started = asyncio.Event()

    async def stuck(request: RunRequest) -> RunResult:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return RunResult()

    rt = await AsyncRuntime.open(
        f"sqlite:///{tmp_path / 'k.db'}", executor=stuck, close_timeout=0.2
    )
    await rt.session("s").accept(prompt())
    await asyncio.wait_for(started.wait(), WAIT)
    await rt.close()
    await asyncio.wait_for(cancelled.wait(), WAIT)
    assert asyncio.get_running_loop().is_running()


async def test_a_never_used_session_is_not_found_until_created(store_url: str) -> None:
    from meerkat_runtime import SessionNotFound

    async with AsyncRuntime.open(store_url) as rt:
        with pytest.raises(SessionNotFound):
            await rt.session("ghost").destroy()
        made = await rt.create_session("made")
        assert await made.state() is RuntimeState.IDLE
        assert await rt.sessions() == ["made"]
