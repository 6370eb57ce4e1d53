"""Terminal status: ``interaction_status``, ``run_status``, ``input_id_for_idempotency_key``.

The pure evaluation is ported from the tests of Rust's ``terminal_status.rs``
(precedence consumed > abandoned > displaced, the first abandoned witness in
admission order gives the cause, exact idempotency-key match); the witnesses
from ``service_ext.rs``'s contract: the same answer from a live session and
from the store after a restart, without reviving the session; NotFound for a
session that was never used, None for an unknown input of a known one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from meerkat_runtime import (
    AbandonedOutcome,
    AbandonKind,
    CoalescedOutcome,
    ConsumedOutcome,
    EchoExecutor,
    InputAbandonReason,
    InputLifecycleState,
    InputState,
    InputTerminalOutcome,
    InteractionTerminalReport,
    InvalidInput,
    RunResolutionClass,
    RunTerminalStatus,
    Runtime,
    SessionNotFound,
    SupersededOutcome,
    TerminalWitnessSource,
)
from meerkat_runtime.store import SessionJournal
from meerkat_runtime.terminal_status import (
    evaluate_run,
    find_by_idempotency_key,
    interaction_report,
    read_input_states,
)

from ..store_urls import store_url_for
from ..waiting import WAIT
from ._status_child import report_json
from ._support import FlakyExecutor, GatedExecutor, prompt
from .conftest import OpenRuntime

L = InputLifecycleState
LIVE = TerminalWitnessSource.LIVE_RUNTIME
DURABLE = TerminalWitnessSource.DURABLE_STORE
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

# ---------------------------------------------------------------- the pure evaluation


def witness(
    run_id: uuid.UUID | None,
    terminal: InputTerminalOutcome | None,
    admission_sequence: int | None,
    key: str | None = None,
) -> InputState:
    phase = {
        type(None): L.STAGED,
        ConsumedOutcome: L.CONSUMED,
        SupersededOutcome: L.SUPERSEDED,
        CoalescedOutcome: L.COALESCED,
        AbandonedOutcome: L.ABANDONED,
    }[type(terminal)]
    return InputState(
        input_id=uuid.uuid4(),
        current_state=phase,
        created_at=NOW,
        updated_at=NOW,
        terminal_outcome=terminal,
        idempotency_key=key,
        attempt_count=1,
        last_run_id=run_id,
        admission_sequence=admission_sequence,
    )


def abandoned(kind: AbandonKind) -> AbandonedOutcome:
    return AbandonedOutcome(reason=InputAbandonReason(kind))


def test_consumed_takes_precedence_over_abandoned_and_displaced() -> None:
    run = uuid.uuid4()
    inputs = [
        witness(run, abandoned(AbandonKind.CANCELLED), 1),
        witness(run, ConsumedOutcome(), 2),
        witness(run, SupersededOutcome(superseded_by=uuid.uuid4()), 3),
    ]
    report = evaluate_run(run, inputs, DURABLE)
    assert report.status is RunTerminalStatus.RESOLVED
    assert report.outcome is RunResolutionClass.CONSUMED and report.abandon_reason is None
    assert len(report.witnesses) == 3 and report.source is DURABLE


def test_abandoned_cause_is_the_first_abandoned_witness_in_admission_order() -> None:
    run = uuid.uuid4()
    inputs = [
        witness(run, abandoned(AbandonKind.STOPPED), 9),
        witness(run, abandoned(AbandonKind.CANCELLED), 2),
    ]
    report = evaluate_run(run, inputs, DURABLE)
    assert report.outcome is RunResolutionClass.ABANDONED
    assert report.abandon_reason == InputAbandonReason(AbandonKind.CANCELLED)
    assert [w.input_id for w in report.witnesses] == [inputs[1].input_id, inputs[0].input_id]


def test_witnesses_without_admission_sequence_sort_last() -> None:
    run = uuid.uuid4()
    inputs = [witness(run, ConsumedOutcome(), None), witness(run, ConsumedOutcome(), 5)]
    report = evaluate_run(run, inputs, LIVE)
    assert [w.input_id for w in report.witnesses] == [inputs[1].input_id, inputs[0].input_id]


def test_all_superseded_or_coalesced_is_displaced() -> None:
    run = uuid.uuid4()
    inputs = [
        witness(run, SupersededOutcome(superseded_by=uuid.uuid4()), 1),
        witness(run, CoalescedOutcome(aggregate_id=uuid.uuid4()), 2),
    ]
    report = evaluate_run(run, inputs, DURABLE)
    assert report.status is RunTerminalStatus.RESOLVED
    assert report.outcome is RunResolutionClass.DISPLACED and report.abandon_reason is None


def test_one_non_terminal_witness_is_in_flight() -> None:
    run = uuid.uuid4()
    inputs = [witness(run, ConsumedOutcome(), 1), witness(run, None, 2)]
    report = evaluate_run(run, inputs, DURABLE)
    assert report.status is RunTerminalStatus.IN_FLIGHT and report.outcome is None


def test_empty_witness_set_is_no_durable_witness() -> None:
    run = uuid.uuid4()
    report = evaluate_run(run, [witness(uuid.uuid4(), ConsumedOutcome(), 1)], DURABLE)
    assert report.status is RunTerminalStatus.NO_DURABLE_WITNESS
    assert report.witnesses == () and report.outcome is None


def test_find_by_idempotency_key_is_an_exact_match_and_the_first_wins() -> None:
    run = uuid.uuid4()
    first = witness(run, ConsumedOutcome(), 1, "interaction-1")
    inputs = [first, witness(run, None, 2), witness(run, None, 3, "interaction-1")]
    assert find_by_idempotency_key(inputs, "interaction-1") is first
    assert find_by_idempotency_key(inputs, "interaction") is None  # no prefix match
    assert find_by_idempotency_key(inputs, "interaction-12") is None  # no superstring
    assert find_by_idempotency_key(inputs, "INTERACTION-1") is None


def test_interaction_report_projects_the_input_state() -> None:
    run = uuid.uuid4()
    st = witness(run, ConsumedOutcome(), 7, "key-7")
    report = interaction_report(st, LIVE)
    assert report == InteractionTerminalReport(
        input_id=st.input_id,
        phase=L.CONSUMED,
        terminal=ConsumedOutcome(),
        resolving_run_id=run,
        attempt_count=1,
        idempotency_key="key-7",
        updated_at=NOW,
        source=LIVE,
    )
    assert report.is_terminal
    assert not interaction_report(witness(run, None, 1), LIVE).is_terminal


# ---------------------------------------------------------------- live and durable witnesses


def facts(report: InteractionTerminalReport | None) -> dict[str, Any]:
    """Everything but the witness that answered."""
    assert report is not None
    return {f: getattr(report, f) for f in report.__dataclass_fields__ if f != "source"}


def test_live_and_durable_witnesses_give_the_same_answer(
    open_runtime: OpenRuntime, store_url: str
) -> None:
    rt = open_runtime(executor=EchoExecutor())
    s = rt.session("s-1")
    out = s.accept(prompt("hi", idempotency_key="order-42"))
    assert out.completion is not None
    out.completion.wait(WAIT)
    live = s.interaction_status(out.input_id)
    # Terminal inputs leave the session's state (issue 17): the log answers for them.
    assert live is not None and live.source is DURABLE
    assert live.phase is L.CONSUMED and live.terminal == ConsumedOutcome()
    assert live.idempotency_key == "order-42" and live.attempt_count == 1
    assert live.resolving_run_id is not None
    assert s.interaction_status(idempotency_key="order-42") == live
    assert s.input_id_for_idempotency_key("order-42") == out.input_id
    run = s.run_status(live.resolving_run_id)
    assert run.status is RunTerminalStatus.RESOLVED and run.outcome is RunResolutionClass.CONSUMED
    assert [w.input_id for w in run.witnesses] == [out.input_id]
    # A finished run's witnesses are terminal inputs: the log answers for them.
    assert run.source is DURABLE
    rt.close()

    rt2 = open_runtime(store_url)  # a restart: the session is not live here
    s2 = rt2.session("s-1")
    durable = s2.interaction_status(idempotency_key="order-42")
    assert durable is not None and durable.source is DURABLE
    assert facts(durable) == facts(live)
    assert s2.run_status(live.resolving_run_id) == run
    assert s2.input_id_for_idempotency_key("order-42") == out.input_id
    assert rt2.live_session_count() == 0  # answered without starting the session
    s2.state()  # now it is live
    again = s2.interaction_status(out.input_id)
    assert again is not None and again.source is DURABLE  # the load compacted it out
    assert facts(again) == facts(live)
    queued = s2.accept(prompt("later"))  # no executor now: it stays queued, held live
    report = s2.interaction_status(queued.input_id)
    assert report is not None and report.source is LIVE and report.phase is L.QUEUED


def test_the_durable_fold_agrees_with_the_session_fold(open_runtime: OpenRuntime) -> None:
    """Per input, on every field a report shows: superseded, coalesced, consumed, abandoned."""
    rt = open_runtime()
    s = rt.session("s-1")
    s.accept(prompt("a", idempotency_key="a"))
    s.accept(prompt("b", supersession_key="topic"))
    s.accept(prompt("c", supersession_key="topic"))  # supersedes b
    s.accept(prompt("d", idempotency_key="d"))
    s.reset()  # abandons the queued ones
    s.accept(prompt("e", idempotency_key="e"))
    state, _ = SessionJournal(rt.store).replay("s-1")
    durable = read_input_states(rt.store, "s-1")
    assert [st.input_id for st in durable] == list(state.inputs)
    for st in durable:
        assert interaction_report(st, DURABLE) == interaction_report(
            state.inputs[st.input_id], DURABLE
        )
        assert st.admission_sequence == state.inputs[st.input_id].admission_sequence
    assert {st.current_state for st in durable} == {L.SUPERSEDED, L.ABANDONED, L.QUEUED}


def test_the_durable_witness_does_not_need_terminal_inputs_in_the_session_state(
    open_runtime: OpenRuntime,
) -> None:
    """The live state keeps live inputs only (terminal ones are compacted out after the
    message that ended them): every answer about a terminal input comes from the log."""
    rt = open_runtime(executor=EchoExecutor())
    s = rt.session("s-1")
    out = s.accept(prompt("hi", idempotency_key="k"))
    assert out.completion is not None
    out.completion.wait(WAIT)
    held = s._query(lambda st, _: (list(st.inputs), st.knows(out.input_id)))
    assert held == ([], True)  # gone from the state, still known (a duplicate is one)
    before = s.interaction_status(out.input_id)
    assert before is not None and before.source is DURABLE and before.resolving_run_id is not None
    run_before = s.run_status(before.resolving_run_id)
    stored = s.stored_input_states_snapshot()  # every input: the terminal one from the log
    assert [x.input_id for x in stored] == [out.input_id] and stored[0].current_state is L.CONSUMED
    after = s.interaction_status(out.input_id)
    assert after is not None and after.source is DURABLE and facts(after) == facts(before)
    by_key = s.interaction_status(idempotency_key="k")
    assert by_key is not None and by_key.source is DURABLE and facts(by_key) == facts(before)
    assert s.run_status(before.resolving_run_id) == run_before
    assert s.input_id_for_idempotency_key("k") == out.input_id


def test_unknown_input_key_and_run_of_a_known_session(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    s = rt.session("s-1")
    s.accept(prompt(idempotency_key="k"))
    for answer in (lambda: s.interaction_status(uuid.uuid4()),
                   lambda: s.interaction_status(idempotency_key="k-2"),
                   lambda: s.interaction_status(idempotency_key=""),
                   lambda: s.input_id_for_idempotency_key("")):  # fmt: skip
        assert answer() is None
    assert s.run_status(uuid.uuid4()).status is RunTerminalStatus.NO_DURABLE_WITNESS
    queued = s.interaction_status(idempotency_key="k")
    assert queued is not None and queued.phase is L.QUEUED and queued.terminal is None
    assert queued.source is LIVE and queued.resolving_run_id is None
    assert queued.attempt_count == 0
    rt.close()
    rt2 = open_runtime()
    s2 = rt2.session("s-1")  # the same questions to the durable witness
    assert s2.interaction_status(uuid.uuid4()) is None
    assert s2.interaction_status(idempotency_key="k-2") is None
    assert s2.run_status(uuid.uuid4()).status is RunTerminalStatus.NO_DURABLE_WITNESS
    assert facts(s2.interaction_status(idempotency_key="k")) == facts(queued)


def test_a_created_session_without_inputs_is_known(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    rt.create_session("made")
    rt.close()
    s = open_runtime().session("made")
    assert s.interaction_status(uuid.uuid4()) is None
    assert s.run_status(uuid.uuid4()).status is RunTerminalStatus.NO_DURABLE_WITNESS
    assert s.input_id_for_idempotency_key("k") is None
    assert s.stored_input_states_snapshot() == []


def test_a_selector_names_exactly_one_thing(open_runtime: OpenRuntime) -> None:
    s = open_runtime().session("s-1")
    with pytest.raises(InvalidInput):
        s.interaction_status()
    with pytest.raises(InvalidInput):
        s.interaction_status(uuid.uuid4(), idempotency_key="k")
    with pytest.raises(InvalidInput):
        s.interaction_status("not-a-uuid")
    with pytest.raises(InvalidInput):
        s.interaction_status(idempotency_key=42)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        s.run_status("nope")
    with pytest.raises(InvalidInput):
        s.input_id_for_idempotency_key(None)  # type: ignore[arg-type]


def test_a_never_used_session_is_not_found_on_both_witnesses(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    s = rt.session("ghost")
    calls: tuple[Callable[[], object], ...] = (
        lambda: s.interaction_status(uuid.uuid4()),
        lambda: s.interaction_status(idempotency_key="k"),
        lambda: s.run_status(uuid.uuid4()),
        lambda: s.input_id_for_idempotency_key("k"),
        s.stored_input_states_snapshot,
    )
    for call in calls[:4]:  # not live: the durable witness
        with pytest.raises(SessionNotFound):
            call()
    assert rt.live_session_count() == 0
    with pytest.raises(SessionNotFound):
        s.state()  # starts its actor: now the live witness answers
    assert rt.live_session_count() == 1
    for call in calls:
        with pytest.raises(SessionNotFound):
            call()
    assert rt.sessions() == [] and rt.store.session_version("ghost") == 0


def test_a_retried_input_rebinds_its_run_and_the_first_run_has_no_witness(
    open_runtime: OpenRuntime, store_url: str
) -> None:
    """The documented limitation: the failed first run reports no_durable_witness."""
    flaky = FlakyExecutor(failures=1)
    rt = open_runtime(executor=flaky)
    s = rt.session("s-1")
    out = s.accept(prompt())
    assert out.completion is not None
    out.completion.wait(WAIT)
    first, second = (r.run_id for r in flaky.calls)
    for session in (s, open_runtime(store_url).session("s-1")):  # live, then durable
        report = session.interaction_status(out.input_id)
        assert report is not None and report.attempt_count == 2
        assert report.resolving_run_id == second and report.terminal == ConsumedOutcome()
        assert session.run_status(second).outcome is RunResolutionClass.CONSUMED
        assert session.run_status(first).status is RunTerminalStatus.NO_DURABLE_WITNESS


def test_a_run_in_flight_then_abandoned_by_stop(open_runtime: OpenRuntime, store_url: str) -> None:
    gated = GatedExecutor()
    rt = open_runtime(executor=gated)
    s = rt.session("s-1")
    out = s.accept(prompt())
    request = gated.wait_started()
    run = s.run_status(request.run_id)
    assert run.status is RunTerminalStatus.IN_FLIGHT and run.source is LIVE
    assert [w.input_id for w in run.witnesses] == [out.input_id]
    report = s.interaction_status(out.input_id)
    assert report is not None and report.phase is L.STAGED and report.terminal is None
    assert report.resolving_run_id == request.run_id and report.attempt_count == 1
    other = open_runtime(store_url).session("s-1")  # the log sees the same run in flight
    assert replace(other.run_status(request.run_id), witnesses=()) == replace(
        run, witnesses=(), source=DURABLE
    )
    s.stop()
    for session in (s, other):
        stopped = session.run_status(request.run_id)
        assert stopped.status is RunTerminalStatus.RESOLVED
        assert stopped.outcome is RunResolutionClass.ABANDONED
        assert stopped.abandon_reason == InputAbandonReason(AbandonKind.STOPPED)
    gated.release()


def test_a_session_owned_by_another_process_answers_from_the_store(sqlite_url: str) -> None:
    with (
        Runtime.open(sqlite_url, node_id="owner", executor=EchoExecutor()) as owner,
        Runtime.open(sqlite_url, node_id="other") as other,
    ):
        out = owner.session("s-1").accept(prompt(idempotency_key="k"))
        assert out.completion is not None
        out.completion.wait(WAIT)
        report = other.session("s-1").interaction_status(idempotency_key="k")
        assert report is not None and report.source is DURABLE
        assert report.phase is L.CONSUMED
        assert other.live_session_count() == 0


def test_stored_input_states_snapshot_lists_the_inputs_in_acceptance_order(
    open_runtime: OpenRuntime,
) -> None:
    s = open_runtime().session("s-1")
    ids = [s.accept(prompt(str(n))).input_id for n in range(3)]
    snapshot = s.stored_input_states_snapshot()
    assert [st.input_id for st in snapshot] == ids
    assert snapshot == [s.input_state(i) for i in ids]


# ---------------------------------------------------------------- across kill -9

CHILD = Path(__file__).with_name("_status_child.py")


@pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")
@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.slow])]
)
def test_the_same_answers_after_kill_9_and_restart(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A child process answers from its live session (a consumed input, one staged in a
    run in flight, one queued) and is killed with SIGKILL; a new process gets the same
    answers from the store without starting the session. Loading the session then rolls
    the staged input back to queued (the recovery rules), and both witnesses agree again."""
    url = store_url_for(backend, request, tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.actors._status_child", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    seen: list[dict[str, Any]] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("DONE"):
                break
            seen.append(orjson.loads(line))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(WAIT)
    assert proc.returncode == -signal.SIGKILL
    assert [r["phase"] for r in seen] == ["consumed", "staged", "queued"], (
        proc.stderr.read() if proc.stderr else ""
    )
    # The consumed input left the live state: the log answered for it in the child too.
    assert [r["source"] for r in seen] == ["durable_store", "live_runtime", "live_runtime"]
    with Runtime.open(url) as rt:
        s = rt.session("s-status")
        for before in seen:
            key = before["idempotency_key"]
            report = s.interaction_status(idempotency_key=key)
            assert report is not None
            assert report_json(report) == {**before, "source": "durable_store"}
            assert s.input_id_for_idempotency_key(key) == uuid.UUID(before["input_id"])
        done, held, _ = seen
        run = s.run_status(done["resolving_run_id"])
        assert run.status is RunTerminalStatus.RESOLVED and run.source is DURABLE
        assert s.run_status(held["resolving_run_id"]).status is RunTerminalStatus.IN_FLIGHT
        assert rt.live_session_count() == 0

        s.recover()  # loads the session: the run left in flight is rolled back
        for before in seen:
            live = s.interaction_status(idempotency_key=before["idempotency_key"])
            assert live is not None
            assert live.source is (DURABLE if before["phase"] == "consumed" else LIVE)
            if before is held:
                # Rolled back to queued: no run names it now (as after a retry).
                assert live.phase is L.QUEUED and live.resolving_run_id is None
                assert live.attempt_count == held["attempt_count"]
            else:
                assert report_json(live) == {**before, "source": live.source.value}
        left = s.run_status(held["resolving_run_id"])
        assert left.status is RunTerminalStatus.NO_DURABLE_WITNESS
    with Runtime.open(url) as again:  # the rollback is durable: the log says the same
        s = again.session("s-status")
        for before in seen:
            durable = s.interaction_status(idempotency_key=before["idempotency_key"])
            assert durable is not None and durable.source is DURABLE
            assert durable.phase is (L.QUEUED if before is held else L(before["phase"]))
