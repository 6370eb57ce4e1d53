"""Executors and helpers shared by the actor/runtime tests (public API only)."""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Iterable
from typing import Any

from meerkat_runtime import (
    AbandonedOutcome,
    CoalescedOutcome,
    InputAbandonReason,
    InputAccepted,
    InputLifecycleState,
    InputState,
    RunFailed,
    RunRequest,
    RunResult,
    RuntimeEventEnvelope,
    Session,
    SupersededOutcome,
)

from ..waiting import WAIT


def prompt(text: str = "hello", **header: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"input_type": "prompt", "content": text}
    if header:
        doc["header"] = dict(header)
    return doc


def external_event(
    event_type: str = "ci.status", payload: Any = None, **header: Any
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "input_type": "external_event",
        "event_type": event_type,
        "payload": payload if payload is not None else {"state": "green"},
        "header": {"source": {"type": "external", "source_name": "github"}, **header},
    }
    return doc


def peer_progress(
    request_id: str = "r-7", handling_mode: str | None = None, **header: Any
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "input_type": "peer",
        "header": {"source": {"type": "peer", "peer_id": "peer-a"}, **header},
        "convention": {
            "convention_type": "response_progress",
            "request_id": request_id,
            "phase": "in_progress",
        },
        "content": "",
        "payload": {"pct": 40},
    }
    if handling_mode is not None:
        doc["handling_mode"] = handling_mode
    return doc


def peer_terminal(
    request_id: str | None = None, handling_mode: str | None = None, status: str = "completed"
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "input_type": "peer",
        "header": {
            "source": {
                "type": "peer",
                "peer_id": str(uuid.uuid4()),
                "display_identity": "Alice",
            }
        },
        "convention": {
            "convention_type": "response_terminal",
            "request_id": request_id if request_id is not None else str(uuid.uuid4()),
            "status": status,
        },
        "content": "",
        "payload": {"answer": 42},
    }
    if handling_mode is not None:
        doc["handling_mode"] = handling_mode
    return doc


def peer_message(handling_mode: str | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "input_type": "peer",
        "header": {"source": {"type": "peer", "peer_id": "peer-b"}},
        "convention": {"convention_type": "message"},
        "content": "hi from b",
    }
    if handling_mode is not None:
        doc["handling_mode"] = handling_mode
    return doc


def operation(op_id: str = "op-1") -> dict[str, Any]:
    return {
        "input_type": "operation",
        "operation_id": op_id,
        "event": {"type": "started", "id": op_id, "kind": "tool"},
    }


def codes(events: Iterable[RuntimeEventEnvelope]) -> list[str]:
    """The event codes (``input.accepted`` ...) of ``events``, in order."""
    return [env.event.event_code for env in events]


def events_of(session: Session, after: int = 0) -> list[RuntimeEventEnvelope]:
    return list(session.events(after=after))


def last_sequence(session: Session) -> int:
    evs = events_of(session)
    return evs[-1].sequence if evs else 0


def accepted_ids(session: Session) -> list[uuid.UUID]:
    """Input ids of the session's ``input.accepted`` events, in log order."""
    return [e.event.input_id for e in session.events() if isinstance(e.event, InputAccepted)]


def phase(session: Session, input_id: uuid.UUID | str) -> InputLifecycleState | None:
    """The input's lifecycle state, or None when the session does not know it."""
    st = session.input_state(input_id)
    return None if st is None else st.current_state


def abandon_reason(st: InputState | None) -> InputAbandonReason:
    assert st is not None and isinstance(st.terminal_outcome, AbandonedOutcome), st
    return st.terminal_outcome.reason


def coalesced_into(st: InputState | None) -> uuid.UUID:
    assert st is not None and isinstance(st.terminal_outcome, CoalescedOutcome), st
    return st.terminal_outcome.aggregate_id


def superseded_by(st: InputState | None) -> uuid.UUID:
    assert st is not None and isinstance(st.terminal_outcome, SupersededOutcome), st
    return st.terminal_outcome.superseded_by


def run_failures(session: Session) -> list[RunFailed]:
    return [e.event for e in session.events() if isinstance(e.event, RunFailed)]


# ---------------------------------------------------------------- executors


class GatedExecutor:
    """Holds every run until :meth:`release` (or a per-run :meth:`step`), recording requests.

    ``started`` receives each request as its run begins, so a test can wait
    until a run is "mid-run".
    """

    def __init__(self, output: Any = "done") -> None:
        self.gate = threading.Event()
        self.steps: queue.Queue[None] = queue.Queue()
        self.started: queue.Queue[RunRequest] = queue.Queue()
        self.requests: list[RunRequest] = []
        self.output = output
        self._lock = threading.Lock()

    def run(self, request: RunRequest) -> RunResult:
        with self._lock:
            self.requests.append(request)
        self.started.put(request)
        deadline = time.monotonic() + 30
        while not self.gate.is_set():
            try:
                self.steps.get(timeout=0.01)
                break
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise RuntimeError("gated run never released") from None
        return RunResult(status="completed", output=self.output)

    def wait_started(self, timeout: float = WAIT) -> RunRequest:
        return self.started.get(timeout=timeout)

    def step(self) -> None:
        """Let exactly one held (or the next) run finish."""
        self.steps.put(None)

    def release(self) -> None:
        self.gate.set()


class FlakyExecutor:
    """Fails (returns a failed result, or raises) the first ``failures`` runs, then completes."""

    def __init__(self, failures: int, *, raises: bool = False) -> None:
        self.failures = failures
        self.raises = raises
        self.calls: list[RunRequest] = []
        self._lock = threading.Lock()

    def run(self, request: RunRequest) -> RunResult:
        with self._lock:
            self.calls.append(request)
            n = len(self.calls)
        if n <= self.failures:
            if self.raises:
                raise RuntimeError(f"boom #{n}")
            return RunResult(status="failed", error=f"failure #{n}")
        return RunResult(output={"attempt": n})


class RaisingExecutor:
    """Raises on every run."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, request: RunRequest) -> RunResult:
        self.calls += 1
        raise ValueError("executor exploded")


class HangingExecutor:
    """Blocks every run until :meth:`release` (past any ``run_timeout``)."""

    def __init__(self) -> None:
        self.released = threading.Event()
        self.calls = 0
        self._lock = threading.Lock()

    def run(self, request: RunRequest) -> RunResult:
        with self._lock:
            self.calls += 1
        self.released.wait(60)
        return RunResult(output="too late")

    def release(self) -> None:
        self.released.set()
