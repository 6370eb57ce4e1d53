"""Value classes that every input carries are shared, not copied per input.

An input's origin, visibility, policy snapshot and decision, and runtime semantics
have few distinct values; decoders (host inputs, stored events, snapshots) and the
decider return one shared instance per value (``events._codec.interned``), so a
session holding many inputs holds no copies of them for Python's cyclic garbage
collector to walk on every full collection.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

from meerkat_runtime import Runtime
from meerkat_runtime.events import _codec
from meerkat_runtime.events._codec import from_wire, interned, to_wire
from meerkat_runtime.events.inputs import InputHeader, InputVisibility, OperatorOrigin, PeerOrigin


def _inputs(rt: Runtime, sid: str) -> list[Any]:
    out: list[Any] = rt.session(sid)._query(lambda st, _: list(st.inputs.values()))
    return out


def test_inputs_of_a_session_share_their_value_objects() -> None:
    with Runtime.open("memory://", projections=False) as rt:
        for n in range(3):
            rt.session("s").accept({"input_type": "prompt", "content": f"p{n}"})
        states = _inputs(rt, "s")
    assert len(states) == 3
    for attr in ("policy", "runtime_semantics"):
        assert len({id(getattr(s, attr)) for s in states}) == 1, attr
    headers = [s.persisted_input.header for s in states]
    assert len({id(h.source) for h in headers}) == 1
    assert len({id(h.visibility) for h in headers}) == 1


def test_decoded_values_are_the_shared_instances_and_read_back_equal() -> None:
    wire = to_wire(InputHeader())
    a = from_wire(InputHeader, wire)
    b = from_wire(InputHeader, dict(wire))
    assert a.source is b.source and a.visibility is b.visibility
    assert a == b and to_wire(a) == wire
    hidden = from_wire(InputVisibility, {"transcript_eligible": False, "operator_eligible": True})
    assert hidden == InputVisibility(transcript_eligible=False, operator_eligible=True)
    assert hidden is not from_wire(InputVisibility, to_wire(InputVisibility()))
    # A class that does not opt in is built afresh each time.
    peer = {"type": "peer", "peer_id": "p-1"}
    assert from_wire(PeerOrigin, peer) is not from_wire(PeerOrigin, dict(peer))


def test_interning_is_bounded_and_unhashable_values_pass_through(monkeypatch: Any) -> None:
    monkeypatch.setattr(_codec, "_INTERNED", {})
    monkeypatch.setattr(_codec, "INTERNED_MAX", 1)
    first = interned(OperatorOrigin())
    assert interned(OperatorOrigin()) is first
    v1 = InputVisibility(transcript_eligible=False)
    assert interned(v1) is v1 and interned(InputVisibility(transcript_eligible=False)) is not v1
    unhashable: list[int] = []
    assert interned(unhashable) is unhashable


def test_a_queued_input_holds_few_objects_for_the_garbage_collector(tmp_path: Path) -> None:
    # A SQLite file: a memory:// store keeps the events themselves as Python objects.
    with Runtime.open(f"sqlite:///{tmp_path}/s.db", projections=False) as rt:
        rt.session("s").accept({"input_type": "prompt", "content": "warm"})
        gc.collect()
        before = len(gc.get_objects())
        rt.accept_many([("s", {"input_type": "prompt", "content": f"p{n}"}) for n in range(500)])
        # A later message: the session forgets the batch's call and its settled append.
        rt.session("s").accept({"input_type": "prompt", "content": "last"})
        rt.session("s").state()
        gc.collect()
        per_input = (len(gc.get_objects()) - before) / 501
    # The input state, its history tuple and entry, its input and header, its id: ~7.
    assert per_input < 8.5, per_input
