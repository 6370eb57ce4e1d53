"""Bounded session state (issue 17 item 6): terminal inputs leave the session's state and
its snapshot; what deciding needs (the idempotency keys, the ids of past inputs) stays.

Every answer about a terminal input is still given, from the session's log: its
state, its completion, a duplicate of it (by key or by id), also after a restart
from a snapshot or from the log alone. On memory, SQLite and PostgreSQL.
"""

from __future__ import annotations

import base64
from typing import Any

from meerkat_runtime import Completed, EchoExecutor, InputLifecycleState, Runtime
from meerkat_runtime.events.session import state_from_snapshot, state_to_snapshot

from ..faulty_store import fail_next, faulty_store
from ..waiting import WAIT
from ._support import prompt
from .conftest import OpenRuntime

L = InputLifecycleState


def _held(rt: Runtime, sid: str) -> tuple[int, int]:
    """(inputs the live state holds, ids of past inputs it remembers)."""
    return rt.session(sid)._query(  # type: ignore[no-any-return]
        lambda st, _: (len(st.inputs), len(getattr(st, "retired", ())))
    )


def _stored_snapshot(rt: Runtime, sid: str) -> dict[str, Any]:
    snap = rt.store.load_snapshot(sid)
    assert snap is not None
    state: dict[str, Any] = snap.data["state"]
    return state


def test_the_state_and_its_snapshot_follow_live_inputs_not_history(
    open_runtime: OpenRuntime,
) -> None:
    rt = open_runtime(executor=EchoExecutor(), snapshot_interval=10)
    s = rt.session("s-1")
    for n in range(60):
        out = s.accept(prompt(f"p{n}", idempotency_key=f"k{n}"))
        assert out.completion is not None
        out.completion.wait(WAIT)
    s.state()  # a message after the last run's: its inputs are compacted by now
    assert _held(rt, "s-1") == (0, 60)
    snap = _stored_snapshot(rt, "s-1")
    # at most the one input live when it was taken (before this change: every input ever)
    assert len(snap["inputs"]) <= 1
    assert len(base64.b64decode(snap["retired"])) <= 16 * 60
    assert len(snap["idempotency"]) <= 60


def test_answers_about_terminal_inputs_come_from_the_log(open_runtime: OpenRuntime) -> None:
    rt = open_runtime(executor=EchoExecutor())
    s = rt.session("s-1")
    out = s.accept(prompt("hi", idempotency_key="k"))
    assert out.completion is not None
    done = out.completion.wait(WAIT)
    assert isinstance(done, Completed)  # the run's output, written by the run's end
    s.state()
    assert _held(rt, "s-1") == (0, 1)
    st = s.input_state(out.input_id)
    assert st is not None and st.current_state is L.CONSUMED
    handle = s.completion(out.input_id)
    assert handle is not None and handle.done() and handle.wait(0) == done  # the run's output
    assert [x.input_id for x in s.stored_input_states_snapshot()] == [out.input_id]
    # a duplicate by key and one by id: deduplicated, waiting on the same outcome
    again = s.accept(prompt("hi again", idempotency_key="k"))
    assert again.kind == "deduplicated" and again.existing_id == out.input_id
    assert again.completion is not None and again.completion.wait(WAIT) == done
    same = s.accept(prompt("same id", id=str(out.input_id)))
    assert same.kind == "deduplicated" and same.existing_id == out.input_id
    assert s.input_state("0195a000-0000-7000-8000-000000000000") is None  # never accepted


def test_a_restart_remembers_past_inputs(open_runtime: OpenRuntime, store_url: str) -> None:
    if store_url.startswith("memory"):
        return  # nothing outlives a memory store's runtime (the other backends cover it)
    for interval in (3, 0):  # from a snapshot, and from the log alone
        sid = f"s-{interval}"
        rt = open_runtime(executor=EchoExecutor(), snapshot_interval=interval)
        s = rt.session(sid)
        first = s.accept(prompt("a", idempotency_key="k-a"))
        assert first.completion is not None
        done = first.completion.wait(WAIT)
        rt.close()
        rt2 = open_runtime(snapshot_interval=interval)
        s2 = rt2.session(sid)
        dup = s2.accept(prompt("a again", idempotency_key="k-a"))
        assert dup.kind == "deduplicated" and dup.existing_id == first.input_id
        assert s2.accept(prompt("same id", id=str(first.input_id))).kind == "deduplicated"
        assert _held(rt2, sid)[0] == 0
        handle = s2.completion(first.input_id)
        assert handle is not None and handle.wait(0) == done
        rt2.close()


def test_a_snapshot_of_the_earlier_format_still_loads() -> None:
    """Format 1 (every input kept, no ``retired``): it loads, and compacts on save."""
    state = state_from_snapshot(
        {
            "format": 1,
            "session_id": "s",
            "version": 0,
            "created": False,
            "phase": "idle",
            "run": None,
            "inputs": [],
            "queue": [],
            "steer_queue": [],
            "admission_counter": 0,
            "wake_pending": False,
            "updated_at": None,
        }
    )
    assert state.retired == set() and state.idempotency == {}
    assert state_to_snapshot(state)["format"] == 2


def test_a_duplicate_of_a_finished_input_resolves_after_a_failed_log_read(
    store_url: str,
) -> None:
    """The outcome of a duplicate of a compacted input is read from the log on the pool; a
    read that fails (a database blip) is tried again. Failed before: the handle stayed
    pending until the runtime closed, so ``wait()`` timed out on a finished input."""
    store, faults = faulty_store(store_url)
    try:
        with Runtime.open(store, executor=EchoExecutor(), close_timeout=2.0) as rt:
            s = rt.session("s-1")
            first = s.accept(prompt("a", idempotency_key="k"))
            assert first.completion is not None
            done = first.completion.wait(WAIT)
            s.state()
            assert _held(rt, "s-1")[0] == 0  # compacted: a duplicate's outcome is in the log
            assert faults.injector is not None
            faults.injector.policy = fail_next(1, ops={"read"})
            dup = s.accept(prompt("a again", idempotency_key="k"))
            assert dup.kind == "deduplicated" and dup.completion is not None
            assert dup.completion.wait(WAIT) == done
    finally:
        faults.clear()
        store.close()
