"""Silent intents, accepting without wake and a pluggable policy, through the runtime on
memory://, SQLite and PostgreSQL, across a restart and a kill -9 (RUNTIME_SPEC 6.2, 14).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from meerkat_runtime import (
    AdmissionPlan,
    Completed,
    DefaultPolicyTable,
    EchoExecutor,
    Input,
    InputKind,
    InputLifecycleState,
    InvalidInput,
    PostAdmissionSignal,
    RunRequest,
    RunResult,
    Runtime,
    RuntimeControlPlaneError,
    RuntimeState,
    SessionNotFound,
    WakeMode,
)

from ..waiting import WAIT
from ._support import codes, events_of, peer_message, phase, prompt
from .conftest import OpenRuntime

L = InputLifecycleState
SILENT = ["mob.peer_added", "probe.intent"]
CHILD = Path(__file__).with_name("_silent_child.py")


def peer_request(intent: str, handling_mode: str | None = None) -> dict[str, Any]:
    doc = peer_message(handling_mode)
    doc["convention"] = {"convention_type": "request", "request_id": "req-1", "intent": intent}
    return doc


class Recording(EchoExecutor):
    """Echoes, keeping the contributing input ids of every run in order."""

    def __init__(self) -> None:
        self.runs: list[list[uuid.UUID]] = []
        self._lock = threading.Lock()

    def run(self, request: RunRequest) -> RunResult:
        with self._lock:
            self.runs.append(list(request.contributing_input_ids))
        return super().run(request)


class QuietPrompts(DefaultPolicyTable):
    """Version 7: prompts never wake the session."""

    version = 7

    def resolve(self, input: Input, runtime_idle: bool, **facts: bool) -> AdmissionPlan:
        plan = super().resolve(input, runtime_idle, **facts)
        if input.kind is not InputKind.PROMPT:
            return plan
        quiet = replace(plan.decision, wake_mode=WakeMode.NONE)
        return replace(plan, decision=quiet, signal=PostAdmissionSignal.NONE)


def recorded_wake(session: Any, input_id: uuid.UUID) -> tuple[int, WakeMode]:
    st = session.input_state(input_id)
    assert st is not None and st.policy is not None
    assert st.policy.decision.policy_version == st.policy.version
    return st.policy.version, st.policy.decision.wake_mode


def test_a_silent_request_waits_for_the_next_wake(open_runtime: OpenRuntime) -> None:
    ex = Recording()
    rt = open_runtime(executor=ex)
    s = rt.create_session("s-1")
    s.set_silent_intents(SILENT)
    assert s.silent_intents() == frozenset(SILENT)
    silent = s.accept(peer_request("mob.peer_added"))
    assert silent.kind == "accepted" and silent.completion is not None
    assert recorded_wake(s, silent.input_id) == (1, WakeMode.NONE)
    # The accept's turn ended without a run; a later query sees it still queued.
    assert phase(s, silent.input_id) is L.QUEUED
    assert ex.runs == [] and rt.activity().active_runs == 0
    loud = s.accept(prompt("wake up"))
    assert loud.completion is not None
    assert isinstance(loud.completion.wait(WAIT), Completed)
    assert isinstance(silent.completion.wait(WAIT), Completed)
    assert ex.runs == [[silent.input_id], [loud.input_id]]  # drained in FIFO order once woken


def test_a_request_with_another_intent_runs_at_once(open_runtime: OpenRuntime) -> None:
    rt = open_runtime(executor=EchoExecutor())
    s = rt.create_session("s-1")
    s.set_silent_intents(SILENT)
    out = s.accept(peer_request("custom.action"))
    assert recorded_wake(s, out.input_id) == (1, WakeMode.WAKE_IF_IDLE)
    assert out.completion is not None and isinstance(out.completion.wait(WAIT), Completed)


def test_silent_intents_survive_a_restart_and_reset_clears_them(
    open_runtime: OpenRuntime, store_url: str
) -> None:
    rt = open_runtime()
    s = rt.create_session("s-1")
    s.set_silent_intents(SILENT)
    queued = s.accept(peer_request("probe.intent")).input_id
    rt.close()

    ex = Recording()
    rt2 = open_runtime(store_url, executor=ex)
    s2 = rt2.session("s-1")
    assert s2.silent_intents() == frozenset(SILENT)
    assert phase(s2, queued) is L.QUEUED and ex.runs == []  # recovery started no run for it
    report = s2.reset()
    assert report.inputs_abandoned == 1
    assert s2.silent_intents() == frozenset()
    assert "runtime.silent_intents_set" in codes(events_of(s2))
    # The read models take the new event in their stride.
    rt2.projections.wait_caught_up(WAIT)
    assert rt2.verify().mismatches == []
    rt2.close()

    rt3 = open_runtime(store_url, executor=EchoExecutor())
    s3 = rt3.session("s-1")
    assert s3.silent_intents() == frozenset()
    out = s3.accept(peer_request("probe.intent"))  # no longer silent: it runs
    assert out.completion is not None and isinstance(out.completion.wait(WAIT), Completed)


def test_set_silent_intents_on_a_never_used_session_raises_not_found(
    open_runtime: OpenRuntime,
) -> None:
    rt = open_runtime()
    with pytest.raises(SessionNotFound):
        rt.session("ghost").set_silent_intents(SILENT)
    with pytest.raises(SessionNotFound):
        rt.session("ghost").silent_intents()
    assert rt.sessions() == []


@pytest.mark.parametrize("end", ["stop", "destroy"])
def test_stop_and_destroy_clear_them_and_refuse_new_ones(
    open_runtime: OpenRuntime, end: str
) -> None:
    rt = open_runtime()
    s = rt.create_session("s-1")
    s.set_silent_intents(SILENT)
    getattr(s, end)()
    assert s.silent_intents() == frozenset()
    with pytest.raises(RuntimeControlPlaneError) as info:
        s.set_silent_intents(SILENT)
    assert info.value.kind == "invalid_state"


def test_silent_intents_must_be_strings(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    s = rt.create_session("s-1")
    with pytest.raises(InvalidInput):
        s.set_silent_intents("mob.peer_added")
    with pytest.raises(InvalidInput):
        s.set_silent_intents([1])  # type: ignore[list-item]
    assert s.silent_intents() == frozenset()


def test_accept_without_wake_waits_for_the_next_wake(open_runtime: OpenRuntime) -> None:
    """Rust ``accept_input_without_wake_keeps_idle_runtime_idle`` (the input stays active,
    the runtime idle) and ``batch_selection_drains_queue_next_turn_after_prior_run_even_without_wake``
    (wake none only suppresses the immediate wake)."""
    ex = Recording()
    rt = open_runtime(executor=ex)
    s = rt.session("s-1")
    quiet = s.accept(prompt("later"), wake=False)
    assert recorded_wake(s, quiet.input_id) == (1, WakeMode.NONE)
    assert s.state() is RuntimeState.ATTACHED  # idle, with an executor bound
    assert s.active_input_ids() == [quiet.input_id]
    assert phase(s, quiet.input_id) is L.QUEUED and ex.runs == []
    loud = s.accept(prompt("now"))
    assert loud.completion is not None and isinstance(loud.completion.wait(WAIT), Completed)
    assert ex.runs == [[quiet.input_id], [loud.input_id]]


def test_the_runtime_policy_decides_and_its_version_is_recorded(
    open_runtime: OpenRuntime, store_url: str
) -> None:
    rt = open_runtime(executor=Recording(), policy=QuietPrompts())
    s = rt.session("s-1")
    first = s.accept(prompt("quiet")).input_id
    assert recorded_wake(s, first) == (7, WakeMode.NONE)
    assert phase(s, first) is L.QUEUED
    rt.close()

    # Reopened with the default policy: the recorded decision stays as recorded (folding
    # never re-decides), and only the new input is decided by the new policy.
    ex = Recording()
    rt2 = open_runtime(store_url, executor=ex)
    s2 = rt2.session("s-1")
    assert recorded_wake(s2, first) == (7, WakeMode.NONE)
    assert phase(s2, first) is L.QUEUED and ex.runs == []
    second = s2.accept(prompt("loud"))
    assert recorded_wake(s2, second.input_id) == (1, WakeMode.WAKE_IF_IDLE)
    assert second.completion is not None and isinstance(second.completion.wait(WAIT), Completed)
    assert ex.runs == [[first], [second.input_id]]
    rt2.projections.wait_caught_up(WAIT)
    row = rt2.ledger.get(first)
    assert row is not None and row.input_state.policy is not None
    assert row.input_state.policy.version == 7


@pytest.mark.parametrize(
    "policy", [object(), "default", DefaultPolicyTable], ids=["object", "str", "class"]
)
def test_a_policy_without_resolve_or_version_is_refused_at_open(policy: Any) -> None:
    with pytest.raises(ValueError, match="policy"):
        Runtime.open("memory://", policy=policy)


def test_a_policy_with_a_bad_version_is_refused_at_open() -> None:
    class Bad(DefaultPolicyTable):
        version = -1

    with pytest.raises(ValueError, match="version"):
        Runtime.open("memory://", policy=Bad())


# ---------------------------------------------------------------- kill -9


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres])])
def crash_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return f"sqlite:///{tmp_path / 'silent.db'}"


@pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")
def test_silent_intents_and_their_queued_request_survive_kill_9(crash_url: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), crash_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        acked = proc.stdout.readline().split()
        assert acked[:1] == ["ACK"], proc.stderr.read() if proc.stderr else acked
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(WAIT)
    assert proc.returncode == -signal.SIGKILL
    silent_id = uuid.UUID(acked[1])

    ex = Recording()
    with Runtime.open(crash_url, executor=ex) as rt:
        s = rt.session("s-silent")
        assert s.silent_intents() == frozenset(SILENT)
        assert rt.session("s-reset").silent_intents() == frozenset()
        assert phase(s, silent_id) is L.QUEUED and ex.runs == []
        loud = s.accept(prompt("wake up"))
        assert loud.completion is not None
        assert isinstance(loud.completion.wait(WAIT), Completed)
        handle = s.completion(silent_id)
        assert handle is not None and isinstance(handle.wait(WAIT), Completed)
        assert ex.runs == [[silent_id], [loud.input_id]]


def test_a_policy_that_raises_fails_that_accept_only(open_runtime: OpenRuntime) -> None:
    class Refuses(DefaultPolicyTable):
        def resolve(self, input: Input, runtime_idle: bool, **facts: bool) -> AdmissionPlan:
            if input.kind is InputKind.EXTERNAL_EVENT:
                raise KeyError("a bug in the host's policy")
            return super().resolve(input, runtime_idle, **facts)

    rt = open_runtime(executor=EchoExecutor(), policy=Refuses())
    s = rt.session("s-1")
    first = s.accept(prompt("one"))
    assert first.completion is not None and isinstance(first.completion.wait(WAIT), Completed)
    written = len(events_of(s))
    with pytest.raises(KeyError):
        s.accept({"input_type": "external_event", "event_type": "ci", "payload": {}})
    assert len(events_of(s)) == written  # nothing of it was written
    second = s.accept(prompt("two"))  # the session goes on
    assert second.completion is not None and isinstance(second.completion.wait(WAIT), Completed)
