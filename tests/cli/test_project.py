"""``meerkat-runtime project``: the read models kept by a process of their own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from meerkat_runtime import Runtime

from ..store_urls import store_url_for
from ..waiting import WAIT
from ._support import cli

SCRIPT = Path(sys.executable).with_name("meerkat-runtime")


def _start(url: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "MEERKAT_DEBUG"}
    return subprocess.Popen(
        [str(SCRIPT), "project", "--store", url, "--every", "0.2", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _wait_until(predicate: Callable[[], bool], what: str) -> None:
    """Poll ``predicate``; the read-model tables exist only once the other process made them."""
    deadline = time.monotonic() + WAIT
    while True:
        try:
            if predicate():
                return
        except Exception:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_a_project_process_keeps_the_read_models_of_a_host_without_projections(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = store_url_for(backend, request, tmp_path)
    with Runtime.open(url, projections=False) as host:
        first = host.session("s-1").accept({"input_type": "prompt", "content": "before"})
        proc = _start(url)
        try:
            later = [
                host.session(f"s-{n % 3}").accept({"input_type": "prompt", "content": f"m{n}"})
                for n in range(20)
            ]
            ids = {first.input_id, *(o.input_id for o in later)}
            # The host projects nothing: the rows come from the other process.
            assert host.projections.status() == []
            _wait_until(
                lambda: {row.input_id for row in host.ledger.list(limit=1000)} >= ids,
                "the ledger rows of every accepted input",
            )
            _wait_until(lambda: len(host.views.list()) == 3, "a view row per session")
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    reports = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    final = {p["name"]: p for p in reports[-1]["projections"]}
    assert set(final) == {"ledger", "views"}
    assert all(p["status"] == "running" and p["lag"] == 0 for p in final.values()), final


def test_project_refuses_a_memory_store() -> None:
    result = cli("project", "--store", "memory://nothing-to-share")
    assert result.exit_code == 1
    assert "lives in one process" in result.output


@pytest.mark.parametrize("every", ["0", "-1"])
def test_project_refuses_a_bad_interval(every: str) -> None:
    result = cli("project", "--store", "memory://x", "--every", every)
    assert result.exit_code == 2
