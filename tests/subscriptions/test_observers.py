"""``on_runtime_event`` observers (the Rust driver trait's hook): every committed envelope,
in log order, off the accepting threads; one that raises is logged and never breaks accepts."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest

from meerkat_runtime import MeerkatRuntimeError, RuntimeEventEnvelope

from ..waiting import WAIT, wait_until
from .conftest import OpenRuntime


def prompt(text: str) -> dict[str, Any]:
    return {"input_type": "prompt", "content": text}


def test_an_observer_gets_each_committed_envelope_in_order(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    got: list[RuntimeEventEnvelope] = []
    threads: set[str] = set()

    def observer(envelope: RuntimeEventEnvelope) -> None:
        got.append(envelope)
        threads.add(threading.current_thread().name)

    stop = rt.on_runtime_event(observer)
    for sid in ("a", "b", "a"):
        assert rt.session(sid).accept(prompt(sid)).kind == "accepted"
    everything = list(rt.subscribe(timeout=0))
    wait_until(lambda: len(got) == len(everything), what="every event observed")
    stop()
    assert got == everything
    assert threads == {"meerkat-observer"}  # not an accepting or actor thread


def test_an_observer_starts_at_the_head_unless_told(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    rt.session("s").accept(prompt("before"))
    stored = list(rt.session("s").events())
    later: list[RuntimeEventEnvelope] = []
    replayed: list[RuntimeEventEnvelope] = []
    stops = [rt.on_runtime_event(later.append), rt.on_runtime_event(replayed.append, after=0)]
    rt.session("s").accept(prompt("after"))
    every = list(rt.session("s").events())
    wait_until(lambda: len(replayed) == len(every) and len(later) == len(every) - len(stored))
    for stop in stops:
        stop()
    assert replayed == every
    assert later == every[len(stored) :]


def test_an_observer_that_raises_breaks_nothing(
    open_runtime: OpenRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    rt = open_runtime()
    good: list[RuntimeEventEnvelope] = []
    calls = 0

    def bad(envelope: RuntimeEventEnvelope) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("observer bug")

    caplog.set_level(logging.ERROR, logger="meerkat_runtime.subscriptions")
    stops = [rt.on_runtime_event(bad), rt.on_runtime_event(good.append)]
    s = rt.session("s")
    for n in range(3):
        assert s.accept(prompt(f"p{n}")).kind == "accepted"
    every = list(s.events())
    wait_until(lambda: calls == len(every) and len(good) == len(every), what="both observers")
    for stop in stops:
        stop()
    assert good == every
    failures = [r for r in caplog.records if "observer bug" in str(r.exc_info)]
    assert len(failures) == len(every)
    assert "raised on event" in failures[0].getMessage()


def test_stopping_and_closing_end_the_observer(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    got: list[RuntimeEventEnvelope] = []
    stop = rt.on_runtime_event(got.append)
    rt.session("s").accept(prompt("one"))
    first = len(list(rt.session("s").events()))
    wait_until(lambda: len(got) == first)
    stop()
    rt.session("s").accept(prompt("two"))
    # The observer thread is gone, so nothing more arrives (read the whole log to be sure
    # the second accept committed before looking).
    assert len(list(rt.subscribe(timeout=0))) > first
    assert len(got) == first
    kept = rt.on_runtime_event(lambda e: None)
    observers = [t for t in threading.enumerate() if t.name == "meerkat-observer"]
    assert len(observers) == 1
    rt.close()
    observers[0].join(WAIT)
    assert not observers[0].is_alive()
    kept()  # a stop after the close is harmless
    with pytest.raises(MeerkatRuntimeError, match="closed"):
        rt.on_runtime_event(got.append)


def test_no_observer_callback_runs_after_close_returned(open_runtime: OpenRuntime) -> None:
    """close() delivers what committed before it to the observers and waits for them: a
    host that tears down what its callback uses once close() returned is safe."""
    rt = open_runtime()
    seen: list[RuntimeEventEnvelope] = []

    def slow(envelope: RuntimeEventEnvelope) -> None:
        time.sleep(0.02)  # slower than the accepts: a backlog is left at the close
        seen.append(envelope)

    rt.on_runtime_event(slow, after=0)
    for n in range(10):
        assert rt.session("s").accept(prompt(f"p{n}")).kind == "accepted"
    committed = list(rt.subscribe(timeout=0))
    rt.close()
    alive = [t for t in threading.enumerate() if t.name == "meerkat-observer" and t.is_alive()]
    assert alive == []  # before: still delivering the backlog after close() returned
    assert seen == committed  # and it delivered every event committed before the close
