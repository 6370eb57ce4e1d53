"""Two writers on one session: the log never forks.

Two processes (``_writer.py``) write the same session of one store:

* on one SQLite file (no leases there): both runtimes append with optimistic
  concurrency only. A runtime whose folded state is stale meets a
  :class:`ConcurrencyConflict`, refolds and decides once more;
* on PostgreSQL with leases: the second node gets ``SessionOwnedElsewhere``
  and writes nothing, by design;
* on PostgreSQL with the leases switched off: as on SQLite;
* two bare store writers racing read-version-then-append.

Every time: versions are contiguous, each acknowledged append is in the log
exactly once and each refused one not at all, every accept decision is whole
(``input.accepted`` with its ``input.queued``), and ``verify`` passes.
"""

from __future__ import annotations

import json
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

from ._crash import _torn_decisions
from ._support import WAIT, accepted_in_log

WRITER = Path(__file__).with_name("_writer.py")


class Writer:
    """One ``_writer.py`` process."""

    def __init__(self, mode: str, url: str, node_id: str) -> None:
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (the child's stderr while it lives)
        self.proc = subprocess.Popen(
            [sys.executable, str(WRITER), mode, url, node_id],
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
def writers(mode: str, url: str, *nodes: str) -> Iterator[list[Writer]]:
    started: list[Writer] = []
    try:
        for node in nodes:
            started.append(Writer(mode, url, node))
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
    options: dict[str, Any] = {"node_id": "checker"} if url.startswith("postgresql") else {}
    with Runtime.open(url, **options) as rt:
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


def test_two_runtimes_on_one_sqlite_file(tmp_path: Path) -> None:
    _two_runtimes_never_fork("runtime", f"sqlite:///{tmp_path / 'shared.db'}")


def test_two_runtimes_on_postgres_without_leases(postgres_url: str) -> None:
    _two_runtimes_never_fork("runtime-nolease", postgres_url)


def test_a_second_node_gets_session_owned_elsewhere(postgres_url: str) -> None:
    sid = "owned"
    with writers("runtime", postgres_url, "node-a", "node-b") as (a, b):
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
    check_log(postgres_url, sid, first["acked"] + more["acked"], [e[0] for e in second["errors"]])


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
