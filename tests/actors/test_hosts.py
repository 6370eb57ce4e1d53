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


def test_turns_of_one_session_never_overlap_whoever_runs_them(sqlite_url: str) -> None:
    """Many callers on a few sessions: still one message at a time per session, in each
    caller's order, whichever host thread runs them."""
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
