"""User interrupt: ``session.interrupt()`` and ``interrupt_if_current(run_id)`` on memory,
SQLite and PostgreSQL, and the public-result table.

Drawn from the Rust ``interrupt_public_result.rs`` tests (an idle interrupt is a
no-op success, a staged no-op its own result, a destroyed session without a
record ``not_found``, a promoting session ``session_busy``) and
``user_interrupt.rs`` (the hard cancel goes to the current run only; the
run-fenced form never cancels a newer run).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from meerkat_runtime import (
    AbandonKind,
    Cancelled,
    EchoExecutor,
    RunRequest,
    RuntimeState,
    UserInterruptObservation,
    UserInterruptPublicResult,
    observe_user_interrupt,
    resolve_user_interrupt_public_result,
)

from ..waiting import WAIT, wait_until
from ._support import GatedExecutor, abandon_reason, prompt
from .conftest import OpenRuntime

Obs = UserInterruptObservation
R = UserInterruptPublicResult


def test_the_rust_public_result_cases() -> None:
    assert resolve_user_interrupt_public_result(Obs.IDLE_NOOP, True, False) is R.INTERRUPTED
    assert resolve_user_interrupt_public_result(Obs.STAGED_NOOP, True, False) is R.STAGED_NOOP
    assert resolve_user_interrupt_public_result(Obs.DESTROYED, False, False) is R.NOT_FOUND
    assert resolve_user_interrupt_public_result(Obs.NOT_INTERRUPTIBLE, True, True) is R.SESSION_BUSY


def test_the_whole_public_result_table() -> None:
    """Every (observation, target present, promotion busy) of the Rust transition table."""
    expected: dict[Obs, Callable[[bool, bool], R]] = {
        Obs.ACCEPTED: lambda present, busy: R.INTERRUPTED,
        Obs.IDLE_NOOP: lambda present, busy: R.SESSION_BUSY if busy else R.INTERRUPTED,
        Obs.ATTACHED_NOOP: lambda present, busy: R.SESSION_BUSY if busy else R.INTERRUPTED,
        Obs.STAGED_NOOP: lambda present, busy: R.SESSION_BUSY if busy else R.STAGED_NOOP,
        Obs.DESTROYED: lambda present, busy: (
            R.SESSION_BUSY if busy else R.INTERRUPTED if present else R.NOT_FOUND
        ),
        Obs.NOT_INTERRUPTIBLE: lambda present, busy: R.SESSION_BUSY if busy else R.CONFLICT,
    }
    for obs, present, busy in itertools.product(Obs, (True, False), (True, False)):
        got = resolve_user_interrupt_public_result(obs, present, busy)
        assert got is expected[obs](present, busy), (obs, present, busy)


@pytest.mark.parametrize(
    ("state", "run", "observation"),
    [
        (RuntimeState.RUNNING, True, Obs.ACCEPTED),
        (RuntimeState.RETIRED, True, Obs.ACCEPTED),
        (RuntimeState.IDLE, False, Obs.IDLE_NOOP),
        (RuntimeState.ATTACHED, False, Obs.ATTACHED_NOOP),
        (RuntimeState.DESTROYED, False, Obs.DESTROYED),
        (RuntimeState.RETIRED, False, Obs.NOT_INTERRUPTIBLE),
        (RuntimeState.STOPPED, False, Obs.NOT_INTERRUPTIBLE),
    ],
)
def test_what_an_interrupt_observes(state: RuntimeState, run: bool, observation: Obs) -> None:
    assert observe_user_interrupt(state, run) is observation


def test_interrupt_cancels_the_run_in_flight(open_runtime: OpenRuntime) -> None:
    gated = GatedExecutor()
    rt = open_runtime(executor=gated)
    s = rt.session("s")
    out = s.accept(prompt("one"))
    request = gated.wait_started()
    got = s.interrupt("user pressed stop")
    assert (got.result, got.observation, got.run_id) == (
        R.INTERRUPTED,
        Obs.ACCEPTED,
        request.run_id,
    )
    assert got.interrupted
    assert request.cancel.cancelled and request.cancel.reason == "user pressed stop"
    assert out.completion is not None and isinstance(out.completion.wait(WAIT), Cancelled)
    st = s.input_state(out.input_id)
    assert st is not None and abandon_reason(st).kind is AbandonKind.CANCELLED
    gated.release()


def _cancelled(request: RunRequest) -> bool:
    return request.cancel.cancelled


def test_interrupt_if_current_never_cancels_a_newer_run(open_runtime: OpenRuntime) -> None:
    gated = GatedExecutor()
    rt = open_runtime(executor=gated)
    s = rt.session("s")
    s.accept(prompt("one"))
    first = gated.wait_started()
    assert s.interrupt_if_current(first.run_id, "stale retry") is True
    gated.step()  # the cancelled call returns: the session may start its next run
    s.accept(prompt("two"))
    second = gated.wait_started()
    assert s.interrupt_if_current(first.run_id) is False  # that run ended: the newer one runs
    assert not _cancelled(second)
    assert s.interrupt_if_current(str(second.run_id)) is True
    assert _cancelled(second) and second.cancel.reason == "user interrupt"
    gated.release()


def test_interrupt_with_nothing_to_cancel(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    s = rt.session("idle")
    s.accept(prompt())
    version = rt.store.session_version("idle")
    got = s.interrupt()
    assert (got.result, got.observation, got.run_id) == (R.INTERRUPTED, Obs.IDLE_NOOP, None)
    assert not got.interrupted
    assert rt.store.session_version("idle") == version  # a no-op writes nothing
    attached = open_runtime(executor=EchoExecutor()).session("attached")
    attached.accept(prompt())
    wait_until(lambda: not attached.active_input_ids())
    assert attached.interrupt().observation is Obs.ATTACHED_NOOP


@pytest.mark.parametrize(
    ("end", "result", "observation"),
    [
        ("retire", R.CONFLICT, Obs.NOT_INTERRUPTIBLE),
        ("stop", R.CONFLICT, Obs.NOT_INTERRUPTIBLE),
        ("destroy", R.INTERRUPTED, Obs.DESTROYED),
    ],
)
def test_interrupt_on_an_ended_session(
    open_runtime: OpenRuntime, end: str, result: R, observation: Obs
) -> None:
    rt = open_runtime()
    s = rt.session("s")
    s.accept(prompt())
    getattr(s, end)()
    got = s.interrupt()
    assert (got.result, got.observation) == (result, observation)


def test_interrupt_on_a_never_used_session_is_not_found_and_creates_nothing(
    open_runtime: OpenRuntime,
) -> None:
    rt = open_runtime()
    got = rt.session("ghost").interrupt()
    assert (got.result, got.observation) == (R.NOT_FOUND, Obs.DESTROYED)
    assert rt.sessions() == [] and rt.store.session_version("ghost") == 0
