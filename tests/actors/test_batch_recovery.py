"""Batch recovery (``rt.recover()`` without an actor per session) against the actor path.

The same crashed logs are written to two stores; one recovers through the
session actors, the other through the batch path. Reports and the resulting
logs (event ids and timestamps aside) must be identical.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from meerkat_runtime import EchoExecutor, Runtime
from meerkat_runtime.events.catalogue import envelope_to_record
from meerkat_runtime.events.completion import TurnTerminalCauseKind
from meerkat_runtime.events.ids import uuid7
from meerkat_runtime.events.reports import RecoveryReport
from meerkat_runtime.events.runtime_event import RunError
from meerkat_runtime.events.session import (
    Accept,
    ApplyBoundary,
    CompleteRun,
    DecisionContext,
    Destroy,
    FailRun,
    SessionState,
    StartRun,
    Stop,
    execute,
    state_to_snapshot,
)
from meerkat_runtime.events.timefmt import utc_now
from meerkat_runtime.runtime import coerce_input, event_codec
from meerkat_runtime.store import NewEvent, SessionJournal, open_store

from ..waiting import WAIT, wait_until
from ._support import prompt

Log = list[tuple[str, dict[str, Any]]]
Builder = Callable[[SessionState, Callable[[Any], None]], None]


def _ctx() -> DecisionContext:
    return DecisionContext(now=utc_now(), new_id=uuid7, attached=True)


def _accept(step: Callable[[Any], None], key: str, **header: Any) -> None:
    step(Accept(coerce_input(prompt(key, idempotency_key=key, **header))))


def _completed(st: SessionState, step: Callable[[Any], None]) -> None:
    for n in range(2):
        _accept(step, f"done-{n}")
        run = uuid7()
        step(StartRun(run_id=run))
        step(CompleteRun(run_id=run, output={"text": "ok"}))


def _crashed_mid_run(st: SessionState, step: Callable[[Any], None]) -> None:
    _completed(st, step)
    _accept(step, "mid-run")
    step(StartRun(run_id=uuid7()))


def _crashed_after_boundary(st: SessionState, step: Callable[[Any], None]) -> None:
    _accept(step, "applied")
    run = uuid7()
    step(StartRun(run_id=run))
    step(ApplyBoundary(run_id=run))


def _queued_and_ephemeral(st: SessionState, step: Callable[[Any], None]) -> None:
    _accept(step, "durable")
    _accept(step, "ephemeral", durability="ephemeral")


def _staged_three_times(st: SessionState, step: Callable[[Any], None]) -> None:
    _accept(step, "poison")
    for _ in range(2):
        run = uuid7()
        step(StartRun(run_id=run))
        step(
            FailRun(
                run_id=run,
                error=RunError(kind=TurnTerminalCauseKind.RUNTIME_APPLY_FAILURE, detail="boom"),
            )
        )
    step(StartRun(run_id=uuid7()))


def _destroyed(st: SessionState, step: Callable[[Any], None]) -> None:
    _accept(step, "x")
    step(Destroy())


def _stopped(st: SessionState, step: Callable[[Any], None]) -> None:
    _accept(step, "x")
    step(Stop())


SCENARIOS: dict[str, Builder] = {
    "completed": _completed,
    "mid-run": _crashed_mid_run,
    "after-boundary": _crashed_after_boundary,
    "queued": _queued_and_ephemeral,
    "poison": _staged_three_times,
    "destroyed": _destroyed,
    "stopped": _stopped,
}


def build(session_id: str, builder: Builder) -> tuple[Log, tuple[int, dict[str, Any]] | None]:
    """The log a dead process left for ``session_id``, and a snapshot of its last state."""
    st = SessionState(session_id=session_id)
    log: Log = []

    def step(command: Any) -> None:
        decision, _ = execute(st, command, _ctx())
        log.extend(envelope_to_record(env) for env in decision.events)

    builder(st, step)
    return log, (st.version, {"state": state_to_snapshot(st), "writer": "dead-process"})


@pytest.fixture(params=["memory", "sqlite"])
def two_urls(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    if request.param == "memory":
        yield f"memory://{uuid.uuid4().hex}", f"memory://{uuid.uuid4().hex}"
    else:
        yield f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"


def write(url: str, logs: dict[str, tuple[Log, tuple[int, dict[str, Any]] | None]]) -> None:
    """Write the logs as another process would have (another incarnation)."""
    store = open_store(url, codec=event_codec())
    try:
        for sid, (log, snapshot) in logs.items():
            store.append(sid, 0, [NewEvent(topic, data) for topic, data in log])
            if snapshot is not None and sid.endswith("+snap"):
                store.save_snapshot(sid, *snapshot)
    finally:
        store.close()


def crashed_logs() -> dict[str, tuple[Log, tuple[int, dict[str, Any]] | None]]:
    logs = {}
    for name, builder in SCENARIOS.items():
        for suffix in ("", "+snap"):
            sid = f"{name}{suffix}"
            logs[sid] = build(sid, builder)
    return logs


def comparable(rt: Runtime) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Every session's log with the fields that differ between two runs (ids, times) left out."""
    out = {}
    for sid in rt.sessions():
        events = []
        for rec in rt.store.read_session(sid):
            data = {k: v for k, v in rec.data.items() if k not in ("id", "timestamp")}
            events.append((rec.topic, data))
        out[sid] = events
    return out


def recover_with_actors(rt: Runtime) -> dict[str, RecoveryReport]:
    reports, owned = rt._recover_with_actors(rt.sessions())
    assert owned == []
    return reports


def test_batch_recovery_matches_the_actor_path(two_urls: tuple[str, str]) -> None:
    logs = crashed_logs()
    actors_url, batch_url = two_urls
    write(actors_url, logs)
    write(batch_url, logs)

    with Runtime.open(actors_url, projections=False) as rt:
        by_actors = recover_with_actors(rt)
        assert rt.live_session_count() > 0
        log_actors = comparable(rt)
    with Runtime.open(batch_url, projections=False) as rt:
        by_batch = rt.recover_by_session()
        assert rt.live_session_count() == 0  # no actor was needed
        log_batch = comparable(rt)

    assert by_batch == by_actors
    assert list(by_batch) == list(by_actors)
    assert "destroyed" not in by_batch
    assert by_batch["mid-run"].inputs_requeued == 1  # the scenarios do recover something
    assert by_batch["poison+snap"].inputs_abandoned == 1
    assert log_batch == log_actors
    assert log_batch != {sid: [(t, d) for t, d in log] for sid, (log, _) in logs.items()}


def test_a_second_recovery_writes_nothing_and_reports_the_same_as_the_actors(
    two_urls: tuple[str, str],
) -> None:
    """After a recovery this process is the last writer: in-process recovery on both paths."""
    logs = crashed_logs()
    actors_url, batch_url = two_urls
    write(actors_url, logs)
    write(batch_url, logs)
    with Runtime.open(actors_url, projections=False, max_live_sessions=1) as rt:
        recover_with_actors(rt)
        again_actors = recover_with_actors(rt)
        log_actors = comparable(rt)
    with Runtime.open(batch_url, projections=False) as rt:
        rt.recover()
        before = comparable(rt)
        again_batch = rt.recover_by_session()
        assert comparable(rt) == before
        log_batch = comparable(rt)
    assert again_batch == again_actors
    assert log_batch == log_actors


def test_live_sessions_recover_through_their_actor(two_urls: tuple[str, str]) -> None:
    logs = crashed_logs()
    write(two_urls[0], logs)
    write(two_urls[1], logs)
    with Runtime.open(two_urls[0], projections=False) as rt:
        expected = recover_with_actors(rt)
    with Runtime.open(two_urls[1], projections=False) as rt:
        rt.session("mid-run").state()  # live: its actor has already done the cold recovery
        live_before = set(rt.live_session_ids())
        got = rt.recover_by_session()
        assert set(rt.live_session_ids()) == live_before == {"mid-run"}
    assert got == expected


def test_a_session_that_becomes_live_meanwhile_goes_to_its_actor(
    two_urls: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch append conflicts with the actor's own recovery; nothing is written twice."""
    logs = {sid: logs for sid, logs in crashed_logs().items() if sid == "mid-run"}
    write(two_urls[0], logs)
    write(two_urls[1], logs)
    with Runtime.open(two_urls[0], projections=False) as rt:
        expected = recover_with_actors(rt)
        log_expected = comparable(rt)
    with Runtime.open(two_urls[1], projections=False) as rt:
        load = SessionJournal.recover_many

        def load_then_race(journal: SessionJournal, session_ids: list[str]) -> Any:
            loaded = load(journal, session_ids)
            rt.session("mid-run").state()  # an actor loads and recovers it first
            return loaded

        monkeypatch.setattr(SessionJournal, "recover_many", load_then_race)
        got = rt.recover_by_session()
        assert comparable(rt) == log_expected
    assert got == expected


def test_requeued_work_runs_after_batch_recovery(tmp_path: Path) -> None:
    """With an executor, a session left with queued work is woken (as its actor would be)."""
    url = f"sqlite:///{tmp_path / 'runtime.db'}"
    log, _ = build("mid-run", _crashed_mid_run)
    write(url, {"mid-run": (log, None)})
    completed_before = sum(1 for topic, _ in log if topic == "run.completed")
    with Runtime.open(url, executor=EchoExecutor(), projections=False, recover="eager") as rt:
        assert rt.last_recovery is not None and rt.last_recovery[0].inputs_requeued == 1

        def completed() -> int:
            return sum(1 for r in rt.store.read_session("mid-run") if r.topic == "run.completed")

        # Watched through the store: a host call would itself start the session's actor.
        wait_until(lambda: completed() > completed_before, WAIT, "the re-queued input's run")


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_batch_recovery_takes_leases_and_leaves_live_owned_sessions_alone(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """On a store with leases the batch holds each session's lease while it recovers it
    (and lets it go after); a session another live process owns is reported, untouched."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'leases.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    logs = crashed_logs()
    write(url, logs)
    with Runtime.open(url, projections=False, node_id="other") as other:
        other.session("completed").state()  # its actor holds the lease now
        before = other.store.read_session("completed")
        with Runtime.open(url, projections=False, node_id="me") as rt:
            got, owned = rt.recover_owned()
            assert [(e.session_id, e.owner) for e in owned] == [("completed", "other")]
            assert "completed" not in got and got["mid-run"].inputs_requeued == 1
            assert "destroyed" not in got and "destroyed+snap" not in got
            mine = [x for x in rt.store.shared().list_leases("session:") if x.owner == "me"]
            assert mine and not any(x.live for x in mine)  # taken, then let go
        assert other.store.read_session("completed") == before


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_batch_recovery_takes_and_releases_leases_a_batch_at_a_time(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lease work of a batch does not grow with its sessions: one call to take the
    batch's leases, one to let them go (it took two transactions per session, each a
    commit: on SQLite FULL most of the cold recovery's time)."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'leases.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    write(url, {f"many-{n:02d}": build(f"many-{n:02d}", _completed) for n in range(30)})
    calls: list[str] = []
    me = threading.get_ident()
    # A long TTL: no heartbeat renews (then re-releases) the batch's leases meanwhile.
    with Runtime.open(url, projections=False, node_id="me", lease_ttl=600) as rt:
        shared = type(rt.store.shared())
        for name in ("acquire_lease", "release_lease", "acquire_leases", "release_leases"):
            original = getattr(shared, name, None)
            if original is None:
                continue

            def spy(
                self: Any, *args: Any, _name: str = name, _fn: Any = original, **kw: Any
            ) -> Any:
                if threading.get_ident() == me:  # not the lease heartbeat's renewals
                    calls.append(_name)
                return _fn(self, *args, **kw)

            monkeypatch.setattr(shared, name, spy)
        got = rt.recover_by_session()
        assert len(got) == 30 and rt.live_session_count() == 0
        mine = [x for x in rt.store.shared().list_leases("session:many-") if x.owner == "me"]
    assert len(mine) == 30 and not any(x.live for x in mine)  # all taken, all let go
    assert sorted(calls) == ["acquire_leases", "release_leases"]
