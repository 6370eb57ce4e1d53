"""The session journal on every backend: recover, page, replay, append, snapshots, writers."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meerkat_runtime.errors import UndecodableEvent
from meerkat_runtime.events.catalogue import EVENT_TOPICS, SCHEMA_VERSIONS, UPCASTERS
from meerkat_runtime.events.ids import uuid7
from meerkat_runtime.events.session import (
    Accept,
    CompleteRun,
    DecisionContext,
    SessionState,
    StartRun,
    compact,
    decide,
    evolve_settling,
)
from meerkat_runtime.events.timefmt import utc_now
from meerkat_runtime.runtime import coerce_input, event_codec
from meerkat_runtime.store import EventCodec, EventStore, NewEvent, SessionJournal, open_store


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return f"memory://journal-{uuid.uuid4().hex}"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'journal.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def store(url: str) -> Iterator[EventStore]:
    with open_store(url, codec=event_codec(), snapshot_interval=4) as s:
        yield s


def _ctx() -> DecisionContext:
    return DecisionContext(now=utc_now(), new_id=uuid7, attached=True)


def _write(journal: SessionJournal, state: SessionState, command: Any) -> Any:
    """Decide ``command``, append its events through the journal, evolve ``state``."""
    decision = decide(state, command, _ctx())
    journal.append(state.session_id, state.version, decision.events)
    evolve_settling(state, decision.events)
    return decision


def _session(journal: SessionJournal, sid: str, inputs: int) -> SessionState:
    """A session with ``inputs`` accepted inputs, each run to completion."""
    state = SessionState(session_id=sid)
    for n in range(inputs):
        doc = {"input_type": "prompt", "content": f"hi {n}", "header": {"idempotency_key": f"k{n}"}}
        _write(journal, state, Accept(coerce_input(doc)))
        run = uuid7()
        _write(journal, state, StartRun(run_id=run))
        _write(journal, state, CompleteRun(run_id=run, output={"text": "ok"}))
    return state


def _compacted(state: SessionState) -> SessionState:
    compact(state)
    return state


def test_recover_is_snapshot_plus_tail_and_equals_a_full_replay(store: EventStore) -> None:
    journal = SessionJournal(store)
    state = _session(journal, "s-1", 3)
    assert journal.recover("s-1").snapshot_version == 0  # nothing saved yet
    assert journal.save_snapshot(state)
    state = _session(journal, "s-2", 1)  # another session: s-1's snapshot stays
    recovered = journal.recover("s-1")
    replayed, envelopes = journal.replay("s-1")
    assert recovered.snapshot_version == replayed.version == len(envelopes) > 0
    # recovery compacts (terminal inputs out); replay folds every event as it is
    assert recovered.state == _compacted(replayed)
    assert recovered.state.retired and not recovered.state.inputs
    assert recovered.last_writer == store.incarnation


def test_recover_ignores_a_snapshot_of_another_version(store: EventStore) -> None:
    journal = SessionJournal(store)
    state = _session(journal, "s-1", 2)
    journal.save_snapshot(state)
    store.save_snapshot("s-1", state.version - 1, {"state": {"format": 1}, "writer": "x"})
    recovered = journal.recover("s-1")
    assert recovered.state == _compacted(journal.replay("s-1")[0])


def test_recover_many_sets_apart_a_session_with_an_unreadable_event(
    store: EventStore, url: str
) -> None:
    journal = SessionJournal(store)
    _session(journal, "good", 2)
    # A hand-written event the runtime cannot read (a codec without the read-back check).
    raw = EventCodec()
    for topic in EVENT_TOPICS:
        raw.register(topic, SCHEMA_VERSIONS[topic], UPCASTERS[topic])
    with open_store(url, codec=raw) as other:
        other.append("bad", 0, [NewEvent("input.accepted", {"nonsense": True})])
    recovered, broken = journal.recover_many(["good", "bad", "never"])
    assert set(recovered) == {"good", "never"}
    assert recovered["never"].state.version == 0
    assert recovered["good"].state == _compacted(journal.replay("good")[0])
    assert isinstance(broken["bad"], UndecodableEvent)
    assert broken["bad"].session_id == "bad"
    with pytest.raises(UndecodableEvent):
        journal.recover("bad")


def test_recover_many_sets_apart_a_session_whose_stored_bytes_are_damaged(tmp_path: Path) -> None:
    """Bytes the store itself cannot read (not an event envelope) affect their own session
    only: the others of the batch are recovered (the whole batch failed before)."""
    path = tmp_path / "damaged.db"
    with open_store(f"sqlite:///{path}", codec=event_codec()) as store:
        journal = SessionJournal(store)
        _session(journal, "before", 1)
        _session(journal, "bad", 1)
        _session(journal, "after", 2)
    with sqlite3.connect(path) as conn:
        conn.execute(
            "UPDATE meerkat_events SET state = ? WHERE originator_id = 'bad' "
            "AND originator_version = 2",
            (b"[1, 2, 3]",),  # JSON, but not an event envelope
        )
    with open_store(f"sqlite:///{path}", codec=event_codec()) as store:
        journal = SessionJournal(store)
        recovered, broken = journal.recover_many(["before", "bad", "after"])
        assert list(recovered) == ["before", "after"]
        assert recovered["after"].state == _compacted(journal.replay("after")[0])
        assert (broken["bad"].session_id, broken["bad"].version) == ("bad", 2)
        with pytest.raises(UndecodableEvent):
            journal.recover("bad")


def test_envelopes_page_and_stop_at_upto(store: EventStore) -> None:
    journal = SessionJournal(store)
    state = _session(journal, "s-1", 4)
    everything = [e.sequence for e in journal.envelopes("s-1", page=3)]
    assert everything == list(range(1, state.version + 1))
    assert [e.sequence for e in journal.envelopes("s-1", after=2, upto=7, page=2)] == [
        3,
        4,
        5,
        6,
        7,
    ]
    assert list(journal.envelopes("s-1", after=state.version)) == []
    partial, envelopes = journal.replay("s-1", upto=5)
    assert partial.version == 5 == len(envelopes)


def test_a_snapshot_is_due_every_interval_or_every_len_inputs_events(store: EventStore) -> None:
    journal = SessionJournal(store)
    state = SessionState(session_id="s")
    state.version = 3
    assert not journal.snapshot_due(state, 0)  # interval 4
    state.version = 4
    assert journal.snapshot_due(state, 0)
    assert not journal.snapshot_due(state, 0, slack=2)
    state = _session(journal, "big", 6)  # 6 inputs: spacing grows to 6
    assert journal.snapshot_due(state, state.version - 6)
    assert not journal.snapshot_due(state, state.version - 5)


def test_no_snapshot_is_due_when_snapshots_are_off(url: str) -> None:
    with open_store(url, codec=event_codec(), snapshot_interval=0) as store:
        state = SessionState(session_id="s")
        state.version = 1000
        assert not SessionJournal(store).snapshot_due(state, 0)


def test_a_log_written_by_another_store_instance_is_foreign(url: str, store: EventStore) -> None:
    journal = SessionJournal(store)
    assert not journal.is_foreign(None)
    assert not journal.is_foreign(store.incarnation)
    with open_store(url, codec=event_codec()) as other:
        _session(SessionJournal(other), "theirs", 1)
        assert journal.is_foreign(journal.recover("theirs").last_writer)
