"""Pipelined accepts: the actor decides its next accept while its commit is in flight.

The store's writer is held inside its insert with several accepts of one
session queued behind each other; what the hosts are told, and what the log
and a fresh fold say, must be what the blocking design would give.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from meerkat_runtime import Completed, EchoExecutor, RunRequest, RunResult, Runtime, StoreError

from ..faulty_store import Call, Fault, FaultInjector
from ..waiting import WAIT, wait_until
from ._support import accepted_ids, prompt


class HeldWriter:
    """Holds the store's writer in its next commit; that commit then fails or goes on."""

    def __init__(self, rt: Runtime) -> None:
        self.entered = threading.Event()
        self._release = threading.Event()
        self.fail_first = False
        FaultInjector(rt.store, self._policy)

    def _policy(self, call: Call) -> Fault | None:
        if call.op != "commit" or call.number != 1:
            return None
        self.entered.set()
        assert self._release.wait(WAIT), "the test never released the writer"
        return Fault() if self.fail_first else None

    def release(self) -> None:
        self._release.set()


class Host:
    """One host thread making one accept; ``outcome`` or ``error`` once answered."""

    def __init__(self, rt: Runtime, sid: str, doc: dict[str, Any]) -> None:
        self.outcome: Any = None
        self.error: BaseException | None = None
        self.answered = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(rt, sid, doc), daemon=True)
        self._thread.start()

    def _run(self, rt: Runtime, sid: str, doc: dict[str, Any]) -> None:
        try:
            self.outcome = rt.session(sid).accept(doc)
        except BaseException as exc:
            self.error = exc
        self.answered.set()

    def join(self) -> None:
        assert self.answered.wait(WAIT)


class RecordingEcho(EchoExecutor):
    """Echoes, and records the inputs of every run it is given."""

    def __init__(self) -> None:
        self.inputs: list[Any] = []

    def run(self, request: RunRequest) -> RunResult:
        self.inputs.append(request.contributing_input_ids)
        return super().run(request)


@pytest.fixture
def rt(store_url: str) -> Iterator[Runtime]:
    runtime = Runtime.open(store_url, retry_backoff=0.01, close_timeout=2.0)
    yield runtime
    runtime.close()


def _queued(rt: Runtime) -> int:
    return rt.store.queued_appends()


def test_accepts_queue_behind_a_commit_in_flight_and_are_acked_after_it(rt: Runtime) -> None:
    s = rt.session("s")
    s.accept(prompt("warm"))  # the actor is loaded
    held = HeldWriter(rt)
    first = Host(rt, "s", prompt("first"))
    assert held.entered.wait(WAIT)
    later = [Host(rt, "s", prompt(f"later {n}")) for n in range(3)]
    # The actor did not wait for the held commit: all three are queued in the store.
    wait_until(lambda: _queued(rt) == 3, what="three pipelined appends queued")
    assert not any(h.answered.is_set() for h in (first, *later))  # none acked before durable
    held.release()
    for h in (first, *later):
        h.join()
        assert h.error is None and h.outcome.kind == "accepted", h.error
    assert accepted_ids(s)[1:2] == [first.outcome.input_id]
    assert set(accepted_ids(s)[2:]) == {h.outcome.input_id for h in later}


def test_a_failed_commit_fails_its_accept_and_the_accepts_behind_it_are_redone(
    rt: Runtime, store_url: str
) -> None:
    s = rt.session("s")
    warm = s.accept(prompt("warm")).input_id
    held = HeldWriter(rt)
    held.fail_first = True
    doomed = Host(rt, "s", prompt("doomed"))
    assert held.entered.wait(WAIT)
    later = [Host(rt, "s", prompt(f"later {n}")) for n in range(3)]
    wait_until(lambda: _queued(rt) == 3, what="three pipelined appends queued")
    held.release()
    for h in (doomed, *later):
        h.join()
    assert isinstance(doomed.error, StoreError) and "injected fault: commit" in str(doomed.error)
    # Chained behind the failed append, the store never tried them: the actor refolded
    # and handled them again, so their hosts are answered as if nothing had happened.
    for h in later:
        assert h.error is None and h.outcome.kind == "accepted", h.error
    acked = [warm, *(h.outcome.input_id for h in later)]
    assert sorted(accepted_ids(s)) == sorted(acked)
    assert sorted(s.active_input_ids()) == sorted(acked)
    rt.close()
    with Runtime.open(store_url) as again:
        assert sorted(again.session("s").active_input_ids()) == sorted(acked)


def test_a_duplicate_of_an_accept_in_flight_is_answered_once_it_is_durable(rt: Runtime) -> None:
    s = rt.session("s")
    s.accept(prompt("warm"))
    held = HeldWriter(rt)
    held.fail_first = True
    doc = prompt("once", id="01955b3c-0000-7000-8000-0000000000a1")
    original = Host(rt, "s", doc)
    assert held.entered.wait(WAIT)
    duplicate = Host(rt, "s", doc)
    # The duplicate waits for the original's commit instead of pointing at an
    # input that may never be written; the original then fails, so the
    # duplicate is the one accepted.
    assert not duplicate.answered.wait(0.2)
    held.release()
    original.join()
    duplicate.join()
    assert isinstance(original.error, StoreError)
    assert duplicate.error is None and duplicate.outcome.kind == "accepted"
    assert str(duplicate.outcome.input_id) == doc["header"]["id"]
    assert accepted_ids(s).count(duplicate.outcome.input_id) == 1


def test_runs_start_only_from_durable_accepts(store_url: str) -> None:
    executor = RecordingEcho()
    with Runtime.open(store_url, executor=executor, retry_backoff=0.01) as rt:
        s = rt.session("s")
        held = HeldWriter(rt)
        held.fail_first = True
        doomed = Host(rt, "s", prompt("doomed"))
        assert held.entered.wait(WAIT)
        held.release()
        doomed.join()
        assert isinstance(doomed.error, StoreError)
        ok = s.accept(prompt("fine"))
        assert ok.completion is not None
        assert isinstance(ok.completion.wait(WAIT), Completed)
        # The run took the durable input only; the failed one never reached the executor.
        assert accepted_ids(s) == [ok.input_id]
        assert [list(ids) for ids in executor.inputs] == [[ok.input_id]]
