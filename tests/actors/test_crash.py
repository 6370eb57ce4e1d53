"""Crash tests: a real child process accepts input and is killed with SIGKILL.

The child prints each acknowledged input id (flushed) only after ``accept``
returned; the parent reopens the SQLite file and checks that every
acknowledged input is there, in the state the recovery rules require.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import uuid
from collections import defaultdict
from pathlib import Path

import pytest

from meerkat_runtime import (
    Abandoned,
    AbandonKind,
    Completed,
    EchoExecutor,
    InputAbandonReason,
    InputAccepted,
    InputLifecycleState,
    NotReady,
    RunRequest,
    RunResult,
    Runtime,
    RuntimeState,
)

from ..waiting import WAIT
from ._support import abandon_reason, codes, phase, prompt

L = InputLifecycleState
S = RuntimeState
CHILD = Path(__file__).with_name("_crash_child.py")

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")


class Child:
    """The child process, its stdout lines (split into words) and a SIGKILL."""

    def __init__(self, mode: str, url: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(CHILD), mode, url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[list[str]] = []
        self._queue: queue.Queue[list[str] | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.split())
        self._queue.put(None)

    def _next(self, timeout: float) -> list[str] | None:
        try:
            words = self._queue.get(timeout=timeout)
        except queue.Empty:
            self.kill()
            raise AssertionError(f"child said nothing for {timeout} s") from None
        if words is not None:
            self.lines.append(words)
        return words

    def wait_for(self, word: str, count: int = 1, timeout: float = 60) -> None:
        """Read lines until ``count`` lines starting with ``word`` have been seen."""
        while sum(1 for w in self.lines if w[0] == word) < count:
            if self._next(timeout) is None:
                assert self.proc.stderr is not None
                raise AssertionError(f"child exited: {self.proc.stderr.read()[-2000:]}")

    def kill(self) -> None:
        """SIGKILL, then collect every line it printed before dying."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(WAIT)
        while self._next(WAIT) is not None:
            pass
        assert self.proc.returncode == -signal.SIGKILL

    def acks(self) -> list[tuple[str, uuid.UUID, str]]:
        return [(w[1], uuid.UUID(w[2]), w[3]) for w in self.lines if w[0] == "ACK"]

    def running(self) -> tuple[uuid.UUID, list[uuid.UUID]]:
        [words] = [w for w in self.lines if w[0] == "RUNNING"]
        return uuid.UUID(words[1]), [uuid.UUID(i) for i in words[2:]]


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'crash.db'}"


class CountingEcho(EchoExecutor):
    def __init__(self) -> None:
        self.calls: list[RunRequest] = []

    def run(self, request: RunRequest) -> RunResult:
        self.calls.append(request)
        return super().run(request)


@pytest.mark.parametrize("kill_after", [1, 23, 80])
def test_kill_while_accepting_loses_nothing_acknowledged(url: str, kill_after: int) -> None:
    child = Child("accept-loop", url)
    child.wait_for("ACK", kill_after)
    child.kill()
    acks = child.acks()
    assert len(acks) >= kill_after
    by_session: dict[str, list[uuid.UUID]] = defaultdict(list)
    for sid, iid, _ in acks:
        by_session[sid].append(iid)
    ephemeral = {iid for _, iid, d in acks if d == "ephemeral"}

    with Runtime.open(url) as rt:
        reports = {sid: r for sid, r in zip(rt.sessions(), rt.recover(), strict=True)}
        assert set(by_session) <= set(reports)
        extra = 0
        for sid, report in reports.items():
            s = rt.session(sid)
            logged = [e.event.input_id for e in s.events() if isinstance(e.event, InputAccepted)]
            acked = by_session.get(sid, [])
            # acknowledged inputs are all there, in acknowledgement order; at most
            # the one accept in flight at the kill made it without its ACK line
            assert logged[: len(acked)] == acked
            extra += len(logged) - len(acked)
            for iid in logged:
                st = s.input_state(iid)
                assert st is not None
                if iid in ephemeral or st.durability == "ephemeral":
                    assert st.current_state is L.ABANDONED
                    assert abandon_reason(st) == InputAbandonReason(AbandonKind.CANCELLED)
                else:
                    assert st.current_state is L.QUEUED
            active = s.active_input_ids()
            assert active == [i for i in logged if i not in ephemeral and phase(s, i) is L.QUEUED]
            assert report.inputs_recovered == len(active)
            assert report.inputs_requeued == 0
            assert report.inputs_abandoned == len(logged) - len(active)
            assert s.state() is S.IDLE
        assert extra <= 1
        durable = [(sid, iid) for sid, iid, d in acks if d == "durable"]

    # with an executor, everything durable that was acknowledged completes
    with Runtime.open(url, executor=EchoExecutor()) as rt2:
        for sid, iid in durable:
            handle = rt2.session(sid).completion(iid)
            assert handle is not None
            assert isinstance(handle.wait(WAIT), Completed)
        for _, iid, d in acks:
            if d == "ephemeral":
                sid = next(s for s, i, _ in acks if i == iid)
                h = rt2.session(sid).completion(iid)
                assert h is not None and isinstance(h.wait(0), Abandoned)


@pytest.mark.parametrize("kill_after", [7, 60])
def test_kill_while_runs_are_in_flight(url: str, kill_after: int) -> None:
    child = Child("busy-loop", url)
    child.wait_for("ACK", kill_after)
    child.kill()
    acks = child.acks()
    with Runtime.open(url) as rt:
        reports = rt.recover()
        assert len(reports) == len(rt.sessions())
        requeued = sum(r.inputs_requeued for r in reports)
        assert requeued <= 5  # at most one run in flight per session
        for sid, iid, _ in acks:
            s = rt.session(sid)
            # consumed, or queued again: never lost, never left staged or applied
            assert phase(s, iid) in (L.CONSUMED, L.QUEUED)
            assert s.state() is S.IDLE
        pending = [(sid, iid) for sid, iid, _ in acks if phase(rt.session(sid), iid) is L.QUEUED]
    with Runtime.open(url, executor=EchoExecutor()) as rt2:
        for sid, iid in pending:
            h = rt2.session(sid).completion(iid)
            assert h is not None and isinstance(h.wait(WAIT), Completed)
        for sid in rt2.sessions():
            assert rt2.session(sid).active_input_ids() == []


def test_kill_mid_run_requeues_and_completes_after_reopen(url: str) -> None:
    child = Child("mid-run", url)
    child.wait_for("ACK", 3)
    child.wait_for("RUNNING")
    child.kill()
    acked = [iid for _, iid, _ in child.acks()]
    run_id, staged = child.running()
    assert staged == acked[:1]

    with Runtime.open(url) as rt:
        s = rt.session("s-run")
        [report] = rt.recover()
        assert report.inputs_recovered == 3
        assert report.inputs_requeued == 1
        assert report.inputs_abandoned == 0
        assert any(str(run_id) in d for d in report.details)
        assert s.state() is S.IDLE
        assert s.active_input_ids() == acked  # admission order kept
        st = s.input_state(acked[0])
        assert st is not None and st.current_state is L.QUEUED
        assert st.attempt_count == 1 and st.last_run_id is None
        assert "run.failed" in codes(s.events())  # the interrupted run is closed

    ex = CountingEcho()
    with Runtime.open(url, executor=ex) as rt2:
        s2 = rt2.session("s-run")
        for iid in acked:
            h = s2.completion(iid)
            assert h is not None
            outcome = h.wait(WAIT)
            assert isinstance(outcome, Completed)
        assert len(ex.calls) == 3
        st2 = s2.input_state(acked[0])
        assert st2 is not None and st2.attempt_count == 2
        assert s2.state() is S.ATTACHED


def test_crash_loop_abandons_at_the_third_attempt(url: str) -> None:
    child = Child("mid-run", url)
    child.wait_for("ACK", 3)
    child.wait_for("RUNNING")
    child.kill()
    poison = child.running()[1][0]
    for attempt in (2, 3):
        again = Child("resume", url)
        again.wait_for("RUNNING")
        again.kill()
        assert again.running()[1][0] == poison, attempt
    with Runtime.open(url) as rt:
        s = rt.session("s-run")
        [report] = rt.recover()
        assert report.inputs_abandoned == 1
        st = s.input_state(poison)
        assert abandon_reason(st) == InputAbandonReason.max_attempts_exhausted(3)
        h = s.completion(poison)
        assert h is not None and isinstance(h.wait(0), Abandoned)
        # the other two inputs survive and are queued
        assert len(s.active_input_ids()) == 2


def test_kill_after_completion_keeps_results(url: str) -> None:
    child = Child("completed", url)
    child.wait_for("DONE")
    child.kill()
    acked = [iid for _, iid, _ in child.acks()]
    assert len(acked) == 3
    with Runtime.open(url) as rt:
        s = rt.session("s-done")
        [report] = rt.recover()
        assert (report.inputs_recovered, report.inputs_requeued, report.inputs_abandoned) == (
            0,
            0,
            0,
        )
        assert s.state() is S.IDLE
        for n, iid in enumerate(acked):
            assert phase(s, iid) is L.CONSUMED
            h = s.completion(iid)
            assert h is not None and h.done()
            outcome = h.wait(0)
            assert isinstance(outcome, Completed) and outcome.output == {"text": f"job{n}"}
    ex = CountingEcho()
    with Runtime.open(url, executor=ex) as rt2:
        s2 = rt2.session("s-done")
        assert s2.state() is S.ATTACHED
        assert s2.active_input_ids() == []
        assert s2.accept(prompt("more")).kind == "accepted"
    assert len(ex.calls) <= 1  # only the new input may have run, never the old ones


def test_lifecycle_states_survive_a_kill(url: str) -> None:
    child = Child("lifecycle", url)
    child.wait_for("DONE")
    child.kill()
    with Runtime.open(url, executor=EchoExecutor()) as rt:
        states = {sid: rt.session(sid).state() for sid in rt.sessions()}
        assert states == {
            "retired": S.RETIRED,
            "stopped": S.STOPPED,
            "destroyed": S.DESTROYED,
            "idle": S.ATTACHED,
        }
        reports = rt.recover()
        assert len(reports) == 3  # the destroyed session is skipped
        for sid in ("retired", "stopped", "destroyed"):
            out = rt.session(sid).accept(prompt())
            assert out.kind == "rejected" and out.reason == NotReady(state=states[sid])
        rt.session("stopped").recover()
        assert rt.session("stopped").state() is S.ATTACHED
        idle = rt.session("idle")
        [iid] = [e.event.input_id for e in idle.events() if isinstance(e.event, InputAccepted)]
        h = idle.completion(iid)
        assert h is not None and isinstance(h.wait(WAIT), Completed)


def test_kill_during_a_checkpointed_run_recovers_by_the_receipts(url: str) -> None:
    """Inputs applied at a checkpoint are consumed after a kill -9, not run again;
    the input that was only queued is run by the next process."""
    child = Child("checkpointed", url)
    child.wait_for("ACK", 3)
    child.wait_for("CHECKPOINT")
    child.kill()
    first, queued, steer = (iid for _, iid, _ in child.acks())
    [words] = [w for w in child.lines if w[0] == "CHECKPOINT"]
    run_id, sequence = uuid.UUID(words[1]), int(words[2])
    assert sequence == 1
    assert [uuid.UUID(i) for i in words[3:]] == [first, steer]

    executor = CountingEcho()
    with Runtime.open(url, executor=executor) as rt:
        s = rt.session("s-ckpt")
        handle = s.completion(queued)
        assert handle is not None and isinstance(handle.wait(WAIT), Completed)
        for iid in (first, steer):
            st = s.input_state(iid)
            assert st is not None and st.current_state is L.CONSUMED
            assert [h.reason for h in st.history][-1] == "RecoveryReceiptFound"
        ran = [i for r in executor.calls for i in r.contributing_input_ids]
        assert ran == [queued]  # the receipted inputs were not executed again
        receipt = s.boundary_receipt(run_id, 1)
        assert receipt is not None
        assert receipt.conversation_digest == "digest-1" and receipt.message_count == 3
        assert list(receipt.contributing_input_ids) == [first, steer]
