"""Session hosts: many live session actors on a few OS threads."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from meerkat_runtime import Runtime
from meerkat_runtime.events.session import SessionState

from ._support import prompt

EXECUTOR_THREADS = 2
SESSION_THREADS = 4


@pytest.mark.parametrize(("url_kind", "sessions"), [("memory", 10_000), ("sqlite", 2_000)])
def test_many_live_sessions_run_on_a_fixed_set_of_threads(
    url_kind: str, sessions: int, sqlite_url: str
) -> None:
    """Live sessions cost no thread: the count stays at the hosts, pools and helpers."""
    url = "memory://" if url_kind == "memory" else sqlite_url
    with Runtime.open(
        url,
        max_live_sessions=sessions,
        session_threads=SESSION_THREADS,
        executor_threads=EXECUTOR_THREADS,
        projections=False,
    ) as rt:
        baseline = threading.active_count()
        peak = baseline

        def accept(n: int) -> str:
            return rt.session(f"s-{n}").accept(prompt(f"hi {n}")).kind

        with ThreadPoolExecutor(8) as pool:  # the host app's threads, counted in the peak
            kinds = []
            for start in range(0, sessions, 500):
                kinds += list(pool.map(accept, range(start, start + 500)))
                peak = max(peak, threading.active_count())
        assert kinds == ["accepted"] * sessions
        assert rt.live_session_count() == sessions  # every one of them is live now
        # Started after the baseline: at most the host app's 8 threads plus what the
        # runtime may start lazily (its executor pool); never a thread per session.
        assert peak - baseline <= 8 + EXECUTOR_THREADS, (peak, baseline)
        assert threading.active_count() - baseline <= EXECUTOR_THREADS


def test_the_runtime_starts_its_session_hosts_and_no_more(sqlite_url: str) -> None:
    before = threading.active_count()
    with Runtime.open(sqlite_url, session_threads=3, projections=False) as rt:
        for n in range(50):
            assert rt.session(f"s-{n}").accept(prompt()).kind == "accepted"
        hosts = [t for t in threading.enumerate() if "SessionHost" in t.name]
        assert len(hosts) == 3
        assert threading.active_count() - before < 50
    # Closing stops them all.
    assert not [t for t in threading.enumerate() if "SessionHost" in t.name and t.is_alive()]


def test_session_threads_must_be_positive() -> None:
    with pytest.raises(ValueError, match="session_threads"):
        Runtime.open("memory://", session_threads=0)


def test_a_caller_runs_an_idle_session_s_turn_itself(sqlite_url: str) -> None:
    """A host call waits for its answer anyway: on an idle session its turn runs on the
    caller's thread (no host wake-up, no hand-off); a busy session's host runs it."""
    with Runtime.open(sqlite_url, projections=False) as rt:
        s = rt.session("here")
        assert s.accept(prompt()).kind == "accepted"
        ran_on = s._query(lambda st, attached: threading.current_thread())
        assert ran_on is threading.current_thread()

        # Busy: a turn in progress on another thread holds the actor; what a second
        # caller sends meanwhile is run by the session's host, after it (in mailbox
        # order): neither caller runs the other's message.
        entered, release = threading.Event(), threading.Event()

        def hold(st: object, attached: bool) -> threading.Thread:
            entered.set()
            assert release.wait(10)
            return threading.current_thread()

        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(s._query, hold)
            assert entered.wait(10)
            second = pool.submit(s._query, lambda st, attached: threading.current_thread())
            release.set()
            holder, follower = first.result(10), second.result(10)
        assert holder is not follower and holder is not threading.current_thread()
        assert "SessionHost" in follower.name
        assert s.accept(prompt()).kind == "accepted"


def test_turns_of_one_session_never_overlap_whoever_runs_them(sqlite_url: str) -> None:
    """Callers race to run idle sessions' turns: still one message at a time per session,
    in each caller's order."""
    active: dict[str, int] = {"a": 0, "b": 0}
    overlaps: list[str] = []
    guard = threading.Lock()

    def visit(name: str) -> Callable[[SessionState, bool], int]:
        def fn(st: SessionState, attached: bool) -> int:
            with guard:
                active[name] += 1
                if active[name] != 1:
                    overlaps.append(name)
            threading.Event().wait(0.0005)
            with guard:
                active[name] -= 1
            return st.version

        return fn

    with Runtime.open(sqlite_url, projections=False) as rt:
        sessions = {name: rt.session(name) for name in active}
        for s in sessions.values():
            s.accept(prompt())

        def work(t: int) -> list[int]:
            name = "a" if t % 2 else "b"
            versions = []
            for n in range(30):
                if n % 3 == 0:
                    sessions[name].accept(prompt(f"{t}-{n}"))
                versions.append(sessions[name]._query(visit(name)))
            return versions

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(work, range(8)))
    assert overlaps == []
    for versions in results:
        assert versions == sorted(versions)  # each caller sees its own accepts in order


def test_an_accept_run_on_its_caller_returns_without_waiting_for_the_run_start(
    sqlite_url: str,
) -> None:
    """With an executor, an accept makes the session start a run: a second, blocking
    commit. The caller who ran the accept's turn is answered once the accept is durable;
    the run start is left to the session's host (it was done on the caller's thread,
    so the accept waited for both commits)."""
    from meerkat_runtime import RunResult

    from ..faulty_store import Call, Fault, FaultInjector

    held, release = threading.Event(), threading.Event()

    def hold_run_start(call: Call) -> Fault | None:
        if call.op == "commit" and "run.started" in call.topics:
            held.set()
            assert release.wait(30)
        return None

    def executor(request: object) -> RunResult:
        return RunResult(status="completed", output={})

    with Runtime.open(sqlite_url, projections=False, executor=executor) as rt:
        s = rt.session("runs")
        FaultInjector(rt.store, hold_run_start)
        answered = threading.Event()

        def accept() -> None:
            assert s.accept(prompt()).kind == "accepted"
            answered.set()

        caller = threading.Thread(target=accept)
        caller.start()
        try:
            assert held.wait(10)  # the run start's commit is being held
            assert answered.wait(10), "the accept waited for the run start's commit"
        finally:
            release.set()
            caller.join(10)
