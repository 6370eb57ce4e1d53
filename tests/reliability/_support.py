"""Workloads and log checks shared by the reliability tests (public API, plus raw log reads)."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from meerkat_runtime import (
    Abandoned,
    Completed,
    InputAccepted,
    MeerkatRuntimeError,
    RunRequest,
    RunResult,
    Runtime,
)
from meerkat_runtime.events.catalogue import envelope_from_record
from meerkat_runtime.events.ids import uuid7
from meerkat_runtime.store import EventStore

from ..waiting import WAIT


def prompt(text: str = "hello", **header: Any) -> dict[str, Any]:
    return {"input_type": "prompt", "content": text, "header": {"id": str(uuid7()), **header}}


class FlakyEcho:
    """Echoes the staged content; fails a share of the runs (``fail_rate``).

    Counts its calls per input and remembers, for each call, its run id and
    whether it started while an earlier call for one of its inputs was still
    executing (see :func:`duplicate_calls`).
    """

    def __init__(self, fail_rate: float = 0.0, seed: int = 0) -> None:
        self.fail_rate = fail_rate
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.calls: Counter[uuid.UUID] = Counter()  # runs per contributing input
        self.runs: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)  # input -> run ids
        self.overlapping: list[tuple[uuid.UUID, uuid.UUID]] = []  # (input, run) started beside
        self._executing: Counter[uuid.UUID] = Counter()

    def run(self, request: RunRequest) -> RunResult:
        ids = request.contributing_input_ids
        with self.lock:
            fail = self.rng.random() < self.fail_rate
            for iid in ids:
                self.calls[iid] += 1
                self.runs[iid].append(request.run_id)
                if self._executing[iid]:
                    self.overlapping.append((iid, request.run_id))
                self._executing[iid] += 1
        try:
            if fail:
                return RunResult(status="failed", error="flaky")
            content = request.primitive.extract_content()
            text = content if isinstance(content, str) else list(content)
            return RunResult(output={"text": text})
        finally:
            with self.lock:
                for iid in ids:
                    self._executing[iid] -= 1


def duplicate_calls(executor: FlakyEcho, store: EventStore) -> list[str]:
    """Executor calls outside the runtime's documented at-least-once window: a call for
    an input that an earlier run had already applied or consumed (by the log), or a call
    that started while an earlier one for the same input was still executing."""
    committed: dict[uuid.UUID, set[uuid.UUID]] = defaultdict(set)
    for sid in store.session_ids():
        for rec in store.read_session(sid):
            if rec.topic in ("input.applied", "input.consumed"):
                ev = envelope_from_record(rec.data, rec.version).event
                committed[ev.input_id].add(ev.run_id)  # type: ignore[attr-defined]
    out = [f"input {i} executed by run {r} beside an earlier call" for i, r in executor.overlapping]
    for iid, runs in executor.runs.items():
        for run_id in runs[:-1]:
            if run_id in committed[iid]:
                out.append(f"input {iid} executed again after run {run_id} applied or consumed it")
    return out


@dataclass
class Attempted:
    """One input a host tried to get accepted, retrying on errors."""

    session_id: str
    input_id: str
    doc: dict[str, Any]
    kind: str | None = None  # accepted | deduplicated | rejected, once acknowledged
    existing_id: str | None = None
    errors: list[BaseException] = field(default_factory=list)
    completion: Any = None


def accept_with_retries(
    rt: Runtime, sid: str, doc: dict[str, Any], retries: int = 50, pause: float = 0.02
) -> Attempted:
    """What a careful host does: present the same input (same id) until it is acknowledged."""
    a = Attempted(sid, doc["header"]["id"], doc)
    for _ in range(retries):
        try:
            out = rt.session(sid).accept(doc)
        except MeerkatRuntimeError as exc:
            a.errors.append(exc)
            time.sleep(pause)
            continue
        a.kind = out.kind
        a.existing_id = None if out.existing_id is None else str(out.existing_id)
        a.completion = out.completion
        return a
    return a


def run_threads(
    rt: Runtime,
    sessions: list[str],
    per_thread: int,
    threads: int,
    make_doc: Callable[[int], dict[str, Any]] = lambda n: prompt(f"p{n}"),
    retries: int = 50,
    seed: int = 0,
) -> list[Attempted]:
    """``threads`` hosts, each presenting ``per_thread`` inputs to random sessions."""
    out: list[Attempted] = []
    lock = threading.Lock()

    def host(k: int) -> None:
        rng = random.Random(f"{seed}-{k}")
        for n in range(per_thread):
            a = accept_with_retries(rt, rng.choice(sessions), make_doc(k * 10_000 + n), retries)
            with lock:
                out.append(a)

    ts = [threading.Thread(target=host, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(WAIT * 2)
    return out


def accepted_in_log(store: EventStore) -> dict[str, list[str]]:
    """Input id -> the sessions whose log holds an ``input.accepted`` for it (once per event)."""
    where: dict[str, list[str]] = defaultdict(list)
    for sid in store.session_ids():
        for rec in store.read_session(sid):
            if rec.topic == "input.accepted":
                ev = envelope_from_record(rec.data, rec.version).event
                assert isinstance(ev, InputAccepted)
                where[str(ev.input_id)].append(sid)
    return where


def check_nothing_lost(
    rt: Runtime,
    attempts: list[Attempted],
    *,
    complete: bool = True,
    allow_max_attempts: bool = False,
) -> None:
    """Every acknowledged input is in its log exactly once and in the ledger; with
    ``complete``, each one's completion resolves as ``Completed`` (or, with
    ``allow_max_attempts``, is abandoned after three failed runs, which store faults
    that interrupt runs may cause); ``verify`` passes."""
    where = accepted_in_log(rt.store)
    dup = {iid: s for iid, s in where.items() if len(s) > 1}
    assert not dup, f"inputs accepted more than once: {dup}"
    for a in attempts:
        if a.kind is None:
            continue
        assert a.kind in ("accepted", "deduplicated"), (a.kind, a.errors)
        if a.kind == "deduplicated":
            # only ever against itself: an earlier attempt was written, its acknowledgement lost
            assert a.existing_id == a.input_id, a
        assert where.get(a.input_id) == [a.session_id], (a, where.get(a.input_id))
    if complete:
        for a in attempts:
            if a.kind is None:
                continue
            handle = rt.session(a.session_id).completion(a.input_id)
            assert handle is not None, a
            outcome = handle.wait(WAIT)
            if allow_max_attempts and isinstance(outcome, Abandoned):
                assert "max attempts exhausted" in outcome.reason, (a.input_id, outcome)
                continue
            assert isinstance(outcome, Completed), (a.input_id, outcome)
    rt.projections.wait_caught_up(WAIT)
    for a in attempts:
        if a.kind is not None:
            row = rt.ledger.get(a.input_id)
            assert row is not None and row.session_id == a.session_id, a
    report = rt.verify()
    assert report.ok, report.mismatches[:10]
