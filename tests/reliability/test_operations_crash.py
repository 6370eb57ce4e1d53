"""The operations registry survives SIGKILL: every acknowledged operation event is in it
after a restart (SQLite file and PostgreSQL), and a wait started after the restart ends
when the operation does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections import defaultdict
from pathlib import Path

import pytest

from meerkat_runtime import OperationStatus, Runtime
from meerkat_runtime.events.session import fold
from meerkat_runtime.store._journal import SessionJournal

from ..store_urls import store_url_for
from ..waiting import WAIT

CHILD = Path(__file__).with_name("_ops_child.py")
REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")

# Kills per backend, each of a fresh child on a fresh store (one by default; raise it to
# run the campaign at a larger scale, e.g. MEERKAT_OPS_CRASH_KILLS=20).
KILLS = int(os.environ.get("MEERKAT_OPS_CRASH_KILLS", "1"))

TERMINAL = {
    "completed": OperationStatus.COMPLETED,
    "failed": OperationStatus.FAILED,
    "cancelled": OperationStatus.CANCELLED,
}


def _run_and_kill(url: str, acks_wanted: int) -> list[tuple[str, str]]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    acks: list[tuple[str, str]] = []
    done = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            words = line.split()
            if words and words[0] == "ACK":
                acks.append((words[1], words[2]))
                if len(acks) >= acks_wanted:
                    done.set()
        done.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        assert done.wait(120), "the child acknowledged too little"
        proc.send_signal(signal.SIGKILL)
        proc.wait(WAIT)
        reader.join(WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
    return acks


@pytest.mark.parametrize("kill", range(KILLS))
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.slow)])
def test_acknowledged_operation_events_survive_sigkill(
    backend: str, kill: int, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = store_url_for(backend, request, tmp_path)
    acks = _run_and_kill(url, acks_wanted=60)
    seen: dict[str, list[str]] = defaultdict(list)
    for op_id, kind in acks:
        seen[op_id].append(kind)
    with Runtime.open(url) as rt:
        s = rt.session("ops")
        loaded = {r.operation_id: r for r in s.operations()}
        for op_id, kinds in seen.items():
            rec = loaded.get(op_id)
            assert rec is not None, f"{op_id} acknowledged ({kinds}) but not in the registry"
            assert rec.progress_count >= kinds.count("progress"), (op_id, kinds, rec)
            if kinds[-1] in TERMINAL:
                assert rec.status is TERMINAL[kinds[-1]], (op_id, kinds, rec)
            else:  # the next event may have become durable before the kill: never less
                assert rec.status is OperationStatus.RUNNING or rec.terminal, (op_id, rec)
        # What the restart loaded (snapshot plus tail) is what a fresh fold of the log says.
        refold = fold(SessionJournal(rt.store).envelopes("ops"), session_id="ops")
        assert s.operations() == refold.operations.records()
        assert s.operation_completions() == refold.operations.feed()
        # A wait on an operation still running ends when it ends, after the restart.
        running = [r.operation_id for r in s.operations() if not r.terminal]
        assert running, "every fourth operation is left running"
        waiter: list[object] = []
        t = threading.Thread(target=lambda: waiter.append(s.wait_operations(running, WAIT)))
        t.start()
        for op_id in running:
            s.accept(
                {
                    "input_type": "operation",
                    "operation_id": op_id,
                    "event": {"type": "cancelled", "id": op_id},
                }
            )
        t.join(WAIT)
        assert waiter and all(r.status is OperationStatus.CANCELLED for r in waiter[0])  # type: ignore[attr-defined]
