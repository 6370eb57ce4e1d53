"""The demo workload: many sessions, all six input kinds, duplicates, coalescing,
an executor with random latency and failures, lifecycle operations, and a
``kill -9`` of the process running the runtime midway.

``run_demo`` (the parent) starts a child process that drives the first part
of the workload and prints each acknowledged input id; it kills the child
with SIGKILL partway, reopens the store, recovers, checks that every
acknowledged input is there, carries on with the rest in-process, and
verifies the read models against a fresh fold of the log.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from meerkat_runtime.actors import RunRequest, RunResult, RunStatus
from meerkat_runtime.errors import MeerkatRuntimeError
from meerkat_runtime.events.ids import uuid7
from meerkat_runtime.runtime import Runtime

__all__ = ["DemoConfig", "DemoExecutor", "DemoResult", "run_demo", "workload"]


@dataclass(frozen=True)
class DemoConfig:
    store: str
    sessions: int = 200
    inputs: int = 3000
    threads: int = 8
    seed: int = 7
    kill_fraction: float = 0.5
    failure_rate: float = 0.05
    max_latency: float = 0.004

    def __post_init__(self) -> None:
        if self.store.split("://", 1)[0].lower() == "memory":
            raise ValueError(
                "the demo kills and reopens the process that runs the runtime, so it needs a "
                "durable store (sqlite:///path.db or postgresql://...), not memory://"
            )


@dataclass
class DemoResult:
    acked_before_kill: int = 0
    acked_found_after_recovery: int = 0
    killed_at_seconds: float = 0.0
    recovery_seconds: float = 0.0
    recovered_sessions: int = 0
    recovery_requeued: int = 0
    recovery_abandoned: int = 0
    accepted: int = 0
    deduplicated: int = 0
    rejected: int = 0
    runs_completed: int = 0
    runs_failed: int = 0
    events: int = 0
    elapsed: float = 0.0
    drained_seconds: float = 0.0
    waiting_progress_updates: int = 0
    stuck: int = 0  # inputs still queued or staged when the drain gave up: a liveness bug
    inputs_by_state: dict[str, int] = field(default_factory=dict)
    sessions_by_state: dict[str, int] = field(default_factory=dict)
    verify_ok: bool = False
    verify_mismatches: list[str] = field(default_factory=list)
    lifecycle: Counter[str] = field(default_factory=Counter)


class DemoExecutor:
    """Completes runs after a random latency; fails a fraction of them (retried by the runtime)."""

    def __init__(self, failure_rate: float, max_latency: float, seed: int) -> None:
        self.failure_rate = failure_rate
        self.max_latency = max_latency
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def run(self, request: RunRequest) -> RunResult:
        with self._lock:
            latency = self._rng.random() * self.max_latency
            fail = self._rng.random() < self.failure_rate
        time.sleep(latency)
        if fail:
            return RunResult(status=RunStatus.FAILED, error="simulated model error")
        content = request.primitive.extract_content()
        text = content if isinstance(content, str) else f"{len(content)} blocks"
        return RunResult(status=RunStatus.COMPLETED, output={"reply": f"ok: {text[:40]}"})


# ---------------------------------------------------------------- the workload


def _header(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def _make_input(rng: random.Random, n: int, session: str, sent_keys: list[str]) -> dict[str, Any]:
    """One input of a weighted-random kind; about 5% re-send an earlier idempotency key."""
    if sent_keys and rng.random() < 0.05:
        return {
            "input_type": "prompt",
            "content": "duplicate delivery",
            "header": _header(idempotency_key=rng.choice(sent_keys)),
        }
    key = f"{session}:{n}"
    sent_keys.append(key)
    roll = rng.random()
    if roll < 0.40:
        return {
            "input_type": "prompt",
            "content": f"question {n}",
            "header": _header(idempotency_key=key),
        }
    if roll < 0.52:
        convention = (
            {"convention_type": "message"}
            if rng.random() < 0.5
            else {"convention_type": "request", "request_id": f"r{n}", "intent": "lookup"}
        )
        return {
            "input_type": "peer",
            "content": f"peer says {n}",
            "convention": convention,
            "header": _header(source={"type": "peer", "peer_id": "peer-a"}, idempotency_key=key),
        }
    if roll < 0.62:  # progress updates with one supersession key per session: they coalesce
        return {
            "input_type": "peer",
            "content": "",
            "payload": {"pct": rng.randint(1, 99)},
            "convention": {"convention_type": "response_progress", "request_id": "r-long", "phase": "in_progress"},
            "header": _header(source={"type": "peer", "peer_id": "peer-b"}, supersession_key="progress"),
        }  # fmt: skip
    if roll < 0.66:
        peer = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        return {
            "input_type": "peer",
            "content": "",
            "payload": {"answer": n},
            "convention": {"convention_type": "response_terminal", "request_id": str(uuid7()), "status": "completed"},
            "header": _header(source={"type": "peer", "peer_id": peer, "display_identity": "Peer C"}, idempotency_key=key),
        }  # fmt: skip
    if roll < 0.76:
        return {
            "input_type": "flow_step",
            "step_id": f"step-{n}",
            "content": f"flow step {n}",
            "header": _header(source={"type": "flow", "flow_id": "onboarding", "step_index": n % 5}, idempotency_key=key),
        }  # fmt: skip
    if roll < 0.86:  # CI status events superseding each other by key
        return {
            "input_type": "external_event",
            "event_type": "ci.status",
            "payload": {"state": rng.choice(["green", "red", "pending"])},
            "header": _header(source={"type": "external", "source_name": "ci"}, supersession_key="ci-status"),
        }  # fmt: skip
    if roll < 0.93:
        return {
            "input_type": "continuation",
            "reason": "detached_background_op_completed",
            "handling_mode": "steer",
            "header": _header(
                source={"type": "system"},
                durability="derived",
                visibility={"transcript_eligible": False, "operator_eligible": False},
            ),
        }
    if roll < 0.96:  # a rule refusal: derived durability from an operator
        return {
            "input_type": "prompt",
            "content": "not allowed",
            "header": _header(durability="derived"),
        }
    return {
        "input_type": "operation",
        "operation_id": f"op-{n}",
        # a background operation starting (a progress report before its start is refused)
        "event": {"type": "started", "id": f"op-{n}", "kind": "background_tool"},
    }


@dataclass(frozen=True)
class Step:
    """One step of the workload: an input for a session, or a lifecycle operation."""

    index: int
    session: str
    input: dict[str, Any] | None = None
    operation: str | None = None


def workload(config: DemoConfig) -> list[Step]:
    """The whole workload, deterministic for a seed."""
    rng = random.Random(config.seed)
    sessions = [f"session-{i:04d}" for i in range(config.sessions)]
    keys: dict[str, list[str]] = {s: [] for s in sessions}
    steps: list[Step] = []
    lifecycle_every = max(1, config.inputs // 40)
    ops = ["retire", "recycle", "reset", "destroy", "stop+recover"]
    for n in range(config.inputs):
        s = rng.choice(sessions)
        steps.append(Step(len(steps), s, input=_make_input(rng, n, s, keys[s])))
        if n % lifecycle_every == lifecycle_every - 1:
            steps.append(
                Step(
                    len(steps),
                    rng.choice(sessions),
                    operation=ops[(n // lifecycle_every) % len(ops)],
                )
            )
    return steps


def _apply_step(rt: Runtime, step: Step, counts: Counter[str]) -> str | None:
    """Run one step; return the acknowledged input id, if any."""
    session = rt.session(step.session)
    if step.operation is not None:
        try:
            if step.operation == "stop+recover":
                session.stop()
                session.recover()
            else:
                getattr(session, step.operation)()
            counts[step.operation] += 1
        except Exception as exc:  # an operation the state forbids: part of the demo
            counts[f"{step.operation} refused ({type(exc).__name__})"] += 1
        return None
    assert step.input is not None
    outcome = session.accept(step.input)
    counts[outcome.kind] += 1
    return str(outcome.input_id) if outcome.kind == "accepted" else None


def _drive(
    rt: Runtime, steps: list[Step], threads: int, on_ack: Callable[[Step, str | None], None]
) -> Counter[str]:
    """Apply steps with one thread per group of sessions (per-session order kept)."""
    groups: dict[int, list[Step]] = {}
    for step in steps:
        groups.setdefault(hash(step.session) % threads, []).append(step)
    counts: Counter[str] = Counter()
    lock = threading.Lock()

    def worker(group: list[Step]) -> None:
        local: Counter[str] = Counter()
        for step in group:
            on_ack(step, _apply_step(rt, step, local))
        with lock:
            counts.update(local)

    pool = [threading.Thread(target=worker, args=(g,)) for g in groups.values()]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return counts


# ---------------------------------------------------------------- child process


def child_main(config: DemoConfig, limit: int) -> None:
    """Drive the first ``limit`` steps, printing every acknowledged input id (flushed)."""
    steps = workload(config)[:limit]
    executor = DemoExecutor(config.failure_rate, config.max_latency, config.seed)
    out_lock = threading.Lock()

    def on_ack(step: Step, input_id: str | None) -> None:
        with out_lock:
            sys.stdout.write(
                f"ack {step.index} {input_id}\n" if input_id else f"step {step.index}\n"
            )
            sys.stdout.flush()

    with Runtime.open(config.store, executor=executor) as rt:
        _drive(rt, steps, config.threads, on_ack)
        sys.stdout.write("done\n")
        sys.stdout.flush()
        time.sleep(3600)  # wait to be killed: the runtime is still running


# ---------------------------------------------------------------- parent


def run_demo(
    config: DemoConfig,
    progress: Callable[[str, int, int], None] | None = None,
) -> DemoResult:
    """Run the demo end to end; ``progress(phase, done, total)`` is called as it goes."""
    report = progress or (lambda phase, done, total: None)
    result = DemoResult()
    steps = workload(config)
    total = len(steps)
    kill_after = int(total * config.kill_fraction)
    started = time.perf_counter()

    # Phase 1: a child process runs the runtime; kill -9 it partway.
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    args = [sys.executable, "-m", "meerkat_runtime.cli", "_demo-child", "--store", config.store,
            "--sessions", str(config.sessions), "--inputs", str(config.inputs),
            "--seed", str(config.seed), "--threads", str(config.threads),
            "--limit", str(total)]  # fmt: skip
    acked: list[str] = []
    done: set[int] = set()
    with (
        tempfile.TemporaryFile() as child_stderr,
        subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=child_stderr, text=True, env=env
        ) as child,
    ):
        assert child.stdout is not None
        for line in _lines(child.stdout):
            parts = line.split()
            if parts and parts[0] in ("ack", "step"):
                done.add(int(parts[1]))
                if parts[0] == "ack":
                    acked.append(parts[2])
            report("child process", len(done), total)
            if len(done) >= kill_after or line == "done":
                break
        else:  # the child never said "done": it died by itself, so there is nothing to kill
            code = child.wait()
            child_stderr.seek(0)
            raise MeerkatRuntimeError(
                f"the demo's child process exited with code {code} before the kill: "
                f"{_last_error(child_stderr.read().decode(errors='replace'))}"
            )
        child.send_signal(signal.SIGKILL)
        child.wait()
    result.killed_at_seconds = time.perf_counter() - started
    result.acked_before_kill = len(acked)

    # Phase 2: reopen, recover, check every acknowledged input survived.
    executor = DemoExecutor(config.failure_rate, config.max_latency, config.seed + 1)
    t0 = time.perf_counter()
    with Runtime.open(config.store, executor=executor, recover="eager") as rt:
        reports = rt.last_recovery or []
        result.recovery_seconds = time.perf_counter() - t0
        result.recovered_sessions = len(reports)
        result.recovery_requeued = sum(r.inputs_requeued for r in reports)
        result.recovery_abandoned = sum(r.inputs_abandoned for r in reports)
        rt.projections.wait_caught_up(60)
        result.acked_found_after_recovery = sum(1 for i in acked if rt.ledger.get(i) is not None)

        # Phase 3: carry on with the rest of the workload in this process.
        # Steps in flight at the kill are sent again, as a host would: those with an
        # idempotency key deduplicate, the others arrive twice.
        remaining = [s for s in steps if s.index not in done]
        counter = {"n": len(done)}
        lock = threading.Lock()

        def on_ack(_step: Step, _id: str | None) -> None:
            with lock:
                counter["n"] += 1
                report("after recovery", counter["n"], total)

        counts = _drive(rt, remaining, config.threads, on_ack)
        result.lifecycle = Counter(
            {k: v for k, v in counts.items() if k not in ("accepted", "deduplicated", "rejected")}
        )

        # Phase 4: let queued work finish. Peer progress updates never wake a
        # session (wake mode none): they wait for the next run, so they are not waited for.
        deadline = time.monotonic() + 60
        busy = 0
        while time.monotonic() < deadline:
            rt.projections.wait_caught_up(60)
            queued = [
                r for r in _all_ledger(rt, state="queued") if r.kind != "peer_response_progress"
            ]
            busy = len(queued) + rt.ledger.count(state="staged")
            report("draining", total - busy, total)
            if busy == 0:
                break
            time.sleep(0.1)
        result.stuck = busy
        result.drained_seconds = time.perf_counter() - started
        rt.projections.wait_caught_up(60)
        result.waiting_progress_updates = rt.ledger.count(state="queued")
        events = rt.store.read_all(0, limit=10**9)
        result.events = len(events)
        codes = Counter(e.topic for e in events)
        result.accepted = codes["input.accepted"]
        result.deduplicated = codes["input.deduplicated"]
        result.rejected = counts["rejected"]
        result.runs_completed = codes["run.completed"]
        result.runs_failed = codes["run.failed"]
        result.inputs_by_state = dict(Counter(r.state for r in _all_ledger(rt)))
        result.sessions_by_state = dict(Counter(v.state for v in _all_views(rt)))
        verdict = rt.verify()
        result.verify_ok = verdict.ok
        result.verify_mismatches = verdict.mismatches[:20]
    result.elapsed = time.perf_counter() - started
    return result


def _last_error(stderr: str) -> str:
    """The child's error line (or its last line of output) for the parent's message."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("error:", "internal error:"))]
    return (errors or lines or ["no output"])[-1]


def _lines(stream: Any) -> Iterator[str]:
    for line in stream:
        yield line.rstrip("\n")


def _all_ledger(rt: Runtime, state: str | None = None) -> Iterator[Any]:
    after = None
    while True:
        page = rt.ledger.list(state=state, limit=1000, after=after)
        yield from page
        if len(page) < 1000:
            return
        after = page[-1].position


def _all_views(rt: Runtime) -> Iterator[Any]:
    after = None
    while True:
        page = rt.views.list(limit=1000, after=after)
        yield from page
        if len(page) < 1000:
            return
        after = page[-1].position


def summary_json(result: DemoResult) -> str:
    return json.dumps(result.__dict__, default=str, indent=2)
