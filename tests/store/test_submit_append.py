"""``EventStore.submit_append``: the pipelined append with a callback and an ``after`` chain."""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest

from meerkat_runtime.errors import ConcurrencyConflict, StoreError
from meerkat_runtime.store import NewEvent

from ..faulty_store import FaultInjector, GatedCommits, fail_next
from ..waiting import WAIT, wait_until
from .conftest import Backend


def happened(n: int) -> NewEvent:
    return NewEvent("test.happened", {"n": n})


class Outcomes:
    """Collects on_done calls in order; ``wait(n)`` blocks until n arrived."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, BaseException | None]] = []
        self._cond = threading.Condition()

    def on_done(self, name: str) -> Any:
        def done(error: BaseException | None) -> None:
            with self._cond:
                self.seen.append((name, error))
                self._cond.notify_all()

        return done

    def wait(self, n: int) -> dict[str, BaseException | None]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.seen) >= n, WAIT)
            return dict(self.seen)


@pytest.mark.parametrize("group_commit", [True, False])
def test_chained_appends_become_durable_in_order(backend: Backend, group_commit: bool) -> None:
    store = backend.open(group_commit=group_commit)
    out = Outcomes()
    first = store.submit_append("s", 0, [happened(1), happened(2)], on_done=out.on_done("a"))
    store.submit_append("s", 2, [happened(3)], on_done=out.on_done("b"), after=first)
    assert out.wait(2) == {"a": None, "b": None}
    assert [name for name, _ in out.seen] == ["a", "b"]
    assert [e.data["n"] for e in store.read_session("s")] == [1, 2, 3]


def test_appends_queued_behind_each_other_share_one_group(backend: Backend) -> None:
    store = backend.open()
    gate = GatedCommits(store)
    out = Outcomes()
    store.submit_append("warm", 0, [happened(0)], on_done=out.on_done("warm"))
    assert gate.entered.wait(WAIT)  # the writer is held: the next appends queue up
    ticket = None
    for n in range(5):
        ticket = store.submit_append(
            "s", n, [happened(n + 1)], on_done=out.on_done(str(n)), after=ticket
        )
    gate.release()
    results = out.wait(6)
    assert all(error is None for error in results.values()), results
    assert gate.sizes == [1, 5]
    assert [e.version for e in store.read_session("s")] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(("group_commit", "gated"), [(True, True), (True, False), (False, False)])
def test_an_append_after_a_failed_one_is_never_written(
    backend: Backend, group_commit: bool, gated: bool
) -> None:
    """Even when the session's version happens to match what the second append expects."""
    store = backend.open(group_commit=group_commit)
    store.append("s", 0, [happened(1)])
    out = Outcomes()
    gate = GatedCommits(store) if gated else None
    if gate is not None:
        store.submit_append("warm", 0, [happened(0)], on_done=out.on_done("warm"))
        assert gate.entered.wait(WAIT)
    # Decided on a stale version 0: conflicts. The next one expects version 1 + 1 = 2
    # on top of it, but the session is at 1: were it not chained, it would fit at 1.
    first = store.submit_append("s", 0, [happened(2)], on_done=out.on_done("first"))
    store.submit_append("s", 1, [happened(3)], on_done=out.on_done("second"), after=first)
    if gate is not None:
        gate.release()
    results = out.wait(3 if gate is not None else 2)
    assert isinstance(results["first"], ConcurrencyConflict)
    second = results["second"]
    assert isinstance(second, StoreError) and "not attempted" in str(second)
    assert first.failed
    assert [e.data["n"] for e in store.read_session("s")] == [1]


def test_an_append_after_a_failed_commit_is_never_written(backend: Backend) -> None:
    store = backend.open(group_commit=False)
    FaultInjector(store, fail_next(1, ops={"commit"}))
    out = Outcomes()
    first = store.submit_append("s", 0, [happened(1)], on_done=out.on_done("first"))
    store.submit_append("s", 0, [happened(2)], on_done=out.on_done("second"), after=first)
    results = out.wait(2)
    assert isinstance(results["first"], StoreError) and "injected" in str(results["first"])
    assert isinstance(results["second"], StoreError) and "not attempted" in str(results["second"])
    assert store.read_session("s") == []


def test_a_failing_callback_is_logged_and_the_writer_goes_on(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    store = backend.open()

    def boom(error: BaseException | None) -> None:
        raise ValueError("callback bug")

    store.submit_append("s", 0, [happened(1)], on_done=boom)
    assert [e.version for e in store.append("s", 1, [happened(2)])] == [2]
    assert "append callback" in caplog.text


def test_no_events_are_done_at_once_and_bad_arguments_raise(backend: Backend) -> None:
    store = backend.open()
    out = Outcomes()
    ticket = store.submit_append("s", 0, [], on_done=out.on_done("empty"))
    assert out.seen == [("empty", None)] and not ticket.failed
    with pytest.raises(StoreError):
        store.submit_append("", 0, [happened(1)], on_done=out.on_done("bad"))
    with pytest.raises(StoreError):
        store.submit_append("s", -1, [happened(1)], on_done=out.on_done("bad"))
    assert len(out.seen) == 1


# -- batches: the appends of one turn of a session host, handed over together ----------------


def test_a_batch_holds_its_appends_and_commits_them_as_one_group(backend: Backend) -> None:
    store = backend.open()
    out = Outcomes()
    groups = store.commit_stats.groups
    with store.batch():
        for n in range(3):
            store.submit_append(f"s{n}", 0, [happened(n)], on_done=out.on_done(f"s{n}"))
        assert out.seen == []  # held: nothing reached the writer yet
        assert store.queued_appends() == 0
    assert out.wait(3) == {"s0": None, "s1": None, "s2": None}
    assert store.commit_stats.groups == groups + 1
    assert [store.session_version(f"s{n}") for n in range(3)] == [1, 1, 1]


def test_a_blocking_append_in_a_batch_hands_the_held_ones_over_first(backend: Backend) -> None:
    """A thread that waits for an append must never wait behind appends it holds itself."""
    store = backend.open()
    out = Outcomes()
    with store.batch():
        store.submit_append("held", 0, [happened(1)], on_done=out.on_done("held"))
        recorded = store.append("blocking", 0, [happened(2)])  # would deadlock if held
        assert [e.version for e in recorded] == [1]
        assert out.wait(1) == {"held": None}
        store.submit_append("held", 1, [happened(3)], on_done=out.on_done("again"))
        store.flush_batch()
        assert out.wait(2)["again"] is None
    assert [e.data["n"] for e in store.read_session("held")] == [1, 3]


def test_a_failed_append_in_a_batch_fails_only_itself(backend: Backend) -> None:
    store = backend.open()
    store.append("taken", 0, [happened(0)])
    out = Outcomes()
    with store.batch():
        store.submit_append("a", 0, [happened(1)], on_done=out.on_done("a"))
        store.submit_append("taken", 0, [happened(2)], on_done=out.on_done("taken"))
        store.submit_append("b", 0, [happened(3)], on_done=out.on_done("b"))
    seen = out.wait(3)
    assert seen["a"] is None and seen["b"] is None
    assert isinstance(seen["taken"], ConcurrencyConflict)
    assert [store.session_version(s) for s in ("a", "taken", "b")] == [1, 1, 1]


@pytest.mark.parametrize("group_commit", [True, False])
def test_a_settled_append_drops_its_callback(backend: Backend, group_commit: bool) -> None:
    """A caller keeps the ticket beside what its callback refers to (a session's in-flight
    entry): once the append has settled, that cycle is gone and reference counting frees
    it, not the cyclic GC, whose full collections stall every thread of the process."""
    store = backend.open(group_commit=group_commit)

    class InFlight:
        """What a session keeps of an append: its ticket, and what the callback settles."""

        def __init__(self, done: Callable[[BaseException | None], None]) -> None:
            self.done = done
            self.ticket: Any = None

        def settled(self, error: BaseException | None) -> None:
            self.done(error)

    out = Outcomes()
    gc.disable()
    try:
        for n in range(3):
            entry = InFlight(out.on_done(f"a{n}"))
            entry.ticket = store.submit_append("s", n, [happened(n)], on_done=entry.settled)
            out.wait(n + 1)
            freed = weakref.ref(entry)
            del entry
            # Freed once the committing thread has returned from the callback; before, the
            # ticket's callback kept it in a cycle that only the (disabled) GC would free.
            wait_until(partial(gone, freed), what="the settled ticket to drop its callback")
    finally:
        gc.enable()
    assert all(error is None for _, error in out.seen)


def gone(ref: weakref.ReferenceType[Any]) -> bool:
    return ref() is None
