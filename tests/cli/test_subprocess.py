"""The real console script in a real process: ``demo`` (with its SIGKILL), ``verify``, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ._support import Populated, assert_clean_error, cli, cli_json

SCRIPT = Path(sys.executable).with_name("meerkat-runtime")
TIMEOUT = 120


def run(*args: str, module: bool = False) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "meerkat_runtime"] if module else [str(SCRIPT)]
    env = {k: v for k, v in os.environ.items() if k != "MEERKAT_DEBUG"} | {"COLUMNS": "200"}
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=TIMEOUT, env=env, check=False
    )


@pytest.fixture(scope="module")
def demo_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[str, subprocess.CompletedProcess[str]]:
    url = f"sqlite:///{tmp_path_factory.mktemp('demo') / 'demo.db'}"
    return url, run("demo", "--sessions", "20", "--inputs", "200", "--json", "--store", url)


def test_demo_json(demo_run: tuple[str, subprocess.CompletedProcess[str]]) -> None:
    url, proc = demo_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    # the workload's operation inputs are valid ones (it sent progress reports for
    # operations never started, refused with a warning each)
    assert "its event refused" not in proc.stderr, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["ok"] is True
    assert summary["acked_before_kill"] > 0
    assert summary["acked_found_after_recovery"] == summary["acked_before_kill"]
    assert summary["verify_ok"] is True
    assert summary["verify_mismatches"] == []
    assert summary["stuck"] == 0  # every queued input that wakes its session ran
    assert summary["store"] == url
    assert summary["accepted"] > 0
    assert summary["runs_completed"] > 0
    assert summary["recovered_sessions"] > 0
    assert sum(summary["inputs_by_state"].values()) == summary["accepted"]
    assert 0 < sum(summary["sessions_by_state"].values()) <= 20


def test_verify_and_inspect_the_demo_store(
    demo_run: tuple[str, subprocess.CompletedProcess[str]],
) -> None:
    url, proc = demo_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    verify = run("verify", "--store", url)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert verify.stdout.startswith("verify: ok")
    report = cli_json("verify", "--store", url)
    assert report["ok"] is True
    sessions = cli_json("sessions", "--store", url)
    summary = json.loads(proc.stdout)
    assert len(sessions) == sum(summary["sessions_by_state"].values())
    assert report["events"] == summary["events"]


def test_demo_table_in_process(tmp_path: Path) -> None:
    """The demo's tables (its child process is real: it is what gets the SIGKILL)."""
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    result = cli("demo", "--sessions", "4", "--inputs", "40", "--store", url)
    assert result.exit_code == 0, result.output[-3000:]
    out = result.stdout
    for title in ("inputs by state", "sessions by state", "summary"):
        assert title in out
    assert "(all)" in out
    (verdict,) = [line for line in out.splitlines() if "verify (fold vs ledger and views)" in line]
    assert "ok" in verdict


def test_demo_refuses_a_store_that_does_not_survive_the_kill() -> None:
    result = cli("demo", "--store", "memory://", "--sessions", "2", "--inputs", "10")
    assert_clean_error(result, "the demo kills and reopens the process", "not memory://")
    assert result.stdout == ""


def test_demo_reports_a_child_that_cannot_start(tmp_path: Path) -> None:
    missing = tmp_path / "no-dir" / "demo.db"
    proc = run("demo", "--store", f"sqlite:///{missing}", "--sessions", "2", "--inputs", "10")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    (error,) = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert "child process exited with code 1 before the kill" in error
    assert "does not exist" in error


def test_python_dash_m_help() -> None:
    proc = run("--help", module=True)
    assert proc.returncode == 0, proc.stderr
    for name in ("demo", "sessions", "inspect", "verify", "export", "import", "health"):
        assert name in proc.stdout


def test_console_script_verify_and_error(populated: Populated, tmp_path: Path) -> None:
    proc = run("verify", "--store", populated.url)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    missing = tmp_path / "missing.db"
    proc = run("sessions", "--store", f"sqlite:///{missing}")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[0].startswith("error: no store at")
    assert lines[1].startswith("hint: ")
    assert len(lines) == 2
    assert not missing.exists()
