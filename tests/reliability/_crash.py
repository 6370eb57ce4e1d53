"""The crash campaign: SIGKILL a runtime process at a random moment, recover, check.

A child process runs a small workload through the public API (several
threads accepting prompts, keyed and ephemeral inputs, external events with
supersession keys, peer progress that coalesces, operations, resent inputs,
now and then a lifecycle operation, and runs by an executor) and reports
each acknowledged input on its stdout pipe, one ``os.write`` per line, only
after ``accept`` returned. The parent SIGKILLs it at a random moment, reopens
the store, recovers, and checks with :func:`check_trial` that every
acknowledged input is in its session's log exactly once and in the ledger,
that no decision is torn, that every input is in a state the recovery rules
allow, and that the projections equal a fresh fold.

Processes. Importing meerkat_runtime takes about two seconds on a small
machine, and a trial should take about one. So a *zygote*
(``python _crash.py zygote``) imports everything once and forks one child per
trial: each child is a real, separate process (its own threads, database
connections and file descriptors, opened after the fork), killed with a real
SIGKILL. The zygote never starts a thread, so forking it is safe.

Protocol. The parent writes JSON commands to the zygote's stdin
(``{"cmd": "trial", ...spec}``, ``{"cmd": "reap", "trial": n}``). Everything
printed goes to the zygote's stdout as ``<trial> <WORD> ...`` lines, each in
one ``os.write`` (atomic below PIPE_BUF, so lines of concurrent threads and
processes never interleave)::

    n PID pid                              zygote: the child is forked
    n OPEN                                 child: the runtime is open
    n P sid iid                            child: about to accept iid
    n A sid iid kind durability key existing   child: accept returned
    n C sid iid completion_type            child: iid's completion resolved
    n X sid run_id iid...                  child: an executor call starts
    n Y sid run_id                         child: that executor call returns
    n T sid op                             child: about to run a lifecycle op
    n L sid op ok|refused                  child: the op returned
    n E text                               child: unexpected exception
    n END                                  child: workload done (sleeps until killed)
    n EXIT status                          zygote: the child is reaped

Executor calls. Every call is reported (``X`` when it starts, ``Y`` when it
returns), so the parent counts the calls per input and checks the
at-least-once window the runtime documents: an input may be executed again
only after a call whose run did not consume or apply it (a failed, cancelled
or timed-out run, or one cut short by the kill), and never by two calls at
once. A call for an input its run (by the log) had already consumed or
applied, or two overlapping calls, is a duplicate outside the window.

The zygote prints ``EXIT`` after ``waitpid``, so once the parent has read it,
it has read every line the dead child wrote.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WAIT = 60.0  # tests/waiting.py's bound; this file also runs as a script, outside the tests package
"""Generous upper bound for anything the campaign waits on (never a timing assertion)."""

SESSIONS = ("s0", "s1", "s2")
LIFE = "s-life"
"""The session whose thread also runs lifecycle operations (abandoning inputs is then allowed)."""


# ====================================================================== child side


def _say(trial: int, *words: object) -> None:
    os.write(1, (" ".join([str(trial), *map(str, words)]) + "\n").encode())


def _docs(rng: random.Random, n: int, iid: str) -> tuple[dict[str, Any], str, str | None]:
    """A random input document with header id ``iid``: (doc, durability, idempotency key)."""
    header: dict[str, Any] = {"id": iid}
    roll = rng.random()
    key: str | None = None
    durability = "durable"
    if roll < 0.45:
        doc: dict[str, Any] = {"input_type": "prompt", "content": f"p{n}"}
    elif roll < 0.60:
        key = f"k{rng.randrange(6)}"
        doc = {"input_type": "prompt", "content": f"keyed {key}"}
    elif roll < 0.70:
        durability = "ephemeral"
        doc = {"input_type": "prompt", "content": f"e{n}"}
    elif roll < 0.78:
        header["source"] = {"type": "external", "source_name": "ci"}
        header["supersession_key"] = "ci-status"
        doc = {
            "input_type": "external_event",
            "event_type": "ci.status",
            "payload": {"n": n},
            "handling_mode": "queue",
        }
    elif roll < 0.84:
        header["source"] = {"type": "peer", "peer_id": "peer-a"}
        header["supersession_key"] = "progress"
        doc = {
            "input_type": "peer",
            "convention": {
                "convention_type": "response_progress",
                "request_id": "r-1",
                "phase": "in_progress",
            },
            "content": "",
            "payload": {"pct": n % 100},
        }
    elif roll < 0.92:
        doc = {
            "input_type": "operation",
            "operation_id": f"op-{n}",
            "event": {"type": "started", "id": f"op-{n}", "kind": "tool"},
        }
    else:
        header["source"] = {"type": "peer", "peer_id": "peer-b"}
        doc = {"input_type": "peer", "convention": {"convention_type": "message"}, "content": "hi"}
    header["durability"] = durability
    if key is not None:
        header["idempotency_key"] = key
    doc["header"] = header
    return doc, durability, key


class _FlakyEcho:
    """Echoes, but fails about a third of the runs, and takes a few milliseconds."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.lock = threading.Lock()

    def run(self, request: Any) -> Any:
        from meerkat_runtime import EchoExecutor, RunResult

        with self.lock:
            fail, pause = self.rng.random() < 0.3, self.rng.random() * 0.004
        time.sleep(pause)
        if fail:
            return RunResult(status="failed", error="flaky executor")
        return EchoExecutor().run(request)


class _Reporting:
    """Wraps the child's executor: reports every call's start and return."""

    def __init__(self, trial: int, inner: Any) -> None:
        self.trial = trial
        self.inner = inner

    def run(self, request: Any) -> Any:
        ids = [str(i) for i in request.contributing_input_ids]
        _say(self.trial, "X", request.session_id, request.run_id, *ids)
        try:
            return self.inner.run(request)
        finally:
            _say(self.trial, "Y", request.session_id, request.run_id)


def _child(spec: dict[str, Any]) -> None:
    from meerkat_runtime import EchoExecutor, Runtime, RuntimeStateTransitionError
    from meerkat_runtime.events import wire
    from meerkat_runtime.events.ids import uuid7

    trial = int(spec["trial"])
    executor: Any = {"none": None, "echo": EchoExecutor(), "flaky": _FlakyEcho(spec["seed"])}[
        spec["executor"]
    ]
    if executor is not None:
        executor = _Reporting(trial, executor)
    options: dict[str, Any] = {
        "retry_backoff": 0.005,
        "snapshot_interval": spec["snapshot_interval"],
    }
    if spec.get("node_id"):
        options.update(node_id=spec["node_id"], lease_ttl=30.0)
    rt = Runtime.open(spec["url"], executor=executor, **options)
    _say(trial, "OPEN")
    counter = itertools.count()
    sent: dict[str, list[dict[str, Any]]] = defaultdict(list)  # accepted docs, to resend

    def on_done(sid: str, iid: str) -> Any:
        def done(fut: Any) -> None:
            if fut.exception() is None:
                tag = wire.to_json_value(fut.result())["completion_type"]
                _say(trial, "C", sid, iid, tag)

        return done

    def accept(sid: str, my_rng: random.Random) -> None:
        n = next(counter)
        if sent[sid] and my_rng.random() < 0.05:
            doc = my_rng.choice(sent[sid])  # the same input presented again
            header = doc["header"]
            iid, durability, key = header["id"], header["durability"], header.get("idempotency_key")
        else:
            iid = str(uuid7())
            doc, durability, key = _docs(my_rng, n, iid)
        _say(trial, "P", sid, iid)
        out = rt.session(sid).accept(doc)
        existing = out.existing_id if out.existing_id is not None else "-"
        _say(trial, "A", sid, iid, out.kind, durability, key or "-", existing)
        if out.kind == "accepted":
            sent[sid].append(doc)
            assert out.completion is not None
            out.completion.future.add_done_callback(on_done(sid, iid))

    def lifecycle(sid: str, my_rng: random.Random) -> None:
        op = my_rng.choice(["retire", "stop", "recover", "reset", "recycle", "reset", "recover"])
        if my_rng.random() < 0.02:
            op = "destroy"
        _say(trial, "T", sid, op)
        try:
            getattr(rt.create_session(sid), op)()  # a never-used id: created, as before
        except RuntimeStateTransitionError:
            _say(trial, "L", sid, op, "refused")
        else:
            _say(trial, "L", sid, op, "ok")

    def worker(k: int) -> None:
        my_rng = random.Random(f"{spec['seed']}-{k}")
        try:
            for _ in range(spec["steps"]):
                if spec["life"] and k == 0 and my_rng.random() < 0.5:
                    if my_rng.random() < 0.15:
                        lifecycle(LIFE, my_rng)
                    else:
                        accept(LIFE, my_rng)
                else:
                    accept(my_rng.choice(SESSIONS), my_rng)
        except BaseException as exc:
            _say(trial, "E", f"worker {k}: {type(exc).__name__}: {exc}".replace("\n", " ")[:3000])

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(spec["threads"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _say(trial, "END")


def _child_entry(spec: dict[str, Any]) -> None:
    """Run in the forked child; never returns into the zygote's loop."""
    try:
        _child(spec)
    except BaseException as exc:
        _say(spec["trial"], "E", f"child: {type(exc).__name__}: {exc}".replace("\n", " ")[:3000])
    finally:
        try:
            while True:
                time.sleep(3600)
        finally:
            os._exit(3)


def zygote() -> None:
    """Import everything once, then fork a child per ``trial`` command; reap on ``reap``."""
    import meerkat_runtime
    import meerkat_runtime.events.wire  # noqa: F401

    children: dict[int, int] = {}
    print("READY", flush=True)
    try:
        for line in sys.stdin:
            cmd = json.loads(line)
            trial = int(cmd["trial"])
            if cmd["cmd"] == "trial":
                if threading.active_count() != 1:
                    raise SystemExit("zygote: a thread is running; forking would be unsafe")
                pid = os.fork()
                if pid == 0:
                    _child_entry(cmd)
                children[trial] = pid
                _say(trial, "PID", pid)
            elif cmd["cmd"] == "reap":
                pid = children.pop(trial)
                _, status = os.waitpid(pid, 0)
                _say(trial, "EXIT", status)
    finally:
        for pid in children.values():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)


# ====================================================================== parent side


@dataclass(frozen=True)
class TrialSpec:
    """One trial: the store, the workload and when to kill."""

    trial: int
    url: str
    seed: int
    executor: str = "echo"  # none | echo | flaky
    threads: int = 3
    steps: int = 150
    life: bool = True
    snapshot_interval: int = 20
    node_id: str | None = None  # PostgreSQL: the child's node id (the parent reuses it)
    kill: str = "acks"  # acks: after kill_at acknowledgements; delay: kill_at seconds after fork
    kill_at: float = 10
    drain: bool = False  # after the checks, reopen with an executor and run everything

    @classmethod
    def random(
        cls,
        trial: int,
        url: str,
        rng: random.Random,
        node_id: str | None = None,
        drain_rate: float = 0.25,
    ) -> TrialSpec:
        kill = rng.choice(["acks", "acks", "delay"])
        kill_at: float = rng.randint(1, 60) if kill == "acks" else rng.uniform(0.0, 0.6)
        return cls(
            trial=trial,
            url=url,
            seed=rng.randrange(2**32),
            executor=rng.choice(["none", "echo", "echo", "flaky"]),
            threads=rng.choice([1, 2, 3, 4]),
            life=rng.random() < 0.6,
            snapshot_interval=rng.choice([0, 5, 20, 100]),
            node_id=node_id,
            kill=kill,
            kill_at=kill_at,
            drain=rng.random() < drain_rate,
        )

    def command(self) -> dict[str, Any]:
        return {
            "cmd": "trial",
            "trial": self.trial,
            "url": self.url,
            "seed": self.seed,
            "executor": self.executor,
            "threads": self.threads,
            "steps": self.steps,
            "life": self.life,
            "snapshot_interval": self.snapshot_interval,
            "node_id": self.node_id,
        }


@dataclass
class TrialRecord:
    """What the parent heard from one killed child."""

    spec: TrialSpec
    lines: list[list[str]]
    pid: int
    exit_status: int

    def words(self, tag: str) -> list[list[str]]:
        return [w for w in self.lines if w and w[0] == tag]


class Zygote:
    """The zygote process and a reader thread sorting its lines by trial."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "_crash.py"), "zygote"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._cond = threading.Condition()
        self._lines: dict[int, list[list[str]]] = defaultdict(list)
        self._ready = False
        self._eof = False
        threading.Thread(target=self._read, name="zygote-reader", daemon=True).start()
        with self._cond:
            if not self._cond.wait_for(lambda: self._ready or self._eof, WAIT) or self._eof:
                raise RuntimeError(f"the zygote did not start; see {log_path}")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            words = raw.decode(errors="replace").split()
            with self._cond:
                if words == ["READY"]:
                    self._ready = True
                elif words and words[0].isdigit():
                    self._lines[int(words[0])].append(words[1:])
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def _send(self, cmd: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        self.proc.stdin.flush()

    def _wait(self, trial: int, predicate: Any, timeout: float) -> bool:
        with self._cond:
            return bool(
                self._cond.wait_for(lambda: predicate(self._lines[trial]) or self._eof, timeout)
            )

    def run(self, spec: TrialSpec) -> TrialRecord:
        """Fork a child for ``spec``, SIGKILL it as the spec says, reap it, return its lines."""
        n = spec.trial

        def tagged(tag: str) -> Any:
            return lambda lines: any(w[0] == tag for w in lines)

        self._send(spec.command())
        if not self._wait(n, tagged("PID"), WAIT) or self._eof:
            raise RuntimeError(f"trial {n}: the zygote did not fork; see {self.log_path}")
        with self._cond:
            pid = int(next(w[1] for w in self._lines[n] if w[0] == "PID"))
        if spec.kill == "delay":
            self._wait(n, tagged("E"), spec.kill_at)
        else:
            self._wait(
                n,
                lambda lines: (
                    sum(w[0] == "A" for w in lines) >= spec.kill_at
                    or any(w[0] in ("END", "E") for w in lines)
                ),
                WAIT,
            )
        os.kill(pid, signal.SIGKILL)
        self._send({"cmd": "reap", "trial": n})
        if not self._wait(n, tagged("EXIT"), WAIT):
            raise RuntimeError(f"trial {n}: the child was not reaped; see {self.log_path}")
        with self._cond:
            lines = self._lines.pop(n)
        status = int(next(w[1] for w in lines if w[0] == "EXIT"))
        return TrialRecord(spec, lines, pid, status)

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
            try:
                self.proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@contextlib.contextmanager
def zygote_process(log_path: Path) -> Iterator[Zygote]:
    z = Zygote(log_path)
    try:
        yield z
    finally:
        z.close()


# ---------------------------------------------------------------------- checking


@dataclass
class TrialResult:
    """The verdict on one trial."""

    record: TrialRecord
    acked: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    calls: int = 0  # executor calls (child and drain)
    reexecuted: int = 0  # inputs executed more than once, inside the documented window
    duplicate_calls: list[str] = field(default_factory=list)  # outside the window

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.mismatches or self.duplicate_calls)

    def describe(self) -> str:
        s = self.record.spec
        head = (
            f"trial {s.trial} (seed {s.seed}, executor {s.executor}, threads {s.threads}, "
            f"life {s.life}, snapshots {s.snapshot_interval}, kill {s.kill} {s.kill_at:.3g}): "
            f"{self.acked} acked, {len(self.lost)} lost, {len(self.duplicated)} duplicated, "
            f"{len(self.mismatches)} mismatches, {self.calls} executor calls, "
            f"{self.reexecuted} re-executed inside the window, "
            f"{len(self.duplicate_calls)} duplicate calls outside it"
        )
        details = [
            *self.lost[:5],
            *self.duplicated[:5],
            *self.duplicate_calls[:5],
            *self.mismatches[:10],
        ]
        return "\n  ".join([head, *details])


_SETTLED = {"queued", "consumed", "superseded", "coalesced", "abandoned"}
_LIFE_REASONS = {"retire": "retired", "stop": "stopped", "reset": "reset", "destroy": "destroyed"}


def _torn_decisions(sid: str, envs: list[Any]) -> list[str]:
    """Accept and start-run decisions must be whole: each is one atomic append."""
    from meerkat_runtime.events.policy import ConsumePoint
    from meerkat_runtime.events.runtime_event import (
        InputAccepted,
        InputCoalesced,
        InputQueued,
        InputStaged,
        InputSuperseded,
        RunStarted,
        RuntimeCreated,
        RuntimeStateChangeEvent,
    )

    problems = []
    created = [e.sequence for e in envs if isinstance(e.event, RuntimeCreated)]
    if envs and created != [1]:
        problems.append(f"{sid}: topology.runtime_created at versions {created}, expected [1]")
    queued = {e.event.input_id for e in envs if isinstance(e.event, InputQueued)}
    for i, env in enumerate(envs):
        ev = env.event
        if isinstance(ev, InputAccepted):
            on_accept = ev.policy is not None and (
                ev.policy.decision.consume_point is ConsumePoint.ON_ACCEPT
            )
            if on_accept:
                if ev.input_id in queued:
                    problems.append(f"{sid}: consumed-on-accept input {ev.input_id} was queued")
                continue
            j = i + 1
            if j < len(envs) and isinstance(envs[j].event, (InputCoalesced, InputSuperseded)):
                j += 1
            nxt = envs[j].event if j < len(envs) else None
            if not (isinstance(nxt, InputQueued) and nxt.input_id == ev.input_id):
                problems.append(
                    f"{sid}: torn accept decision: input.accepted {ev.input_id} at version "
                    f"{env.sequence} is not followed by its input.queued (found {nxt!r:.120})"
                )
        elif isinstance(ev, RunStarted):
            ids = list(ev.primitive.primitive_input_ids()) if ev.primitive is not None else []
            rest = [e.event for e in envs[i + 1 : i + 2 + len(ids)]]
            ok = (
                len(rest) == 1 + len(ids)
                and isinstance(rest[0], RuntimeStateChangeEvent)
                and rest[0].to == "running"
                and [getattr(r, "input_id", None) for r in rest[1:]] == ids
                and all(isinstance(r, InputStaged) and r.run_id == ev.run_id for r in rest[1:])
            )
            if not ok:
                problems.append(
                    f"{sid}: torn start-run decision for run {ev.run_id} at version {env.sequence}"
                )
    return problems


def check_trial(record: TrialRecord, *, open_options: dict[str, Any] | None = None) -> TrialResult:
    """Reopen the store of a killed trial, recover, and check everything (see module doc)."""
    from meerkat_runtime import EchoExecutor, Runtime
    from meerkat_runtime.events import wire
    from meerkat_runtime.events.catalogue import envelope_from_record
    from meerkat_runtime.events.runtime_event import (
        InputAccepted,
        InputApplied,
        InputConsumed,
        InputDeduplicated,
    )
    from meerkat_runtime.events.session import SessionState, evolve

    spec = record.spec
    result = TrialResult(record)
    mis = result.mismatches
    options = dict(open_options or {})
    if spec.node_id:
        options.update(node_id=spec.node_id)
    mis.extend(f"child error: {' '.join(w[1:])}" for w in record.words("E"))
    if record.exit_status != signal.SIGKILL:
        mis.append(f"child exit status {record.exit_status}, expected death by SIGKILL")

    acks = [w[1:] for w in record.words("A")]
    accepted = [(a[0], a[1], a[3], a[4]) for a in acks if a[2] == "accepted"]
    result.acked = len(accepted)
    pending = {(w[1], w[2]) for w in record.words("P")}
    tried_ops: dict[str, set[str]] = defaultdict(set)
    for w in record.words("T"):
        tried_ops[w[1]].add(w[2])
    completions = {(w[1], w[2]): w[3] for w in record.words("C")}
    ephemeral_acked = {iid for _, iid, d, _ in accepted if d == "ephemeral"}
    accepted_ids = {iid for _, iid, _, _ in accepted}

    with Runtime.open(spec.url, **options) as rt:
        store = rt.store
        rt.recover()
        accepted_in: dict[str, list[str]] = defaultdict(list)  # input id -> sessions
        committed: dict[str, set[str]] = defaultdict(set)  # input id -> runs that applied it
        dedup_events: set[tuple[str, str, str]] = set()
        folds: dict[str, SessionState] = {}
        for sid in store.session_ids():
            records = store.read_session(sid)
            versions = [r.version for r in records]
            if versions != list(range(1, len(records) + 1)):
                mis.append(f"{sid}: versions are not contiguous from 1")
            envs = [envelope_from_record(r.data, r.version) for r in records]
            mis.extend(_torn_decisions(sid, envs))
            keys: dict[str, list[str]] = defaultdict(list)
            state = SessionState(session_id=sid)
            for env in envs:
                ev = env.event
                if isinstance(ev, InputAccepted):
                    accepted_in[str(ev.input_id)].append(sid)
                    key = ev.input.input_header.idempotency_key if ev.input else None
                    if key is not None:
                        keys[key].append(str(ev.input_id))
                elif isinstance(ev, InputDeduplicated):
                    dedup_events.add((sid, str(ev.input_id), str(ev.existing_id)))
                elif isinstance(ev, (InputApplied, InputConsumed)):
                    committed[str(ev.input_id)].add(str(ev.run_id))
                evolve(state, env)
            folds[sid] = state
            for key, ids in keys.items():
                if len(ids) > 1:
                    mis.append(f"{sid}: idempotency key {key!r} accepted {len(ids)} times: {ids}")

        # Acknowledged inputs: in the log exactly once, in their own session, in the ledger.
        rt.projections.wait_caught_up(WAIT)
        for sid, iid, _, _ in accepted:
            where = accepted_in.get(iid, [])
            if not where:
                result.lost.append(f"{sid}: acknowledged input {iid} is not in the log")
            elif where != [sid]:
                result.duplicated.append(f"acknowledged input {iid} ({sid}) accepted in {where}")
            row = rt.ledger.get(iid)
            if row is None:
                result.lost.append(f"{sid}: acknowledged input {iid} is not in the ledger")
            elif row.session_id != sid:
                mis.append(f"{sid}: ledger puts input {iid} in session {row.session_id}")
        for a in acks:
            sid, iid, kind, existing = a[0], a[1], a[2], a[5]
            if kind == "deduplicated":
                if (sid, iid, existing) not in dedup_events:
                    result.lost.append(f"{sid}: acknowledged deduplication of {iid} not in the log")
                if accepted_in.get(existing) != [sid]:
                    mis.append(f"{sid}: {iid} deduplicated against {existing}, not accepted there")
                if existing != iid and iid in accepted_in:
                    result.duplicated.append(f"{sid}: deduplicated input {iid} was also accepted")
            elif kind == "rejected" and iid in accepted_in and iid not in accepted_ids:
                mis.append(f"{sid}: rejected input {iid} is in the log")
        acked_ids = {iid for a in acks for iid in (a[1], a[5])}
        for iid, where in accepted_in.items():
            if iid not in acked_ids and (where[0], iid) not in pending:
                mis.append(f"{where[0]}: input {iid} in the log was never presented")

        # States after recovery.
        for sid in folds:
            observed = rt.session(sid).state()
            if observed.value in ("running", "attached", "initializing"):
                mis.append(f"{sid}: state {observed} after recovery without an executor")
        for sid in folds:
            state_after = SessionState(session_id=sid)
            for r in store.read_session(sid):
                evolve(state_after, envelope_from_record(r.data, r.version))
            if state_after.run is not None:
                mis.append(f"{sid}: a run is still in flight after recovery")
            allowed = (
                {"max_attempts_exhausted"} if (spec.executor == "flaky" or sid == LIFE) else set()
            )
            allowed |= {_LIFE_REASONS[op] for op in tried_ops.get(sid, ()) if op in _LIFE_REASONS}
            for iid_u, ist in state_after.inputs.items():
                iid, phase = str(iid_u), ist.current_state.value
                if phase not in _SETTLED:
                    mis.append(f"{sid}: input {iid} is {phase} after recovery")
                    continue
                if iid in ephemeral_acked and not ist.current_state.is_terminal:
                    mis.append(f"{sid}: ephemeral input {iid} is {phase} after a restart")
                out = ist.terminal_outcome
                reason = getattr(out, "reason", None)
                durable = ist.durability != "ephemeral"
                if reason is not None and durable and reason.kind.value not in allowed:
                    mis.append(f"{sid}: durable input {iid} abandoned ({reason}) unexpectedly")
            live = rt.session(sid)
            for (csid, iid), tag in completions.items():
                if csid != sid:
                    continue
                handle = live.completion(iid)
                got = None if handle is None or not handle.done() else handle.wait(0)
                got_tag = None if got is None else wire.to_json_value(got)["completion_type"]
                if got_tag != tag:
                    result.lost.append(
                        f"{sid}: acknowledged completion {tag} of {iid} is now {got_tag}"
                    )
        report = rt.verify()
        mis.extend(f"verify: {m}" for m in report.mismatches)

    calls = _executor_calls(record)
    if spec.drain:
        drain_executor = _CountingEcho(EchoExecutor())
        _drain(spec, accepted, result, options, drain_executor)
        calls.extend(drain_executor.calls)
    _check_calls(result, calls, committed)
    return result


@dataclass
class _Call:
    run_id: str
    input_ids: list[str]
    overlapped: bool = False


def _executor_calls(record: TrialRecord) -> list[_Call]:
    """The child's executor calls in start order; a call started before an earlier
    call for one of its inputs returned is marked as overlapping."""
    calls: list[_Call] = []
    live: dict[str, _Call] = {}  # run id -> call not returned yet
    for w in record.lines:
        if not w:
            continue
        if w[0] == "X":
            call = _Call(w[2], w[3:])
            busy = {i for c in live.values() for i in c.input_ids}
            call.overlapped = bool(busy & set(call.input_ids))
            live[call.run_id] = call
            calls.append(call)
        elif w[0] == "Y":
            live.pop(w[2], None)
    return calls


class _CountingEcho:
    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.lock = threading.Lock()
        self.calls: list[_Call] = []

    def run(self, request: Any) -> Any:
        with self.lock:
            ids = [str(i) for i in request.contributing_input_ids]
            self.calls.append(_Call(str(request.run_id), ids))
        return self.inner.run(request)


def _check_calls(result: TrialResult, calls: list[_Call], committed: dict[str, set[str]]) -> None:
    """The at-least-once window (see the module doc): count calls per input."""
    result.calls = len(calls)
    per_input: dict[str, list[_Call]] = defaultdict(list)
    for call in calls:
        for iid in call.input_ids:
            per_input[iid].append(call)
    for iid, its in per_input.items():
        if len(its) > 1:
            result.reexecuted += 1
        for n, call in enumerate(its):
            if call.overlapped:
                result.duplicate_calls.append(
                    f"input {iid} executed by run {call.run_id} while an earlier call still ran"
                )
            if n < len(its) - 1 and call.run_id in committed.get(iid, set()):
                result.duplicate_calls.append(
                    f"input {iid} executed again after run {call.run_id} applied or consumed it"
                )


def _drain(
    spec: TrialSpec,
    accepted: list[tuple[str, str, str, str]],
    result: TrialResult,
    options: dict[str, Any],
    executor: Any,
) -> None:
    """Reopen with an executor: every durable acknowledged input reaches a terminal state."""
    from meerkat_runtime import Runtime

    mis = result.mismatches
    with Runtime.open(spec.url, executor=executor, retry_backoff=0.005, **options) as rt:
        for sid in rt.sessions():
            s = rt.session(sid)
            if s.active_input_ids() and s.state().accepts_input:
                s.accept({"input_type": "prompt", "content": "flush"})  # takes steer inputs along
        deadline = time.monotonic() + WAIT
        while any(rt.session(sid).active_input_ids() for sid in rt.sessions()):
            if time.monotonic() > deadline:
                stuck = {sid: rt.session(sid).active_input_ids() for sid in rt.sessions()}
                mis.append(f"drain: inputs still active after {WAIT} s: {stuck}")
                break
            time.sleep(0.01)
        for sid, iid, durability, _ in accepted:
            st = rt.session(sid).input_state(iid)
            if st is None:
                continue  # reported as lost already
            if durability == "durable" and not st.current_state.is_terminal:
                mis.append(f"drain: {sid}: {iid} is still {st.current_state}")
            if st.current_state == "consumed":
                handle = rt.session(sid).completion(iid)
                if handle is None or not handle.done():
                    mis.append(f"drain: {sid}: consumed input {iid} has no resolved completion")
        rt.projections.wait_caught_up(WAIT)
        report = rt.verify()
        mis.extend(f"drain verify: {m}" for m in report.mismatches)


@dataclass
class CampaignTotals:
    """Counts over many trials (what the soak prints)."""

    trials: int = 0
    acked: int = 0
    lost: int = 0
    duplicated: int = 0
    mismatches: int = 0
    calls: int = 0
    reexecuted: int = 0
    duplicate_calls: int = 0
    failed: list[str] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)

    def add(self, result: TrialResult) -> None:
        self.trials += 1
        self.acked += result.acked
        self.lost += len(result.lost)
        self.duplicated += len(result.duplicated)
        self.mismatches += len(result.mismatches)
        self.calls += result.calls
        self.reexecuted += result.reexecuted
        self.duplicate_calls += len(result.duplicate_calls)
        self.kinds[f"executor={result.record.spec.executor}"] += 1
        if not result.ok:
            self.failed.append(result.describe())


def new_trial_url(backend: str, base: str, directory: Path, trial: int) -> str:
    """A fresh store for one trial: a new SQLite file, or a new PostgreSQL schema."""
    if backend == "sqlite":
        return f"sqlite:///{directory / f'trial-{trial:05d}.db'}"
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(base)
    schema = f"crash_{uuid.uuid4().hex[:16]}"
    query = f"{parts.query}&schema={schema}" if parts.query else f"schema={schema}"
    return urlunsplit(parts._replace(query=query))


def drop_trial_store(backend: str, url: str) -> None:
    """Remove a passed trial's store (files, or the PostgreSQL schema)."""
    if backend == "sqlite":
        path = url.removeprefix("sqlite:///")
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path + suffix)
        return
    from urllib.parse import parse_qsl, urlsplit, urlunsplit

    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    schema = dict(parse_qsl(parts.query))["schema"]
    with psycopg.connect(urlunsplit(parts._replace(query="")), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def run_campaign(
    zyg: Zygote,
    backend: str,
    base_url: str,
    directory: Path,
    trials: int,
    seed: int,
    *,
    first_trial: int = 0,
    progress: Any = None,
    keep_failed: bool = True,
    drain_rate: float = 0.25,
) -> CampaignTotals:
    """Run ``trials`` random trials on fresh stores; return the totals."""
    rng = random.Random(seed)
    totals = CampaignTotals()
    node_id = "crash-node" if backend == "postgresql" else None
    for n in range(first_trial, first_trial + trials):
        url = new_trial_url(backend, base_url, directory, n)
        spec = TrialSpec.random(n, url, rng, node_id=node_id, drain_rate=drain_rate)
        record = zyg.run(spec)
        try:
            result = check_trial(record)
        except Exception as exc:  # a crash of the checker is a failed trial, not a stop
            result = TrialResult(record, mismatches=[f"checker raised {type(exc).__name__}: {exc}"])
        totals.add(result)
        if result.ok or not keep_failed:
            drop_trial_store(backend, url)
        if progress is not None:
            progress(totals, result)
    return totals


if __name__ == "__main__":
    if sys.argv[1:] == ["zygote"]:
        zygote()
    else:
        raise SystemExit("usage: _crash.py zygote")
