"""What the asyncio tests share: a prompt document, a held async executor, a loop wait."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from meerkat_runtime import RunRequest, RunResult

from ..waiting import WAIT


def prompt(text: str = "hello", **header: Any) -> dict[str, Any]:
    return {"input_type": "prompt", "content": text, "header": header}


class HeldAsync:
    """An async executor that holds each run until ``release()`` (``gate`` set); counts
    the runs started and records the loop and thread each ran on."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.loops: list[asyncio.AbstractEventLoop] = []
        self.threads: list[int] = []
        self.started = 0

    def release(self) -> None:
        self.gate.set()

    async def __call__(self, request: RunRequest) -> RunResult:
        self.loops.append(asyncio.get_running_loop())
        self.threads.append(threading.get_ident())
        self.started += 1
        await self.gate.wait()
        return RunResult(output={"text": request.primitive.extract_content()})


async def until(predicate: Callable[[], object]) -> None:
    """Wait on the running loop until ``predicate()`` holds; fail after ``WAIT``."""
    async with asyncio.timeout(WAIT):
        while not predicate():
            await asyncio.sleep(0.002)
