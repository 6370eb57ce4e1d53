"""The operations registry folded from operation inputs (pure core).

Cases drawn from the Rust ``ops_lifecycle.rs`` tests: invalid transitions and
duplicate registration are refused and change nothing, terminal payloads read
back per variant, terminate-owner targets only non-terminal operations,
bounded retention evicts the oldest terminal ones with an exact feed gap, the
public result class of each status (a retiring operation is still running).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from meerkat_runtime.errors import InvalidInput, OperationLifecycleError
from meerkat_runtime.events import InputLifecycleState, OperationInput
from meerkat_runtime.events._codec import to_wire
from meerkat_runtime.events.inputs import (
    OperationCancelled,
    OperationCompleted,
    OperationEvent,
    OperationFailed,
    OperationProgress,
    OperationStarted,
)
from meerkat_runtime.events.operations import (
    CompletionFeedGap,
    OperationPublicResultClass,
    OperationRegistry,
    OperationStatus,
)
from meerkat_runtime.events.session import (
    Stop,
    fold,
    state_from_snapshot,
    state_to_snapshot,
)

from ._support import SESSION, Driver, header, prompt

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
S = OperationStatus


def op(op_id: str, event: OperationEvent, **kw: Any) -> OperationInput:
    return OperationInput(operation_id=op_id, event=event, header=header(**kw))


def started(op_id: str, kind: str = "tool") -> OperationInput:
    return op(op_id, OperationStarted(id=op_id, kind=kind))


def progress(op_id: str, message: str = "step", percent: float | None = None) -> OperationInput:
    return op(op_id, OperationProgress(id=op_id, message=message, percent=percent))


def completed(op_id: str, result: Any = "done") -> OperationInput:
    return op(op_id, OperationCompleted(id=op_id, result=result))


def failed(op_id: str, error: str = "boom") -> OperationInput:
    return op(op_id, OperationFailed(id=op_id, error=error))


def cancelled(op_id: str) -> OperationInput:
    return op(op_id, OperationCancelled(id=op_id))


def accept(d: Driver, inp: OperationInput) -> None:
    reply = d.accept(inp)
    assert reply.kind == "accepted" and reply.operation_error is None, reply


def refused(d: Driver, inp: OperationInput) -> OperationLifecycleError:
    """``inp`` is accepted (consumed, as every operation input) but its event is refused:
    the registry stays as it was and the reply names why."""
    before = state_to_snapshot(d.state)["operations"]
    reply = d.accept(inp)
    assert reply.kind == "accepted" and reply.operation_error is not None, reply
    assert state_to_snapshot(d.state)["operations"] == before
    assert d.state.inputs[inp.input_header.id].current_state is InputLifecycleState.CONSUMED
    assert fold(d.log, session_id=SESSION).operations == d.state.operations
    return reply.operation_error


def test_started_progress_completed_is_folded_per_operation() -> None:
    d = Driver()
    accept(d, started("op-a", "shell"))
    accept(d, progress("op-a", "half", 50.0))
    accept(d, progress("op-a", "most", None))
    rec = d.state.operations.get("op-a")
    assert rec is not None and rec.status is S.RUNNING and rec.kind == "shell"
    assert (rec.progress_count, rec.progress_message, rec.progress_percent) == (2, "most", None)
    assert not rec.terminal and rec.public_result_class is OperationPublicResultClass.RUNNING
    accept(d, completed("op-a", {"rows": 3}))
    rec = d.state.operations.get("op-a")
    assert rec is not None and rec.status is S.COMPLETED and rec.result == {"rows": 3}
    assert rec.terminal and rec.completion_seq == 1 and rec.completed_at is not None
    assert rec.public_result_class is OperationPublicResultClass.COMPLETED
    # Operations stay consume-on-accept inputs: nothing is queued, no run wanted.
    assert not d.state.queue and not d.state.steer_queue


def test_each_terminal_event_reads_back_its_payload() -> None:
    """Rust typed_terminal_payload_classifies_and_reads_back_each_variant, for ours."""
    d = Driver()
    for name in ("c", "f", "x"):
        accept(d, started(name))
    accept(d, completed("c", [1, 2]))
    accept(d, failed("f", "disk full"))
    accept(d, cancelled("x"))
    reg = d.state.operations
    c, f, x = reg.get("c"), reg.get("f"), reg.get("x")
    assert c is not None and (c.status, c.result, c.error) == (S.COMPLETED, [1, 2], None)
    assert f is not None and (f.status, f.error) == (S.FAILED, "disk full")
    assert f.public_result_class is OperationPublicResultClass.FAILED
    assert x is not None and x.status is S.CANCELLED
    assert x.public_result_class is OperationPublicResultClass.CANCELLED
    assert [r.operation_id for r in reg.records()] == ["c", "f", "x"]


def test_progress_after_completed_is_refused_and_writes_nothing() -> None:
    d = Driver()
    accept(d, started("op"))
    accept(d, completed("op"))
    err = refused(d, progress("op"))
    assert (err.kind, err.operation_id, err.status, err.action) == (
        "invalid_transition",
        "op",
        "completed",
        "progress",
    )
    assert "completed -> progress" in str(err) and "'op'" in str(err)


@pytest.mark.parametrize("end", [completed, failed, cancelled])
@pytest.mark.parametrize("after", [progress, completed, failed, cancelled])
def test_every_event_for_a_terminal_operation_is_refused(end: Any, after: Any) -> None:
    d = Driver()
    accept(d, started("op"))
    accept(d, end("op"))
    assert refused(d, after("op")).kind == "invalid_transition"


@pytest.mark.parametrize("event", [progress, completed, failed, cancelled])
def test_an_event_for_an_unknown_operation_is_not_found(event: Any) -> None:
    """Rust: every registry call for an unregistered id is NotFound."""
    d = Driver()
    err = refused(d, event("ghost"))
    assert err.kind == "not_found" and err.status is None and "ghost" in str(err)


def test_started_twice_is_already_registered() -> None:
    """Rust duplicate_registration_rejection_is_generated (also once it is terminal)."""
    d = Driver()
    accept(d, started("op"))
    assert refused(d, started("op")).kind == "already_registered"
    accept(d, completed("op"))
    assert refused(d, started("op")).kind == "already_registered"


def test_an_event_naming_another_operation_is_refused() -> None:
    d = Driver()
    accept(d, started("a"))
    err = refused(d, op("a", OperationCompleted(id="b", result=None)))
    assert err.kind == "id_mismatch" and "'b'" in str(err)


def test_the_same_input_presented_again_deduplicates_before_the_guards() -> None:
    """A redelivered ``completed`` is a duplicate, not an illegal second completion."""
    d = Driver()
    accept(d, started("op"))
    done = completed("op")
    accept(d, done)
    assert d.accept(done).kind == "deduplicated"
    keyed = op("op", OperationCompleted(id="op", result=1), key="k")
    d2 = Driver()
    accept(d2, started("op"))
    accept(d2, keyed)
    again = op("op", OperationCompleted(id="op", result=2), key="k")
    assert d2.accept(again).kind == "deduplicated"


def test_stop_terminates_only_running_operations() -> None:
    """Rust terminate_owner_only_targets_non_terminal_operations."""
    d = Driver()
    accept(d, started("running"))
    accept(d, started("done"))
    accept(d, completed("done"))
    d.run(Stop())
    reg = d.state.operations
    run, done = reg.get("running"), reg.get("done")
    assert run is not None and run.status is S.TERMINATED and run.reason == "session stopped"
    assert run.public_result_class is OperationPublicResultClass.FAILED
    assert done is not None and done.status is S.COMPLETED
    assert [e.operation.operation_id for e in reg.feed().entries] == ["done", "running"]


def test_bounded_retention_evicts_the_oldest_terminal_and_reports_the_feed_gap() -> None:
    """Rust bounded_completed_retention_evicts_oldest and the exact evicted cursor gap."""
    reg = OperationRegistry(max_completed=3)
    seq = 0
    for i in range(5):
        for inp in (started(f"op-{i}"), completed(f"op-{i}", i)):
            seq += 1
            reg.apply(inp.operation_id, inp.event, T0, seq)
    assert [reg.get(f"op-{i}") is not None for i in range(5)] == [False, False, True, True, True]
    batch = reg.feed(0)
    assert [e.seq for e in batch.entries] == [3, 4, 5]
    assert (batch.watermark, batch.dropped_through) == (5, 2)
    assert batch.gap_after(0) == CompletionFeedGap(0, 2, 5)
    assert batch.gap_after(2) is None  # a cursor at the eviction boundary reads the suffix
    assert [e.seq for e in reg.feed(4).entries] == [5]
    # An evicted id is unknown again: an event for it is not_found, started is allowed.
    with pytest.raises(OperationLifecycleError, match="not found"):
        reg.check("op-0", OperationProgress(id="op-0", message="late"))
    reg.check("op-0", OperationStarted(id="op-0", kind="tool"))


def test_running_operations_are_never_evicted() -> None:
    reg = OperationRegistry(max_completed=1)
    reg.apply("keep", OperationStarted(id="keep", kind="t"), T0, 1)
    for i, seq in ((1, 2), (2, 4)):
        reg.apply(f"d{i}", OperationStarted(id=f"d{i}", kind="t"), T0, seq)
        reg.apply(f"d{i}", OperationCancelled(id=f"d{i}"), T0, seq + 1)
    assert reg.get("keep") is not None and reg.get("d1") is None and reg.get("d2") is not None


def test_public_result_class_per_status() -> None:
    """The Rust classifier; a retiring operation is still running (Rust
    generated_retiring_public_result_remains_running_until_terminal)."""
    P = OperationPublicResultClass
    expected = {
        S.ABSENT: P.MISSING_AUTHORITY,
        S.PROVISIONING: P.RUNNING,
        S.RUNNING: P.RUNNING,
        S.RETIRING: P.RUNNING,
        S.COMPLETED: P.COMPLETED,
        S.FAILED: P.FAILED,
        S.TERMINATED: P.FAILED,
        S.ABORTED: P.CANCELLED,
        S.CANCELLED: P.CANCELLED,
        S.RETIRED: P.CANCELLED,
    }
    assert {s: s.public_result_class for s in S} == expected
    assert {s for s in S if s.is_terminal} == {
        S.COMPLETED,
        S.FAILED,
        S.ABORTED,
        S.CANCELLED,
        S.RETIRED,
        S.TERMINATED,
    }


def test_the_registry_survives_a_snapshot_and_a_refold() -> None:
    d = Driver()
    accept(d, started("a"))
    accept(d, progress("a", "p", 10.5))
    accept(d, started("b"))
    accept(d, failed("b", "x"))
    snap = state_to_snapshot(d.state)
    back = state_from_snapshot(snap)
    assert back.operations == d.state.operations
    assert back.operations.feed().watermark == 1
    assert fold(d.log, session_id=SESSION).operations == d.state.operations


def test_an_old_snapshot_with_operations_is_refolded_one_without_restores() -> None:
    """A snapshot written before the registry existed would hide its operations. Those
    were format 1, holding every input accepted; a compacted one (format 2) always
    writes its registry, so one without it is refused."""

    def legacy(d: Driver) -> dict[str, Any]:
        snap = state_to_snapshot(d.state)
        del snap["operations"], snap["retired"], snap["idempotency"]
        return {**snap, "format": 1, "inputs": [to_wire(s) for s in d.state.inputs.values()]}

    d = Driver()
    accept(d, started("a"))
    with pytest.raises(InvalidInput, match="predates the operations registry"):
        state_from_snapshot(legacy(d))
    compacted = state_to_snapshot(d.state)
    del compacted["operations"]
    with pytest.raises(InvalidInput, match="no operations registry"):
        state_from_snapshot(compacted)
    # One without any operation input (a legacy store's) reads as an empty registry.
    d2 = Driver()
    d2.accept(prompt())
    assert state_from_snapshot(legacy(d2)).operations == OperationRegistry()


def test_refused_events_in_the_log_have_no_effect_on_a_refold() -> None:
    """Also those an older runtime wrote before the registry existed."""
    d = Driver()
    accept(d, started("a"))
    accept(d, completed("a", 1))
    assert refused(d, completed("a", 2)).kind == "invalid_transition"
    assert refused(d, progress("ghost")).kind == "not_found"
    st = fold(d.log, session_id=SESSION)
    rec = st.operations.get("a")
    assert rec is not None and rec.result == 1 and st.operations.get("ghost") is None
    assert st.operations == d.state.operations


def test_a_registry_without_operations_stays_small() -> None:
    """Every live session holds a registry, and most never start an operation: an empty
    one must not carry the completion queue (an empty deque is ~600 bytes)."""
    import tracemalloc

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [OperationRegistry() for _ in range(1000)]
        per_registry = (tracemalloc.get_traced_memory()[0] - before) / len(kept)
    finally:
        tracemalloc.stop()
    assert per_registry < 300, f"{per_registry:.0f} bytes per empty registry"
    # It still evicts in completion order once operations end (the queue made on demand).
    assert OperationRegistry.from_json(OperationRegistry().to_json()) == OperationRegistry()
