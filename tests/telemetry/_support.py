"""Helpers of the telemetry tests (public API only)."""

from __future__ import annotations

import threading
import time
from typing import Any

from meerkat_runtime import RunRequest, RunResult


def prompt(text: str = "hello", **header: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"input_type": "prompt", "content": text}
    if header:
        doc["header"] = dict(header)
    return doc


class GatedExecutor:
    """Holds every run until :meth:`release` (or until its call is cancelled)."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.started = threading.Event()

    def run(self, request: RunRequest) -> RunResult:
        self.started.set()
        deadline = time.monotonic() + 30
        while not self.gate.is_set() and time.monotonic() < deadline:
            if request.cancel.wait(0.01):
                break
        return RunResult.completed("done")

    def release(self) -> None:
        self.gate.set()
