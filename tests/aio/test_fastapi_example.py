"""The FastAPI example of the asyncio guide (``examples/fastapi_app.py``), driven through
FastAPI's test client: the file the docs show is the file tested."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from fastapi.testclient import TestClient

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fastapi_app.py"


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.setenv("MEERKAT_STORE", f"sqlite:///{tmp_path / 'chat.db'}")
    spec = importlib.util.spec_from_file_location("fastapi_app_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module


def test_the_example_app_accepts_replies_and_deduplicates(example: ModuleType) -> None:
    with TestClient(example.app) as client:
        first = client.post("/sessions/chat-1/messages", json={"text": "hello", "key": "m-1"})
        assert first.status_code == 200, first.text
        body = first.json()
        assert body["outcome"] == "accepted"
        assert body["reply"] == {"reply": "you said: hello"}

        again = client.post("/sessions/chat-1/messages", json={"text": "hello", "key": "m-1"})
        assert again.json()["outcome"] == "deduplicated"

        state = client.get("/sessions/chat-1")
        assert state.json() == {"session_id": "chat-1", "state": "attached"}

        bad = client.post(f"/sessions/{'x' * 300}/messages", json={"text": "hi"})
        assert bad.status_code == 422 and "session" in bad.text
        bad_get = client.get(f"/sessions/{'x' * 300}")
        assert bad_get.status_code == 422 and "session" in bad_get.text
