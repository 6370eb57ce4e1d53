"""NotificationLog conformance: the store-wide log in position order, on every backend."""

from __future__ import annotations

import random

from meerkat_runtime.store import RecordedEvent

from ..conftest import Backend
from ._events import happened, other


def test_read_all_pages_in_position_order_with_topic_filter(backend: Backend) -> None:
    store = backend.open()
    versions: dict[str, int] = {}
    expected: list[tuple[str, int, str]] = []
    rng = random.Random(4)
    for n in range(23):
        session_id = rng.choice(["a", "b", "c"])
        event = happened(n) if n % 3 else other(n)
        version = versions.get(session_id, 0)
        store.append(session_id, version, [event])
        versions[session_id] = version + 1
        expected.append((session_id, version + 1, event.topic))

    pages: list[list[RecordedEvent]] = []
    after = 0
    while page := store.read_all(after_position=after, limit=5):
        assert len(page) <= 5
        pages.append(page)
        after = page[-1].position
    log = [e for page in pages for e in page]
    assert len(pages) == 5
    assert [(e.session_id, e.version, e.topic) for e in log] == expected
    positions = [e.position for e in log]
    assert positions == sorted(set(positions))
    assert store.max_position() == positions[-1]

    only_other = store.read_all(topics=["test.other"], limit=100)
    assert [e.data["n"] for e in only_other] == [n for n in range(23) if n % 3 == 0]
    assert (
        store.read_all(after_position=only_other[2].position, topics=["test.other"], limit=2)
        == (only_other[3:5])
    )
    assert store.read_all(after_position=positions[-1]) == []


def test_max_position_of_an_empty_store(backend: Backend) -> None:
    store = backend.open()
    assert store.max_position() == 0
    assert store.read_all() == []
    assert store.session_ids() == []


def test_listener_hears_each_durable_commit(backend: Backend) -> None:
    store = backend.open()
    heard: list[tuple[int, int]] = []

    def listener(position: int) -> None:
        # What the listener is told is already readable.
        heard.append((position, store.max_position()))

    store.add_listener(listener)
    first = store.append("s", 0, [happened(1), happened(2)])
    second = store.append("t", 0, [happened(3)])
    assert heard == [
        (first[-1].position, first[-1].position),
        (second[0].position, second[0].position),
    ]
