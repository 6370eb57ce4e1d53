"""A runtime process for crash tests; the parent kills it with SIGKILL.

Usage: ``python _crash_child.py MODE STORE_URL``. It prints one line per fact,
flushed, only after the fact is durable (an ``ACK`` line is printed after
``accept`` returned):

* ``accept-loop``: executor None; accepts forever into sessions a..e (every
  fifth input ephemeral) and prints ``ACK <session> <input id> <durability>``.
* ``busy-loop``: like ``accept-loop`` with an EchoExecutor (runs in flight at
  the kill), every input durable.
* ``mid-run``: a blocking executor; accepts three prompts into ``s-run``, prints
  their ACKs, then ``RUNNING <run id> <input ids>`` once the first run started.
* ``resume``: a blocking executor; no new input: touches ``s-run`` so its
  recovery starts a run, then prints ``RUNNING ...``.
* ``completed``: EchoExecutor; accepts three prompts into ``s-done``, waits for
  their completions, prints ``ACK`` lines and then ``DONE``.
* ``checkpointed``: an executor that reports a checkpoint boundary and then
  blocks; accepts two prompts into ``s-ckpt`` and a steer-lane peer message
  once the run is going (delivered to the run as an interrupt and absorbed by
  the checkpoint), prints their ACKs, then ``CHECKPOINT <run id> <sequence>
  <input ids of the receipt>`` once the receipt is durable.
* ``lifecycle``: executor None; retires, stops and destroys three sessions,
  leaves a queued input in a fourth, prints ``DONE``.

After its last line it sleeps until killed.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

from meerkat_runtime import EchoExecutor, RunRequest, RunResult, Runtime


def say(*words: object) -> None:
    print(*words, flush=True)


class Blocking:
    def run(self, request: RunRequest) -> RunResult:
        ids = " ".join(str(i) for i in request.contributing_input_ids)
        say("RUNNING", request.run_id, ids)
        threading.Event().wait()  # until killed
        raise AssertionError("unreachable")


class Checkpointing:
    """Waits for one interrupt, checkpoints, then blocks until killed."""

    def __init__(self) -> None:
        self.started = threading.Event()

    def run(self, request: RunRequest) -> RunResult:
        self.started.set()
        request.interrupts.get(timeout=60)
        receipt = request.checkpoint("digest-1", message_count=3)
        assert receipt is not None
        ids = " ".join(str(i) for i in receipt.contributing_input_ids)
        say("CHECKPOINT", request.run_id, receipt.sequence, ids)
        threading.Event().wait()  # until killed
        raise AssertionError("unreachable")


def prompt(text: str, durability: str = "durable") -> dict[str, Any]:
    return {"input_type": "prompt", "content": text, "header": {"durability": durability}}


def main(mode: str, url: str) -> None:
    if mode == "accept-loop":
        rt = Runtime.open(url)
        n = 0
        while True:
            sid = "abcde"[n % 5]
            durability = "ephemeral" if n % 5 == 4 else "durable"
            out = rt.session(sid).accept(prompt(f"p{n}", durability))
            assert out.kind == "accepted", out
            say("ACK", sid, out.input_id, durability)
            n += 1
    elif mode == "busy-loop":
        rt = Runtime.open(url, executor=EchoExecutor())
        n = 0
        while True:
            sid = "abcde"[n % 5]
            out = rt.session(sid).accept(prompt(f"p{n}"))
            assert out.kind == "accepted", out
            say("ACK", sid, out.input_id, "durable")
            n += 1
    elif mode == "mid-run":
        rt = Runtime.open(url, executor=Blocking())
        s = rt.session("s-run")
        for n in range(3):
            say("ACK", "s-run", s.accept(prompt(f"job{n}")).input_id, "durable")
    elif mode == "resume":
        rt = Runtime.open(url, executor=Blocking())
        rt.session("s-run").state()
    elif mode == "completed":
        rt = Runtime.open(url, executor=EchoExecutor())
        s = rt.session("s-done")
        outs = [s.accept(prompt(f"job{n}")) for n in range(3)]
        for out in outs:
            assert out.completion is not None
            out.completion.wait(30)
            say("ACK", "s-done", out.input_id, "durable")
        say("DONE")
    elif mode == "checkpointed":
        executor = Checkpointing()
        rt = Runtime.open(url, executor=executor)
        s = rt.session("s-ckpt")
        for n in range(2):
            say("ACK", "s-ckpt", s.accept(prompt(f"job{n}")).input_id, "durable")
        executor.started.wait(30)
        steer = {
            "input_type": "peer",
            "header": {"source": {"type": "peer", "peer_id": "peer-b"}},
            "convention": {"convention_type": "message"},
            "content": "steer me",
            "handling_mode": "steer",
        }
        say("ACK", "s-ckpt", s.accept(steer).input_id, "durable")
    elif mode == "lifecycle":
        rt = Runtime.open(url)
        for sid in ("retired", "stopped", "destroyed", "idle"):
            rt.session(sid).accept(prompt(sid))
        rt.session("retired").retire()
        rt.session("stopped").stop()
        rt.session("destroyed").destroy()
        say("DONE")
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
