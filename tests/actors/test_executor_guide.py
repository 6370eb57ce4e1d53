"""The streaming executor example of the executor guide (docs/guides/executors.md), run as
printed there: completion with a checkpoint, cancellation mid-stream, a steer message
folded into the turn. Real stores (``store_url``)."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from meerkat_runtime import Cancelled, Completed, InputLifecycleState

from ..waiting import WAIT
from ._support import codes, peer_message, phase, prompt
from .conftest import OpenRuntime

GUIDE = Path(__file__).parents[2] / "docs" / "guides" / "executors.md"
L = InputLifecycleState


def load_example() -> type:
    """Execute the guide's example code block; return its executor class."""
    text = GUIDE.read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(# example: streaming executor\n.*?)```", text, re.S)
    assert len(blocks) == 1, "the guide's example block was not found"
    namespace: dict[str, Any] = {}
    exec(compile(blocks[0], str(GUIDE), "exec"), namespace)
    cls: type = namespace["StreamingChatExecutor"]
    return cls


class FakeModel:
    """A streaming "LLM": yields the reply word by word; can pause after the first word
    until the test lets it go on, and records whether it was cancelled."""

    def __init__(self, reply: str = "hello there friend", pause: bool = False) -> None:
        self.words = reply.split()
        self.pause = pause
        self.first_word = threading.Event()
        self.go_on = threading.Event()
        self.cancelled = threading.Event()
        self.prompts: list[list[dict[str, str]]] = []

    async def stream(self, messages: list[dict[str, str]]) -> AsyncIterator[str]:
        self.prompts.append(list(messages))
        try:
            for n, word in enumerate(self.words):
                yield word if n == 0 else " " + word
                if n == 0:
                    self.first_word.set()
                    while self.pause and not self.go_on.is_set():
                        await asyncio.sleep(0.005)
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


def test_the_example_streams_checkpoints_and_completes(open_runtime: OpenRuntime) -> None:
    model = FakeModel()
    transcripts: dict[str, Any] = {}
    rt = open_runtime(executor=load_example()(model.stream, transcripts))
    s = rt.session("chat")
    out = s.accept(prompt("hi model"))
    assert out.completion is not None
    outcome = out.completion.wait(WAIT)
    assert isinstance(outcome, Completed)
    assert outcome.output == {"reply": "hello there friend", "messages": 2}
    receipt = s.boundary_receipt(outcome.run_id, 1)
    assert receipt is not None and receipt.message_count == 2
    assert receipt.contributing_input_ids == (out.input_id,)
    [turn] = transcripts["chat"].values()
    assert turn == [
        {"role": "user", "content": "hi model"},
        {"role": "assistant", "content": "hello there friend"},
    ]
    # the next turn sees the history
    nxt = s.accept(prompt("again"))
    assert nxt.completion is not None and isinstance(nxt.completion.wait(WAIT), Completed)
    assert model.prompts[-1][:2] == turn


def test_the_example_stops_streaming_when_the_run_is_cancelled(open_runtime: OpenRuntime) -> None:
    model = FakeModel(pause=True)
    transcripts: dict[str, Any] = {}
    rt = open_runtime(executor=load_example()(model.stream, transcripts))
    s = rt.session("chat")
    out = s.accept(prompt("long answer please"))
    assert model.first_word.wait(WAIT)
    assert s.cancel_run("user pressed stop")
    assert model.cancelled.wait(WAIT)  # the stream itself was cancelled
    assert out.completion is not None and isinstance(out.completion.wait(WAIT), Cancelled)
    assert transcripts.get("chat", {}) == {}  # nothing half-done was saved
    assert "run.checkpointed" not in codes(s.events())


def test_the_example_folds_a_steer_message_into_the_running_turn(
    open_runtime: OpenRuntime,
) -> None:
    model = FakeModel(pause=True)
    transcripts: dict[str, Any] = {}
    rt = open_runtime(executor=load_example()(model.stream, transcripts))
    s = rt.session("chat")
    out = s.accept(prompt("write a poem"))
    assert model.first_word.wait(WAIT)
    steer = s.accept({**peer_message(handling_mode="steer"), "content": "make it short"})
    model.go_on.set()
    for iid in (out.input_id, steer.input_id):
        handle = s.completion(iid)
        assert handle is not None and isinstance(handle.wait(WAIT), Completed)
        assert phase(s, iid) is L.CONSUMED
    [turn] = transcripts["chat"].values()
    assert {"role": "user", "content": "make it short"} in turn
    assert len(model.prompts) == 1  # one model call: the steer message joined the turn
