"""``verify``, ``rebuild-projections``, ``recover``, ``health`` and ``bench``."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from meerkat_runtime import RunRequest, RunResult, Runtime
from meerkat_runtime.health import HealthLimits, check_health, run_started

from ..waiting import WAIT
from ._support import Populated, cli, cli_json, event_count, prompt, sql

# ---------------------------------------------------------------- verify


def test_verify_passes_on_a_consistent_store(populated: Populated) -> None:
    result = cli("verify", "--store", populated.url)
    assert result.exit_code == 0, result.output
    n_inputs = sum(len(ids) for ids in populated.accepted.values())
    assert result.stdout.startswith(
        f"verify: ok ({len(populated.sessions)} sessions, {n_inputs} inputs, "
        f"{event_count(populated.url)} events)"
    )
    report = cli_json("verify", "--store", populated.url)
    assert report["ok"] is True
    assert report["mismatches"] == []
    assert report["sessions"] == len(populated.sessions)
    assert report["inputs"] == n_inputs
    assert report["events"] == event_count(populated.url)


def _tamper(url: str, populated: Populated) -> str:
    """Change both read models behind the runtime's back; return the ledger row removed."""
    assert sql(url, "UPDATE meerkat_views SET queued = 99 WHERE session_id = 'queued-one'") == 1
    victim = populated.accepted["beta"][0]
    assert sql(url, "DELETE FROM meerkat_ledger WHERE input_id = ?", victim) == 1
    return victim


def test_verify_reports_a_tampered_read_model(populated: Populated, store_copy: str) -> None:
    victim = _tamper(store_copy, populated)
    result = cli("verify", "--store", store_copy)
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "verify: 2 mismatches" in result.stdout
    lines = result.stdout.splitlines()
    assert any(
        "session 'queued-one': views queued: expected 3, found 99" in line for line in lines
    ), lines
    assert any(
        f"session 'beta' input {victim}: ledger row: expected a consumed input, found no row"
        in line
        for line in lines
    ), lines

    result = cli("verify", "--store", store_copy, "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert len(report["mismatches"]) == 2
    assert {"model": "views", "where": "session 'queued-one'", "field": "queued",
            "expected": "3", "found": "99"} in report["diffs"]  # fmt: skip


def test_rebuild_projections_restores_tampered_read_models(
    populated: Populated, store_copy: str
) -> None:
    _tamper(store_copy, populated)
    result = cli("rebuild-projections", "--store", store_copy)
    assert result.exit_code == 0, result.output
    assert "rebuilt ledger and views" in result.stdout
    assert cli("verify", "--store", store_copy).exit_code == 0
    assert cli_json("views", "--state", "idle", "--store", store_copy)[0]["queued"] == 3


def test_rebuild_one_projection_json(populated: Populated, store_copy: str) -> None:
    assert sql(store_copy, "UPDATE meerkat_views SET queued = 99 WHERE session_id = 'alpha'") == 1
    assert cli("verify", "--store", store_copy).exit_code == 1
    out = cli_json("rebuild-projections", "views", "--store", store_copy)
    assert out["rebuilt"] == "views"
    head = event_count(store_copy)
    assert {s["name"]: (s["status"], s["position"]) for s in out["status"]} == {
        "ledger": ("running", head),
        "views": ("running", head),
    }
    assert cli_json("verify", "--store", store_copy)["ok"] is True


def test_rebuild_unknown_projection_is_a_clean_error(store_copy: str) -> None:
    result = cli("rebuild-projections", "nonsense", "--store", store_copy)
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "error: unknown projection 'nonsense'" in result.stderr


# ---------------------------------------------------------------- recover


def test_recover_reports_and_runs_nothing(populated: Populated, store_copy: str) -> None:
    result = cli("recover", "--store", store_copy)
    assert result.exit_code == 0, result.output
    # the destroyed session is skipped; only the ephemeral input is abandoned
    assert "recovered 6 of 7 sessions" in result.stdout
    assert "1 abandoned" in result.stdout
    ledger = {r["input_id"]: r for r in cli_json("ledger", "--store", store_copy)}
    assert ledger[populated.ephemeral]["state"] == "abandoned"
    # no executor: nothing ran, the durable queued inputs are still queued
    still = {r["input_id"] for r in cli_json("ledger", "--state", "queued", "--store", store_copy)}
    assert still == populated.all_queued() - {populated.ephemeral}
    assert cli_json("inspect", "ephemeral-one", "--store", store_copy)["queue"] == []
    assert cli("verify", "--store", store_copy).exit_code == 0


def test_recover_json_is_idempotent(populated: Populated, store_copy: str) -> None:
    first = cli_json("recover", "--store", store_copy)
    assert len(first) == len(populated.sessions) - 1
    assert sum(r["inputs_abandoned"] for r in first) == 1
    assert all({"inputs_recovered", "inputs_requeued", "details"} <= set(r) for r in first)
    events = event_count(store_copy)
    second = cli_json("recover", "--store", store_copy)
    assert sum(r["inputs_abandoned"] for r in second) == 0
    assert event_count(store_copy) == events


# ---------------------------------------------------------------- health


def test_health_on_a_healthy_store(populated: Populated) -> None:
    result = cli("health", "--store", populated.url)
    assert result.exit_code == 0, result.output
    assert "health: healthy" in result.stdout
    assert f"queued inputs: {len(populated.all_queued())}" in result.stdout
    signals = cli_json("health", "--store", populated.url)
    assert signals["healthy"] is True
    assert signals["problems"] == []
    assert signals["queued_inputs"] == len(populated.all_queued())
    assert signals["oldest_queued_age_seconds"] > 0
    assert signals["stuck_runs"] == []
    assert signals["skipped_events"] == 0
    head = event_count(populated.url)
    assert {p["name"]: (p["status"], p["position"], p["lag"]) for p in signals["projections"]} == {
        "ledger": ("running", head, 0),
        "views": ("running", head, 0),
    }


def test_health_flags_old_queued_inputs(populated: Populated) -> None:
    result = cli("health", "--max-queue-age", "0", "--store", populated.url)
    assert result.exit_code == 1
    assert "health: unhealthy" in result.stdout
    assert any(
        line.strip().startswith("- an input has been queued for")
        for line in result.stdout.splitlines()
    ), result.stdout
    result = cli("health", "--max-queue-age", "0", "--store", populated.url, "--json")
    assert result.exit_code == 1
    signals = json.loads(result.stdout)
    assert signals["healthy"] is False
    assert len(signals["problems"]) == 1
    assert "queued for" in signals["problems"][0]


def test_health_flags_skipped_projection_events(store_copy: str) -> None:
    sql(
        store_copy,
        "INSERT INTO meerkat_projection_skipped (name, position, session_id, topic, error, skipped_at) "
        "VALUES ('ledger', 5, 'alpha', 'input.queued', 'boom', '2026-01-01T00:00:00Z')",
    )
    result = cli("health", "--store", store_copy)
    assert result.exit_code == 1
    assert "skipped projection events: 1" in result.stdout
    assert "1 projection event(s) skipped" in result.stdout
    assert cli_json_exit("health", "--store", store_copy)["skipped_events"] == 1


def cli_json_exit(*args: str) -> dict[str, object]:
    result = cli(*args, "--json")
    assert result.exit_code in (0, 1), result.output
    value: dict[str, object] = json.loads(result.stdout)
    return value


class BlockingExecutor:
    """Holds every run until released (a run that is "stuck")."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.gate = threading.Event()

    def run(self, request: RunRequest) -> RunResult:
        self.started.set()
        self.gate.wait(WAIT)
        return RunResult(status="completed")


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A store with a session in a run that does not finish while the test looks at it."""
    url = f"sqlite:///{tmp_path / 'running.db'}"
    executor = BlockingExecutor()
    with Runtime.open(url, executor=executor) as rt:
        outcome = rt.session("busy").accept(prompt("think hard"))
        assert executor.started.wait(WAIT)
        rt.projections.wait_caught_up(WAIT)
        try:
            yield url, str(outcome.input_id)
        finally:
            executor.gate.set()


def test_a_session_in_a_run(running: tuple[str, str]) -> None:
    url, input_id = running
    info = cli_json("inspect", "busy", "--store", url)
    assert info["state"] == "running"
    assert info["current_run"]["inputs"] == [input_id]
    assert info["counts"] == {"staged": 1}
    view = cli_json("views", "--store", url)[0]
    assert (view["state"], view["staged"]) == ("running", 1)
    assert view["current_run_id"] == info["current_run"]["run_id"]
    assert [r["input_id"] for r in cli_json("ledger", "--state", "staged", "--store", url)] == [
        input_id
    ]

    assert cli_json("health", "--store", url)["healthy"] is True
    result = cli("health", "--max-run-age", "0", "--store", url)
    assert result.exit_code == 1
    assert "1 session(s) running for more than 0s: busy" in result.stdout
    signals = cli_json_exit("health", "--max-run-age", "0", "--store", url)
    assert signals["stuck_runs"] == ["busy"]


# ---------------------------------------------------------------- bench


def test_bench_unknown_name() -> None:
    result = cli("bench", "no-such-bench")
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "error: unknown benchmark 'no-such-bench'" in result.stderr
    (hint,) = [line for line in result.stderr.splitlines() if line.startswith("hint: available: ")]
    assert "store" in hint.removeprefix("hint: available: ").split(", ")


def test_bench_runs_a_benchmark_script(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    result = cli(
        "bench", "store", "--arg=--backends", "--arg=memory", "--arg=--events", "--arg=50",
        "--arg=--sessions", "--arg=1", "--arg=--json", f"--arg={out}",
    )  # fmt: skip
    assert result.exit_code == 0, result.output + capfd.readouterr().err
    report = json.loads(out.read_text())
    assert report["benchmark"] == "store_bench"
    assert {r["backend"] for r in report["results"]} == {"memory"}


def test_a_stuck_run_that_keeps_receiving_input(tmp_path: Path) -> None:
    """The run's age counts from its start, not from the session's last event.

    The clock is injected: "now" is one second after the session's last event (an
    input queued while the run went on), and the age limit falls between the run's
    age and the last event's age, so only an age counted from the run's start is over it.
    """
    url = f"sqlite:///{tmp_path / 'stuck.db'}"
    executor = BlockingExecutor()
    with Runtime.open(url, executor=executor) as rt:
        try:
            session = rt.session("busy")
            session.accept(prompt("think hard"))
            assert executor.started.wait(WAIT)
            assert session.accept(prompt("are you there?")).kind == "accepted"
            rt.projections.wait_caught_up(WAIT)
            view = rt.views.get("busy")
            assert view is not None and view.state == "running"
            started, last_event = run_started(rt, view), view.updated_at
            assert started < last_event  # the later input moved the view on
            now = last_event + timedelta(seconds=1)
            limit = ((now - started) + (now - last_event)).total_seconds() / 2
            report = check_health(rt, HealthLimits(max_run_age=limit), now)
            assert report.stuck_runs == ["busy"]
            # The command reads the same signal (with the real clock: any run is older than 0 s).
            signals = cli_json_exit("health", "--max-run-age", "0", "--store", url)
            assert signals["stuck_runs"] == ["busy"]
            assert cli_json_exit("health", "--max-run-age", "600", "--store", url)["healthy"]
        finally:
            executor.gate.set()


def test_a_failed_projection_is_reported_then_rebuilt(store_copy: str) -> None:
    """health still answers (with JSON) when a projection fails; rebuild-projections repairs it."""
    # A read-model row the views projection cannot load, then events that need it.
    assert sql(store_copy, "UPDATE meerkat_views SET counts = '{' WHERE session_id = 'beta'") == 1
    with Runtime.open(store_copy, projections=False) as rt:
        rt.session("beta").accept(prompt("one more"))
    result = cli("health", "--max-lag", "0", "--max-queue-age", "86400", "--store", store_copy, "--json")  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    signals = json.loads(result.stdout)
    assert signals["healthy"] is False
    views = next(p for p in signals["projections"] if p["name"] == "views")
    assert views["status"] == "failed"
    assert views["lag"] > 0
    assert any(p.startswith("projection views is failed") for p in signals["problems"])
    assert any(p.startswith("projection views lags") for p in signals["problems"])

    result = cli("rebuild-projections", "--store", store_copy)
    assert result.exit_code == 0, result.output
    assert cli_json("verify", "--store", store_copy)["ok"] is True
    assert cli_json("health", "--max-queue-age", "86400", "--store", store_copy)["healthy"] is True


def test_verify_says_where_each_read_model_was_compared(populated: Populated) -> None:
    result = cli("verify", "--store", populated.url)
    assert result.exit_code == 0, result.output
    head = event_count(populated.url)
    assert (
        f"  compared: ledger at position {head} (lag 0), views at position {head} (lag 0)"
        in result.stdout.splitlines()
    )
    report = cli_json("verify", "--store", populated.url)
    assert report["positions"] == {"ledger": head, "views": head}
    assert report["lag"] == {"ledger": 0, "views": 0}
    assert report["diffs"] == []
