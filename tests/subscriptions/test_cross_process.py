"""A subscriber in this process follows a writer in another, real process that is
SIGKILLed under load: every input the writer acknowledged reaches the subscriber
(by LISTEN/NOTIFY on PostgreSQL, by the feed's poll on SQLite), in log order, once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from meerkat_runtime import Runtime, RuntimeEventEnvelope
from meerkat_runtime.events.runtime_event import InputAccepted

from ..waiting import WAIT, wait_until

CHILD = Path(__file__).with_name("_writer_child.py")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        postgres: str = request.getfixturevalue("postgres_url")
        return postgres
    return f"sqlite:///{tmp_path / 'runtime.db'}"


def test_a_subscriber_sees_every_input_a_killed_writer_acknowledged(url: str) -> None:
    with Runtime.open(url, projections=False) as rt:
        sub = rt.subscribe()
        got: list[RuntimeEventEnvelope] = []
        positions: list[int] = []

        def follow() -> None:
            for envelope in sub:
                got.append(envelope)
                positions.append(sub.position)

        follower = threading.Thread(target=follow, daemon=True)
        follower.start()
        env = {k: v for k, v in os.environ.items() if k != "MEERKAT_DEBUG"}
        proc = subprocess.Popen(
            [sys.executable, str(CHILD), url], stdout=subprocess.PIPE, text=True, env=env
        )
        acknowledged: list[str] = []
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
            while len(acknowledged) < 60:
                line = proc.stdout.readline()
                assert line, "the writer died by itself"
                acknowledged.append(line.strip())
            # Live delivery while the writer runs: some of them already arrived.
            wait_until(lambda: len(got) > 0, what="a live delivery")
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(WAIT)
            if proc.stdout is not None:
                acknowledged += [line.strip() for line in proc.stdout.read().splitlines() if line]
                proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL
        want = {uuid.UUID(i) for i in acknowledged}

        def accepted() -> set[uuid.UUID]:
            return {e.event.input_id for e in got if isinstance(e.event, InputAccepted)}

        wait_until(lambda: want <= accepted(), what="every acknowledged input")
        sub.close()
        follower.join(WAIT)
        assert positions == sorted(set(positions))  # in log order, each once
        log = list(rt.subscribe(timeout=0))
        assert got == log[: len(got)]  # the log itself, in its order, nothing else
