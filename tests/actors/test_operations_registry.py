"""``session.operations()`` / ``operation(id)`` / ``wait_operations`` / the completion feed,
on memory, SQLite and PostgreSQL.

Drawn from the Rust ``ops_lifecycle.rs`` tests: late watchers resolve at once,
several listeners on one completion, wait-all returns every outcome in order,
a duplicate or unknown id is refused, a pending wait-all resolves when the
operation ends; and from ``ops_lifecycle_persistence.rs``: the registry
survives a restart.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from meerkat_runtime import (
    CompletionWaitError,
    EchoExecutor,
    OperationLifecycleError,
    OperationStatus,
    Runtime,
    SessionNotFound,
)

from ..waiting import WAIT, wait_until
from .conftest import OpenRuntime


def op(op_id: str, event: dict[str, Any]) -> dict[str, Any]:
    return {"input_type": "operation", "operation_id": op_id, "event": {**event, "id": op_id}}


def started(op_id: str, kind: str = "tool") -> dict[str, Any]:
    return op(op_id, {"type": "started", "kind": kind})


def progress(op_id: str, message: str = "step", percent: float | None = None) -> dict[str, Any]:
    return op(op_id, {"type": "progress", "message": message, "percent": percent})


def completed(op_id: str, result: Any = "done") -> dict[str, Any]:
    return op(op_id, {"type": "completed", "result": result})


def failed(op_id: str, error: str = "boom") -> dict[str, Any]:
    return op(op_id, {"type": "failed", "error": error})


def cancelled(op_id: str) -> dict[str, Any]:
    return op(op_id, {"type": "cancelled"})


def test_the_registry_follows_the_operation_inputs(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    s = rt.session("s")
    for inp in (started("a", "shell"), progress("a", "half", 50.0), started("b"), failed("b", "x")):
        assert s.accept(inp).is_accepted
    a, b = s.operation("a"), s.operation("b")
    assert a is not None and a.status is OperationStatus.RUNNING and a.progress_count == 1
    assert a.progress_percent == 50.0 and a.kind == "shell"
    assert b is not None and b.status is OperationStatus.FAILED and b.error == "x"
    assert [r.operation_id for r in s.operations()] == ["a", "b"]
    assert s.operation("nope") is None


def test_an_illegal_transition_is_refused_and_leaves_the_registry_as_it_was(
    open_runtime: OpenRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    """As in Rust, the operation input is admitted (and consumed); the registry refuses
    the move it asks for, and the outcome says why."""
    rt = open_runtime()
    s = rt.session("s")
    assert s.accept(started("a")).operation_error is None
    s.accept(completed("a", 1))
    before = s.operations()
    out = s.accept(progress("a"))
    assert out.is_accepted and out.operation_error is not None
    err = out.operation_error
    assert (err.kind, err.operation_id, err.status, err.action) == (
        "invalid_transition",
        "a",
        "completed",
        "progress",
    )
    assert "completed -> progress" in str(err) and err.hint
    assert "its event refused" in caplog.text
    ghost = s.accept(completed("ghost"))
    assert ghost.operation_error is not None and ghost.operation_error.kind == "not_found"
    assert s.operations() == before
    st = s.input_state(out.input_id)
    assert st is not None and st.current_state.value == "consumed"


def test_in_a_batch_each_operation_input_is_guarded_on_its_own(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    s = rt.session("s")
    s.accept(started("a"))
    done, again = s.accept_many([completed("a"), started("a")])
    assert done.operation_error is None
    assert again.operation_error is not None and again.operation_error.kind == "already_registered"
    rec = s.operation("a")
    assert rec is not None and rec.status is OperationStatus.COMPLETED
    # Within a batch each input is decided on the state the ones before it left.
    outcomes = s.accept_many([started("b"), progress("b"), completed("b", 7)])
    assert all(o.is_accepted for o in outcomes)
    rec = s.operation("b")
    assert rec is not None and (rec.status, rec.progress_count, rec.result) == (
        OperationStatus.COMPLETED,
        1,
        7,
    )


def test_wait_operations_returns_every_outcome_in_order(open_runtime: OpenRuntime) -> None:
    """Rust wait_all_returns_all_outcomes and late_watchers_resolve_immediately."""
    rt = open_runtime()
    s = rt.session("s")
    s.accept_many([started("a"), started("b"), completed("a", "a-done"), failed("b", "b-error")])
    recs = s.wait_operations(["b", "a"], timeout=0)
    assert [(r.operation_id, r.status) for r in recs] == [
        ("b", OperationStatus.FAILED),
        ("a", OperationStatus.COMPLETED),
    ]
    assert s.wait_operations([]) == []


def test_a_pending_wait_resolves_when_the_last_operation_ends(open_runtime: OpenRuntime) -> None:
    """Rust wait_all_resolves_from_authority_owned_wait_request and multi_listener_completion."""
    rt = open_runtime()
    s = rt.session("s")
    s.accept_many([started("a"), started("b")])
    results: list[Any] = []

    def waiter() -> None:
        try:
            results.append(s.wait_operations(["a", "b"], timeout=WAIT))
        except BaseException as exc:
            results.append(exc)

    threads = [threading.Thread(target=waiter) for _ in range(3)]
    for t in threads:
        t.start()
    wait_until(lambda: rt._services.operations.pending_count() == 6)
    s.accept(completed("a"))
    assert not results  # b still runs
    s.accept(cancelled("b"))
    for t in threads:
        t.join(WAIT)
    assert len(results) == 3
    for got in results:
        assert [(r.operation_id, r.status) for r in got] == [
            ("a", OperationStatus.COMPLETED),
            ("b", OperationStatus.CANCELLED),
        ]
    assert rt._services.operations.pending_count() == 0


def test_wait_operations_refuses_unknown_and_duplicate_ids(open_runtime: OpenRuntime) -> None:
    """Rust wait_all_unknown_operation_rejection and wait_all_duplicate_rejection."""
    rt = open_runtime()
    s = rt.session("s")
    s.accept(started("a"))
    with pytest.raises(OperationLifecycleError) as info:
        s.wait_operations(["a", "ghost"], timeout=1)
    assert info.value.kind == "not_found" and info.value.operation_id == "ghost"
    with pytest.raises(OperationLifecycleError) as info:
        s.wait_operations(["a", "a"], timeout=1)
    assert info.value.kind == "duplicate_wait"
    assert rt._services.operations.pending_count() == 0


def test_a_wait_that_times_out_leaves_no_waiter(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    s = rt.session("s")
    s.accept(started("a"))
    with pytest.raises(CompletionWaitError) as info:
        s.wait_operations(["a"], timeout=0.01)
    assert info.value.kind == "timeout" and "'a'" in str(info.value)
    assert rt._services.operations.pending_count() == 0


def test_closing_the_runtime_fails_a_pending_wait(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    s = rt.session("s")
    s.accept(started("a"))
    errors: list[BaseException] = []

    def waiter() -> None:
        try:
            s.wait_operations(["a"])
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=waiter)
    t.start()
    wait_until(lambda: rt._services.operations.pending_count() == 1)
    rt.close()
    t.join(WAIT)
    assert len(errors) == 1 and isinstance(errors[0], CompletionWaitError)
    assert errors[0].kind == "channel_closed"


@pytest.mark.parametrize("end", ["stop", "destroy", "retire"])
def test_a_session_that_takes_no_more_input_terminates_its_running_operations(
    open_runtime: OpenRuntime, end: str
) -> None:
    rt = open_runtime()
    s = rt.session("s")
    s.accept_many([started("run"), started("done"), completed("done")])
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(s.wait_operations(["run"], timeout=WAIT)))
    t.start()
    wait_until(lambda: rt._services.operations.pending_count() == 1)
    getattr(s, end)()
    t.join(WAIT)
    (rec,) = out[0]
    assert rec.status is OperationStatus.TERMINATED and rec.reason is not None
    done = s.operation("done")
    assert done is not None and done.status is OperationStatus.COMPLETED


def test_the_completion_feed_reads_from_a_cursor(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    s = rt.session("s")
    s.accept_many([started("a"), started("b"), started("c"), completed("b"), failed("a")])
    batch = s.operation_completions()
    assert [(e.seq, e.operation.operation_id) for e in batch.entries] == [(1, "b"), (2, "a")]
    assert batch.watermark == 2 and batch.gap_after(0) is None
    s.accept(cancelled("c"))
    nxt = s.operation_completions(after=batch.watermark)
    assert [(e.seq, e.operation.operation_id) for e in nxt.entries] == [(3, "c")]


def test_the_registry_survives_a_restart_and_snapshots(store_url: str) -> None:
    """Rust ops_lifecycle_persistence: what was registered is there after a restart."""
    with Runtime.open(store_url, snapshot_interval=3) as rt:
        s = rt.session("s")
        for inp in (started("a"), progress("a", "p", 1.0), started("b"), completed("b", [1])):
            s.accept(inp)
        for i in range(5):  # past the snapshot interval
            s.accept(started(f"x{i}"))
        before = s.operations()
        feed = s.operation_completions()
    with Runtime.open(store_url, executor=EchoExecutor()) as rt:
        s = rt.session("s")
        assert s.operations() == before
        assert s.operation_completions() == feed
        err = s.accept(completed("b")).operation_error
        assert err is not None and "completed -> completed" in str(err)
        s.accept(completed("a", "late"))
        (rec,) = s.wait_operations(["a"], timeout=0)
        assert rec.result == "late"


def test_reads_and_waits_on_a_never_used_session_raise_not_found(
    open_runtime: OpenRuntime,
) -> None:
    rt = open_runtime()
    s = rt.session("ghost")
    calls: dict[str, Callable[[], object]] = {
        "operations": s.operations,
        "operation": lambda: s.operation("a"),
        "operation_completions": s.operation_completions,
        "wait_operations": lambda: s.wait_operations(["a"], timeout=1),
    }
    for name, call in calls.items():
        with pytest.raises(SessionNotFound):
            call()
        assert rt.store.session_version("ghost") == 0, name
    assert rt._services.operations.pending_count() == 0


def test_runtime_accept_many_settles_waits_per_session(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    rt.accept_many([("s1", started("a")), ("s2", started("a"))])
    out: list[Any] = []
    t = threading.Thread(
        target=lambda: out.append(rt.session("s2").wait_operations(["a"], timeout=WAIT))
    )
    t.start()
    wait_until(lambda: rt._services.operations.pending_count() == 1)
    rt.accept_many([("s1", completed("a", 1)), ("s2", completed("a", 2))])
    t.join(WAIT)
    assert [r.result for r in out[0]] == [2]  # s2's own operation, not s1's of the same id
    first, second = rt.accept_many([("s1", started("b")), ("s2", completed("a"))])
    assert first.operation_error is None
    assert (
        second.operation_error is not None and second.operation_error.kind == "invalid_transition"
    )


def test_a_wait_outlives_the_passivation_of_its_session(open_runtime: OpenRuntime) -> None:
    """Waits live outside the actors: the incarnation that ends the operation answers."""
    rt = open_runtime(idle_timeout=0.05)
    s = rt.session("s")
    s.accept(started("a"))
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(s.wait_operations(["a"], timeout=WAIT)))
    t.start()
    wait_until(lambda: rt._services.operations.pending_count() == 1)
    wait_until(lambda: rt.live_session_count() == 0, what="the session to passivate")
    s.accept(completed("a", "after passivation"))
    t.join(WAIT)
    assert out and out[0][0].result == "after passivation"
