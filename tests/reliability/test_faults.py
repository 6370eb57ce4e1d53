"""Fault injection: under a failing store the runtime surfaces clear errors, restarts its
actors with backoff, loses nothing acknowledged, and resumes when the fault clears.

The store is real (memory:// or a SQLite file) with a :class:`FaultInjector`
(``faults.py``) deciding, per storage operation, whether it fails, times out,
or commits and then loses its acknowledgement. Hosts retry an input (same id)
until it is acknowledged, as a careful host does.
"""

from __future__ import annotations

import itertools
import logging
import re
import uuid
from collections.abc import Iterator
from typing import Any, Literal

import pytest

from meerkat_runtime import (
    Completed,
    MeerkatRuntimeError,
    Runtime,
    StoreError,
)
from meerkat_runtime.runtime import event_codec
from meerkat_runtime.store import EventStore, open_store

from ..faulty_store import Fault, FaultInjector, fail_always, fail_next, fail_randomly, fail_when
from ..waiting import WAIT, wait_until
from ._support import (
    FlakyEcho,
    accept_with_retries,
    accepted_in_log,
    check_nothing_lost,
    duplicate_calls,
    prompt,
    run_threads,
)

SESSIONS = ["s-a", "s-b", "s-c"]


@pytest.fixture
def store(store_url: str) -> Iterator[EventStore]:
    s = open_store(store_url, codec=event_codec(), snapshot_interval=7)
    yield s
    s.close()


@pytest.fixture
def faults(store: EventStore) -> FaultInjector:
    return FaultInjector(store)


def open_rt(store: EventStore, executor: Any = None, **options: Any) -> Runtime:
    options.setdefault("retry_backoff", 0.01)
    options.setdefault("close_timeout", 5.0)
    options.setdefault("recovery_timeout", 2.0)
    return Runtime.open(store, executor=executor, **options)


def _assert_clear(errors: list[BaseException]) -> None:
    """Every error a host saw is a StoreError that says what happened."""
    for exc in errors:
        assert isinstance(exc, StoreError), repr(exc)
        assert "injected fault" in str(exc), str(exc)


def test_random_faults_lose_and_duplicate_nothing(store: EventStore, faults: FaultInjector) -> None:
    """10 % of every storage operation fails (error, timeout, or commit then lost ack) while
    three hosts accept and an executor runs; then the fault clears."""
    executor = FlakyEcho(fail_rate=0.1, seed=1)
    faults.policy = fail_randomly(
        0.1,
        seed=3,
        ops={
            "append",
            "commit",
            "read",
            "load_snapshot",
            "save_snapshot",
            "read_all",
            "projection",
        },
        faults=(Fault("error"), Fault("timeout", 0.01), Fault("after")),
    )
    with open_rt(store, executor) as rt:
        attempts = run_threads(rt, SESSIONS, per_thread=25, threads=3, seed=5)
        assert faults.injected() > 0
        faults.clear()
        assert all(a.kind is not None for a in attempts), [
            a.errors for a in attempts if a.kind is None
        ]
        _assert_clear([e for a in attempts for e in a.errors])
        # The lost acknowledgements were retried into deduplications against themselves.
        check_nothing_lost(rt, attempts, allow_max_attempts=True)
        # Resumes: new input is accepted and runs.
        later = rt.session("s-a").accept(prompt("after the storm"))
        assert later.kind == "accepted" and later.completion is not None
        assert isinstance(later.completion.wait(WAIT), Completed)
        # Executor calls per input: re-runs only inside the documented window.
        assert sum(executor.calls.values()) > 0
        assert duplicate_calls(executor, store) == []
    with open_rt(store) as rt2:
        check_nothing_lost(rt2, attempts, allow_max_attempts=True)


def test_a_commit_whose_acknowledgement_is_lost_is_never_duplicated(
    store: EventStore, faults: FaultInjector
) -> None:
    with open_rt(store, FlakyEcho()) as rt:
        s = rt.session("s-a")
        doc = prompt("once")
        faults.policy = fail_next(1, ops={"commit"}, fault=Fault("after"))
        with pytest.raises(StoreError, match="connection lost after the commit"):
            s.accept(doc)
        # It is in the log although the host was told it failed; presenting it again
        # finds it: deduplicated against itself, never accepted twice.
        again = s.accept(doc)
        assert (again.kind, str(again.existing_id)) == ("deduplicated", doc["header"]["id"])
        assert again.completion is not None
        assert isinstance(again.completion.wait(WAIT), Completed)
        assert accepted_in_log(store)[doc["header"]["id"]] == ["s-a"]
        rt.projections.wait_caught_up(WAIT)
        assert rt.verify().ok


def test_append_errors_and_timeouts_write_nothing(store: EventStore, faults: FaultInjector) -> None:
    with open_rt(store) as rt:
        s = rt.session("s-a")
        ok = s.accept(prompt("before")).input_id
        for fault in (Fault("error"), Fault("timeout", 0.05)):
            doc = prompt(f"doomed {fault.kind}")
            with (
                faults.using(fail_always(ops={"commit"}, fault=fault)),
                pytest.raises(StoreError) as info,
            ):
                s.accept(doc)
            assert "nothing of it was written" in str(info.value)
            assert "injected fault" in str(info.value)
            if fault.kind == "timeout":
                assert "statement timeout" in str(info.value)
            assert s.input_state(doc["header"]["id"]) is None
            assert doc["header"]["id"] not in accepted_in_log(store)
        assert s.active_input_ids() == [ok]
        assert s.accept(prompt("after")).kind == "accepted"


@pytest.mark.parametrize("kind", ["error", "after"])
def test_append_faults_reach_pipelined_accepts(
    store: EventStore, faults: FaultInjector, kind: Literal["error", "after"]
) -> None:
    """Accepts go through the store's pipelined append: "append" faults must reach it."""
    with open_rt(store, FlakyEcho()) as rt:
        s = rt.session("s-a")
        doc = prompt(f"append fault {kind}")
        with (
            faults.using(fail_next(1, ops={"append"}, fault=Fault(kind))),
            pytest.raises(StoreError, match="injected fault"),
        ):
            s.accept(doc)
        assert faults.injected("append", kind) == 1
        written = doc["header"]["id"] in accepted_in_log(store)
        assert written is (kind == "after")  # "after": durable though the host heard it failed
        again = s.accept(doc)
        assert again.kind == ("deduplicated" if kind == "after" else "accepted")
        assert again.completion is not None
        assert isinstance(again.completion.wait(WAIT), Completed)  # the log is still now
        assert accepted_in_log(store)[doc["header"]["id"]] == ["s-a"]
        rt.projections.wait_caught_up(WAIT)
        assert rt.verify().ok


def test_group_commit_fault_fails_every_caller_in_the_batch_and_only_them(
    store: EventStore, faults: FaultInjector
) -> None:
    """A commit carrying several sessions' appends fails as a whole; the hosts retry."""
    faults.policy = fail_randomly(0.3, seed=11, ops={"commit"})
    with open_rt(store) as rt:
        attempts = run_threads(rt, SESSIONS, per_thread=20, threads=4, seed=2)
        faults.clear()
        assert faults.injected("commit") > 0
        assert any(a.errors for a in attempts)
        _assert_clear([e for a in attempts for e in a.errors])
        check_nothing_lost(rt, attempts, complete=False)


def test_load_retries_with_backoff_then_resumes(
    store: EventStore, faults: FaultInjector, caplog: pytest.LogCaptureFixture
) -> None:
    with open_rt(store) as rt:
        first = rt.session("s-a").accept(prompt("first")).input_id
    caplog.set_level(logging.WARNING, logger="meerkat_runtime")
    # A fresh runtime loads the session on first use; the first reads fail.
    with open_rt(store, recovery_timeout=30.0) as rt2:
        faults.policy = fail_next(4, ops={"read", "load_snapshot"})
        assert rt2.session("s-a").active_input_ids() == [first]
        assert faults.injected() == 4
        delays = [float(d) for d in re.findall(r"retrying in ([0-9.]+)s", caplog.text)]
        assert len(delays) >= 2, caplog.text
        assert all(b == min(a * 2, 2.0) for a, b in itertools.pairwise(delays)), delays
    # A fault that outlasts recovery_timeout fails the call clearly; then it clears.
    with open_rt(store, recovery_timeout=0.3) as rt3:
        faults.policy = fail_always(ops={"read", "load_snapshot"})
        with pytest.raises(StoreError, match=r"could not be loaded.*injected fault"):
            rt3.session("s-a").state()
        faults.clear()
        assert rt3.session("s-a").active_input_ids() == [first]
        assert rt3.session("s-a").accept(prompt("again")).kind == "accepted"


def test_the_end_of_a_run_that_cannot_be_recorded_is_delivered_again(
    store: EventStore, faults: FaultInjector
) -> None:
    """The run completed but run.completed fails to commit: the result is kept and
    recorded after a backoff; the executor is not called again for that input."""
    executor = FlakyEcho()
    with open_rt(store, executor) as rt:
        ends = itertools.count(1)
        faults.policy = fail_when(
            lambda c: c.op == "commit" and "run.completed" in c.topics and next(ends) <= 4
        )
        out = rt.session("s-a").accept(prompt("job"))
        assert out.completion is not None
        assert isinstance(out.completion.wait(WAIT), Completed)
        assert faults.injected("commit") == 4
        assert executor.calls[out.input_id] == 1
        faults.clear()
        assert duplicate_calls(executor, store) == []
        # the count is not vacuous: a (forged) later call for the consumed input is caught
        executor.runs[out.input_id].append(uuid.uuid4())
        assert len(duplicate_calls(executor, store)) == 1
        rt.projections.wait_caught_up(WAIT)
        assert rt.verify().ok


@pytest.mark.parametrize("kind", ["error", "after"])
def test_read_model_faults_keep_projections_exactly_once(
    store: EventStore, faults: FaultInjector, kind: Literal["error", "after"]
) -> None:
    """Read-model transactions fail (or commit and then report failure); once the fault
    clears the projections catch up and equal a fresh fold: nothing applied twice."""
    with open_rt(store, FlakyEcho()) as rt:
        faults.policy = fail_randomly(
            0.5, seed=4, ops={"projection", "read_all"}, faults=(Fault(kind),)
        )
        attempts = run_threads(rt, SESSIONS, per_thread=10, threads=2, seed=9)
        wait_until(lambda: faults.injected() >= 5, what="projection faults")
        faults.clear()
        check_nothing_lost(rt, attempts)


def test_a_persistent_read_model_outage_does_not_stop_projections_for_good(
    store: EventStore, faults: FaultInjector
) -> None:
    """Projections stay alive through an outage longer than their retry budget."""
    with open_rt(store) as rt:
        s = rt.session("s-a")
        faults.policy = fail_always(ops={"projection", "read_all"})
        ids = [s.accept(prompt(f"p{n}")).input_id for n in range(5)]
        wait_until(lambda: faults.injected() >= 20, what="a long outage")
        with pytest.raises((TimeoutError, MeerkatRuntimeError)):
            rt.projections.wait_caught_up(0.2)
        faults.clear()
        rt.projections.wait_caught_up(WAIT)
        assert all(rt.ledger.get(i) is not None for i in ids)
        assert rt.verify().ok


def test_retry_after_error_is_idempotent_across_a_restart(
    store: EventStore, faults: FaultInjector
) -> None:
    """An input whose accept failed ambiguously is presented again after a restart."""
    with open_rt(store) as rt:
        doc = prompt("ambiguous", idempotency_key="req-1")
        faults.policy = fail_next(1, ops={"commit"}, fault=Fault("after"))
        with pytest.raises(StoreError):
            rt.session("s-a").accept(doc)
        faults.clear()
    with open_rt(store) as rt2:
        a = accept_with_retries(rt2, "s-a", doc)
        assert (a.kind, a.existing_id) == ("deduplicated", doc["header"]["id"])
        other = prompt("same key, new id", idempotency_key="req-1")
        b = rt2.session("s-a").accept(other)
        assert (b.kind, str(b.existing_id)) == ("deduplicated", doc["header"]["id"])
        assert accepted_in_log(store)[doc["header"]["id"]] == ["s-a"]
        assert other["header"]["id"] not in accepted_in_log(store)
