"""The parent's side of the cluster tests: runtime nodes as child processes, and log checks.

:class:`Node` starts ``_worker.py`` (one runtime process with its own
``node_id``) and talks to it over its pipes: a reader thread collects every
line it prints, so after a SIGKILL the parent still has every input the node
acknowledged before dying. Tests use :func:`nodes` so that every child is
killed in a ``finally``, whatever happens.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from meerkat_runtime import Runtime
from meerkat_runtime.runtime import event_codec
from meerkat_runtime.store import EventStore, open_store

from ..waiting import WAIT, wait_until

WORKER = Path(__file__).resolve().parent / "_worker.py"

TERMINAL = {"consumed", "superseded", "coalesced", "abandoned"}
NON_TERMINAL = ("accepted", "queued", "staged", "applied", "applied_pending_consumption")


class Node:
    """One runtime process (``_worker.py``) on a shared store, driven over its pipes."""

    def __init__(self, url: str, node_id: str, lease_ttl: float, *args: str) -> None:
        self.node_id = node_id
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 (kept open for the child)
            prefix=f"meerkat-{node_id}-", suffix=".log", delete=False
        )
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), url, node_id, str(lease_ttl), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
            text=True,
            bufsize=1,
        )
        self.lines: list[dict[str, Any]] = []
        self.acks: list[tuple[str, str]] = []  # (session id, input id), in print order
        self.refused: list[dict[str, Any]] = []
        self._replies: queue.Queue[dict[str, Any]] = queue.Queue()
        self._lock = threading.Lock()
        self._req = itertools.count(1)
        self.ready: dict[str, Any] | None = None
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            with self._lock:
                self.lines.append(msg)
                ev = msg.get("ev")
                if ev == "ack":
                    self.acks.append((msg["sid"], msg["id"]))
                elif ev == "refused":
                    self.refused.append(msg)
            if ev == "ready":
                self.ready = msg
                self._ready.set()
            elif ev in ("reply", "load_done"):
                self._replies.put(msg)
        self._ready.set()

    # ------------------------------------------------------------ driving

    def wait_ready(self, timeout: float = WAIT) -> dict[str, Any]:
        if not self._ready.wait(timeout) or self.ready is None:
            raise AssertionError(f"node {self.node_id} did not start:\n{self.stderr()}")
        return self.ready

    @property
    def incarnation(self) -> str:
        assert self.ready is not None
        return str(self.ready["incarnation"])

    def send(self, op: str, **fields: Any) -> int:
        req = next(self._req)
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, "req": req, **fields}) + "\n")
        self.proc.stdin.flush()
        return req

    def reply(self, req: int, timeout: float = WAIT) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = self._replies.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"node {self.node_id}: no reply to request {req} within {timeout}s\n"
                    f"{self.stderr()[-3000:]}"
                ) from None
            if msg.get("req") == req:
                return msg

    def call(self, op: str, timeout: float = WAIT, **fields: Any) -> dict[str, Any]:
        msg = self.reply(self.send(op, **fields), timeout)
        assert not msg.get("failed"), (self.node_id, op, msg)
        return msg

    def acks_snapshot(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self.acks)

    def refused_snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.refused)

    def stderr(self) -> str:
        try:
            return Path(self._log.name).read_text(errors="replace")
        except OSError:
            return ""

    # ------------------------------------------------------------ signals

    def kill(self) -> None:
        """SIGKILL, and wait until every line it printed has been read."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(WAIT)
        self._reader.join(WAIT)

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def close(self) -> None:
        """Ask it to close; SIGKILL if it does not exit (always leaves no child behind)."""
        try:
            if self.proc.poll() is None:
                with contextlib.suppress(Exception):
                    self.proc.send_signal(signal.SIGCONT)
                    self.call("close", timeout=20)
                    self.proc.wait(10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(WAIT)
            self._reader.join(5)
            self._log.close()
            with contextlib.suppress(OSError):
                os.unlink(self._log.name)


@contextlib.contextmanager
def nodes() -> Iterator[list[Node]]:
    """A list to put started :class:`Node`s in; every one is closed (or killed) on exit."""
    started: list[Node] = []
    try:
        yield started
    finally:
        for node in started:
            node.close()


def start_nodes(
    started: list[Node], url: str, ids: list[str], lease_ttl: float, *args: str
) -> list[Node]:
    new = []
    for node_id in ids:
        node = Node(url, node_id, lease_ttl, *args)
        started.append(node)
        new.append(node)
    for node in new:
        node.wait_ready()
    return new


# ---------------------------------------------------------------- the log


def open_plain_store(url: str) -> EventStore:
    """A store instance of the parent's own (not a runtime node: it holds no lease)."""
    return open_store(url, codec=event_codec())


def accepted_ids(store: EventStore, session_id: str) -> list[str]:
    """Input ids of every ``input.accepted`` event of the session, in log order."""
    out = []
    for rec in store.read_session(session_id):
        event = rec.data["event"]
        if event["category"] == "input_lifecycle" and event["data"].get("code") == "accepted":
            out.append(str(event["data"]["input_id"]).lower())
    return out


def all_accepted(store: EventStore) -> Counter[str]:
    """How many ``input.accepted`` events each input id has, over the whole store."""
    counts: Counter[str] = Counter()
    for sid in store.session_ids():
        counts.update(accepted_ids(store, sid))
    return counts


def writers(store: EventStore, session_id: str) -> list[str]:
    """The writer (store incarnation) of each event of the session, in version order."""
    return [rec.writer for rec in store.read_session(session_id)]


def quiesce(rt: Runtime, expected_inputs: int, timeout: float = WAIT) -> None:
    """Wait until the ledger has ``expected_inputs`` rows, none of them in flight, and the
    projections have caught up: no node has work left, so the log stands still."""

    def settled() -> bool:
        rt.projections.wait_caught_up(timeout)
        if rt.ledger.count() < expected_inputs:
            return False
        return all(rt.ledger.count(state=s) == 0 for s in NON_TERMINAL)

    wait_until(settled, timeout, "every input to reach a terminal state")
    rt.projections.wait_caught_up(timeout)
