"""Projections, executors and input documents shared by the projection tests.

:class:`CountingProjection` is the exactly-once detector: it keeps one row
per log position it applied, with how many times it applied it. After the
projection has caught up, every position of the log must be there exactly
once (no event skipped, none applied twice). It can also be told to sleep
inside ``apply`` (to widen the window between the handler and the commit),
to block until a gate opens, or to raise for chosen events.

This module is also imported by ``_crash_child.py``, run as a separate
process, so it uses only the package's public modules.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meerkat_runtime import EchoExecutor, RunRequest, RunResult
from meerkat_runtime.projections import Cursor, FailureStrategy, Projection, Sql
from meerkat_runtime.store import EventCodec, EventStore, RecordedEvent

from ..waiting import WAIT

TEST_TOPIC = "test.happened"


def plain_codec() -> EventCodec:
    """A codec for stores written directly (no runtime events)."""
    codec = EventCodec()
    codec.register(TEST_TOPIC)
    return codec


# ---------------------------------------------------------------- projections

EventFilter = Callable[[RecordedEvent], bool]


class CountingProjection(Projection):
    """Counts how many times each log position was applied (table ``<name>_seen``).

    * ``sleep``: seconds to sleep inside ``apply`` after writing (crash window).
    * ``gate``: ``apply`` waits until this event is set (holds the runner).
    * ``fail_when``: ``apply`` raises ``RuntimeError`` if any event of the page
      matches, while ``fault_active()`` is true (default: always).
    """

    def __init__(
        self,
        name: str = "counting",
        *,
        sleep: float = 0.0,
        gate: threading.Event | None = None,
        fail_when: EventFilter | None = None,
        fault_active: Callable[[], bool] | None = None,
        failure_strategy: FailureStrategy | None = None,
        log_path: str | None = None,
    ) -> None:
        self.name = name
        self.log_path = log_path
        self.seen_table = f"{name}_seen"
        self.tables = (self.seen_table,)
        self.sleep = sleep
        self.gate = gate
        self.fail_when = fail_when
        self.fault_active = fault_active
        if failure_strategy is not None:
            self.failure_strategy = failure_strategy
        self.attempts: dict[int, int] = {}  # position -> apply calls that included it
        self.applied_pages: list[list[int]] = []  # positions of each apply call (incl. failed)
        self._lock = threading.Lock()

    def create_schema(self, cur: Cursor) -> None:
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {cur.table(self.seen_table)} "
            "(position BIGINT PRIMARY KEY, session_id TEXT NOT NULL, n INTEGER NOT NULL)"
        )

    def apply(self, cur: Cursor, events: Sequence[RecordedEvent]) -> None:
        with self._lock:
            self.applied_pages.append([e.position for e in events])
            for e in events:
                self.attempts[e.position] = self.attempts.get(e.position, 0) + 1
        if self.log_path is not None:  # "first last" of each page begun, for the crash test
            fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, f"{events[0].position} {events[-1].position}\n".encode())
            finally:
                os.close(fd)
        if self.gate is not None:
            assert self.gate.wait(WAIT), "test never opened the projection gate"
        cur.executemany(
            f"INSERT INTO {cur.table(self.seen_table)} AS s (position, session_id, n) "
            "VALUES (?, ?, 1) ON CONFLICT (position) DO UPDATE SET n = s.n + 1",
            [(e.position, e.session_id) for e in events],
        )
        if self.fail_when is not None and (self.fault_active is None or self.fault_active()):
            bad = [e.position for e in events if self.fail_when(e)]
            if bad:
                raise RuntimeError(f"injected failure at position {bad[0]}")
        if self.sleep:
            time.sleep(self.sleep)


def stored_offset(store: EventStore, name: str = "counting") -> int:
    """The offset projection ``name`` has committed (0 if none)."""
    sql = Sql(store)
    with sql.transaction() as cur:
        row = cur.execute(
            f"SELECT position FROM {cur.table('meerkat_projection_offsets')} WHERE name = ?",
            (name,),
        ).fetchone()
    return int(row["position"]) if row else 0


def seen_counts(store: EventStore, name: str = "counting") -> dict[int, int]:
    """``{position: times applied}`` of a :class:`CountingProjection`."""
    sql = Sql(store)
    with sql.transaction() as cur:
        rows = cur.execute(f"SELECT position, n FROM {cur.table(name + '_seen')}").fetchall()
    return {int(r["position"]): int(r["n"]) for r in rows}


def log_positions(store: EventStore) -> list[int]:
    """Every position of the store-wide log, in order."""
    out: list[int] = []
    after = 0
    while True:
        page = store.read_all(after_position=after, limit=1000)
        out.extend(e.position for e in page)
        if len(page) < 1000:
            return out
        after = page[-1].position


def assert_exactly_once(store: EventStore, name: str = "counting") -> int:
    """Every event of the log applied exactly once by projection ``name``; returns the count."""
    positions = log_positions(store)
    seen = seen_counts(store, name)
    twice = sorted(p for p, n in seen.items() if n != 1)
    assert not twice, f"{name}: positions applied more than once: {twice[:20]}"
    missing = sorted(set(positions) - set(seen))
    assert not missing, f"{name}: positions never applied: {missing[:20]}"
    extra = sorted(set(seen) - set(positions))
    assert not extra, f"{name}: applied positions that are not in the log: {extra[:20]}"
    return len(positions)


# ---------------------------------------------------------------- executors


class FailingExecutor:
    """Fails every run (a failed result, or an exception every other time)."""

    def __init__(self) -> None:
        self.calls = 0
        self._lock = threading.Lock()

    def run(self, request: RunRequest) -> RunResult:
        with self._lock:
            self.calls += 1
            n = self.calls
        if n % 2:
            raise RuntimeError(f"executor exploded #{n}")
        return RunResult(status="failed", error=f"failure #{n}")


class DispatchExecutor:
    """Echo for most sessions; ``fail-*`` sessions get failing runs, and ``hold-*`` and
    ``gone-*`` sessions runs held until :meth:`release` (so their queues fill up:
    supersession and coalescing; and a ``gone-*`` input is still live when the test
    destroys its session, instead of racing the destroy to completion)."""

    def __init__(self) -> None:
        self.echo = EchoExecutor()
        self.fail = FailingExecutor()
        self.gate = threading.Event()

    def run(self, request: RunRequest) -> RunResult:
        if request.session_id.startswith("fail"):
            return self.fail.run(request)
        if request.session_id.startswith(("hold", "gone")):
            self.gate.wait(WAIT)
        result: RunResult = self.echo.run(request)
        return result

    def release(self) -> None:
        self.gate.set()


class GatedExecutor:
    """Holds every run until :meth:`release`; ``started`` is set once a run is in flight."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.started = threading.Event()
        self.requests: list[RunRequest] = []

    def run(self, request: RunRequest) -> RunResult:
        self.requests.append(request)
        self.started.set()
        assert self.gate.wait(WAIT), "gated run never released"
        return RunResult(output="done")

    def release(self) -> None:
        self.gate.set()


# ---------------------------------------------------------------- input documents


def prompt(text: str = "hello", **header: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"input_type": "prompt", "content": text}
    if header:
        doc["header"] = dict(header)
    return doc


def flow_step(step: str = "step-1", **header: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"input_type": "flow_step", "step_id": step, "content": f"do {step}"}
    if header:
        doc["header"] = dict(header)
    return doc


def external_event(payload: Any = None, **header: Any) -> dict[str, Any]:
    return {
        "input_type": "external_event",
        "event_type": "ci.status",
        "payload": payload if payload is not None else {"state": "green"},
        "header": {"source": {"type": "external", "source_name": "github"}, **header},
    }


def continuation(**header: Any) -> dict[str, Any]:
    return {
        "input_type": "continuation",
        "reason": "background op done",
        "header": {"source": {"type": "system"}, "durability": "derived", **header},
    }


def operation(op_id: str = "op-1", **header: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "input_type": "operation",
        "operation_id": op_id,
        "event": {"type": "started", "id": op_id, "kind": "tool"},
    }
    if header:
        doc["header"] = dict(header)
    return doc


def peer_message(**header: Any) -> dict[str, Any]:
    return {
        "input_type": "peer",
        "header": {"source": {"type": "peer", "peer_id": "peer-b"}, **header},
        "convention": {"convention_type": "message"},
        "content": "hi from b",
    }


def peer_progress(request_id: str = "r-7", **header: Any) -> dict[str, Any]:
    return {
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


def peer_terminal(request_id: str | None = None) -> dict[str, Any]:
    return {
        "input_type": "peer",
        "header": {
            "source": {"type": "peer", "peer_id": str(uuid.uuid4()), "display_identity": "Alice"}
        },
        "convention": {
            "convention_type": "response_terminal",
            "request_id": request_id if request_id is not None else str(uuid.uuid4()),
            "status": "completed",
        },
        "content": "",
        "payload": {"answer": 42},
    }


@dataclass(frozen=True)
class Listing:
    """Full ledger and views listings, for comparisons (rebuild)."""

    ledger: list[Any]
    views: list[Any]


def full_listing(rt: Any, page: int = 37) -> Listing:
    """Every ledger row and view, paged with ``after=row.position``."""
    rows: list[Any] = []
    after = None
    while True:
        got = rt.ledger.list(limit=page, after=after)
        rows.extend(got)
        if len(got) < page:
            break
        after = got[-1].position
    views: list[Any] = []
    after = None
    while True:
        got = rt.views.list(limit=page, after=after)
        views.extend(got)
        if len(got) < page:
            break
        after = got[-1].position
    return Listing(rows, views)


def run_and_kill(
    child: Path, url: str, seed: int, delay: float, apply_sleep: float, apply_log: Path
) -> None:
    """Start crash child ``child`` on ``url``; once it says ``ready`` (under load), let it
    run ``delay`` seconds and SIGKILL it. Its projections sleep ``apply_sleep`` in each
    apply and log to ``apply_log``, so many kills land inside a page."""
    env = dict(
        os.environ, MEERKAT_TEST_APPLY_SLEEP=str(apply_sleep), MEERKAT_TEST_APPLY_LOG=str(apply_log)
    )
    proc = subprocess.Popen(
        [sys.executable, str(child), url, str(seed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the child is under load (or dies)
        if line.strip() != "ready":
            proc.kill()
            _, err = proc.communicate(timeout=WAIT)
            raise AssertionError(f"child did not start: {line!r}\n{err[-3000:]}")
        time.sleep(delay)
        assert proc.poll() is None, "the child died by itself"
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(WAIT)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    assert proc.returncode == -signal.SIGKILL
