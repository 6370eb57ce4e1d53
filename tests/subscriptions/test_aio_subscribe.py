"""Push subscriptions with the asyncio API: ``async for`` over committed events without a
thread per subscriber, resumable, ending cleanly; asyncio ``on_runtime_event`` observers."""

from __future__ import annotations

import asyncio
import gc
import threading
from typing import Any

import pytest

from meerkat_runtime import RuntimeEventEnvelope
from meerkat_runtime.aio import AsyncRuntime
from meerkat_runtime.events.runtime_event import InputAccepted

from ..aio._support import until

pytestmark = pytest.mark.anyio


def prompt(text: str) -> dict[str, Any]:
    return {"input_type": "prompt", "content": text}


async def test_async_session_subscription_yields_events_as_they_commit(store_url: str) -> None:
    async with AsyncRuntime.open(store_url) as rt:
        s = rt.session("s")
        got: list[RuntimeEventEnvelope] = []

        async def consume() -> None:
            async for envelope in s.subscribe():
                got.append(envelope)

        task = asyncio.create_task(consume())
        for n in range(3):
            await s.accept(prompt(f"p{n}"))
            stored = [e async for e in s.events()]
            await until(lambda: len(got) == len(stored))  # noqa: B023
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert got == [e async for e in s.events()]


async def test_an_async_session_subscription_ends_with_the_session(store_url: str) -> None:
    async with AsyncRuntime.open(store_url) as rt:
        s = rt.session("doomed")
        await s.accept(prompt("one"))
        got: list[RuntimeEventEnvelope] = []

        async def consume() -> None:
            async for envelope in s.subscribe():
                got.append(envelope)

        task = asyncio.create_task(consume())
        stored = [e async for e in s.events()]
        await until(lambda: len(got) == len(stored))
        await s.destroy()
        await asyncio.wait_for(task, 30)  # ends by itself after the destroy
        assert got[-1].event.event_code == "topology.runtime_destroyed"
        assert got == [e async for e in s.events()]
        late = [e async for e in s.subscribe(after=got[-1].sequence)]
        assert late == []


async def test_async_whole_store_resumes_from_a_position(store_url: str) -> None:
    async with AsyncRuntime.open(store_url) as rt:
        for sid in ("a", "b"):
            await rt.session(sid).accept(prompt(sid))
        sub = rt.subscribe(timeout=0)
        first = await anext(sub)
        position = sub.position
        rest = [e async for e in rt.subscribe(after=position, timeout=0)]
        await sub.aclose()
        everything = [e async for e in rt.subscribe(timeout=0)]
        assert [first, *rest] == everything
        assert everything == list(rt.sync.subscribe(timeout=0))
        assert sub.closed


async def test_until_and_close_end_async_iteration(store_url: str) -> None:
    async with AsyncRuntime.open(store_url) as rt:
        s = rt.session("s")
        accepted = s.subscribe(until=lambda e: isinstance(e.event, InputAccepted))
        waiting = rt.subscribe()

        async def drain(sub: Any) -> list[RuntimeEventEnvelope]:
            return [e async for e in sub]

        ending = asyncio.create_task(drain(accepted))
        blocked = asyncio.create_task(drain(waiting))
        await s.accept(prompt("one"))
        got = await asyncio.wait_for(ending, 60)
        assert [e.event.event_code for e in got][-1] == "input.accepted"
        await until(lambda: rt.sync._feed._started)
        waiting.close()  # from the loop, while the other task waits on its event
        assert isinstance(await asyncio.wait_for(blocked, 60), list)


async def test_closing_the_runtime_ends_async_subscriptions(store_url: str) -> None:
    rt = await AsyncRuntime.open(store_url)
    sub = rt.subscribe()
    task = asyncio.create_task(anext(sub, None))
    await until(lambda: rt.sync._feed._started)
    await rt.close()
    assert await asyncio.wait_for(task, 60) is None


async def test_an_async_subscriber_sees_the_events_committed_before_the_close(
    store_url: str,
) -> None:
    """As with the sync API: every event committed before the runtime closed, then the end
    (failed before: the iteration ended at once, without them)."""
    rt = await AsyncRuntime.open(store_url)
    with rt.sync.subscribe():  # starts the runtime's feed (an async one does at its first read)
        await until(lambda: rt.sync._feed.head() >= 0)
    sub = rt.subscribe(after=rt.sync.store.max_position())  # read only after the close
    s = rt.session("s")
    await s.accept(prompt("one"))
    await s.accept(prompt("two"))
    stored = [e async for e in s.events()]
    await rt.close()
    assert [e async for e in sub] == stored
    assert sub.closed


async def test_waiting_async_subscribers_hold_no_threads(store_url: str) -> None:
    async with AsyncRuntime.open(store_url) as rt:
        await rt.session("warm").accept(prompt("warm"))
        # Warm the default executor and the feed's poller/listener before counting.
        [e async for e in rt.subscribe(timeout=0)]
        before = threading.active_count()
        subs = [rt.session(f"s{n}").subscribe() for n in range(200)]
        tasks = [asyncio.create_task(anext(sub, None)) for sub in subs]
        await until(lambda: all(sub._event is not None for sub in subs))
        await asyncio.sleep(0.05)  # let the reads settle into waits
        during = threading.active_count()
        await rt.session("s7").accept(prompt("wake one"))
        woken = await asyncio.wait_for(tasks[7], 60)
        assert woken is not None and woken.runtime_id == "s7"
        for sub in subs:
            sub.close()
        await asyncio.gather(*tasks)
    # The default executor may add a few threads for the reads; never one per subscriber.
    assert during - before < 20, (before, during)


async def test_an_async_observer_can_be_stopped_from_another_thread(store_url: str) -> None:
    """``stop()`` from a thread that is not the loop's: the task is cancelled through the
    loop (``Task.cancel`` there raised in asyncio debug mode, and in normal mode might not
    wake the loop)."""
    asyncio.get_running_loop().set_debug(True)  # refuses non-thread-safe calls
    async with AsyncRuntime.open(store_url) as rt:
        seen: list[RuntimeEventEnvelope] = []
        stop = rt.on_runtime_event(seen.append)
        await rt.session("s").accept(prompt("one"))
        await until(lambda: len(seen) > 0)
        errors: list[BaseException] = []

        def stop_there() -> None:
            try:
                stop()
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=stop_there)
        thread.start()
        thread.join(30)
        assert errors == []
        await until(lambda: not rt._observers)  # the observer's task ended
        count = len(seen)
        await rt.session("s").accept(prompt("two"))
        await asyncio.sleep(0.1)
        assert len(seen) == count


async def test_async_observers(store_url: str) -> None:
    async with AsyncRuntime.open(store_url) as rt:
        plain: list[RuntimeEventEnvelope] = []
        awaited: list[RuntimeEventEnvelope] = []
        loop_threads: set[int] = set()

        async def coroutine_observer(envelope: RuntimeEventEnvelope) -> None:
            loop_threads.add(threading.get_ident())
            await asyncio.sleep(0)
            awaited.append(envelope)

        def failing(envelope: RuntimeEventEnvelope) -> None:
            raise RuntimeError("observer bug")

        stops = [
            rt.on_runtime_event(plain.append),
            rt.on_runtime_event(coroutine_observer),
            rt.on_runtime_event(failing),
        ]
        await rt.session("s").accept(prompt("one"))
        every = [e async for e in rt.session("s").events()]
        await until(lambda: len(plain) == len(awaited) == len(every))
        for stop in stops:
            stop()
        assert plain == awaited == every
        assert loop_threads == {threading.get_ident()}  # on the host's loop, no thread


async def test_an_abandoned_async_subscription_is_forgotten(store_url: str) -> None:
    """A task iterating a subscription is cancelled and nobody closes it: once it is
    garbage, the feed stops waking it (it kept a waker, and the loop, for good)."""
    async with AsyncRuntime.open(store_url) as rt:
        feed = rt.sync._feed
        await rt.session("s").accept(prompt("one"))

        async def first_then_wait() -> None:
            sub = rt.subscribe()
            async for _ in sub:
                pass  # waits for more after the stored events, until cancelled

        task = asyncio.create_task(first_then_wait())
        await until(lambda: len(feed._wakers) == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        del task
        gc.collect()
        await rt.session("s").accept(prompt("two"))  # a wake finds the waker dead
        await until(lambda: not feed._wakers)


def test_closing_an_async_subscription_from_another_thread_wakes_its_loop(
    store_url: str,
) -> None:
    """``close()`` from a thread that is not the loop's ends a waiting ``async for``.

    Failed before: ``close`` set the loop's ``asyncio.Event`` off its loop, which does
    not wake the loop; with nothing else scheduled the iteration slept on for good.
    The loop here has nothing else to do, so only the close can wake it.
    """
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    try:

        async def open_() -> AsyncRuntime:
            return await AsyncRuntime.open(store_url)

        rt = asyncio.run_coroutine_threadsafe(open_(), loop).result(60)
        sub = rt.subscribe()

        async def drain() -> list[RuntimeEventEnvelope]:
            return [e async for e in sub]

        ending = asyncio.run_coroutine_threadsafe(drain(), loop)

        def parked() -> bool:  # the iteration waits on its event (CPython's Event._waiters)
            return sub._event is not None and bool(getattr(sub._event, "_waiters", None))

        ready = threading.Event()
        while not ready.wait(0.005):
            if parked():
                ready.set()
        sub.close()  # from this thread, not the loop's
        try:
            assert ending.result(60) == []
        finally:
            loop.call_soon_threadsafe(lambda: None)  # unstick a failed run's loop
        asyncio.run_coroutine_threadsafe(rt.close(), loop).result(60)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join(60)
        loop.close()
