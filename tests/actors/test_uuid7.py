"""uuid7 draws its random bits from a per-thread buffer: ids stay unique, ordered, fork-safe."""

from __future__ import annotations

import os
import threading
import uuid

import pytest

from meerkat_runtime.events.ids import uuid7


def test_ids_across_buffer_refills_are_unique_increasing_version_7() -> None:
    ids = [uuid7() for _ in range(5000)]  # ~12 refills of the 4 KiB buffer
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids, key=lambda u: u.int)
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in ids)


def test_threads_mint_distinct_ids() -> None:
    out: list[list[uuid.UUID]] = [[] for _ in range(4)]

    def mint(i: int) -> None:
        out[i].extend(uuid7() for _ in range(2000))

    threads = [threading.Thread(target=mint, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [u for ids in out for u in ids]
    assert len(set(every)) == len(every)
    # Random tails differ between threads, not just the counters.
    assert len({u.int & 0x3FFF_FFFF_FFFF_FFFF for u in every}) == len(every)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_replay_the_parents_random_bits() -> None:
    uuid7()  # fill this thread's buffer before forking
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report its next id's random tail, then leave at once
        os.close(read_fd)
        os.write(write_fd, (uuid7().int & 0x3FFF_FFFF_FFFF_FFFF).to_bytes(8, "big"))
        os._exit(0)
    os.close(write_fd)
    child_tail = int.from_bytes(os.read(read_fd, 8), "big")
    os.close(read_fd)
    os.waitpid(pid, 0)
    parent_tail = uuid7().int & 0x3FFF_FFFF_FFFF_FFFF
    assert child_tail != parent_tail


def test_a_stopped_clock_still_gives_increasing_ids_borrowing_milliseconds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import types

    from meerkat_runtime.events import ids as ids_module

    frozen_ms = 1_900_000_000_000
    fake_time = types.SimpleNamespace(time_ns=lambda: frozen_ms * 1_000_000)

    def mint(n: int) -> list[uuid.UUID]:
        # A fresh thread: its per-thread state starts empty, so the first id's
        # millisecond is the (frozen) clock's.
        out: list[uuid.UUID] = []
        t = threading.Thread(target=lambda: out.extend(uuid7() for _ in range(n)))
        t.start()
        t.join()
        return out

    monkeypatch.setattr(ids_module, "time", fake_time)
    minted = mint(10_000)  # more than one millisecond's 4096 counter values
    assert minted == sorted(minted, key=lambda u: u.int) and len(set(minted)) == len(minted)
    millis = [u.int >> 80 for u in minted]
    assert millis[0] == frozen_ms
    assert frozen_ms + 2 <= millis[-1] <= frozen_ms + 10_000 // 2048 + 1
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in minted)
