"""Directed inputs (RUNTIME_SPEC 3.3), peer terminal ids and uuid spellings, and lowering
inputs into a run primitive.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from meerkat_runtime.errors import (
    InvalidInput,
)
from meerkat_runtime.events import (
    Accept,
    BlocksRenderable,
    CompleteRun,
    ConversationAppend,
    ConversationAppendRole,
    ExternalEventInput,
    ExternalOrigin,
    FlowOrigin,
    FlowStepInput,
    HandlingMode,
    Input,
    InputDurability,
    JsonRenderable,
    OperatorOrigin,
    PeerInput,
    PeerMessage,
    PeerOrigin,
    PeerRequest,
    PeerResponseTerminalInvalid,
    PromptInput,
    RunApplyBoundary,
    RuntimeExecutionKind,
    RuntimeTurnMetadata,
    SenderTaint,
    StagedRunInput,
    SystemOrigin,
    TextRenderable,
)

from ._support import (
    Driver,
    continuation,
    fixed_uuid,
    header,
    peer,
    peer_terminal,
    prompt,
)

# ================================================================ directed inputs (spec 3.3)

DID = fixed_uuid(0x77, 0x0CCC)


def _directed_flow(**over: Any) -> Any:
    kw: dict[str, Any] = {"input_id": DID, "correlation": DID, "key": str(DID),
                          "source": FlowOrigin(flow_id="flow", step_index=0)}  # fmt: skip
    kw.update(over)
    return FlowStepInput(step_id="s", content="c", directed_interaction_id=DID, header=header(**kw))


def _directed_peer(
    convention: Any = None, payload: Any = None, taint: Any = None, **over: Any
) -> Any:
    kw: dict[str, Any] = {"input_id": DID, "correlation": DID, "key": str(DID),
                          "source": PeerOrigin(peer_id="p", runtime_id="rt:session:x")}  # fmt: skip
    kw.update(over)
    return PeerInput(content="c", directed_interaction_id=DID, convention=convention, payload=payload,
                     sender_taint=taint, header=header(**kw))  # fmt: skip


def test_directed_inputs_that_follow_the_rules_are_accepted() -> None:
    assert Driver().accept(_directed_flow()).kind == "accepted"
    assert Driver().accept(_directed_peer()).kind == "accepted"
    assert Driver().accept(_directed_peer(convention=PeerMessage())).kind == "accepted"


@pytest.mark.parametrize(
    "make",
    [
        lambda: _directed_flow(input_id=fixed_uuid(1, 0x0CCD)),
        lambda: _directed_flow(correlation=None),
        lambda: _directed_flow(correlation=fixed_uuid(2)),
        lambda: _directed_flow(key=None),
        lambda: _directed_flow(key=str(DID).upper()),
        lambda: _directed_flow(durability=InputDurability.EPHEMERAL),
        lambda: _directed_flow(durability=InputDurability.DERIVED, source=SystemOrigin()),
        lambda: _directed_flow(source=FlowOrigin(flow_id="", step_index=0)),
        lambda: _directed_flow(source=FlowOrigin(flow_id="flow", step_index=1)),
        lambda: _directed_flow(source=OperatorOrigin()),
        lambda: _directed_peer(source=PeerOrigin(peer_id="", runtime_id="rt")),
        lambda: _directed_peer(source=PeerOrigin(peer_id="p")),
        lambda: _directed_peer(source=PeerOrigin(peer_id="p", runtime_id="")),
        lambda: _directed_peer(source=SystemOrigin()),
        lambda: _directed_peer(convention=PeerRequest(request_id="r", intent="i")),
        lambda: _directed_peer(payload={"x": 1}),
        lambda: _directed_peer(taint=SenderTaint.CLEAN),
        lambda: _directed_peer(supersession="s"),
    ],
)
def test_directed_input_violations_are_malformed_and_write_nothing(
    make: Callable[[], Input],
) -> None:
    d = Driver()
    d.accept(prompt())
    before, log_len = d.snapshot(), len(d.log)
    with pytest.raises(InvalidInput) as info:
        d.run(Accept(make()))
    assert info.value.path == "directed_interaction_id"
    assert d.snapshot() == before
    assert len(d.log) == log_len


def test_directed_checks_run_before_validation_rules() -> None:
    # Derived from an operator would be a durability rejection; the directed check comes first.
    with pytest.raises(InvalidInput):
        Driver().accept(_directed_flow(durability=InputDurability.DERIVED))


# ================================================================ peer terminal ids and uuid spellings


@pytest.mark.parametrize(
    ("request_id", "kind"),
    [
        (str(fixed_uuid(9, 0x0300)), "accepted"),
        (str(fixed_uuid(9, 0x0300)).upper(), "accepted"),
        (fixed_uuid(9, 0x0300).hex, "accepted"),
        (f" {fixed_uuid(9, 0x0300)} ", "accepted"),  # blank-trimmed like the blank check
        ("0195_b3c7d1e7c4a9f003a2b1c0d4e5f", "rejected"),  # int() would read this as hex
        ("+1955b3c7d1e7c4a9f003a2b1c0d4e5f", "rejected"),
        ("01955b3c7d1e7c4a9f003a2b1c0d4e5", "rejected"),
    ],
)
def test_peer_terminal_request_id_must_be_a_uuid(request_id: str, kind: str) -> None:
    reply = Driver().accept(peer_terminal(request_id=request_id))
    assert reply.kind == kind
    if kind == "rejected":
        assert reply.reason == PeerResponseTerminalInvalid(
            detail=f"correlation id must be a UUID: {request_id}"
        )


# ================================================================ lowering inputs into a run primitive


def _primitive(d: Driver) -> StagedRunInput:
    assert d.state.run is not None
    prim = d.state.run.primitive
    assert isinstance(prim, StagedRunInput)
    return prim


def test_lowering_prompt_appends_context_and_metadata() -> None:
    d = Driver()
    user = ConversationAppendRole.USER
    typed = ConversationAppend(
        role=ConversationAppendRole.ASSISTANT, content=TextRenderable("earlier")
    )
    p = PromptInput(
        content="question",
        typed_turn_appends=(typed,),
        injected_context=("background", ""),
        turn_metadata=RuntimeTurnMetadata(model="m", keep_alive=True),
        header=header(),
    )
    d.accept(p)
    run_id = d.start()
    prim = _primitive(d)
    assert d.state.run is not None and d.state.run.run_id == run_id
    assert prim.contributing_input_ids == (p.header.id,)
    assert prim.appends == (
        typed,
        ConversationAppend(role=user, content=TextRenderable("question")),
    )
    assert [c.content for c in prim.context_appends] == [
        TextRenderable("background")
    ]  # empty skipped
    assert prim.turn_metadata == RuntimeTurnMetadata(
        model="m", keep_alive=True, execution_kind=RuntimeExecutionKind.CONTENT_TURN
    )
    assert prim.extract_content() == (
        {"type": "text", "text": "earlier"},
        {"type": "text", "text": "question"},
    )


def test_lowering_external_event_and_peer_payload() -> None:
    d = Driver()
    image = {"type": "image", "media_type": "image/png", "source": "blob", "blob_id": "b"}
    ext = ExternalEventInput(
        event_type="ci", payload={"s": 1}, header=header(source=ExternalOrigin(source_name="gh"))
    )
    ext_blocks = ExternalEventInput(event_type="ci", payload=None, blocks=(image,),
                                    header=header(source=ExternalOrigin(source_name="gh")))  # fmt: skip
    msg = peer(lane=HandlingMode.STEER, text="hi")
    req = PeerInput(content="", convention=PeerRequest(request_id="r", intent="i"), payload={"q": 2},
                    handling_mode=HandlingMode.STEER, header=header(source=PeerOrigin(peer_id="p")))  # fmt: skip
    for inp in (ext, ext_blocks, msg, req):
        d.accept(inp)
    d.start()
    prim = _primitive(d)
    assert prim.contributing_input_ids == (ext.header.id, msg.header.id, req.header.id)
    assert [a.content for a in prim.appends] == [
        JsonRenderable({"event_type": "ci", "payload": {"s": 1}}),
        TextRenderable("hi"),
        JsonRenderable({"q": 2}),
    ]
    assert d.state.queue.input_ids() == [ext_blocks.header.id]
    assert d.state.run is not None
    d.run(CompleteRun(d.state.run.run_id))
    d.start()
    assert [a.content for a in _primitive(d).appends] == [BlocksRenderable((image,))]


def test_lowering_execution_kind_and_boundary() -> None:
    # Only continuations (resume_pending) in the batch: the run resumes pending work at a checkpoint.
    d = Driver()
    c = continuation(lane=HandlingMode.STEER)
    d.accept(c)
    d.start()
    prim = _primitive(d)
    assert prim.boundary is RunApplyBoundary.RUN_CHECKPOINT
    assert prim.turn_metadata is not None
    assert prim.turn_metadata.execution_kind is RuntimeExecutionKind.RESUME_PENDING
    assert prim.appends == ()
    # Mixed with a content turn: an ordinary turn at run start.
    d2 = Driver()
    d2.accept(prompt("p"))
    d2.accept(continuation(lane=HandlingMode.STEER))
    d2.start()
    prim2 = _primitive(d2)
    assert prim2.boundary is RunApplyBoundary.RUN_START
    assert prim2.turn_metadata is not None
    assert prim2.turn_metadata.execution_kind is RuntimeExecutionKind.CONTENT_TURN
