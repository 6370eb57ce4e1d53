"""The asyncio API's edges: what a wait that also has a timeout reports when the runtime
closes, a cancelled open, cancelled batch accepts, and queries that must not cost threads."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from meerkat_runtime import (
    Completed,
    CompletionWaitError,
    MeerkatRuntimeError,
    RunRequest,
    RunResult,
    Runtime,
    RuntimeState,
)
from meerkat_runtime.aio import AsyncRuntime

from ..faulty_store import faulty_store
from ..waiting import WAIT, wait_until
from ._support import HeldAsync, prompt, until

pytestmark = pytest.mark.anyio


async def test_a_timed_wait_cut_short_by_close_says_channel_closed(store_url: str) -> None:
    # CompletionWaitError is a TimeoutError too: a wait with a timeout must not report
    # the runtime closing under it as its own timeout.
    held = HeldAsync()
    rt = await AsyncRuntime.open(store_url, executor=held, close_timeout=0.1)
    out = await rt.session("s").accept(prompt())
    assert out.completion is not None
    await until(lambda: held.started == 1)
    timed = asyncio.ensure_future(out.completion.wait(WAIT))
    untimed = asyncio.ensure_future(out.completion.wait())
    await asyncio.sleep(0)
    await rt.close()
    for waiter in (timed, untimed):
        with pytest.raises(CompletionWaitError) as caught:
            await asyncio.wait_for(waiter, WAIT)
        assert caught.value.kind == "channel_closed"


async def test_a_cancelled_open_closes_the_runtime_it_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = threading.Event()
    opened: list[Runtime] = []
    real_open = Runtime.open

    def slow_open(*args: Any, **kwargs: Any) -> Runtime:
        gate.wait(WAIT)  # the open is under way in its thread when the caller gives up
        rt = real_open(*args, **kwargs)
        opened.append(rt)
        return rt

    monkeypatch.setattr(Runtime, "open", slow_open)
    opening = asyncio.ensure_future(AsyncRuntime.open(f"sqlite:///{tmp_path / 'o.db'}"))
    await asyncio.sleep(0)  # the task has handed the open to the executor
    opening.cancel()
    with pytest.raises(asyncio.CancelledError):
        await opening
    gate.set()
    await until(lambda: bool(opened))

    def closed() -> bool:
        try:
            opened[0].session("s")
        except MeerkatRuntimeError:
            return True
        return False

    try:
        await until(closed)  # nobody holds it: it must not keep its store, leases, threads
    finally:
        await asyncio.get_running_loop().run_in_executor(None, opened[0].close)


async def test_a_cancelled_accept_many_is_kept_whole_once(store_url: str) -> None:
    async with AsyncRuntime.open(store_url) as rt:
        s = rt.session("s")
        docs = [prompt("b1", idempotency_key="b1"), prompt("b2", idempotency_key="b2")]
        batch = asyncio.ensure_future(s.accept_many(docs))
        await asyncio.sleep(0)  # posted to the actor; the answer cannot have reached us yet
        assert not batch.done()
        batch.cancel()
        with pytest.raises(asyncio.CancelledError):
            await batch
        again = await s.accept_many(docs)
        assert [o.kind for o in again] == ["deduplicated", "deduplicated"]
        await rt.projections.wait_caught_up(WAIT)
        assert await rt.ledger.count(session_id="s") == 2
        keyed = [e async for e in s.events() if type(e.event).__name__ == "InputAccepted"]
        assert len(keyed) == 2

        pairs = [("m1", prompt("x", idempotency_key="x")), ("m2", prompt("y", idempotency_key="y"))]
        many = asyncio.ensure_future(rt.accept_many(pairs))
        await asyncio.sleep(0)
        many.cancel()
        with pytest.raises(asyncio.CancelledError):
            await many
        assert [o.kind for o in await rt.accept_many(pairs)] == ["deduplicated"] * 2


async def test_an_accept_cancelled_before_it_ran_sent_nothing(store_url: str) -> None:
    async with AsyncRuntime.open(store_url) as rt:
        s = rt.session("s")
        task = asyncio.ensure_future(s.accept(prompt("never", idempotency_key="k")))
        task.cancel()  # before its first step
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (await s.accept(prompt("now", idempotency_key="k"))).is_accepted


async def test_concurrent_queries_and_commands_start_no_thread(tmp_path: Path) -> None:
    n = 100
    held = HeldAsync()
    async with AsyncRuntime.open(f"sqlite:///{tmp_path / 'q.db'}", executor=held) as rt:
        for i in range(n):
            await rt.session(f"s{i}").accept(prompt())
        await until(lambda: held.started == n)
        before = threading.active_count()
        states = [asyncio.ensure_future(rt.session(f"s{i}").state()) for i in range(n)]
        ids = [asyncio.ensure_future(rt.session(f"s{i}").active_input_ids()) for i in range(n)]
        answers = await asyncio.wait_for(asyncio.gather(*states, *ids), WAIT)
        during = threading.active_count()
        held.gate.set()
    assert during == before, f"{during - before} threads for {2 * n} concurrent calls"
    assert answers[:n] == [RuntimeState.RUNNING] * n
    assert all(len(ids) == 1 for ids in answers[n:])


async def test_repeated_timed_out_waits_leave_nothing_on_the_shared_future(
    tmp_path: Path,
) -> None:
    # A host that polls (``wait(15)`` in a loop, a keep-alive between) must not add one
    # callback to the input's shared future per poll for as long as the input runs.
    held = HeldAsync()
    async with AsyncRuntime.open(f"sqlite:///{tmp_path / 'p.db'}", executor=held) as rt:
        out = await rt.session("s").accept(prompt())
        completion = out.completion
        assert completion is not None
        await until(lambda: held.started == 1)
        for _ in range(50):
            with pytest.raises(CompletionWaitError):
                await completion.wait(0.001)
        waiter = asyncio.ensure_future(completion.wait())
        await asyncio.sleep(0)
        waiter.cancel()
        shared = completion.handle.future
        assert len(shared._done_callbacks) <= 1  # type: ignore[attr-defined]
        held.gate.set()
        assert isinstance(await completion.wait(WAIT), Completed)
        assert isinstance(await completion, Completed)


def test_an_answer_after_the_callers_loop_closed_is_dropped_quietly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A loop that ends (asyncio.run returning, a test's loop) while an accept it posted is
    # still in the store: the actor's answer has nowhere to go, which is not an error.
    store, faults = faulty_store(f"sqlite:///{tmp_path / 'l.db'}")
    posted = threading.Event()
    try:
        with Runtime.open(store) as sync:
            sync.session("s").accept(prompt("load"))
            faults.hold_appends.set()

            async def leave_early() -> None:
                rt = AsyncRuntime(sync)
                late = asyncio.ensure_future(rt.session("s").accept(prompt("late")))
                await asyncio.sleep(0)
                posted.set()
                assert not late.done()

            asyncio.run(leave_early())  # cancels the pending accept and closes the loop
            assert posted.is_set()
            assert faults.append_held.wait(WAIT)
            faults.release_appends.set()
            faults.hold_appends.clear()
            wait_until(lambda: len(sync.store.read_session("s")) > 3, WAIT, "the late append")
            sync.session("s").state()  # the actor has answered by now
    finally:
        faults.clear()
        store.close()
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


def test_a_run_on_a_host_loop_that_has_closed_fails_instead_of_hanging(tmp_path: Path) -> None:
    # The host's loop ended while the runtime stayed open: a run must end (failed, so
    # the retry policy and then the waiter see it), not wait for a loop that is gone.
    loop = asyncio.new_event_loop()

    async def never_runs(request: RunRequest) -> RunResult:
        raise AssertionError("ran on a closed loop")

    with Runtime.open(
        f"sqlite:///{tmp_path / 'x.db'}", executor=never_runs, executor_loop=loop
    ) as sync:
        loop.close()
        out = sync.session("s").accept(prompt())
        assert out.completion is not None
        result = out.completion.wait(WAIT)
    assert not isinstance(result, Completed)
    assert "closed" in str(result)


async def test_wait_zero_reads_a_known_outcome_like_the_sync_wait(store_url: str) -> None:
    held = HeldAsync()
    async with AsyncRuntime.open(store_url, executor=held) as rt:
        out = await rt.session("s").accept(prompt())
        completion = out.completion
        assert completion is not None
        with pytest.raises(CompletionWaitError) as pending:
            await completion.wait(0)  # not terminal yet: a timeout at once
        assert pending.value.kind == "timeout"
        held.gate.set()
        done = await completion.wait(WAIT)
        assert completion.handle.wait(0) == done
        assert await completion.wait(0) == done  # known: returned, not timed out


async def test_eager_recovery_at_open_runs_the_backlog_on_the_hosts_loop(store_url: str) -> None:
    def leave_a_backlog() -> list[Any]:
        with Runtime.open(store_url) as sync:  # no executor: the inputs stay queued
            return [sync.session(f"s{i}").accept(prompt()).input_id for i in range(3)]

    ids = await asyncio.to_thread(leave_a_backlog)
    loops: list[asyncio.AbstractEventLoop] = []

    async def record(request: RunRequest) -> RunResult:
        loops.append(asyncio.get_running_loop())
        return RunResult()

    async with AsyncRuntime.open(store_url, executor=record, recover="eager") as rt:
        assert rt.sync.last_recovery is not None and len(rt.sync.last_recovery) == 3
        for i, input_id in enumerate(ids):
            completion = await rt.session(f"s{i}").completion(input_id)
            assert completion is not None
            assert isinstance(await completion.wait(WAIT), Completed)
    assert loops == [asyncio.get_running_loop()] * 3
