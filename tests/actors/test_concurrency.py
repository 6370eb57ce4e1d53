"""Many threads accepting into many sessions at once."""

from __future__ import annotations

import random
import threading
import uuid

import pytest

from meerkat_runtime import Completed, CompletionHandle, EchoExecutor, InputAccepted, Runtime

from ..waiting import WAIT
from ._support import prompt


def hammer(rt: Runtime, threads: int, sessions: int, per_session: int) -> None:
    """Each thread accepts ``per_session`` inputs into every session, interleaved at random."""
    sids = [f"s-{n:03d}" for n in range(sessions)]
    sent: dict[int, dict[str, list[uuid.UUID]]] = {
        t: {sid: [] for sid in sids} for t in range(threads)
    }
    handles: dict[uuid.UUID, tuple[CompletionHandle, str]] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def worker(t: int) -> None:
        rng = random.Random(t)
        plan = [sid for sid in sids for _ in range(per_session)]
        rng.shuffle(plan)
        start.wait()
        try:
            for n, sid in enumerate(plan):
                text = f"t{t}-n{n}"
                out = rt.session(sid).accept(prompt(text))
                assert out.kind == "accepted" and out.completion is not None
                sent[t][sid].append(out.input_id)
                with lock:
                    handles[out.input_id] = (out.completion, text)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    workers = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors, errors[:3]

    total = threads * sessions * per_session
    assert len(handles) == total  # no id handed out twice
    for input_id, (handle, text) in handles.items():
        outcome = handle.wait(WAIT * 3)
        assert isinstance(outcome, Completed), (input_id, outcome)
        assert outcome.output == {"text": text}

    seen = 0
    for sid in sids:
        s = rt.session(sid)
        log = [e.event.input_id for e in s.events() if isinstance(e.event, InputAccepted)]
        assert len(log) == len(set(log)) == threads * per_session  # nothing lost or doubled
        seen += len(log)
        position = {iid: n for n, iid in enumerate(log)}
        for t in range(threads):
            mine = sent[t][sid]
            # this thread's inputs appear in the log in the order it accepted them
            assert sorted(mine, key=position.__getitem__) == mine
        assert s.active_input_ids() == []
    assert seen == total


def test_many_threads_many_sessions_memory() -> None:
    with Runtime.open("memory://", executor=EchoExecutor()) as rt:
        hammer(rt, threads=16, sessions=25, per_session=2)


def test_many_threads_many_sessions_sqlite(sqlite_url: str) -> None:
    with Runtime.open(sqlite_url, executor=EchoExecutor(), sqlite_synchronous="normal") as rt:
        hammer(rt, threads=8, sessions=20, per_session=2)


@pytest.mark.slow
@pytest.mark.timeout(1200)  # a campaign: minutes on a loaded 2-core machine
@pytest.mark.parametrize("durable", [False, True], ids=["memory", "sqlite"])
def test_many_threads_many_sessions_full(durable: bool, sqlite_url: str) -> None:
    """The full campaign: 16 threads x 50 sessions x 20 inputs each."""
    url = sqlite_url if durable else "memory://"
    with Runtime.open(url, executor=EchoExecutor()) as rt:
        hammer(rt, threads=16, sessions=50, per_session=20)
