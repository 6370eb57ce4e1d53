"""The runtime id in stored envelopes (RUNTIME_SPEC.md sections 2 and 12, API.md).

The spec's ``LogicalRuntimeId`` is a caller-supplied string written raw ("Display
is the raw string"); session runtimes use the form ``rt:session:<session-uuid>``,
a bare uuid being a legacy alias. In the port a session's runtime id is its
session id (API.md), so a host that names its sessions in the Rust form gets the
Rust form in every envelope and topology event, verbatim, and nothing rewrites
other ids into it. Checked on the payloads as stored, on every backend.
"""

from __future__ import annotations

import pytest

from meerkat_runtime import EchoExecutor
from meerkat_runtime.events.catalogue import decode_recorded
from meerkat_runtime.events.ids import SESSION_RUNTIME_PREFIX, session_id_from_runtime_id, uuid7

from ..waiting import WAIT
from ._support import prompt
from .conftest import OpenRuntime

SESSION_UUID = uuid7()


@pytest.mark.parametrize(
    "session_id",
    [f"{SESSION_RUNTIME_PREFIX}{SESSION_UUID}", str(SESSION_UUID), "support-chat-42"],
    ids=["rust-form", "bare-uuid-alias", "free-form"],
)
def test_every_stored_envelope_carries_the_session_id_verbatim(
    open_runtime: OpenRuntime, session_id: str
) -> None:
    rt = open_runtime(executor=EchoExecutor())
    s = rt.session(session_id)
    out = s.accept(prompt("hi"))
    assert out.completion is not None
    out.completion.wait(WAIT)
    s.recycle()
    s.retire()
    records = rt.store.read_session(session_id)
    topology = [r for r in records if r.topic.startswith("topology.")]
    assert [r.topic for r in topology] == [
        "topology.runtime_created",
        "topology.runtime_recycled",
        "topology.runtime_retired",
    ]
    for rec in records:
        assert rec.data["runtime_id"] == session_id  # the stored JSON, raw
        assert decode_recorded(rec).runtime_id == session_id
    for rec in topology:
        assert rec.data["event"]["data"]["runtime_id"] == session_id
    if session_id != "support-chat-42":  # the Rust form and its legacy alias name the uuid
        assert session_id_from_runtime_id(records[0].data["runtime_id"]) == SESSION_UUID
    assert [e.runtime_id for e in s.events()] == [session_id] * len(records)
