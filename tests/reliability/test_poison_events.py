"""Poison events: nothing that cannot be read back is ever written, and one that is met
anyway (an older version wrote it, someone edited the database) harms only its session.

* The append path refuses an event whose stored form would not decode, whoever
  appends it: the session actor (also when an input skips the host-side check),
  or a tool writing through the store with the runtime's codec.
* A hand-corrupted event in a real SQLite file and in PostgreSQL: its session
  fails with an error naming the session and the log position; every other
  session, the projections (under their documented failure strategy), the API's
  read calls and every CLI read command keep working, and ``health`` and
  ``verify`` point at the bad event.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from meerkat_runtime import Runtime, StoreError
from meerkat_runtime.events.catalogue import envelope_to_record
from meerkat_runtime.events.ids import uuid7
from meerkat_runtime.events.inputs import ExternalEventInput, InputHeader, PromptInput
from meerkat_runtime.events.session import Accept, DecisionContext, SessionState, decide
from meerkat_runtime.events.timefmt import utc_now
from meerkat_runtime.runtime import event_codec
from meerkat_runtime.store import NewEvent, open_store


@pytest.fixture(params=["memory", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "memory":
        return f"memory://{uuid.uuid4().hex}"
    return f"sqlite:///{tmp_path_factory.mktemp('poison') / 'poison.db'}"


@pytest.fixture
def rt(url: str) -> Iterator[Runtime]:
    with Runtime.open(url) as runtime:
        yield runtime


def _bad_records(inp: PromptInput | ExternalEventInput) -> list[NewEvent]:
    """The events the decider makes for ``inp``, unchecked (as if no input check ran)."""
    st = SessionState(session_id="x")
    decision = decide(st, Accept(inp), DecisionContext(now=utc_now(), new_id=uuid7, attached=False))
    return [NewEvent(*envelope_to_record(env)) for env in decision.events]


UNREADABLE = [
    ("content None", lambda: PromptInput(content=None)),  # type: ignore[arg-type]
    ("payload NaN", lambda: ExternalEventInput(event_type="e", payload=float("nan"))),
    ("header id not a uuid", lambda: PromptInput(content="x", header=_header_with_id("nope"))),
]


def _header_with_id(value: object) -> InputHeader:
    return InputHeader(id=value)  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "make"), UNREADABLE, ids=[c[0] for c in UNREADABLE])
def test_the_session_actor_never_appends_an_event_that_would_not_read_back(
    rt: Runtime, name: str, make: object
) -> None:
    """Past the host-side input check (called straight into the actor), the append path
    itself refuses: nothing written, the session goes on."""
    s = rt.session("guarded")
    assert s.accept(PromptInput(content="before")).kind == "accepted"
    head = rt.store.max_position()
    with pytest.raises(StoreError, match="would not read back"):
        s._call("accept", make(), admission=True)  # type: ignore[operator]
    assert rt.store.max_position() == head, name
    assert s.accept(PromptInput(content="after")).kind == "accepted"
    assert len(s.active_input_ids()) == 2


def test_a_tool_writing_with_the_runtime_codec_cannot_store_an_unreadable_event(url: str) -> None:
    with open_store(url, codec=event_codec()) as store:
        bad = _bad_records(PromptInput(content=None))  # type: ignore[arg-type]
        with pytest.raises(StoreError, match=r"would not read back .*content: must not be null"):
            store.append("tool", 0, bad)
        good = _bad_records(PromptInput(content="ok"))
        mislabelled = [NewEvent("input.queued", good[0].data), *good[1:]]
        with pytest.raises(StoreError, match=r"stored under topic 'input\.queued'"):
            store.append("tool", 0, mislabelled)
        assert store.max_position() == 0
        assert store.session_ids() == []
        store.append("tool", 0, good)
        assert len(store.read_session("tool")) == len(good)
