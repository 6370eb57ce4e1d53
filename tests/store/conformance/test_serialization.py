"""Stored bytes on every backend: upcasting, writer ids, encryption and compression."""

from __future__ import annotations

import zlib
from datetime import UTC, datetime

import orjson
import pytest
from eventsourcing.cryptography import AESCipher

from meerkat_runtime.errors import StoreError
from meerkat_runtime.store import EventCodec, NewEvent, Snapshot
from meerkat_runtime.store._eventsourcing import recorder_of

from ..conftest import Backend
from ._events import happened


def test_upcasting_on_read_after_the_schema_changed(backend: Backend) -> None:
    old = EventCodec()
    old.register("msg.received")
    first = backend.open(codec=old)
    first.append("s", 0, [NewEvent("msg.received", {"text": "hello"})])
    first.close()

    new = EventCodec()
    new.register(
        "msg.received",
        version=3,
        upcasters={1: lambda d: {**d, "lang": "en"}, 2: lambda d: {**d, "chars": len(d["text"])}},
    )
    second = backend.open(codec=new)
    second.append("s", 1, [NewEvent("msg.received", {"text": "salut", "lang": "fr", "chars": 5})])
    assert [e.data for e in second.read_session("s")] == [
        {"text": "hello", "lang": "en", "chars": 5},
        {"text": "salut", "lang": "fr", "chars": 5},
    ]
    assert [e.data for e in second.read_all()] == [e.data for e in second.read_session("s")]

    # The old program cannot read what the new one wrote, and says why.
    third = backend.open(codec=old)
    with pytest.raises(StoreError) as newer:
        third.read_session("s")
    message = str(newer.value)
    assert "'msg.received'" in message
    assert "schema version 3" in message
    assert "registers version 1" in message


def test_unregistered_topic_and_non_json_payload_are_refused(backend: Backend) -> None:
    store = backend.open()
    with pytest.raises(StoreError, match="not registered"):
        store.append("s", 0, [happened(1), NewEvent("nope", {})])
    with pytest.raises(StoreError, match="not JSON-native"):
        store.append("s", 0, [happened(1, at=datetime.now(UTC))])
    with pytest.raises(StoreError, match="must be a dict"):
        store.append("s", 0, [NewEvent("test.happened", [1, 2])])  # type: ignore[arg-type]
    assert store.session_version("s") == 0


def test_writer_incarnation_is_recorded(backend: Backend) -> None:
    a = backend.open(incarnation="node-a/1")
    b = backend.open(incarnation="node-b/7")
    a.append("s", 0, [happened(1)])
    b.append("s", 1, [happened(2)])
    assert [e.writer for e in a.read_session("s")] == ["node-a/1", "node-b/7"]
    assert backend.open().incarnation not in ("node-a/1", "node-b/7")


def _raw_states(backend: Backend, session_id: str) -> list[bytes]:
    reader = backend.open()
    return [e.state for e in recorder_of(reader).select_events(session_id)]


MARKER = "plaintext-marker-5f3a"


def test_encryption_at_rest(backend: Backend) -> None:
    key = AESCipher.create_key(32)
    store = backend.open(cipher_key=key)
    store.append("secret", 0, [happened(1, note=MARKER)])
    store.save_snapshot("secret", 1, {"note": MARKER})

    (encrypted,) = _raw_states(backend, "secret")
    assert MARKER.encode() not in encrypted
    assert b'"n"' not in encrypted
    snapshot = store._get_snapshot("secret")
    assert snapshot is not None
    assert MARKER.encode() not in snapshot[1]
    if backend.path is not None:
        assert MARKER.encode() not in backend.raw_file_bytes()

    # Control: without a key the same check finds the marker.
    plain = backend.open()
    plain.append("clear", 0, [happened(1, note=MARKER)])
    assert MARKER.encode() in _raw_states(backend, "clear")[0]
    if backend.path is not None:
        assert MARKER.encode() in backend.raw_file_bytes()

    assert [e.data["note"] for e in store.read_session("secret")] == [MARKER]
    assert store.load_snapshot("secret") == Snapshot("secret", 1, {"note": MARKER})
    with pytest.raises(StoreError, match="cipher_key"):
        plain.read_session("secret")
    assert backend.open(cipher_key=key).read_session("secret")[0].data["note"] == MARKER


def test_compression_round_trip(backend: Backend) -> None:
    store = backend.open(compress=True)
    payload = {"text": "all work and no play " * 200, "n": 1}
    store.append("s", 0, [NewEvent("test.happened", payload)])
    store.save_snapshot("s", 1, payload)

    (raw,) = _raw_states(backend, "s")
    assert len(raw) < len(orjson.dumps(payload)) / 10
    assert orjson.loads(zlib.decompress(raw))["d"] == payload
    assert store.read_session("s")[0].data == payload
    assert store.load_snapshot("s") == Snapshot("s", 1, payload)


def test_compression_and_encryption_together(backend: Backend) -> None:
    key = AESCipher.create_key(24)
    store = backend.open(compress=True, cipher_key=key)
    payload = {"text": MARKER * 100}
    store.append("s", 0, [NewEvent("test.happened", payload)])
    (raw,) = _raw_states(backend, "s")
    assert MARKER.encode() not in raw
    assert len(raw) < len(MARKER) * 10
    assert store.read_all()[0].data == payload
