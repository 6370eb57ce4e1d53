"""One node's lease bookkeeping under concurrency: acquires and releases of the same lease
by different holders in this process (a batch recovery and a session actor, say)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from meerkat_runtime.cluster import Membership, session_lease

from ..waiting import WAIT
from ._support import open_plain_store


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.slow])]
)
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'leases.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


def test_a_release_racing_a_new_holders_acquire_leaves_the_lease_held(shared_url: str) -> None:
    """Batch recovery holds a session's lease and releases it when done; meanwhile the
    session's actor acquires it (a later holder in the same node). The release read the
    bookkeeping before the acquire updated it and deleted the lease row the acquire had
    just confirmed: the actor then believed it held the session, and its next fenced
    append failed with "owned by nobody (lease expired)" (seen in the demo)."""
    store = open_plain_store(shared_url)
    try:
        m = Membership(store, "node-a", ttl=30.0, on_lost=lambda name: None)
        name = session_lease("s")
        batch, actor = object(), object()
        m.acquire(name, batch)

        in_acquire = threading.Event()
        release_done = threading.Event()
        shared: Any = m.shared
        real = shared.acquire_lease

        def acquire_then_pause(*args: Any, **kwargs: Any) -> int:
            token: int = real(*args, **kwargs)  # the row is confirmed in the store...
            in_acquire.set()
            release_done.wait(0.5)  # ...and before _held is updated, the release runs
            return token

        shared.acquire_lease = acquire_then_pause
        acquiring = threading.Thread(target=m.acquire, args=(name, actor))
        acquiring.start()
        assert in_acquire.wait(WAIT)

        def release() -> None:
            m.release(name, batch)
            release_done.set()

        releasing = threading.Thread(target=release)
        releasing.start()
        acquiring.join(WAIT)
        releasing.join(WAIT)
        shared.acquire_lease = real

        assert m.holds(name)
        live = [x for x in m.shared.list_leases(name) if x.name == name and x.live]
        assert [x.owner for x in live] == ["node-a"], "the lease row was released under the actor"
        m.close()
    finally:
        store.close()
