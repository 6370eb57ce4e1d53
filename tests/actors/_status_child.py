"""A runtime process for the terminal-status kill -9 test; the parent kills it with SIGKILL.

Usage: ``python _status_child.py STORE_URL``. In session ``s-status`` it accepts
a prompt and waits for its completion (consumed), accepts a ``hold`` prompt whose
run blocks until the kill (staged, run in flight), and a third prompt that
queues behind it. Then it prints, one JSON line each, the terminal status of the
three (by idempotency key, from its live session), and ``DONE``; then it sleeps.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import orjson

from meerkat_runtime import RunRequest, RunResult, Runtime
from meerkat_runtime.terminal_status import InteractionTerminalReport

HELD = threading.Event()


class SecondRunHolds:
    """Completes the first run; the second blocks until the kill."""

    def __init__(self) -> None:
        self.runs = 0

    def run(self, request: RunRequest) -> RunResult:
        self.runs += 1
        if self.runs == 2:
            HELD.set()
            threading.Event().wait()  # until killed
        return RunResult(output="done")


def report_json(report: InteractionTerminalReport) -> dict[str, Any]:
    """The report as JSON, as the parent compares it."""
    return {
        "input_id": str(report.input_id),
        "phase": report.phase.value,
        "terminal": None if report.terminal is None else repr(report.terminal),
        "resolving_run_id": None
        if report.resolving_run_id is None
        else str(report.resolving_run_id),
        "attempt_count": report.attempt_count,
        "idempotency_key": report.idempotency_key,
        "updated_at": report.updated_at.isoformat(),
        "source": report.source.value,
    }


def prompt(text: str, key: str) -> dict[str, Any]:
    return {"input_type": "prompt", "content": text, "header": {"idempotency_key": key}}


def main(url: str) -> None:
    rt = Runtime.open(url, executor=SecondRunHolds())
    s = rt.session("s-status")
    done = s.accept(prompt("first", "k-done"))
    assert done.completion is not None
    done.completion.wait(60)
    s.accept(prompt("hold", "k-held"))
    if not HELD.wait(60):
        raise SystemExit("the held run never started")
    s.accept(prompt("after", "k-queued"))
    for key in ("k-done", "k-held", "k-queued"):
        report = s.interaction_status(idempotency_key=key)
        assert report is not None
        print(orjson.dumps(report_json(report)).decode(), flush=True)
    print("DONE", flush=True)
    while True:
        time.sleep(60)


if __name__ == "__main__":
    main(sys.argv[1])
