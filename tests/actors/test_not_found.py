"""Sessions that were never used: ``SessionNotFound`` instead of creating them.

Drawn from the Rust machine tests ``unregistered_session_errors`` and
``unregister_removes_driver`` (a runtime that does not know a session answers
its lifecycle calls and queries with ``NotFound``), in the port's terms: a
session exists once its log holds an event, written by its first accepted
input or by ``rt.create_session``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from meerkat_runtime import (
    EchoExecutor,
    MeerkatRuntimeError,
    RuntimeState,
    Session,
    SessionNotFound,
)

from ._support import prompt
from .conftest import OpenRuntime

CALLS: dict[str, Callable[[Session], Any]] = {
    "state": lambda s: s.state(),
    "input_state": lambda s: s.input_state(uuid.uuid4()),
    "active_input_ids": lambda s: s.active_input_ids(),
    "completion": lambda s: s.completion(uuid.uuid4()),
    "boundary_receipt": lambda s: s.boundary_receipt(uuid.uuid4(), 1),
    "retire": lambda s: s.retire(),
    "recycle": lambda s: s.recycle(),
    "reset": lambda s: s.reset(),
    "stop": lambda s: s.stop(),
    "destroy": lambda s: s.destroy(),
    "recover": lambda s: s.recover(),
    "cancel_run": lambda s: s.cancel_run(),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_calls_on_a_never_used_session_raise_not_found_and_write_nothing(
    open_runtime: OpenRuntime, name: str
) -> None:
    rt = open_runtime(executor=EchoExecutor())
    with pytest.raises(SessionNotFound) as info:
        CALLS[name](rt.session("ghost"))
    assert isinstance(info.value, MeerkatRuntimeError) and isinstance(info.value, LookupError)
    assert info.value.session_id == "ghost"
    assert "ghost" in str(info.value) and info.value.hint
    assert rt.sessions() == []
    assert rt.store.session_version("ghost") == 0


def test_destroy_of_a_never_used_id_does_not_burn_it(open_runtime: OpenRuntime) -> None:
    """Before: destroy created the session and destroyed it, so the id refused input for ever."""
    rt = open_runtime()
    with pytest.raises(SessionNotFound):
        rt.session("s-1").destroy()
    outcome = rt.session("s-1").accept(prompt())
    assert outcome.kind == "accepted"
    assert rt.session("s-1").state() is RuntimeState.IDLE


def test_first_accept_brings_the_session_into_being(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    s = rt.session("s-1")
    with pytest.raises(SessionNotFound):
        s.state()
    s.accept(prompt())
    assert s.state() is RuntimeState.IDLE
    s.retire()  # lifecycle calls now go through
    assert s.state() is RuntimeState.RETIRED


def test_create_session_makes_it_exist_once(open_runtime: OpenRuntime) -> None:
    rt = open_runtime(executor=EchoExecutor())
    s = rt.create_session("made")
    assert isinstance(s, Session) and s.id == "made"
    assert rt.sessions() == ["made"]
    assert rt.store.session_version("made") == 1  # runtime_created alone
    assert s.state() is RuntimeState.ATTACHED
    assert s.active_input_ids() == []
    rt.create_session("made")  # exists: nothing more is written
    assert rt.store.session_version("made") == 1
    assert s.accept(prompt()).kind == "accepted"
    s.stop()
    assert s.state() is RuntimeState.STOPPED


def test_create_session_leaves_a_destroyed_session_destroyed(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    s = rt.create_session("gone")
    s.destroy()
    version = rt.store.session_version("gone")
    rt.create_session("gone")
    assert rt.store.session_version("gone") == version
    assert s.state() is RuntimeState.DESTROYED


def test_not_found_and_existence_survive_a_restart(
    open_runtime: OpenRuntime, store_url: str
) -> None:
    rt = open_runtime()
    rt.create_session("made")
    with pytest.raises(SessionNotFound):
        rt.session("ghost").reset()
    rt.close()
    rt2 = open_runtime(store_url)
    assert rt2.sessions() == ["made"]
    assert rt2.session("made").reset().inputs_abandoned == 0
    with pytest.raises(SessionNotFound):
        rt2.session("ghost").state()


def test_a_session_known_only_from_a_failed_accept_is_still_not_found(
    open_runtime: OpenRuntime,
) -> None:
    """An accept refused before writing (malformed input) does not create the session."""
    rt = open_runtime()
    with pytest.raises(MeerkatRuntimeError):
        rt.session("s-1").accept({"input_type": "prompt"})
    with pytest.raises(SessionNotFound):
        rt.session("s-1").state()
