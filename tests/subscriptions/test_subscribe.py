"""Push subscriptions (sync): ``rt.subscribe`` and ``session.subscribe`` on every backend.

What a subscriber must see: every committed event once, in order, as typed envelopes,
from the position it asked for (so it can resume after a restart), including events
another store instance (another process) commits; and the ways it ends cleanly.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from meerkat_runtime import InvalidInput, RuntimeEventEnvelope, UndecodableEvent
from meerkat_runtime.events.runtime_event import InputLifecycleEvent
from meerkat_runtime.store import EventCodec, NewEvent, open_store
from meerkat_runtime.subscriptions import CommitFeed, Subscription

from ..waiting import WAIT, wait_until
from .conftest import OpenRuntime


def prompt(text: str, **header: Any) -> dict[str, Any]:
    return {"input_type": "prompt", "content": text, "header": header}


def codes(envelopes: list[RuntimeEventEnvelope]) -> list[str]:
    return [e.event.event_code for e in envelopes]


class Collector:
    """Iterates a subscription on a thread of its own, keeping what it yields."""

    def __init__(self, sub: Subscription) -> None:
        self.sub = sub
        self.got: list[RuntimeEventEnvelope] = []
        self.positions: list[int] = []
        self.sessions: list[str | None] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="subscriber", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for env in self.sub:
                self.got.append(env)
                self.positions.append(self.sub.position)
                self.sessions.append(self.sub.session_id)
        except BaseException as exc:  # pragma: no cover - reported by join()
            self.error = exc

    def join(self) -> None:
        self.thread.join(WAIT)
        assert not self.thread.is_alive(), "the subscription did not end"
        assert self.error is None, self.error


def test_session_subscription_yields_each_event_as_it_commits(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    s = rt.create_session("s")
    sub = s.subscribe()
    seen = Collector(sub)
    wait_until(lambda: len(seen.got) == 1, what="the created event")
    for n in range(5):
        assert s.accept(prompt(f"p{n}")).kind == "accepted"
        # Each accept's events reach the blocked subscriber before the next accept.
        expected = len(list(s.events()))
        wait_until(lambda: len(seen.got) == expected, what=f"events of accept {n}")  # noqa: B023
    sub.close()
    seen.join()
    stored = list(s.events())
    assert seen.got == stored
    assert [e.sequence for e in seen.got] == list(range(1, len(stored) + 1))
    assert seen.positions == [e.sequence for e in stored]
    assert set(seen.sessions) == {"s"}
    assert all(isinstance(e, RuntimeEventEnvelope) for e in seen.got)


def test_session_subscription_sees_only_its_session(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    a, b = rt.create_session("a"), rt.create_session("b")
    a.accept(prompt("for a"))
    b.accept(prompt("for b"))
    got = list(a.subscribe(timeout=0))
    assert got == list(a.events())
    assert all(e.runtime_id == "a" for e in got)


def test_resume_after_a_sequence_and_after_a_position(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    s = rt.session("s")
    for n in range(3):
        s.accept(prompt(f"p{n}"))
    stored = list(s.events())
    assert list(s.subscribe(after=2, timeout=0)) == stored[2:]
    everything = rt.subscribe(timeout=0)
    first = [next(everything), next(everything)]
    resume_at = everything.position
    everything.close()
    assert first == stored[:2]
    assert list(rt.subscribe(after=resume_at, timeout=0)) == stored[2:]


def test_a_subscription_resumes_across_a_restart(open_runtime: OpenRuntime, store_url: str) -> None:
    rt = open_runtime()
    rt.session("s").accept(prompt("before"))
    sub = rt.subscribe(timeout=0)
    before = list(sub)
    position = sub.position
    assert position == rt.store.max_position() > 0
    rt.close()
    again = open_runtime(store_url)
    again.session("s").accept(prompt("after"))
    rest = list(again.subscribe(after=position, timeout=0))
    assert rest and before
    assert before + rest == list(again.session("s").events())


def test_the_whole_store_in_log_order_with_sessions_and_positions(
    open_runtime: OpenRuntime,
) -> None:
    rt = open_runtime()
    sub = rt.subscribe()
    seen = Collector(sub)
    for n in range(3):
        for sid in ("x", "y"):
            rt.session(sid).accept(prompt(f"{sid}{n}"))
    total = len(list(rt.session("x").events())) + len(list(rt.session("y").events()))
    wait_until(lambda: len(seen.got) == total, what="every event")
    sub.close()
    seen.join()
    assert seen.positions == sorted(seen.positions)
    assert len(set(seen.positions)) == total
    assert [r.position for r in rt.store.read_all(limit=1000)] == seen.positions
    for sid in ("x", "y"):
        mine = [e for e, owner in zip(seen.got, seen.sessions, strict=True) if owner == sid]
        assert mine == list(rt.session(sid).events())


def test_commits_of_another_store_instance_wake_the_subscriber(
    open_runtime: OpenRuntime, store_url: str
) -> None:
    """Another process on the same database (here another runtime on the same URL, whose
    commits this runtime's store does not hear): LISTEN/NOTIFY on PostgreSQL, the poller
    elsewhere. (Its first version found the poller's baseline taken after the writer's
    commit, so no wake-up ever came.)"""
    reader = open_runtime()
    sub = reader.subscribe()
    seen = Collector(sub)
    writer = open_runtime(store_url)
    writer.session("w").accept(prompt("from elsewhere"))
    expected = list(writer.session("w").events())
    wait_until(lambda: len(seen.got) == len(expected), what="the other instance's events")
    sub.close()
    seen.join()
    assert seen.got == expected


@pytest.mark.postgres
def test_postgres_wakes_by_notify_not_by_polling(postgres_url: str) -> None:
    """With the safety-net poll an hour apart, only NOTIFY can wake the subscriber in time."""
    with (
        open_store(postgres_url, codec=_runtime_codec()) as listening,
        open_store(postgres_url, codec=_runtime_codec()) as writing,
    ):
        feed = CommitFeed(listening, poll_interval=3600, listen_poll_interval=3600)
        try:
            sub = feed.subscribe(timeout=WAIT)
            seen = Collector(sub)
            wait_until(lambda: feed.generation > 0, what="the LISTEN connection")
            _append_prompt(writing, "elsewhere")
            wait_until(lambda: len(seen.got) > 0, what="a NOTIFY wake-up")
            sub.close()
            seen.join()
            assert "input.accepted" in codes(seen.got)
        finally:
            feed.close()


def _runtime_codec() -> EventCodec:
    from meerkat_runtime.runtime import event_codec

    return event_codec()


def _append_prompt(store: Any, session_id: str) -> None:
    from meerkat_runtime.events.catalogue import envelope_to_record
    from meerkat_runtime.events.ids import uuid7
    from meerkat_runtime.events.inputs import PromptInput
    from meerkat_runtime.events.session import Accept, DecisionContext, SessionState, decide
    from meerkat_runtime.events.timefmt import utc_now

    state = SessionState(session_id=session_id)
    decision = decide(
        state,
        Accept(PromptInput(content="hi")),
        DecisionContext(now=utc_now(), new_id=uuid7, attached=False),
    )
    store.append(session_id, 0, [NewEvent(*envelope_to_record(e)) for e in decision.events])


def test_timeout_ends_an_idle_subscription(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    s = rt.session("s")
    s.accept(prompt("one"))
    sub = s.subscribe(timeout=0.05)
    got = list(sub)  # the stored events, then no new one within the timeout: the end
    assert got == list(s.events())
    assert sub.closed
    assert list(rt.session("nobody-yet").subscribe(timeout=0)) == []


def test_until_ends_after_the_event_it_accepts(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    s = rt.session("s")
    sub = s.subscribe(until=lambda e: isinstance(e.event, InputLifecycleEvent))
    seen = Collector(sub)
    s.accept(prompt("one"))
    s.accept(prompt("two"))
    seen.join()
    assert codes(seen.got) == ["topology.runtime_created", "input.accepted"]
    assert sub.closed


def test_a_session_subscription_ends_with_the_session(open_runtime: OpenRuntime) -> None:
    """A destroyed session never has another event: its subscribers end after the event
    that destroyed it, and one that subscribes later ends at once (both waited forever)."""
    rt = open_runtime()
    s = rt.session("doomed")
    s.accept(prompt("one"))
    following = s.subscribe()
    seen = Collector(following)
    stored = len(list(s.events()))
    wait_until(lambda: len(seen.got) == stored, what="the stored events")
    s.destroy()
    seen.join()
    assert codes(seen.got)[-1] == "topology.runtime_destroyed"
    assert seen.got == list(s.events())
    assert following.closed
    late = s.subscribe(after=following.position)
    assert list(late) == [] and late.closed
    assert codes(list(s.subscribe(after=1)))[-1] == "topology.runtime_destroyed"
    # The store-wide subscription goes on: other sessions live on.
    whole = rt.subscribe(after=rt.store.max_position())
    rt.session("other").accept(prompt("two"))
    assert next(whole).event.event_code == "topology.runtime_created"
    whole.close()


def test_close_from_another_thread_ends_a_blocked_iteration(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    sub = rt.subscribe()
    seen = Collector(sub)
    wait_until(lambda: rt._feed._started, what="the subscriber to start")
    assert seen.thread.is_alive()
    sub.close()
    seen.join()
    assert seen.got == []
    with pytest.raises(StopIteration):
        next(sub)


def test_nothing_is_yielded_after_close_returned(open_runtime: OpenRuntime) -> None:
    """``close()`` from another thread while the iteration is reading the log: what that
    read returns is not yielded (failed before: the page read was, after close)."""
    rt = open_runtime()
    rt.session("s").accept(prompt("one"))
    sub = rt.session("s").subscribe()
    real = sub._reader.read

    def read_then_closed(after: int) -> Any:
        items = real(after)
        sub.close()  # another thread's close, landing while this read was under way
        return items

    sub._reader.read = read_then_closed  # type: ignore[method-assign]
    assert list(sub) == []
    assert sub.closed and sub.position == 0


def test_closing_the_runtime_ends_its_subscriptions(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    rt.session("s").accept(prompt("one"))
    whole, one = rt.subscribe(), rt.session("s").subscribe()
    seen = [Collector(whole), Collector(one)]
    wait_until(lambda: all(c.got for c in seen), what="the stored events")
    rt.close()
    for c in seen:
        c.join()
    assert whole.closed and one.closed


def test_a_subscriber_sees_the_events_committed_before_the_runtime_closed(
    open_runtime: OpenRuntime,
) -> None:
    """The guide: the runtime closing ends subscriptions "after its actors have stopped,
    so the last events are seen". A subscriber that had not read them yet (here: it
    follows, but reads only after the close) still gets every event committed before the
    close, then ends. Failed before: it ended at once, without them."""
    rt = open_runtime()
    whole = rt.subscribe(after=rt.store.max_position())
    wait_until(lambda: rt._feed.head() >= 0, what="the feed's first look at the log")
    s = rt.session("s")
    s.accept(prompt("one"))
    s.accept(prompt("two"))
    stored = list(s.events())
    rt.close()
    assert list(whole) == stored
    assert whole.closed


def test_context_manager_closes(open_runtime: OpenRuntime) -> None:
    rt = open_runtime()
    rt.session("s").accept(prompt("one"))
    with rt.subscribe() as sub:
        first = next(sub)
    assert sub.closed
    assert first == next(rt.session("s").events())


def test_a_read_only_runtime_can_subscribe(open_runtime: OpenRuntime, store_url: str) -> None:
    if store_url.startswith("memory"):
        pytest.skip("a memory store cannot be reopened read-only")
    rt = open_runtime()
    rt.session("s").accept(prompt("one"))
    viewer = open_runtime(store_url, read_only=True)
    assert list(viewer.subscribe(timeout=0)) == list(rt.session("s").events())


@pytest.mark.parametrize("after", [-1, 1.5, "3", True])
def test_a_bad_after_is_invalid_input(open_runtime: OpenRuntime, after: Any) -> None:
    rt = open_runtime()
    with pytest.raises(InvalidInput, match="after"):
        rt.subscribe(after=after)
    with pytest.raises(InvalidInput, match="after"):
        rt.session("s").subscribe(after=after)


def test_an_unreadable_event_raises_once_and_the_subscription_goes_on(
    open_runtime: OpenRuntime, store_url: str
) -> None:
    rt = open_runtime()
    rt.session("good").accept(prompt("before"))
    codec = EventCodec()  # no check: writes what the runtime's codec would refuse
    codec.register("input.accepted")
    with open_store(store_url, codec=codec) as raw:
        raw.append("bad", 0, [NewEvent("input.accepted", {"not": "an envelope"})])
    rt.session("good").accept(prompt("after"))
    good = list(rt.session("good").events())

    sub = rt.subscribe(timeout=0)
    got: list[RuntimeEventEnvelope] = []
    errors: list[UndecodableEvent] = []
    while True:
        try:
            got.append(next(sub))
        except UndecodableEvent as exc:
            errors.append(exc)
        except StopIteration:
            break
    assert got == good
    assert [(e.session_id, e.version) for e in errors] == [("bad", 1)]

    bad = rt.session("bad").subscribe(timeout=0)
    with pytest.raises(UndecodableEvent):
        next(bad)
    assert bad.position == 1  # moved past it
    assert list(bad) == []


def test_a_commit_before_the_feeds_first_look_still_wakes_the_subscriber(
    open_runtime: OpenRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The feed's ring starts at the head it reads first. An event committed after a
    subscriber's first read but before that look is behind the ring for good: the feed
    must wake its subscribers to read the store once more, or they wait for ever."""
    rt = open_runtime()
    rt.create_session("s")
    store = rt.store
    original = store.max_position
    gate = threading.Event()
    looking = threading.Event()

    def held_first_look() -> int:
        if threading.current_thread().name == "meerkat-subscriptions" and not gate.is_set():
            looking.set()
            assert gate.wait(WAIT)
        return original()

    monkeypatch.setattr(store, "max_position", held_first_look)
    sub = rt.session("s").subscribe()
    seen = Collector(sub)
    wait_until(lambda: len(seen.got) == 1 and looking.is_set(), what="first read and look")
    rt.session("s").accept(prompt("between the read and the look"))
    gate.set()
    expected = list(rt.session("s").events())
    wait_until(lambda: len(seen.got) == len(expected), what="the events committed meanwhile")
    sub.close()
    seen.join()
    assert seen.got == expected


def test_a_subscriber_that_fell_behind_the_ring_reads_the_store(
    open_runtime: OpenRuntime,
) -> None:
    """White-box: a ring of 8 events, subscribers that do not iterate while many more
    commit; they read the evicted part from the store, then the ring, missing nothing."""
    rt = open_runtime()
    rt._feed._ring_size = 8
    s = rt.session("s")
    whole, mine = rt.subscribe(timeout=0), s.subscribe(timeout=0)
    wait_until(lambda: rt._feed.head() >= 0, what="the feed's first look")
    start = rt._feed.head()
    for n in range(10):
        s.accept(prompt(f"p{n}"))
        rt.session("other").accept(prompt(f"o{n}"))
    head = rt.store.max_position()
    wait_until(lambda: rt._feed.head() == head, what="the feed to read everything")
    assert rt._feed._floor > start  # the first events left the ring
    assert list(whole) == list(rt.subscribe(timeout=0)) and whole.position == head
    assert list(mine) == list(s.events())


def test_following_subscribers_read_the_ring_not_the_store(
    open_runtime: OpenRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """White-box: once caught up, a session's and a whole-store subscriber get each new
    commit from the feed's ring; the store is read by the feed's tail only (before, every
    subscriber ran a query of its own for every commit)."""
    rt = open_runtime()
    s = rt.create_session("s")
    store = rt.store
    reads: list[str] = []
    read_session, read_all = store.read_session, store.read_all

    def counted_session(*args: Any, **kwargs: Any) -> Any:
        reads.append(threading.current_thread().name)
        return read_session(*args, **kwargs)

    def counted_all(*args: Any, **kwargs: Any) -> Any:
        reads.append(threading.current_thread().name)
        return read_all(*args, **kwargs)

    monkeypatch.setattr(store, "read_session", counted_session)
    monkeypatch.setattr(store, "read_all", counted_all)
    subs = [Collector(s.subscribe()), Collector(rt.subscribe())]
    wait_until(lambda: all(c.got for c in subs), what="the stored events")
    before = reads.count("subscriber")
    for n in range(10):
        s.accept(prompt(f"p{n}"))
        total = len(list(read_session("s")))
        wait_until(lambda: all(len(c.got) == total for c in subs), what=f"accept {n}")  # noqa: B023
    by_subscribers = reads.count("subscriber") - before
    for c in subs:
        c.sub.close()
        c.join()
    assert by_subscribers <= 2, reads  # at most a read each while the ring starts
