"""The completion registry: futures only when a host waits; weakly held; resolved once."""

from __future__ import annotations

import gc
import threading
import uuid

import pytest

from meerkat_runtime.actors._completion import CompletionRegistry
from meerkat_runtime.errors import CompletionWaitError
from meerkat_runtime.events.completion import Completed

DONE = Completed(run_id=uuid.UUID(int=1), output="ok")


def test_a_host_holding_only_the_future_still_gets_the_outcome() -> None:
    reg = CompletionRegistry()
    iid = uuid.uuid4()
    fut = reg.handle("s", iid, None).future  # the handle itself is dropped here
    gc.collect()
    assert reg.pending_count() == 1
    reg.resolve("s", iid, DONE)
    assert fut.result(1) == DONE
    assert reg.pending_count() == 0


def test_dropped_handles_unregister_and_cost_nothing() -> None:
    reg = CompletionRegistry()
    for _ in range(100):
        reg.handle("s", uuid.uuid4(), None)
    gc.collect()
    assert reg.pending_count() == 0


def test_handles_on_one_input_share_the_outcome_whenever_they_ask() -> None:
    reg = CompletionRegistry()
    iid = uuid.uuid4()
    early, late = reg.handle("s", iid, None), reg.handle("s", iid, None)
    waiting = early.future
    assert not early.done() and not late.done()
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(early.wait(10)))
    waiter.start()
    reg.resolve("s", iid, DONE)
    waiter.join(10)
    assert got == [DONE]
    assert waiting.result(0) == DONE
    assert late.done() and late.wait(0) == DONE and late.future.result(0) == DONE
    assert reg.handle("s", iid, DONE).wait() == DONE  # already terminal: resolved at once


def test_wait_times_out_and_close_fails_every_waiter() -> None:
    reg = CompletionRegistry()
    asked, unasked = reg.handle("s", uuid.uuid4(), None), reg.handle("s", uuid.uuid4(), None)
    fut = asked.future
    with pytest.raises(CompletionWaitError) as info:
        asked.wait(0.01)
    assert info.value.kind == "timeout"
    reg.close()
    for h in (asked, unasked, reg.handle("s", uuid.uuid4(), None)):
        assert h.done()
        with pytest.raises(CompletionWaitError) as info:
            h.wait(1)
        assert info.value.kind == "channel_closed"
    assert isinstance(fut.exception(0), CompletionWaitError)


def test_the_same_input_id_in_two_sessions_is_two_inputs() -> None:
    reg = CompletionRegistry()
    iid = uuid.uuid4()
    a, b = reg.handle("a", iid, None), reg.handle("b", iid, None)
    reg.resolve("b", iid, DONE)
    assert b.done() and b.wait(0) == DONE
    assert not a.done()  # session b's input never resolves session a's waiter
    other = Completed(run_id=uuid.UUID(int=2), output="a")
    reg.resolve("a", iid, other)
    assert a.wait(0) == other
