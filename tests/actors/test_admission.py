"""Bounded admission: a session whose actor is blocked refuses extra accepts at once."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from meerkat_runtime import Overloaded, Runtime

from ..faulty_store import Faults, faulty_store
from ..waiting import WAIT
from ._support import accepted_ids, prompt

MAX_PENDING = 4


@pytest.fixture
def held(store_url: str) -> Iterator[tuple[Runtime, Faults]]:
    store, faults = faulty_store(store_url)
    rt = Runtime.open(store, max_pending=MAX_PENDING, close_timeout=2.0)
    try:
        yield rt, faults
    finally:
        faults.clear()
        rt.close()
        store.close()


class Attempt:
    """One ``accept`` on a thread of its own, so a blocked call cannot hang the test."""

    def __init__(self, rt: Runtime, session_id: str) -> None:
        self.input_id = str(uuid.uuid4())
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        doc = prompt("p", id=self.input_id)

        def run() -> None:
            try:
                self.result = rt.session(session_id).accept(doc)
            except BaseException as exc:
                self.error = exc
            finally:
                self.done.set()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    @property
    def overloaded(self) -> bool:
        return isinstance(self.error, Overloaded)


def test_blocked_session_raises_overloaded_at_once_and_writes_nothing(
    held: tuple[Runtime, Faults],
) -> None:
    rt, faults = held
    busy = rt.session("busy")
    busy.accept(prompt("before"))
    faults.hold_sessions = {"busy"}
    faults.hold_appends.set()
    first = Attempt(rt, "busy")
    assert faults.append_held.wait(WAIT)  # the actor is blocked inside the store

    waiting: list[Attempt] = []
    refused: list[Attempt] = []
    while len(refused) < 3:
        a = Attempt(rt, "busy")
        if a.done.wait(0.2):
            assert a.overloaded, a.error
            refused.append(a)
        else:
            waiting.append(a)  # queued behind the blocked command
        assert len(waiting) < MAX_PENDING, "admission never refused"
    # every refusal came while the actor was still blocked: it did not wait for it
    assert not first.done.is_set()
    assert "pending" in str(refused[0].error) and "busy" in str(refused[0].error)
    # other sessions are not affected
    assert rt.session("other").accept(prompt("fine")).kind == "accepted"

    faults.release_appends.set()
    for a in [first, *waiting]:
        assert a.done.wait(WAIT)
        assert a.error is None and a.result.kind == "accepted"
    ids = {str(i) for i in accepted_ids(busy)}
    assert {a.input_id for a in [first, *waiting]} <= ids
    assert not {a.input_id for a in refused} & ids
    assert len(ids) == 1 + 1 + len(waiting)
    for a in refused:
        assert busy.input_state(a.input_id) is None
    # once drained, the session admits again
    assert busy.accept(prompt("after")).kind == "accepted"


def test_max_pending_must_be_positive(store_url: str) -> None:
    with pytest.raises(ValueError, match="max_pending"):
        Runtime.open(store_url, max_pending=0)
