"""Two writers on one store: the log never forks, and no input runs twice.

Processes (``_writer.py``) write the same sessions of one store:

* with leases (SQLite file and PostgreSQL alike): the second node gets
  ``SessionOwnedElsewhere`` and writes nothing, by design;
* with executors attached in both processes, each appending a line to a file
  per executor call: every acknowledged input is executed exactly once while
  sessions move between the processes (passivated by one, taken by the other),
  and ``meerkat-runtime recover`` leaves a live process's sessions alone;
* the at-least-once window: an input runs a second time only when the process
  that ran it first died in the middle of that run (its end never recorded);
* with the leases switched off: both runtimes append with optimistic
  concurrency only. A runtime whose folded state is stale meets a
  :class:`ConcurrencyConflict`, refolds and decides once more;
* two bare store writers racing read-version-then-append.

Every time: versions are contiguous, each acknowledged append is in the log
exactly once and each refused one not at all, every accept decision is whole
(``input.accepted`` with its ``input.queued``), and ``verify`` passes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from meerkat_runtime import Runtime
from meerkat_runtime.events.catalogue import envelope_from_record
from meerkat_runtime.runtime import event_codec
from meerkat_runtime.store import open_store

from ..waiting import WAIT, wait_until
from ._crash import _torn_decisions
from ._support import accepted_in_log

WRITER = Path(__file__).with_name("_writer.py")


class Writer:
    """One ``_writer.py`` process."""

    def __init__(self, mode: str, url: str, node_id: str, **options: Any) -> None:
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (the child's stderr while it lives)
        self.proc = subprocess.Popen(
            [sys.executable, str(WRITER), mode, url, node_id, json.dumps(options)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            bufsize=1,
        )
        self.ready = self._read()

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self._log.seek(0)
            raise AssertionError(f"writer died: {self._log.read().decode()[-3000:]}")
        result: dict[str, Any] = json.loads(line)
        return result

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def call(self, **cmd: Any) -> dict[str, Any]:
        self.send(**cmd)
        return self._read()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send(cmd="quit")
                self.proc.wait(WAIT)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@contextmanager
def writers(mode: str, url: str, *nodes: str, **options: Any) -> Iterator[list[Writer]]:
    started: list[Writer] = []
    try:
        for node in nodes:
            started.append(Writer(mode, url, node, **options))
        yield started
    finally:
        for w in started:
            w.close()


def concurrently(calls: list[tuple[Writer, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Send every command first, then collect the answers: the writers work at once."""
    for w, cmd in calls:
        w.send(**cmd)
    return [w._read() for w, _ in calls]


def check_log(url: str, sid: str, acked: list[str], refused: list[str]) -> None:
    with Runtime.open(url, join_cluster=False) as rt:
        records = rt.store.read_session(sid)
        assert [r.version for r in records] == list(range(1, len(records) + 1))
        envs = [envelope_from_record(r.data, r.version) for r in records]
        assert _torn_decisions(sid, envs) == []
        where = accepted_in_log(rt.store)
        for iid in acked:
            assert where.get(iid) == [sid], iid
        for iid in refused:
            assert iid not in where, iid
        assert sum(sid in w for w in where.values()) == len(acked)  # nothing from nowhere
        rt.projections.wait_caught_up(WAIT)
        report = rt.verify()
        assert report.ok, report.mismatches[:5]


def _two_runtimes_never_fork(mode: str, url: str) -> None:
    sid = "shared"
    with writers(mode, url, "node-a", "node-b") as (a, b):
        # Deterministic interleaving: B writes behind A's back, so A's next append is stale.
        first = a.call(cmd="accept", sid=sid, n=1)
        second = b.call(cmd="accept", sid=sid, n=1)
        third = a.call(cmd="accept", sid=sid, n=1)
        assert [len(r["acked"]) for r in (first, second, third)] == [1, 1, 1], (
            first,
            second,
            third,
        )
        assert third["conflicts"] >= 1  # A met the conflict, refolded and won on its retry
        # Then both at once, two threads each.
        results = concurrently(
            [(w, {"cmd": "accept", "sid": sid, "n": 30, "threads": 2}) for w in (a, b)]
        )
    acked = [i for r in (first, second, third, *results) for i in r["acked"]]
    errors = [e for r in (first, second, third, *results) for e in r["errors"]]
    # A refusal surfaces only as a conflict (two in a row), with nothing written.
    assert {e[1] for e in errors} <= {"ConcurrencyConflict"}, errors[:3]
    assert sum(r["conflicts"] for r in results) >= 1
    check_log(url, sid, acked, [e[0] for e in errors])


def test_two_runtimes_on_one_sqlite_file_without_leases(tmp_path: Path) -> None:
    _two_runtimes_never_fork("runtime-nolease", f"sqlite:///{tmp_path / 'shared.db'}")


def test_two_runtimes_on_postgres_without_leases(postgres_url: str) -> None:
    _two_runtimes_never_fork("runtime-nolease", postgres_url)


def _url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_second_node_gets_session_owned_elsewhere(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = _url(backend, tmp_path, request)
    sid = "owned"
    with writers("runtime", url, "node-a", "node-b") as (a, b):
        first = a.call(cmd="accept", sid=sid, n=3)
        assert len(first["acked"]) == 3
        second = b.call(cmd="accept", sid=sid, n=3)
        assert second["acked"] == []
        assert [e[1] for e in second["errors"]] == ["SessionOwnedElsewhere"] * 3
        assert all("node-a" in e[2] for e in second["errors"])
        # B's other sessions are its own.
        assert len(b.call(cmd="accept", sid="b-only", n=2)["acked"]) == 2
        more = a.call(cmd="accept", sid=sid, n=2)
        assert len(more["acked"]) == 2
    check_log(url, sid, first["acked"] + more["acked"], [e[0] for e in second["errors"]])


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_two_bare_store_writers_race(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Read-version-then-append from two processes: each version is won by exactly one."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'race.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    n = 60
    with writers("store", url, "w-a", "w-b") as ws:
        results = concurrently([(w, {"cmd": "race", "sid": "race", "n": n}) for w in ws])
    with open_store(url, codec=event_codec()) as store:
        records = store.read_session("race")
    assert [r.version for r in records] == list(range(1, 2 * n + 1))
    stored = Counter((r.data["writer"], r.data["i"]) for r in records)
    assert stored == Counter({(w, i): 1 for w in ("w-a", "w-b") for i in range(n)})
    won = sorted(v for r in results for v in r["won"])
    assert won == list(range(1, 2 * n + 1))
    for r, w in zip(results, ("w-a", "w-b"), strict=True):
        assert {rec.data["writer"] for rec in records if rec.version in r["won"]} == {w}


def test_writer_thread_safety_does_not_hide_conflicts(tmp_path: Path) -> None:
    """Within one process, many threads on one session never conflict with each other:
    the actor serializes them (conflicts come only from another writer)."""
    url = f"sqlite:///{tmp_path / 'one.db'}"
    with writers("runtime", url, "solo") as (w,):
        result = w.call(cmd="accept", sid="solo", n=40, threads=4)
    assert (len(result["acked"]), result["errors"], result["conflicts"]) == (40, [], 0)
    check_log(url, "solo", result["acked"], [])


# ---------------------------------------------------------------- executors attached

NON_TERMINAL = ("accepted", "queued", "staged", "applied", "applied_pending_consumption")


def executions(*logs: Path) -> list[dict[str, Any]]:
    """Every executor call the writers' ``LoggingExecutor`` recorded, in file order."""
    out: list[dict[str, Any]] = []
    for path in logs:
        if path.exists():
            out.extend(json.loads(line) for line in path.read_text().splitlines())
    return out


def runs_per_input(calls: list[dict[str, Any]]) -> Counter[str]:
    return Counter(iid for call in calls for iid in call["inputs"])


def wait_terminal(url: str, inputs: int) -> None:
    """Wait until the ledger holds ``inputs`` rows, none of them in flight."""
    with Runtime.open(url, join_cluster=False) as rt:

        def settled() -> bool:
            rt.projections.wait_caught_up(WAIT)
            if rt.ledger.count() < inputs:
                return False
            return all(rt.ledger.count(state=s) == 0 for s in NON_TERMINAL)

        wait_until(settled, WAIT * 2, "every input to reach a terminal state")


def check_store(url: str, acked: list[str], refused: list[str]) -> None:
    """Every session's versions are contiguous and its decisions whole; each acknowledged
    input accepted once, no refused one; ``verify`` passes."""
    with Runtime.open(url, join_cluster=False) as rt:
        for sid in rt.sessions():
            records = rt.store.read_session(sid)
            assert [r.version for r in records] == list(range(1, len(records) + 1)), sid
            envs = [envelope_from_record(r.data, r.version) for r in records]
            assert _torn_decisions(sid, envs) == [], sid
        where = accepted_in_log(rt.store)
        for iid in acked:
            assert len(where.get(iid, [])) == 1, iid
        for iid in refused:
            assert iid not in where, iid
        assert len(where) == len(acked)
        rt.projections.wait_caught_up(WAIT)
        report = rt.verify()
        assert report.ok, report.mismatches[:5]


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_hosts_with_executors_run_each_input_once(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Two processes with executors share 20 sessions: first one, then the other takes
    them all over (passivated by the first), then both at once. Every acknowledged
    input is executed exactly once, by whichever process owned its session."""
    url = _url(backend, tmp_path, request)
    sids = [f"s{i:02d}" for i in range(20)]
    logs = {n: tmp_path / f"{n}.calls" for n in ("node-a", "node-b")}
    acked: list[list[str]] = []
    refused: list[list[str]] = []
    with (
        writers("runtime", url, "node-a", idle_timeout=0.3, executor_log=str(logs["node-a"])) as (
            a,
        ),
        writers("runtime", url, "node-b", idle_timeout=0.3, executor_log=str(logs["node-b"])) as (
            b,
        ),
    ):
        first = a.call(cmd="spread", sids=sids, n=100, threads=4)
        assert first["refused"] == []
        acked += first["acked"]
        # node-a passivates every session once idle, and lets its leases go.
        with open_store(url, codec=event_codec()) as store:
            wait_until(
                lambda: not any(x.live for x in store.shared().list_leases("session:")),
                WAIT,
                "node-a to passivate its sessions",
            )
        second = b.call(cmd="spread", sids=sids, n=100, threads=4)
        assert second["refused"] == []  # taken over from node-a: one process at a time
        acked += second["acked"]
        both = concurrently(
            [(w, {"cmd": "spread", "sids": sids, "n": 200, "threads": 4}) for w in (a, b)]
        )
        for r in both:
            acked += r["acked"]
            refused += r["refused"]
        assert {kind for _, _, kind in refused} <= {"SessionOwnedElsewhere"}, refused[:3]
        acked_ids = [iid for _, iid in acked]
        wait_terminal(url, len(acked_ids))
    calls = executions(*logs.values())
    counts = runs_per_input(calls)
    twice = {iid: n for iid, n in counts.items() if n > 1}
    assert twice == {}, f"{len(twice)} inputs executed more than once: {list(twice)[:5]}"
    assert set(counts) == set(acked_ids)  # each acknowledged input ran; no refused one did
    by_pid = {call["pid"] for call in calls}
    assert len(by_pid) == 2  # both processes ran work
    check_store(url, acked_ids, [iid for _, iid, _ in refused])


@pytest.mark.parametrize("backend", BACKENDS)
def test_recover_leaves_the_sessions_of_a_live_host_alone(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """``meerkat-runtime recover`` while a host runs an input: refused for that session
    (exit 1, naming the owner), the run is not marked interrupted, the input runs once."""
    url = _url(backend, tmp_path, request)
    gate = tmp_path / "gate"
    log = tmp_path / "host.calls"
    with writers("runtime", url, "host", executor_log=str(log), gate=str(gate)) as (host,):
        out = host.call(cmd="spread", sids=["busy"], n=1, threads=1)
        ((_, iid),) = out["acked"]
        wait_until(lambda: len(executions(log)) == 1, WAIT, "the run to start in the host")
        env = {k: v for k, v in os.environ.items() if k != "MEERKAT_NODE_ID"}
        done = subprocess.run(
            [sys.executable, "-m", "meerkat_runtime", "recover", "--store", url],
            check=False,
            capture_output=True,
            text=True,
            timeout=WAIT * 2,
            env={**env, "COLUMNS": "300"},
        )
        assert done.returncode == 1, (done.stdout, done.stderr)
        assert "owned by a live runtime process" in done.stderr, done.stderr
        assert "busy (node host)" in done.stderr and "--force" in done.stderr
        assert "Traceback" not in done.stderr
        gate.touch()
        wait_terminal(url, 1)
    assert runs_per_input(executions(log)) == Counter({iid: 1})
    with open_store(url, codec=event_codec()) as store:
        topics = [r.topic for r in store.read_session("busy")]
    assert "run.failed" not in topics and "run.completed" in topics, topics
    check_store(url, [iid], [])


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_input_runs_twice_only_when_its_owner_died_mid_run(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The at-least-once window, and nothing beyond it: node-a is SIGKILLed while its
    executor runs one input per session; node-b (same host: it sees node-a is gone, no
    lease expiry to wait for) takes the sessions over at once and runs those inputs
    again. Only they run twice, and none of their first runs has a recorded end."""
    url = _url(backend, tmp_path, request)
    sids = [f"k{i}" for i in range(5)]
    logs = {n: tmp_path / f"{n}.calls" for n in ("node-a", "node-b")}
    never = tmp_path / "never"
    with (
        writers("runtime", url, "node-a", executor_log=str(logs["node-a"]), gate=str(never)) as (
            a,
        ),
        writers("runtime", url, "node-b", executor_log=str(logs["node-b"])) as (b,),
    ):
        first = a.call(cmd="spread", sids=sids, n=5, threads=1)
        assert len(first["acked"]) == 5
        wait_until(lambda: len(executions(logs["node-a"])) == 5, WAIT, "node-a's runs to start")
        a.kill()
        second = b.call(cmd="spread", sids=sids, n=10, threads=1)
        assert second["refused"] == []  # node-a is dead: no need to wait for its leases
        acked = [iid for _, iid in first["acked"] + second["acked"]]
        wait_terminal(url, len(acked))
    calls = executions(*logs.values())
    counts = runs_per_input(calls)
    assert set(counts) == set(acked)
    twice = {iid for iid, n in counts.items() if n > 1}
    in_flight_when_killed = {iid for _, iid in first["acked"]}
    assert twice <= in_flight_when_killed
    assert all(counts[iid] <= 2 for iid in twice)
    dead_runs = {call["run"] for call in calls if call["pid"] == a.ready["pid"]}
    assert {iid for call in calls if call["run"] in dead_runs for iid in call["inputs"]} == (
        in_flight_when_killed
    )
    with open_store(url, codec=event_codec()) as store:
        ends = {
            str(r.data["event"]["data"].get("run_id")): (r.topic, r.writer)
            for sid in sids
            for r in store.read_session(sid)
            if r.topic in ("run.completed", "run.failed", "run.cancelled")
        }
    # The dead node's runs were closed by node-b's recovery, never completed.
    for run in dead_runs:
        topic, writer = ends[run]
        assert topic != "run.completed" and writer == b.ready["incarnation"], (run, topic)
    check_store(url, acked, [])
