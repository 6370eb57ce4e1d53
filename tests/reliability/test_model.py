"""Model-based test: the real runtime and a small reference model, step by step.

A hypothesis ``RuleBasedStateMachine`` drives one session of a real runtime
(public API only, on ``memory://`` and on a SQLite file) and a plain-Python
model of the spec's rules side by side: accepts of prompts, peer messages,
peer progress, external events and operations, with and without idempotency
and supersession keys, durable and ephemeral, resent inputs and rule
violations; runs that complete, fail or are cancelled by a controllable
executor (or no executor at all); the lifecycle operations (retire, reset,
stop, recover, recycle, destroy); and closing and reopening the runtime on the
same store (``close`` + ``Runtime.open``), which runs the cold recovery rules.

After every step the observable states must agree: ``session.state()``,
``active_input_ids()``, and for every input ever presented its lifecycle
state, attempt count and terminal outcome; plus every accept outcome (kind,
existing id, reject reason), every report, and which inputs each run staged.
At the end of each example the read models must equal a fresh fold.

The model is deliberately naive (lists and dicts, no events): it is the spec's
tables written out, so a disagreement is either a runtime bug or a misreading
of the spec, and the failing example says which step.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from meerkat_runtime import (
    RunRequest,
    RunResult,
    Runtime,
    RuntimeStateTransitionError,
)
from meerkat_runtime.events import wire
from meerkat_runtime.events.ids import uuid7
from meerkat_runtime.events.input_state import (
    AbandonedOutcome,
    CoalescedOutcome,
    ConsumedOutcome,
    SupersededOutcome,
)

SID = "model"
SETTLE = 20.0
"""Upper bound for the runtime to reach the state the model predicts (never a timing assertion)."""
TERMINAL = {"consumed", "superseded", "coalesced", "abandoned"}
MAX_ATTEMPTS = 3


# ---------------------------------------------------------------------- the controllable executor


class _Slot:
    def __init__(self, request: RunRequest) -> None:
        self.request = request
        self.done = threading.Event()
        self.result: RunResult | None = None


class Gate:
    """An executor whose runs wait until the test finishes them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.slots: dict[uuid.UUID, _Slot] = {}
        self.newest: uuid.UUID | None = None
        self.started = 0

    def run(self, request: RunRequest) -> RunResult:
        slot = _Slot(request)
        with self.lock:
            self.slots[request.run_id] = slot
            self.newest = request.run_id
            self.started += 1
        slot.done.wait(120)
        return slot.result or RunResult(status="cancelled")

    def finish(self, run_id: uuid.UUID, result: RunResult) -> None:
        with self.lock:
            slot = self.slots.pop(run_id)
        slot.result = result
        slot.done.set()

    def release(self, run_id: uuid.UUID | None) -> None:
        """Let an orphaned run's worker return (its result is for a run that is over)."""
        if run_id is None:
            return
        with self.lock:
            slot = self.slots.pop(run_id, None)
        if slot is not None:
            slot.result = RunResult(status="completed")
            slot.done.set()

    def release_all(self) -> None:
        with self.lock:
            ids = list(self.slots)
        for run_id in ids:
            self.release(run_id)

    def current(self) -> tuple[int, list[str] | None]:
        with self.lock:
            slot = self.slots.get(self.newest) if self.newest is not None else None
            ids = None if slot is None else [str(i) for i in slot.request.contributing_input_ids]
            return self.started, ids


# ---------------------------------------------------------------------- the model


@dataclass
class MInput:
    iid: str
    kind: str  # prompt | peer_message | peer_response_progress | external_event | operation
    lane: str  # queue | steer
    ephemeral: bool
    skey: str | None
    state: str = "queued"
    attempts: int = 0
    seq: int = 0
    outcome: tuple[Any, ...] | None = None


class Model:
    """The spec's rules for one session, written out naively."""

    def __init__(self, executor: bool) -> None:
        self.executor = executor
        self.phase = "idle"  # idle | running | retired | stopped | destroyed
        self.pre_run = "idle"
        self.run: list[str] | None = None
        self.inputs: dict[str, MInput] = {}
        self.queue: list[str] = []
        self.steer: list[str] = []
        self.keys: dict[str, str] = {}
        self.wake = False
        self.counter = 0
        self.runs_started = 0
        self.cold_report: tuple[int, int, int] | None = None

    # -- views
    def observed(self) -> str:
        return ("attached" if self.executor else "idle") if self.phase == "idle" else self.phase

    def non_terminal(self) -> list[str]:
        return [i for i, m in self.inputs.items() if m.state not in TERMINAL]

    # -- queues
    def _lane(self, iid: str) -> list[str]:
        return self.steer if self.inputs[iid].lane == "steer" else self.queue

    def _dequeue(self, iid: str) -> None:
        for lane in (self.queue, self.steer):
            if iid in lane:
                lane.remove(iid)
        if not self.queue and not self.steer:
            self.wake = False

    def _requeue(self, iid: str) -> None:
        m = self.inputs[iid]
        m.state = "queued"
        lane = self._lane(iid)
        lane.append(iid)
        lane.sort(key=lambda i: self.inputs[i].seq)

    def _end(self, iid: str, outcome: tuple[Any, ...]) -> None:
        m = self.inputs[iid]
        m.state = outcome[0]
        m.outcome = outcome
        self._dequeue(iid)

    def _abandon_all(self, reason: str) -> int:
        ids = self.non_terminal()
        for iid in ids:
            self._end(iid, ("abandoned", reason, None))
        return len(ids)

    # -- runs
    def wants_run(self) -> bool:
        if not self.executor or self.run is not None:
            return False
        if self.phase == "retired":
            return bool(self.queue or self.steer)
        if self.phase == "idle":
            return bool(self.queue) or (bool(self.steer) and self.wake)
        return False

    def maybe_run(self) -> None:
        if not self.wants_run():
            return
        batch = self.queue[:1] + list(self.steer)
        for iid in batch:
            m = self.inputs[iid]
            m.state = "staged"
            m.attempts += 1
            self._dequeue(iid)
        self.wake = False
        self.pre_run, self.phase = self.phase, "running"
        self.run = batch
        self.runs_started += 1

    def _end_run(self) -> None:
        if self.phase == "running":
            self.phase = self.pre_run
        self.run = None

    def finish(self, status: str) -> None:
        assert self.run is not None
        for iid in self.run:
            m = self.inputs[iid]
            if m.state != "staged":
                continue
            if status == "completed":
                self._end(iid, ("consumed",))
            elif m.attempts >= MAX_ATTEMPTS:
                self._end(iid, ("abandoned", "max_attempts_exhausted", m.attempts))
            else:
                self._requeue(iid)
        self._end_run()
        self.maybe_run()

    # -- accept
    def accept(
        self, iid: str, kind: str, ephemeral: bool, key: str | None, skey: str | None, valid: bool
    ) -> tuple[Any, ...]:
        observed = self.observed()
        if observed not in ("idle", "attached", "running"):
            return ("rejected", "not_ready", observed)
        if not valid:
            return ("rejected", "durability_violation")
        existing = self.keys.get(key) if key is not None else None
        if existing is None and iid in self.inputs:
            existing = iid
        if existing is not None:
            return ("deduplicated", existing)
        lane = "steer" if kind == "peer_response_progress" else "queue"
        m = MInput(iid, kind, lane, ephemeral, skey)
        self.inputs[iid] = m
        if key is not None:
            self.keys.setdefault(key, iid)
        if kind == "operation":
            m.state, m.outcome = "consumed", ("consumed",)
            return ("accepted", "consumed")
        idle = self.phase != "running"
        if kind == "peer_message" or (kind in ("prompt", "external_event") and idle):
            self.wake = True
        if skey is not None:
            older = next(
                (
                    q
                    for q in self.queue + self.steer
                    if self.inputs[q].kind == kind and self.inputs[q].skey == skey
                ),
                None,
            )
            if older is not None:
                tag = "coalesced" if kind == "peer_response_progress" else "superseded"
                self._end(older, (tag, iid))
        self.counter += 1
        m.seq = self.counter
        self._lane(iid).append(iid)
        self.maybe_run()
        return ("accepted", "queued")

    # -- lifecycle
    def lifecycle(self, op: str) -> tuple[Any, ...] | None:
        """The op's report as a tuple, or None when the state refuses it (nothing changes)."""
        obs = self.observed()
        if op == "retire":
            if obs == "destroyed":
                return None
            if self.executor:
                pending = len(self.non_terminal())
                self.phase = "retired"
                self.maybe_run()
                return ("retire", 0, pending)
            n = self._abandon_all("retired")
            self.phase = "retired"
            return ("retire", n, 0)
        if op == "reset":
            if obs not in ("idle", "attached", "retired") or self.run is not None:
                return None
            n = self._abandon_all("reset")
            self.phase = "idle"
            return ("reset", n)
        if op == "stop":
            if obs not in ("idle", "attached", "running", "retired"):
                return None
            n = self._abandon_all("stopped")
            self.run = None
            if obs != "retired":
                self.phase = "stopped"
            return ("stop", n)
        if op == "destroy":
            if obs == "destroyed":
                return None
            n = self._abandon_all("destroyed")
            self.run = None
            self.phase = "destroyed"
            return ("destroy", n)
        if op == "recover":
            if obs not in ("idle", "attached", "retired", "stopped"):
                return None
            report = (len(self.non_terminal()), 0, 0)
            if self.cold_report is not None:
                c, self.cold_report = self.cold_report, None
                report = (max(c[0], report[0]), c[1] + report[1], c[2] + report[2])
            if obs == "stopped":
                self.phase = "idle"
            self.maybe_run()
            return ("recover", *report)
        if op == "recycle":
            if obs not in ("idle", "attached", "retired"):
                return None
            transferred = len(self.non_terminal())
            if self.run is not None:
                for iid in self.run:
                    if self.inputs[iid].state == "staged":
                        self._requeue(iid)
                self.run = None
            self.phase = "idle"
            self.maybe_run()
            return ("recycle", transferred)
        raise AssertionError(op)

    def cold_restart(self) -> None:
        """A new process opens the store: the cold recovery rules (spec 16, port's choices)."""
        self.cold_report = None  # kept by the session's actor, which is a new one now
        if self.phase == "destroyed" or (self.run is None and not self.non_terminal()):
            return
        if self.run is not None:
            self._end_run()
        recovered = abandoned = requeued = 0
        for iid in self.non_terminal():
            m = self.inputs[iid]
            if m.ephemeral:
                self._end(iid, ("abandoned", "cancelled", None))
                abandoned += 1
                continue
            recovered += 1
            if m.state == "staged":
                if m.attempts >= MAX_ATTEMPTS:
                    self._end(iid, ("abandoned", "max_attempts_exhausted", m.attempts))
                    recovered -= 1
                    abandoned += 1
                    continue
                self._requeue(iid)
                requeued += 1
        self.cold_report = (recovered, abandoned, requeued)
        self.maybe_run()


# ---------------------------------------------------------------------- documents

KINDS = [
    "prompt",
    "prompt",
    "peer_message",
    "peer_response_progress",
    "peer_response_progress",
    "external_event",
    "operation",
]


def document(
    iid: str, kind: str, ephemeral: bool, key: str | None, skey: str | None, valid: bool
) -> dict[str, Any]:
    header: dict[str, Any] = {"id": iid, "durability": "ephemeral" if ephemeral else "durable"}
    if not valid:
        header["durability"] = "derived"  # from the operator: a durability violation
    if key is not None:
        header["idempotency_key"] = key
    if skey is not None:
        header["supersession_key"] = skey
    if kind == "prompt":
        doc: dict[str, Any] = {"input_type": "prompt", "content": f"text {iid[-4:]}"}
    elif kind == "peer_message":
        header["source"] = {"type": "peer", "peer_id": "peer-b"}
        doc = {"input_type": "peer", "convention": {"convention_type": "message"}, "content": "hi"}
    elif kind == "peer_response_progress":
        header["source"] = {"type": "peer", "peer_id": "peer-a"}
        doc = {
            "input_type": "peer",
            "convention": {
                "convention_type": "response_progress",
                "request_id": "r-1",
                "phase": "in_progress",
            },
            "content": "",
            "payload": {"pct": 10},
        }
    elif kind == "external_event":
        header["source"] = {"type": "external", "source_name": "ci"}
        doc = {
            "input_type": "external_event",
            "event_type": "ci.status",
            "payload": {"id": iid},
            "handling_mode": "queue",
        }
    else:
        doc = {
            "input_type": "operation",
            "operation_id": f"op-{iid}",
            "event": {"type": "started", "id": f"op-{iid}", "kind": "tool"},
        }
    doc["header"] = header
    return doc


def _report(op: str, r: Any) -> tuple[Any, ...]:
    """A lifecycle report as the model writes it."""
    if op == "retire":
        return ("retire", r.inputs_abandoned, r.inputs_pending_drain)
    if op == "recover":
        return ("recover", r.inputs_recovered, r.inputs_abandoned, r.inputs_requeued)
    if op == "recycle":
        return ("recycle", r.inputs_transferred)
    return (op, r.inputs_abandoned)


def _outcome(st: Any) -> tuple[Any, ...] | None:
    out = st.terminal_outcome
    if out is None:
        return None
    if isinstance(out, ConsumedOutcome):
        return ("consumed",)
    if isinstance(out, AbandonedOutcome):
        return ("abandoned", out.reason.kind.value, out.reason.attempts)
    if isinstance(out, SupersededOutcome):
        return ("superseded", str(out.superseded_by))
    if isinstance(out, CoalescedOutcome):
        return ("coalesced", str(out.aggregate_id))
    return ("?", repr(out))


# ---------------------------------------------------------------------- the state machine


class RuntimeVsModel(RuleBasedStateMachine):
    backend = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="meerkat-model-")
        self.url = (
            f"memory://{uuid.uuid4().hex}"
            if self.backend == "memory"
            else f"sqlite:///{self.dir}/model.db"
        )
        self.gate = Gate()
        self.rt: Runtime | None = None
        self.model = Model(executor=True)
        self.docs: dict[str, dict[str, Any]] = {}
        self.spec: dict[str, tuple[str, bool, str | None, str | None, bool]] = {}

    # -- plumbing
    def _open(self) -> None:
        self.rt = Runtime.open(
            self.url,
            executor=self.gate if self.model.executor else None,
            retry_backoff=0.005,
            close_timeout=0.2,
            idle_timeout=600.0,
        )
        # The model's session exists from the start: lifecycle calls on a never-used
        # session raise SessionNotFound (tests/actors/test_not_found.py), not modelled here.
        self.rt.create_session(SID)

    @property
    def session(self) -> Any:
        assert self.rt is not None
        return self.rt.session(SID)

    def _expected(self) -> tuple[Any, ...]:
        m = self.model
        per_input = tuple((i, x.state, x.attempts, x.outcome) for i, x in sorted(m.inputs.items()))
        runs = (m.runs_started, m.run) if m.executor else (0, None)
        return (m.observed(), tuple(m.non_terminal()), per_input, runs)

    def _actual(self) -> tuple[Any, ...]:
        s = self.session
        per_input: list[tuple[Any, ...]] = []
        for iid in sorted(self.model.inputs):
            st = s.input_state(iid)
            if st is None:
                per_input.append((iid, None, None, None))
            else:
                per_input.append((iid, st.current_state.value, st.attempt_count, _outcome(st)))
        started, running = self.gate.current()
        runs = (started, running if self.model.run is not None else None)
        return (
            s.state().value,
            tuple(str(i) for i in s.active_input_ids()),
            tuple(per_input),
            runs if self.model.executor else (0, None),
        )

    def _settle(self) -> None:
        """Wait until the runtime shows what the model predicts (it works asynchronously)."""
        expected = self._expected()
        deadline = time.monotonic() + SETTLE
        while self._actual() != expected and time.monotonic() < deadline:
            time.sleep(0.005)

    def _orphan(self) -> uuid.UUID | None:
        """The run in flight now, which the step about to happen will end for the runtime."""
        return self.gate.newest if self.model.run is not None else None

    # -- rules
    @initialize(executor=st.sampled_from([True, True, True, False]))
    def start(self, executor: bool) -> None:
        self.model = Model(executor)
        self._open()

    @rule(data=st.data())
    def step(self, data: st.DataObject) -> None:
        """One weighted action (a single rule, so that hypothesis' swarm testing, which
        switches whole rules off per example, cannot starve the accepts)."""
        actions = ["accept"] * 8 + ["resend"] * 2 + ["lifecycle"] * 3 + ["reopen"]
        if self.model.run is not None:
            actions += ["finish_run"] * 6
        action = data.draw(st.sampled_from(actions), label="action")
        if action == "accept":
            self.accept(
                data.draw(st.sampled_from(KINDS), label="kind"),
                data.draw(st.booleans(), label="ephemeral"),
                data.draw(st.sampled_from([None, None, None, "k1", "k2"]), label="key"),
                data.draw(st.sampled_from([None, None, "s1"]), label="skey"),
                data.draw(st.sampled_from([True] * 9 + [False]), label="valid"),
            )
        elif action == "resend" and self.docs:
            self._present(data.draw(st.sampled_from(sorted(self.docs)), label="input"))
        elif action == "finish_run":
            status = ["completed", "completed", "failed", "cancelled"]
            self.finish_run(data.draw(st.sampled_from(status), label="status"))
        elif action == "lifecycle":
            ops = ["retire", "reset", "stop", "recover", "recycle"] * 3 + ["destroy"]
            self.lifecycle(data.draw(st.sampled_from(ops), label="op"))
        elif action == "reopen":
            self.reopen()

    def accept(
        self, kind: str, ephemeral: bool, key: str | None, skey: str | None, valid: bool
    ) -> None:
        iid = str(uuid7())
        doc = document(iid, kind, ephemeral, key, skey, valid)
        self.docs[iid] = doc
        self.spec[iid] = (kind, ephemeral, key, skey, valid)
        self._present(iid)

    def _present(self, iid: str) -> None:
        kind, ephemeral, key, skey, valid = self.spec[iid]
        expected = self.model.accept(iid, kind, ephemeral, key, skey, valid)
        out = self.session.accept(self.docs[iid])
        assert str(out.input_id) == iid
        assert out.kind == expected[0], (out, expected)
        if out.kind == "rejected":
            reason = wire.to_json_value(out.reason)
            assert reason["reject_type"] == expected[1], (reason, expected)
            if expected[1] == "not_ready":
                assert reason["state"] == expected[2]
            assert out.completion is None
        elif out.kind == "deduplicated":
            assert str(out.existing_id) == expected[1]
        else:
            assert out.state is not None and out.state.current_state.value == expected[1]
        self._settle()

    def finish_run(self, status: str) -> None:
        run_id = self.gate.newest
        assert run_id is not None
        self.model.finish(status)
        error = "model says no" if status == "failed" else None
        self.gate.finish(run_id, RunResult(status=status, output={"ok": True}, error=error))
        self._settle()

    def lifecycle(self, op: str) -> None:
        orphan = self._orphan()
        run_before = self.model.run
        expected = self.model.lifecycle(op)
        try:
            report = getattr(self.session, op)()
        except RuntimeStateTransitionError:
            assert expected is None, f"{op} refused by the runtime, allowed by the model"
            self._settle()
            return
        assert expected is not None, f"{op} allowed by the runtime, refused by the model"
        got = _report(op, report)
        assert got == expected, (op, got, expected)
        if run_before is not None and self.model.run is not run_before:
            self.gate.release(orphan)  # the runtime ended that run; its late result is ignored
        self._settle()

    def reopen(self) -> None:
        """Close the runtime (a run in flight stays in the log) and open it again."""
        assert self.rt is not None
        orphan = self._orphan()
        self.rt.close()
        self.gate.release(orphan)
        self.model.cold_restart()
        self._open()
        self.session.state()  # first use: the actor folds the log and recovers
        self._settle()

    @invariant()
    def agrees(self) -> None:
        if self.rt is None:
            return
        expected, actual = self._expected(), self._actual()
        assert actual == expected, _diff(expected, actual)

    def teardown(self) -> None:
        try:
            if self.rt is not None:  # quiescent (a run may be held by the gate): verify
                self.rt.projections.wait_caught_up(30)
                report = self.rt.verify()
                assert report.ok, report.mismatches[:5]
        finally:
            if self.rt is not None:
                self.rt.close()
            self.gate.release_all()
            shutil.rmtree(self.dir, ignore_errors=True)


def _diff(expected: tuple[Any, ...], actual: tuple[Any, ...]) -> str:
    names = ("state", "active inputs", "inputs", "runs (started, staged)")
    lines = []
    for name, e, a in zip(names, expected, actual, strict=True):
        if e != a:
            if name == "inputs":
                for ei, ai in zip(e, a, strict=False):
                    if ei != ai:
                        lines.append(f"  input {ei[0]}: model {ei[1:]}, runtime {ai[1:]}")
            else:
                lines.append(f"  {name}: model {e!r}, runtime {a!r}")
    return "model and runtime disagree:\n" + "\n".join(lines)


def _settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        stateful_step_count=30,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


class MemoryRuntimeVsModel(RuntimeVsModel):
    backend = "memory"


class SQLiteRuntimeVsModel(RuntimeVsModel):
    backend = "sqlite"


TestMemoryRuntimeAgreesWithTheModel = MemoryRuntimeVsModel.TestCase
TestMemoryRuntimeAgreesWithTheModel.settings = _settings(30)
TestSQLiteRuntimeAgreesWithTheModel = SQLiteRuntimeVsModel.TestCase
TestSQLiteRuntimeAgreesWithTheModel.settings = _settings(20)
