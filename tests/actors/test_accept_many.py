"""Batch accept: ``session.accept_many`` and ``rt.accept_many``."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from meerkat_runtime import (
    AcceptManyFailed,
    AcceptOutcome,
    Completed,
    EchoExecutor,
    Input,
    InputLifecycleState,
    InvalidInput,
    PromptInput,
    Runtime,
    StoreError,
)

from ..faulty_store import GatedCommits, faulty_store
from ..waiting import WAIT, wait_until
from ._support import prompt
from .conftest import OpenRuntime


def _content(inp: Input | None) -> object:
    assert isinstance(inp, PromptInput)
    return inp.content


def _positions(rt: Runtime, session_id: str) -> list[int]:
    return [rec.position for rec in rt.store.read_session(session_id)]


def test_outcomes_come_in_order_from_one_atomic_append(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    s = rt.session("batch")
    outcomes = s.accept_many([prompt(f"p{n}", idempotency_key=f"k{n}") for n in range(5)])
    assert [o.kind for o in outcomes] == ["accepted"] * 5
    states = [s.input_state(o.input_id) for o in outcomes]
    assert [_content(st.persisted_input) for st in states if st] == [f"p{n}" for n in range(5)]
    positions = _positions(rt, "batch")
    # One append: the batch's events are one run of consecutive log positions.
    assert positions == list(range(positions[0], positions[0] + len(positions)))
    assert [st.current_state for st in states if st] == [InputLifecycleState.QUEUED] * 5


def test_a_key_repeated_within_the_batch_deduplicates(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    s = rt.session("dups")
    first, again, other = s.accept_many(
        [prompt("a", idempotency_key="same"), prompt("b", idempotency_key="same"), prompt("c")]
    )
    assert first.kind == "accepted" and other.kind == "accepted"
    assert again.kind == "deduplicated" and again.existing_id == first.input_id
    assert len(s.active_input_ids()) == 2
    (later,) = s.accept_many([prompt("d", idempotency_key="same")])
    assert later.kind == "deduplicated" and later.existing_id == first.input_id


def test_one_malformed_input_writes_nothing_and_is_named(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    s = rt.session("bad")
    s.accept(prompt("before"))
    head = rt.store.max_position()
    with pytest.raises(InvalidInput) as caught:
        s.accept_many([prompt("ok"), prompt("ok too"), {"input_type": "prompt", "content": None}])
    assert caught.value.path.startswith("inputs[2]")
    assert rt.store.max_position() == head
    with pytest.raises(InvalidInput, match="list of inputs"):
        s.accept_many(prompt("not a list"))  # type: ignore[arg-type]
    assert s.accept_many([]) == []
    assert rt.store.max_position() == head


def test_a_failed_append_fails_the_whole_batch_and_the_session_goes_on(tmp_path: Path) -> None:
    store, faults = faulty_store(f"sqlite:///{tmp_path / 'faulty.db'}")
    with Runtime.open(store, projections=False) as rt:
        s = rt.session("s")
        s.accept(prompt("before"))
        faults.fail_appends.set()
        with pytest.raises(StoreError, match="injected"):
            s.accept_many([prompt("lost 1"), prompt("lost 2")])
        faults.clear()
        assert len(s.active_input_ids()) == 1  # nothing of the batch, state refolded
        assert [o.kind for o in s.accept_many([prompt("x"), prompt("y")])] == ["accepted"] * 2
        assert len(s.active_input_ids()) == 3


def test_runtime_accept_many_spans_sessions_in_order(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    items = [(f"s{n % 3}", prompt(f"m{n}", idempotency_key=f"k{n % 4}")) for n in range(8)]
    outcomes = rt.accept_many(items)
    assert len(outcomes) == 8
    for (sid, doc), outcome in zip(items, outcomes, strict=True):
        st = rt.session(sid).input_state(outcome.existing_id or outcome.input_id)
        assert st is not None
        if outcome.kind == "accepted":
            assert _content(st.persisted_input) == doc["content"]
    # Keys k0..k3 over sessions s0..s2: a key repeats within a session's share only for
    # n and n + 12, so every input here is new.
    assert {o.kind for o in outcomes} == {"accepted"}
    with pytest.raises(InvalidInput) as caught:
        rt.accept_many([("s0", prompt("ok")), ("", prompt("no session"))])
    assert caught.value.path == "items[1].session_id"
    with pytest.raises(InvalidInput) as caught:
        rt.accept_many([("s0", prompt("ok")), ("s1", {"input_type": "nope"})])
    assert caught.value.path.startswith("items[1]")


def test_one_failing_session_fails_only_its_share(tmp_path: Path) -> None:
    store, faults = faulty_store(f"sqlite:///{tmp_path / 'faulty.db'}")
    with Runtime.open(store, projections=False) as rt:
        faults.fail_sessions.add("bad")
        faults.fail_appends.set()
        with pytest.raises(AcceptManyFailed) as caught:
            rt.accept_many([("good", prompt("g1")), ("bad", prompt("b1")), ("good", prompt("g2"))])
        good_1, bad, good_2 = caught.value.results
        assert isinstance(bad, StoreError)
        assert isinstance(good_1, AcceptOutcome) and good_1.kind == "accepted"
        assert isinstance(good_2, AcceptOutcome) and good_2.kind == "accepted"
        assert "1 of 3 inputs were not accepted" in str(caught.value)
        faults.clear()
        assert len(rt.session("good").active_input_ids()) == 2
        assert rt.store.session_version("bad") == 0


def test_batches_of_many_sessions_share_one_group_commit(sqlite_url: str) -> None:
    """A session's share of ``rt.accept_many`` is pipelined like an accept: its host goes on
    to the next session instead of waiting for the commit, so the shares of many sessions
    join one group commit (they were committed one after the other, the host blocked on
    each)."""
    with Runtime.open(sqlite_url, projections=False, session_threads=1) as rt:
        names = ["a", "b", "c"]
        for name in [*names, "z"]:
            rt.session(name).accept(prompt(f"warm {name}"))  # live actors, loaded state
        gate = GatedCommits(rt.store)
        first = threading.Thread(target=lambda: rt.session("z").accept(prompt("held")))
        first.start()
        assert gate.entered.wait(WAIT)  # the writer is held in z's commit
        outcomes: list[list[AcceptOutcome]] = []
        batch = threading.Thread(
            target=lambda: outcomes.append(rt.accept_many([(n, prompt(f"m {n}")) for n in names]))
        )
        batch.start()
        # Every share reaches the writer while it is held: the one host did not block.
        wait_until(lambda: rt.store.queued_appends() == len(names), what="all shares queued")
        gate.release()
        batch.join(WAIT)
        first.join(WAIT)
        assert [o.kind for o in outcomes[0]] == ["accepted"] * 3
        assert gate.sizes == [2, 6]  # z's accept, then the three shares in one group
        for name in names:
            assert len(rt.session(name).active_input_ids()) == 2


def test_a_batch_survives_a_restart_and_runs(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'batch.db'}"
    with Runtime.open(url) as rt:
        ids = [o.input_id for o in rt.session("s").accept_many([prompt("a"), prompt("b")])]
    with Runtime.open(url, executor=EchoExecutor()) as rt:
        s = rt.session("s")
        for iid in ids:
            handle = s.completion(iid)
            assert handle is not None
            assert isinstance(handle.wait(WAIT), Completed)
