"""Operator commands that change one session: retire, reset, stop, destroy, cancel-run;
and ``inspect --at``, the session as it was at a sequence.

Each writing command is a node of its own while it runs: a session another live
process owns is left alone (exit 1, nothing written) unless ``--force``. A
``cancel-run`` on a session whose process died mid-run cancels the run the log holds
in flight: its inputs are abandoned (``cancelled``) instead of re-queued and run
again. On SQLite files and PostgreSQL (``memory://`` lives in one process only, so a
command in another process has nothing to act on).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from meerkat_runtime import InputLifecycleState, Runtime, RuntimeState

from ..waiting import WAIT, wait_until
from ._support import assert_clean_error, cli, cli_json

PROMPT = {"input_type": "prompt", "content": "hi"}
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ops.db'}"
    value: str = request.getfixturevalue("postgres_url")
    return value


def _queued(url: str, session: str, n: int) -> None:
    """``session`` with ``n`` inputs left queued (no executor), its runtime closed."""
    with Runtime.open(url) as rt:
        for i in range(n):
            rt.session(session).accept({**PROMPT, "content": f"p{i}"})


def _state(url: str, session: str) -> tuple[RuntimeState, list[InputLifecycleState]]:
    with Runtime.open(url) as rt:
        s = rt.session(session)
        states = [s.input_state(i) for i in _all_inputs(rt, session)]
        return s.state(), [x.current_state for x in states if x is not None]


def _all_inputs(rt: Runtime, session: str) -> list[str]:
    rt.projections.wait_caught_up(WAIT)
    return [str(e.input_id) for e in rt.ledger.list(session_id=session)]


@pytest.mark.parametrize(
    ("command", "verb", "state"),
    [
        ("reset", "reset", RuntimeState.IDLE),
        ("stop", "stopped", RuntimeState.STOPPED),
        ("destroy", "destroyed", RuntimeState.DESTROYED),
        ("retire", "retired", RuntimeState.RETIRED),
    ],
)
def test_a_lifecycle_command_abandons_what_it_must_and_reports_it(
    url: str, command: str, verb: str, state: RuntimeState
) -> None:
    _queued(url, "s", 3)
    extra = ["--yes"] if command == "destroy" else []
    out = cli_json(command, "s", "--store", url, *extra)
    assert out == {
        "session_id": "s",
        "operation": verb,
        "inputs_abandoned": 3,
        **({"inputs_pending_drain": 0} if command == "retire" else {}),
        "state": state.value,
    }
    found_state, inputs = _state(url, "s")
    assert found_state is state  # in the log: a restarted runtime sees it
    assert inputs == [InputLifecycleState.ABANDONED] * 3

    _queued(url, "t", 1)
    result = cli(command, "t", "--store", url, *extra)
    assert result.exit_code == 0, result.output
    assert f"{verb} t (now {state.value})" in result.stdout
    assert "inputs abandoned: 1" in result.stdout


def test_an_unknown_session_is_an_error_and_writes_nothing(url: str) -> None:
    _queued(url, "s", 1)
    for args in (["retire"], ["reset"], ["stop"], ["destroy", "--yes"], ["cancel-run"]):
        result = cli(*args, "typo", "--store", url)
        assert_clean_error(result, "'typo'")
        assert "meerkat-runtime sessions" in result.stderr
    with Runtime.open(url) as rt:
        assert rt.store.session_version("typo") == 0
        assert rt.session("typo").accept(PROMPT).kind == "accepted"  # the id is not burnt


def test_destroy_asks_first(url: str) -> None:
    _queued(url, "s", 1)
    result = cli("destroy", "s", "--store", url)  # no terminal to ask on
    assert_clean_error(result, "cannot be undone", "--yes")
    assert _state(url, "s")[0] is RuntimeState.IDLE


def test_a_session_a_live_process_owns_is_left_alone_unless_forced(url: str) -> None:
    with Runtime.open(url, node_id="node-p") as rt:
        rt.session("s").accept(PROMPT)
        version = rt.store.session_version("s")
        for args in (["retire"], ["reset"], ["stop"], ["destroy", "--yes"]):
            result = cli(*args, "s", "--store", url)
            assert_clean_error(result, "s (node node-p)")
            assert "--force" in result.stderr
            assert rt.store.session_version("s") == version  # nothing written
        out = cli_json("stop", "s", "--store", url, "--force")
        assert out["state"] == "stopped" and out["inputs_abandoned"] == 1
        (lease,) = rt.store.shared().list_leases("session:s")
        assert lease.owner.startswith("cli-stop-")


def test_cancel_run_without_a_run_is_an_error_and_writes_nothing(url: str) -> None:
    _queued(url, "s", 1)
    with Runtime.open(url, projections=False) as rt:
        version = rt.store.session_version("s")
    assert_clean_error(cli("cancel-run", "s", "--store", url), "has no run in flight")
    with Runtime.open(url, projections=False) as rt:
        assert rt.store.session_version("s") == version


def test_a_run_in_a_live_process_is_cancelled_only_when_forced(url: str) -> None:
    gate, started = threading.Event(), threading.Event()

    def held(request: object) -> None:
        started.set()
        gate.wait(WAIT)

    with Runtime.open(url, executor=held, node_id="node-p") as rt:
        s = rt.session("s")
        outcome = s.accept(PROMPT)
        wait_until(started.is_set, WAIT, "the run to start")
        result = cli("cancel-run", "s", "--store", url)
        assert_clean_error(result, "s (node node-p)")
        assert "--force" in result.stderr
        out = cli_json("cancel-run", "s", "--store", url, "--force")
        assert out["cancelled"] is True and out["run_id"] is not None
        gate.set()
    with Runtime.open(url) as rt:
        st = rt.session("s").input_state(outcome.input_id)
        assert st is not None and st.current_state is InputLifecycleState.ABANDONED


def test_cancel_run_checks_the_run_id(url: str) -> None:
    _queued(url, "s", 1)
    assert_clean_error(cli("cancel-run", "s", "--run", "nope", "--store", url), "'nope'", "UUID")


_CHILD = textwrap.dedent(
    """
    import sys, threading
    from meerkat_runtime import Runtime

    def executor(request):
        print("RUNNING", request.run_id, flush=True)
        threading.Event().wait()  # held until the process is killed

    rt = Runtime.open(sys.argv[1], executor=executor, lease_ttl=0.5)
    rt.session("s").accept({"input_type": "prompt", "content": "poison"})
    threading.Event().wait()
    """
)


def _killed_mid_run(url: str) -> str:
    """A child process accepts one input, starts its run, and is killed (-9) in it."""
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, url],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        line = ""
        timer = threading.Timer(WAIT, child.kill)
        timer.start()
        try:
            assert child.stdout is not None
            line = child.stdout.readline()
        finally:
            timer.cancel()
        assert line.startswith("RUNNING"), line
        return line.split()[1]
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()


def test_cancel_run_after_a_crash_mid_run_abandons_instead_of_running_again(url: str) -> None:
    run_id = _killed_mid_run(url)

    def lease_expired() -> bool:
        with Runtime.open(url, projections=False) as rt:
            return not any(x.live for x in rt.store.shared().list_leases("session:s"))

    wait_until(lease_expired, WAIT, "the killed process's lease to expire")
    other = "0195a000-0000-7000-8000-000000000000"
    assert_clean_error(cli("cancel-run", "s", "--run", other, "--store", url), f"run {other}")
    out = cli_json("cancel-run", "s", "--run", run_id, "--store", url, "--reason", "poison")
    assert out["cancelled"] is True and out["state"] == "idle"

    ran: list[str] = []
    with Runtime.open(url, executor=lambda r: ran.append(str(r.run_id))) as rt:
        s = rt.session("s")
        (iid,) = _all_inputs(rt, "s")
        st = s.input_state(iid)
        assert st is not None and st.current_state is InputLifecycleState.ABANDONED
        assert st.terminal_outcome is not None and "cancelled" in str(st.terminal_outcome)
        assert s.active_input_ids() == []
    assert ran == []  # the input was not run again
    events = cli_json("events", "s", "--store", url)
    codes = [(e["event"]["category"], e["event"]["data"].get("code")) for e in events]
    assert codes[-4:-1] == [
        ("input_lifecycle", "staged"),
        ("input_lifecycle", "abandoned"),
        ("run_lifecycle", "cancelled"),
    ]
    assert ("run_lifecycle", "failed") not in codes  # not closed as interrupted and re-queued


def test_without_cancel_run_a_crash_mid_run_runs_the_input_again(url: str) -> None:
    """The contrast: what recovery does on its own (at-least-once)."""
    _killed_mid_run(url)
    done = threading.Event()
    with Runtime.open(url, executor=lambda r: done.set(), recover="eager") as rt:
        wait_until(done.is_set, WAIT * 2, "the interrupted input to run again")
        s = rt.session("s")
        (iid,) = _all_inputs(rt, "s")

        def consumed() -> bool:
            st = s.input_state(iid)
            return st is not None and st.current_state is InputLifecycleState.CONSUMED

        wait_until(consumed, WAIT, "the re-run input to be consumed")


def test_inspect_at_a_sequence_shows_the_session_as_it_was(url: str) -> None:
    _queued(url, "s", 2)
    now = cli_json("inspect", "s", "--store", url)
    first = cli_json("inspect", "s", "--store", url, "--at", "1")
    assert first["at"] == 1 and first["version"] == 1
    assert len(first["recent_events"]) == 1
    assert len(now["queue"]) == 2 and now["at"] == now["version"] > 1
    # after the first input's accepted + queued events, one input is queued
    accepted = [
        e["sequence"] for e in now["recent_events"] if e["event"]["data"].get("code") == "queued"
    ]
    mid = cli_json("inspect", "s", "--store", url, "--at", str(accepted[0]))
    assert len(mid["queue"]) == 1 and mid["counts"] == {"queued": 1}
    assert_clean_error(
        cli("inspect", "s", "--store", url, "--at", str(now["version"] + 1)),
        f"has {now['version']} events",
    )
    result = cli("inspect", "s", "--store", url, "--at", "0")
    assert result.exit_code == 2  # a usage error: sequences start at 1
