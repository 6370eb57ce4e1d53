"""A chat backend on FastAPI with meerkat-runtime's asyncio API.

Run it with ``uvicorn examples.fastapi_app:app``; ``MEERKAT_STORE`` chooses the store
(default: a SQLite file). ``POST /sessions/{id}/messages`` with ``{"text": ..., "key":
...}`` accepts a prompt (the key makes a client's retry safe) and answers with the
executor's reply; ``GET /sessions/{id}`` shows the session's state.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from meerkat_runtime import Completed, CompletionWaitError, InvalidInput, RunRequest, RunResult
from meerkat_runtime.aio import AsyncRuntime

STORE_URL = os.environ.get("MEERKAT_STORE", "sqlite:///chat.db")


async def reply(request: RunRequest) -> RunResult:
    """The executor: a coroutine, run on the app's own event loop."""
    text = request.primitive.extract_content()
    return RunResult(output={"reply": f"you said: {text}"})


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with AsyncRuntime.open(STORE_URL, executor=reply) as runtime:
        app.state.runtime = runtime
        yield


app = FastAPI(lifespan=lifespan)


class Message(BaseModel):
    text: str
    key: str | None = None


def runtime() -> AsyncRuntime:
    rt: AsyncRuntime = app.state.runtime
    return rt


@app.post("/sessions/{session_id}/messages")
async def post_message(session_id: str, message: Message) -> dict[str, Any]:
    header = {"idempotency_key": message.key} if message.key else {}
    doc = {"input_type": "prompt", "content": message.text, "header": header}
    try:  # a bad session id or input: nothing is written
        outcome = await runtime().session(session_id).accept(doc)
    except InvalidInput as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None
    answer: dict[str, Any] = {"input_id": str(outcome.input_id), "outcome": outcome.kind}
    if outcome.completion is not None:
        try:
            done = await outcome.completion.wait(timeout=30)
        except CompletionWaitError:
            return answer  # still running: the client can come back for it
        if isinstance(done, Completed):
            answer["reply"] = done.output
    return answer


@app.get("/sessions/{session_id}")
async def get_session(session_id: str) -> dict[str, Any]:
    try:
        session = runtime().session(session_id)
    except InvalidInput as exc:  # not a session id
        raise HTTPException(status_code=422, detail=str(exc)) from None
    return {"session_id": session_id, "state": (await session.state()).value}
