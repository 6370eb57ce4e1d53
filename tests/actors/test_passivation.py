"""Passivation: many sessions with a bounded number of live actors (and threads)."""

from __future__ import annotations

import threading
import uuid

import pytest

from meerkat_runtime import (
    Completed,
    EchoExecutor,
    InputLifecycleState,
    Runtime,
    RuntimeState,
    RuntimeTerminated,
)

from ..faulty_store import faulty_store
from ..waiting import WAIT, wait_until
from ._support import GatedExecutor, peer_progress, phase, prompt
from .conftest import OpenRuntime

L = InputLifecycleState


class ThreadSampler:
    """Samples ``threading.active_count()`` on a thread of its own while a test runs."""

    def __init__(self) -> None:
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.samples.append(threading.active_count())

    def __enter__(self) -> ThreadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak(self) -> int:
        return max(self.samples, default=threading.active_count())


def touch_in_turn(url: str, sessions: int, max_live: int) -> None:
    """One accept into each of ``sessions`` sessions; live actors and threads stay bounded."""
    with Runtime.open(url, max_live_sessions=max_live) as rt:
        baseline = threading.active_count()
        ids: dict[str, uuid.UUID] = {}
        with ThreadSampler() as sampler:
            for n in range(sessions):
                sid = f"s-{n:05d}"
                out = rt.session(sid).accept(prompt(f"p{n}"))
                assert out.kind == "accepted"
                ids[sid] = out.input_id
                if n % 97 == 0:
                    sampler.samples.append(threading.active_count())
                    assert rt.live_session_count() <= max_live
        assert rt.live_session_count() <= max_live
        # a few threads may still be finishing after their actor was stopped
        assert sampler.peak <= baseline + max_live + 32, (sampler.peak, baseline)
        assert len(rt.sessions()) == sessions
        step = max(1, sessions // 200)
        for sid in list(ids)[::step]:
            s = rt.session(sid)
            assert phase(s, ids[sid]) is L.QUEUED
            assert s.active_input_ids() == [ids[sid]]
            assert s.state() is RuntimeState.IDLE
        assert rt.live_session_count() <= max_live


def test_lru_passivation_memory() -> None:
    touch_in_turn("memory://", sessions=1000, max_live=50)


def test_lru_passivation_sqlite(sqlite_url: str) -> None:
    touch_in_turn(sqlite_url, sessions=250, max_live=30)


@pytest.mark.slow
@pytest.mark.timeout(1200)  # a campaign: minutes on a loaded 2-core machine
def test_lru_passivation_20000_sessions_memory() -> None:
    touch_in_turn("memory://", sessions=20_000, max_live=500)


@pytest.mark.slow
@pytest.mark.timeout(1200)  # a campaign: minutes on a loaded 2-core machine
def test_lru_passivation_3000_sessions_sqlite(sqlite_url: str) -> None:
    touch_in_turn(sqlite_url, sessions=3000, max_live=500)


def test_idle_timeout_passivates_and_state_survives(open_runtime: OpenRuntime) -> None:
    rt = open_runtime(idle_timeout=0.1)
    ids = {f"s-{n}": rt.session(f"s-{n}").accept(prompt()).input_id for n in range(10)}
    wait_until(lambda: rt.live_session_count() == 0, what="idle actors to passivate")
    for sid, iid in ids.items():
        assert rt.session(sid).active_input_ids() == [iid]
    assert rt.live_session_count() > 0  # the reads started them again...
    wait_until(lambda: rt.live_session_count() == 0)  # ...and they passivate again


def test_handle_from_before_passivation_resolves_after_restart(open_runtime: OpenRuntime) -> None:
    rt = open_runtime(executor=EchoExecutor(), idle_timeout=0.1)
    s = rt.session("s-1")
    waiting = s.accept(peer_progress())  # wake none: queued, and the session is idle
    assert waiting.completion is not None
    wait_until(lambda: rt.live_session_count() == 0, what="passivation")
    assert not waiting.completion.done()
    s.accept(prompt("wake up"))  # restarts the actor; the run takes both inputs
    outcome = waiting.completion.wait(WAIT)
    assert isinstance(outcome, Completed)


def test_handle_resolves_after_lru_eviction(open_runtime: OpenRuntime) -> None:
    rt = open_runtime(max_live_sessions=2)
    first = rt.session("s-0").accept(prompt())
    for n in range(1, 5):
        rt.session(f"s-{n}").accept(prompt())
    assert rt.live_session_count() <= 2
    assert first.completion is not None and not first.completion.done()
    rt.session("s-0").stop()
    outcome = first.completion.wait(WAIT)
    assert isinstance(outcome, RuntimeTerminated) and outcome.reason == "stopped"


def test_busy_session_is_not_passivated(open_runtime: OpenRuntime) -> None:
    ex = GatedExecutor()
    rt = open_runtime(executor=ex, idle_timeout=0.05, max_live_sessions=1)
    busy = rt.session("busy")
    out = busy.accept(prompt())
    ex.wait_started()
    # neither the idle sweep nor LRU pressure stops an actor with a run in flight
    for n in range(3):
        rt.session(f"other-{n}").accept(peer_progress())
    threading.Event().wait(0.3)  # several sweeps
    assert "busy" in rt.sessions()
    assert rt.live_session_count() >= 1
    ex.release()
    assert out.completion is not None and isinstance(out.completion.wait(WAIT), Completed)
    wait_until(lambda: rt.live_session_count() == 0)


def test_recover_all_keeps_threads_bounded(sqlite_url: str) -> None:
    """``rt.recover()`` touches every session; on a slow store it must not start them all at once."""
    with Runtime.open(sqlite_url, max_live_sessions=20) as rt:
        for n in range(200):
            rt.session(f"s-{n}").accept(prompt(durability="ephemeral"))
    store, faults = faulty_store(sqlite_url)
    faults.append_delay = 0.005  # cold recovery appends (it abandons the ephemeral inputs)
    try:
        with Runtime.open(store, max_live_sessions=20) as rt2:
            baseline = threading.active_count()
            with ThreadSampler() as sampler:
                reports = rt2.recover()
            assert len(reports) == 200
            assert all(r.inputs_abandoned == 1 for r in reports)
            assert rt2.live_session_count() <= 20
            assert sampler.peak <= baseline + 20 + 32, (sampler.peak, baseline)
    finally:
        store.close()
