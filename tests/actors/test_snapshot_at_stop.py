"""A session snapshots its head when its actor stops (passivation, runtime close), so the
next load after a clean stop reads that snapshot and no tail.

Only when the head moved since the session's last snapshot; the snapshot records the
log's last writer (a later load's cold recovery does not change); a failed snapshot
write fails nothing. A load from it equals a full refold of the log. On SQLite and
PostgreSQL; a ``memory://`` store (nothing of it outlives the process) takes none.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meerkat_runtime import EchoExecutor, Runtime
from meerkat_runtime.events import session as session_mod
from meerkat_runtime.events.input_state import InputState
from meerkat_runtime.events.session import compact, state_to_snapshot
from meerkat_runtime.store import EventStore
from meerkat_runtime.store._journal import SessionJournal

from ..faulty_store import fail_always, faulty_store
from ..store_urls import store_url_for
from ..waiting import WAIT, wait_until
from ._support import prompt


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.slow])]
)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store that outlives the process (SQLite, PostgreSQL)."""
    return store_url_for(request.param, request, tmp_path)


@pytest.fixture
def runtimes(store_url: str) -> Iterator[list[Runtime]]:
    """Runtimes a test opens; closed at teardown (a second close does nothing).

    It takes ``store_url`` so that it is set up after the store and torn down before
    it: the PostgreSQL schema is dropped only once its runtimes are closed (dropping
    it under a live runtime's projection runners deadlocked in CI once).
    """
    opened: list[Runtime] = []
    yield opened
    for rt in reversed(opened):
        rt.close()


def _open(opened: list[Runtime], url: str, **options: Any) -> Runtime:
    options.setdefault("close_timeout", 2.0)
    rt = Runtime.open(url, executor=EchoExecutor(), **options)
    opened.append(rt)
    return rt


def _work(rt: Runtime, sid: str, inputs: int = 3) -> None:
    """``inputs`` inputs accepted and run to completion."""
    s = rt.session(sid)
    for n in range(inputs):
        out = s.accept(prompt(f"p{n}", idempotency_key=f"{sid}-k{n}"))
        assert out.completion is not None
        out.completion.wait(WAIT)


def _head(store: EventStore, sid: str) -> int:
    return store.read_session(sid)[-1].version


def _refolded(store: EventStore, sid: str) -> dict[str, Any]:
    """The session's state folded from its first event, compacted as a load compacts."""
    state, _ = SessionJournal(store).replay(sid)
    compact(state)
    return state_to_snapshot(state)


def _loaded(rt: Runtime, sid: str) -> dict[str, Any]:
    """The live actor's state, as a snapshot document (for comparison)."""
    out: dict[str, Any] = rt.session(sid)._query(lambda st, _: state_to_snapshot(st))
    return out


def test_close_snapshots_each_live_head_and_a_reload_equals_a_full_refold(
    runtimes: list[Runtime], store_url: str
) -> None:
    rt = _open(runtimes, store_url)
    _work(rt, "s-1")
    _work(rt, "s-2", inputs=1)
    heads = {sid: _head(rt.store, sid) for sid in ("s-1", "s-2")}
    assert all(v < 100 for v in heads.values())  # under the interval: no snapshot yet
    assert rt.store.load_snapshot("s-1") is None
    rt.close()

    again = _open(runtimes, store_url)
    for sid, head in heads.items():
        snap = again.store.load_snapshot(sid)
        assert snap is not None and snap.version == head
        assert _loaded(again, sid) == _refolded(again.store, sid)
    # and the reloaded session works on from it
    _work(again, "s-1", inputs=1)
    assert _loaded(again, "s-1") == _refolded(again.store, "s-1")


def test_passivation_snapshots_the_head(runtimes: list[Runtime], store_url: str) -> None:
    rt = _open(runtimes, store_url, max_live_sessions=1)
    _work(rt, "s-1")
    head = _head(rt.store, "s-1")
    _work(rt, "s-2", inputs=1)  # no room: s-1 passivates

    def snapshotted() -> bool:
        snap = rt.store.load_snapshot("s-1")
        return snap is not None and snap.version == head

    wait_until(snapshotted, what="the passivated session's snapshot")
    assert _loaded(rt, "s-1") == _refolded(rt.store, "s-1")


def test_no_snapshot_when_the_head_did_not_move(store_url: str) -> None:
    with Runtime.open(store_url, executor=EchoExecutor(), close_timeout=2.0) as rt:
        _work(rt, "s-1")
    store, faults = faulty_store(store_url)
    try:
        with Runtime.open(store, executor=EchoExecutor(), close_timeout=2.0) as rt:
            rt.session("s-1").state()  # loaded from the snapshot at its head
        assert faults.injector is not None
        assert faults.injector.calls("save_snapshot") == 0
    finally:
        store.close()


def test_the_snapshot_keeps_the_log_s_last_writer(store_url: str) -> None:
    """A load that writes nothing snapshots the head with the writer of its last event, so
    the snapshot does not make another process's events look like this one's."""
    with Runtime.open(store_url, executor=EchoExecutor(), snapshot_interval=0) as rt:
        _work(rt, "s-1")
        writer = rt.store.read_session("s-1")[-1].writer
        assert writer == rt.store.incarnation
    with Runtime.open(store_url, executor=EchoExecutor(), close_timeout=2.0) as rt:
        rt.session("s-1").state()
        head = _head(rt.store, "s-1")
        mine = rt.store.incarnation
    assert mine != writer
    with Runtime.open(store_url) as rt:
        snap = rt.store.load_snapshot("s-1")
        assert snap is not None and snap.version == head
        assert snap.data["writer"] == writer


def test_a_failed_snapshot_at_stop_fails_nothing(store_url: str) -> None:
    store, faults = faulty_store(store_url)
    try:
        assert faults.injector is not None
        faults.injector.policy = fail_always(ops={"save_snapshot"})
        with Runtime.open(store, executor=EchoExecutor(), close_timeout=2.0) as rt:
            _work(rt, "s-1")
        assert faults.injector.injected("save_snapshot") >= 1
        faults.clear()
        assert store.load_snapshot("s-1") is None
    finally:
        store.close()
    with Runtime.open(store_url, executor=EchoExecutor(), close_timeout=2.0) as rt:
        assert _loaded(rt, "s-1") == _refolded(rt.store, "s-1")
        assert len(rt.session("s-1").stored_input_states_snapshot()) == 3


def test_a_snapshot_at_stop_is_not_taken_without_snapshots(store_url: str) -> None:
    with Runtime.open(store_url, executor=EchoExecutor(), snapshot_interval=0) as rt:
        _work(rt, "s-1")
    with Runtime.open(store_url) as rt:
        assert rt.store.load_snapshot("s-1") is None


def test_a_memory_store_takes_no_snapshot_at_stop() -> None:
    """Its log is in memory and dies with the process: a snapshot per stopped session would
    only cost memory (scale_bench: 8 KiB per passivated session)."""
    url = "memory://snapshot-at-stop"
    with Runtime.open(url, executor=EchoExecutor(), close_timeout=2.0) as rt:
        _work(rt, "s-1")
    with Runtime.open(url, executor=EchoExecutor(), close_timeout=2.0) as rt:
        assert rt.store.load_snapshot("s-1") is None
        assert _loaded(rt, "s-1") == _refolded(rt.store, "s-1")


def test_a_session_with_many_live_inputs_encodes_only_the_inputs_that_moved(
    runtimes: list[Runtime], store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session's snapshots reuse the encoding of inputs unchanged since its last one
    (``state_to_snapshot``'s memo), and a load from them still equals a full refold."""
    encoded: list[object] = []
    real = session_mod.to_wire  # type: ignore[attr-defined]

    def counting(value: Any) -> Any:
        if isinstance(value, InputState):
            encoded.append(value.input_id)
        return real(value)

    monkeypatch.setattr(session_mod, "to_wire", counting)
    rt = Runtime.open(store_url, snapshot_interval=10, close_timeout=2.0)  # no executor
    runtimes.append(rt)
    s = rt.session("s-1")
    for n in range(40):  # all queued: a snapshot every len(inputs) events holds them all
        s.accept(prompt(f"p{n}"))
    head = _head(rt.store, "s-1")
    live: int = s._query(lambda st, _: len(st.inputs))
    assert live == 40
    assert encoded, "no snapshot was taken while accepting"
    assert len(set(encoded)) == len(encoded), "an unchanged input was encoded twice"
    before_close = len(encoded)
    rt.close()
    # The stop snapshot encoded only the inputs accepted since the last snapshot.
    assert len(encoded) - before_close < live
    again = _open(runtimes, store_url)
    stored = again.store.load_snapshot("s-1")
    assert stored is not None and stored.version == head
    assert _loaded(again, "s-1") == _refolded(again.store, "s-1")
