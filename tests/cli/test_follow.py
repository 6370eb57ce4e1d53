"""``meerkat-runtime events --follow``: a real console-script process tails a session or the
whole store while this process writes, and ends cleanly on Ctrl-C (SIGINT) or SIGTERM."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from meerkat_runtime import Runtime

from ..waiting import WAIT
from ._support import assert_clean_error, cli

SCRIPT = Path(sys.executable).with_name("meerkat-runtime")


class Follower:
    """``meerkat-runtime events ... --follow`` in a child process; its stdout lines on a queue."""

    def __init__(self, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if k != "MEERKAT_DEBUG"} | {"COLUMNS": "200"}
        self.proc = subprocess.Popen(
            [str(SCRIPT), "events", "--follow", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def take(self, n: int) -> list[str]:
        """The next ``n`` lines (fails the test if they do not come)."""
        out = []
        for _ in range(n):
            try:
                out.append(self.lines.get(timeout=WAIT))
            except queue.Empty:
                self.proc.kill()
                raise AssertionError(f"got {out}; stderr: {self.stop()[1][-2000:]}") from None
        return out

    def stop(self, sig: int = signal.SIGINT) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(WAIT)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        assert self.proc.stderr is not None
        err = self.proc.stderr.read()
        return self.proc.returncode, err


def prompt(text: str) -> dict[str, Any]:
    return {"input_type": "prompt", "content": text}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        postgres: str = request.getfixturevalue("postgres_url")
        return postgres
    return f"sqlite:///{tmp_path / 'runtime.db'}"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_follow_the_whole_store_as_json_lines(url: str, sig: int) -> None:
    with Runtime.open(url) as rt:
        rt.session("before").accept(prompt("already there"))
        stored_before = list(rt.session("before").events())
        follower = Follower("--store", url, "--json")
        try:
            # What the log held when it started, then what commits while it runs.
            first = [json.loads(line) for line in follower.take(len(stored_before))]
            assert [d["session_id"] for d in first] == ["before"] * len(stored_before)
            rt.session("live").accept(prompt("while following"))
            live = list(rt.session("live").events())
            later = [json.loads(line) for line in follower.take(len(live))]
        finally:
            code, err = follower.stop(sig)
    assert code == 0, err
    assert "Traceback" not in err
    assert [d["sequence"] for d in later] == [e.sequence for e in live]
    assert [d["session_id"] for d in later] == ["live"] * len(live)
    positions = [d["position"] for d in first + later]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)


def test_follow_one_session_from_a_sequence_with_a_type_filter(url: str) -> None:
    with Runtime.open(url) as rt:
        s = rt.session("s")
        s.accept(prompt("one"))
        skip = len(list(s.events()))
        follower = Follower("s", "--after", str(skip), "--type", "input.accepted", "--store", url)
        try:
            rt.session("other").accept(prompt("not followed"))
            s.accept(prompt("two"))
            (line,) = follower.take(1)
        finally:
            code, err = follower.stop()
    assert code == 0, err
    cells = line.split()
    assert cells[0] == str(skip + 1)  # the first event after --after: the accepted input
    assert "input.accepted" in cells
    assert follower.lines.empty()


def test_events_without_a_session_needs_follow(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runtime.db'}"
    with Runtime.open(url) as rt:
        rt.session("s").accept(prompt("one"))
    assert_clean_error(cli("events", "--store", url), "give a SESSION")
