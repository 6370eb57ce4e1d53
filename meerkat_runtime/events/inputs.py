"""The input model: six input variants, their header, origin, durability and visibility.

For users: docs/concepts/sessions-and-inputs.md.

Python construction is friendlier than the wire: ``PromptInput(content="hi")``
fills a fresh header (UUIDv7 id, now, origin ``operator``, ``durable``, default
visibility). On the wire every header key stays required, and so does every
field the original runtime gives no default (``content``, ``step_id``, ``event_type``,
``reason``), although Python code may leave them out when constructing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, NewType

from meerkat_runtime.errors import InvalidInput
from meerkat_runtime.events._codec import (
    Custom,
    JsonValue,
    check_text,
    interned,
    join_path,
    tagged,
    wfield,
)
from meerkat_runtime.events.ids import uuid7
from meerkat_runtime.events.run_primitive import (
    ConversationAppend,
    HandlingMode,
    RuntimeTurnMetadata,
    TurnToolOverlay,
)
from meerkat_runtime.events.timefmt import utc_now

__all__ = [
    "ContentBlock",
    "ContentInput",
    "ContinuationInput",
    "ContinuationKind",
    "ExternalEventInput",
    "ExternalOrigin",
    "FlowOrigin",
    "FlowStepInput",
    "HandlingMode",
    "Input",
    "InputDurability",
    "InputHeader",
    "InputKind",
    "InputOrigin",
    "InputVisibility",
    "KindId",
    "OperationCancelled",
    "OperationCompleted",
    "OperationEvent",
    "OperationFailed",
    "OperationInput",
    "OperationProgress",
    "OperationStarted",
    "OperatorOrigin",
    "PeerConvention",
    "PeerInput",
    "PeerMessage",
    "PeerOrigin",
    "PeerRequest",
    "PeerResponseProgress",
    "PeerResponseTerminal",
    "PromptInput",
    "ResponseProgressPhase",
    "ResponseTerminalStatus",
    "RuntimeTurnMetadata",
    "SenderTaint",
    "SystemOrigin",
    "TurnToolOverlay",
    "content_text",
    "detached_background_op_completed",
    "peer_terminal_response",
]


class InputKind(StrEnum):
    """The nine input kinds; Peer splits by convention."""

    PROMPT = "prompt"
    PEER_MESSAGE = "peer_message"
    PEER_REQUEST = "peer_request"
    PEER_RESPONSE_PROGRESS = "peer_response_progress"
    PEER_RESPONSE_TERMINAL = "peer_response_terminal"
    FLOW_STEP = "flow_step"
    EXTERNAL_EVENT = "external_event"
    CONTINUATION = "continuation"
    OPERATION = "operation"


#: An input kind used as an identifier (``KindId`` in the spec): written as the kind string.
KindId = NewType("KindId", InputKind)


class InputDurability(StrEnum):
    """``durable`` is persisted before acknowledgement; ``ephemeral`` may be lost; ``derived`` is reconstructible."""

    DURABLE = "durable"
    EPHEMERAL = "ephemeral"
    DERIVED = "derived"


class ContinuationKind(StrEnum):
    ORDINARY = "ordinary"
    WORKGRAPH_ATTENTION = "workgraph_attention"


class ResponseProgressPhase(StrEnum):
    ACCEPTED = "accepted"
    IN_PROGRESS = "in_progress"
    PARTIAL_RESULT = "partial_result"


class ResponseTerminalStatus(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class SenderTaint(StrEnum):
    CLEAN = "clean"
    TAINTED = "tainted"


# ------------------------------------------------------------------ content

#: A content block is a core type, opaque here: a JSON object with a string ``type``.
ContentBlock = dict[str, Any]


def _enc_content(value: Any) -> Any:
    return value if isinstance(value, str) else [dict(b) for b in value]


def _dec_block(block: Any, path: str) -> ContentBlock:
    from meerkat_runtime.events._codec import _check_json

    if not isinstance(block, dict):
        raise InvalidInput("content block must be an object", path)
    kind = block.get("type")
    if not isinstance(kind, str):
        raise InvalidInput("content block needs a string 'type'", join_path(path, "type"))
    if kind == "text" and not isinstance(block.get("text"), str):
        raise InvalidInput("text block needs a string 'text'", join_path(path, "text"))
    checked: ContentBlock = _check_json(block, path)
    return checked


def _dec_content(value: Any, path: str) -> Any:
    if isinstance(value, str):
        return check_text(value, path)
    if isinstance(value, (list, tuple)):
        return tuple(_dec_block(b, join_path(path, f"[{i}]")) for i, b in enumerate(value))
    raise InvalidInput("content must be a string or an array of content blocks", path)


def _dec_blocks(value: Any, path: str) -> tuple[ContentBlock, ...]:
    if not isinstance(value, (list, tuple)):
        raise InvalidInput("expected an array of content blocks", path)
    return tuple(_dec_block(b, join_path(path, f"[{i}]")) for i, b in enumerate(value))


#: Untagged: plain text, or a tuple of content blocks (multimodal).
ContentInput = Annotated[str | tuple[ContentBlock, ...], Custom(_enc_content, _dec_content)]
Blocks = Annotated[tuple[ContentBlock, ...], Custom(_enc_content, _dec_blocks)]


def content_text(content: str | tuple[ContentBlock, ...]) -> str:
    """The text of a content value: the string, or its text blocks joined."""
    if isinstance(content, str):
        return content
    return "".join(b["text"] for b in content if b.get("type") == "text")


# ------------------------------------------------------------------ origin


@dataclass(frozen=True, slots=True)
class InputOrigin:
    """Where an input came from (tag ``type``)."""

    __tag_key__: ClassVar[str] = "type"


@tagged
@dataclass(frozen=True, slots=True)
class OperatorOrigin(InputOrigin):
    __tag__: ClassVar[str] = "operator"
    __interned__: ClassVar[bool] = True


@tagged
@dataclass(frozen=True, slots=True)
class PeerOrigin(InputOrigin):
    __tag__: ClassVar[str] = "peer"
    peer_id: str
    display_identity: str | None = wfield(default=None, omit="none")
    runtime_id: str | None = wfield(default=None, omit="none")


@tagged
@dataclass(frozen=True, slots=True)
class FlowOrigin(InputOrigin):
    __tag__: ClassVar[str] = "flow"
    flow_id: str
    step_index: int = wfield(ge=0)


@tagged
@dataclass(frozen=True, slots=True)
class SystemOrigin(InputOrigin):
    __tag__: ClassVar[str] = "system"
    __interned__: ClassVar[bool] = True


@tagged
@dataclass(frozen=True, slots=True)
class ExternalOrigin(InputOrigin):
    __tag__: ClassVar[str] = "external"
    source_name: str


# ------------------------------------------------------------------ header


@dataclass(frozen=True, slots=True)
class InputVisibility:
    """Both flags default to true when the runtime builds a value; both keys are required on read."""

    __interned__: ClassVar[bool] = True

    transcript_eligible: bool = wfield(default=True, required=True)
    operator_eligible: bool = wfield(default=True, required=True)


#: The values a header takes when the host gives none (shared: see ``interned``).
_OPERATOR = interned(OperatorOrigin())
_VISIBLE = interned(InputVisibility())


def _operator_origin() -> InputOrigin:
    return _OPERATOR


def _default_visibility() -> InputVisibility:
    return _VISIBLE


@dataclass(frozen=True, slots=True)
class InputHeader:
    """Identity, time, origin, durability, visibility and the optional keys of an input."""

    id: uuid.UUID = wfield(default_factory=uuid7, required=True)
    timestamp: datetime = wfield(default_factory=utc_now, required=True)
    source: InputOrigin = wfield(default_factory=_operator_origin, required=True)
    durability: InputDurability = wfield(default=InputDurability.DURABLE, required=True)
    visibility: InputVisibility = wfield(default_factory=_default_visibility, required=True)
    idempotency_key: str | None = wfield(default=None, omit="none")
    supersession_key: str | None = wfield(default=None, omit="none")
    correlation_id: uuid.UUID | None = wfield(default=None, omit="none")


# ------------------------------------------------------------------ peer conventions


@dataclass(frozen=True, slots=True)
class PeerConvention:
    """How a peer input relates to a request (tag ``convention_type``)."""

    __tag_key__: ClassVar[str] = "convention_type"


@tagged
@dataclass(frozen=True, slots=True)
class PeerMessage(PeerConvention):
    __tag__: ClassVar[str] = "message"


@tagged
@dataclass(frozen=True, slots=True)
class PeerRequest(PeerConvention):
    __tag__: ClassVar[str] = "request"
    request_id: str
    intent: str


@tagged
@dataclass(frozen=True, slots=True)
class PeerResponseProgress(PeerConvention):
    __tag__: ClassVar[str] = "response_progress"
    request_id: str
    phase: ResponseProgressPhase


@tagged
@dataclass(frozen=True, slots=True)
class PeerResponseTerminal(PeerConvention):
    __tag__: ClassVar[str] = "response_terminal"
    request_id: str
    status: ResponseTerminalStatus


# ------------------------------------------------------------------ operation events


@dataclass(frozen=True, slots=True)
class OperationEvent:
    """An operation lifecycle event from core (tag ``type``)."""

    __tag_key__: ClassVar[str] = "type"


@tagged
@dataclass(frozen=True, slots=True)
class OperationStarted(OperationEvent):
    __tag__: ClassVar[str] = "started"
    id: str
    kind: str


@tagged
@dataclass(frozen=True, slots=True)
class OperationProgress(OperationEvent):
    __tag__: ClassVar[str] = "progress"
    id: str
    message: str
    percent: float | None = None


@tagged
@dataclass(frozen=True, slots=True)
class OperationCompleted(OperationEvent):
    __tag__: ClassVar[str] = "completed"
    id: str
    result: JsonValue = wfield(required=True)


@tagged
@dataclass(frozen=True, slots=True)
class OperationFailed(OperationEvent):
    __tag__: ClassVar[str] = "failed"
    id: str
    error: str


@tagged
@dataclass(frozen=True, slots=True)
class OperationCancelled(OperationEvent):
    __tag__: ClassVar[str] = "cancelled"
    id: str


# ------------------------------------------------------------------ inputs


@dataclass(frozen=True, slots=True)
class Input:
    """An input to a session (tag ``input_type``). Use one of the six variants."""

    __tag_key__: ClassVar[str] = "input_type"

    @property
    def kind(self) -> InputKind:
        """The input kind used by policy (peer inputs split by their convention)."""
        raise NotImplementedError

    @property
    def input_header(self) -> InputHeader:
        """The header (every variant has one)."""
        header: InputHeader = getattr(self, "header")  # noqa: B009 - declared by each variant
        return header

    def requested_handling_mode(self) -> HandlingMode | None:
        """The lane the input asks for (its handling mode), or None."""
        return None


@tagged
@dataclass(frozen=True, slots=True)
class PromptInput(Input):
    """A user/operator prompt."""

    __tag__: ClassVar[str] = "prompt"
    # The Rust struct's field order on the wire (the dataclass's keeps PromptInput("hi") working).
    __wire_order__: ClassVar[tuple[str, ...]] = (
        "header",
        "content",
        "typed_turn_appends",
        "injected_context",
        "turn_metadata",
    )
    content: ContentInput = wfield(default="", required=True)
    header: InputHeader = wfield(default_factory=InputHeader, required=True)
    typed_turn_appends: tuple[ConversationAppend, ...] = wfield(default=(), omit="empty")
    injected_context: tuple[ContentInput, ...] = wfield(default=(), omit="empty")
    turn_metadata: RuntimeTurnMetadata | None = wfield(default=None, omit="none")

    @property
    def kind(self) -> InputKind:
        return InputKind.PROMPT

    def requested_handling_mode(self) -> HandlingMode | None:
        return self.turn_metadata.handling_mode if self.turn_metadata else None


@tagged
@dataclass(frozen=True, slots=True)
class PeerInput(Input):
    """A message, request or response from a peer runtime."""

    __tag__: ClassVar[str] = "peer"
    __wire_order__: ClassVar[tuple[str, ...]] = (
        "header",
        "directed_interaction_id",
        "convention",
        "content",
        "payload",
        "handling_mode",
        "sender_taint",
        "objective_id",
        "system_prompts",
        "injected_context",
    )
    content: ContentInput = wfield(default="", required=True)
    header: InputHeader = wfield(default_factory=InputHeader, required=True)
    directed_interaction_id: uuid.UUID | None = wfield(default=None, omit="none")
    convention: PeerConvention | None = wfield(default=None, omit="none")
    payload: JsonValue = wfield(default=None, omit="none")
    handling_mode: HandlingMode | None = wfield(default=None, omit="none")
    sender_taint: SenderTaint | None = wfield(default=None, omit="none")
    objective_id: str | None = wfield(default=None, omit="none")
    system_prompts: tuple[str, ...] = wfield(default=(), omit="empty")
    injected_context: tuple[ContentInput, ...] = wfield(default=(), omit="empty")

    @property
    def kind(self) -> InputKind:
        c = self.convention
        if c is None or isinstance(c, PeerMessage):
            return InputKind.PEER_MESSAGE
        if isinstance(c, PeerRequest):
            return InputKind.PEER_REQUEST
        if isinstance(c, PeerResponseProgress):
            return InputKind.PEER_RESPONSE_PROGRESS
        return InputKind.PEER_RESPONSE_TERMINAL

    def requested_handling_mode(self) -> HandlingMode | None:
        return self.handling_mode


@tagged
@dataclass(frozen=True, slots=True)
class FlowStepInput(Input):
    """One step of a flow."""

    __tag__: ClassVar[str] = "flow_step"
    __wire_order__: ClassVar[tuple[str, ...]] = (
        "header",
        "step_id",
        "content",
        "directed_interaction_id",
        "turn_metadata",
    )
    step_id: str = wfield(default="", required=True)
    content: ContentInput = wfield(default="", required=True)
    header: InputHeader = wfield(default_factory=InputHeader, required=True)
    directed_interaction_id: uuid.UUID | None = wfield(default=None, omit="none")
    turn_metadata: RuntimeTurnMetadata | None = wfield(default=None, omit="none")

    @property
    def kind(self) -> InputKind:
        return InputKind.FLOW_STEP

    def requested_handling_mode(self) -> HandlingMode | None:
        return self.turn_metadata.handling_mode if self.turn_metadata else None


@tagged
@dataclass(frozen=True, slots=True)
class ExternalEventInput(Input):
    """An event from an external system; the payload is required (may be null)."""

    __tag__: ClassVar[str] = "external_event"
    __wire_order__: ClassVar[tuple[str, ...]] = (
        "header",
        "event_type",
        "payload",
        "blocks",
        "handling_mode",
        "render_metadata",
        "objective_id",
    )
    event_type: str = wfield(default="", required=True)
    payload: JsonValue = wfield(default=None, required=True)
    header: InputHeader = wfield(default_factory=InputHeader, required=True)
    blocks: Blocks | None = wfield(default=None, omit="none")
    handling_mode: HandlingMode = HandlingMode.QUEUE
    render_metadata: JsonValue = wfield(default=None, omit="none")
    objective_id: str | None = wfield(default=None, omit="none")

    @property
    def kind(self) -> InputKind:
        return InputKind.EXTERNAL_EVENT

    def requested_handling_mode(self) -> HandlingMode | None:
        return self.handling_mode


@tagged
@dataclass(frozen=True, slots=True)
class ContinuationInput(Input):
    """Resume pending work (ordinary) or re-enter as a fresh turn (workgraph attention)."""

    __tag__: ClassVar[str] = "continuation"
    __wire_order__: ClassVar[tuple[str, ...]] = (
        "header",
        "reason",
        "continuation_kind",
        "handling_mode",
        "request_id",
        "turn_tool_overlay",
        "turn_append",
    )
    reason: str = wfield(default="", required=True)
    header: InputHeader = wfield(default_factory=InputHeader, required=True)
    continuation_kind: ContinuationKind = ContinuationKind.ORDINARY
    handling_mode: HandlingMode = HandlingMode.QUEUE
    request_id: str | None = wfield(default=None, omit="none")
    turn_tool_overlay: TurnToolOverlay | None = wfield(default=None, omit="none")
    turn_append: ConversationAppend | None = wfield(default=None, omit="none")

    @property
    def kind(self) -> InputKind:
        return InputKind.CONTINUATION

    def requested_handling_mode(self) -> HandlingMode | None:
        return self.handling_mode


@tagged
@dataclass(frozen=True, slots=True)
class OperationInput(Input):
    """An operation lifecycle event; consumed on accept, never queued."""

    __tag__: ClassVar[str] = "operation"
    __wire_order__: ClassVar[tuple[str, ...]] = (
        "header",
        "operation_id",
        "event",
    )
    operation_id: str
    event: OperationEvent
    header: InputHeader = wfield(default_factory=InputHeader, required=True)

    @property
    def kind(self) -> InputKind:
        return InputKind.OPERATION


# ------------------------------------------------------------------ stock constructors


def peer_terminal_response(
    *,
    peer_id: str,
    request_id: uuid.UUID,
    result: JsonValue,
    status: ResponseTerminalStatus = ResponseTerminalStatus.COMPLETED,
    display_name: str | None = None,
    runtime_id: str | None = None,
) -> PeerInput:
    """Build a peer terminal response: redelivery deduplicates by (peer id, request id)."""
    key = f"peer-terminal:{peer_id}:{request_id}"
    header = InputHeader(
        source=PeerOrigin(
            peer_id=peer_id, display_identity=display_name or peer_id, runtime_id=runtime_id
        ),
        durability=InputDurability.DURABLE,
        idempotency_key=key,
        correlation_id=request_id,
    )
    return PeerInput(
        header=header,
        convention=PeerResponseTerminal(request_id=str(request_id), status=status),
        content="",
        payload=result,
    )


def detached_background_op_completed() -> ContinuationInput:
    """The stock continuation sent when a detached background operation completes."""
    header = InputHeader(
        source=SystemOrigin(),
        durability=InputDurability.DERIVED,
        visibility=InputVisibility(transcript_eligible=False, operator_eligible=False),
    )
    return ContinuationInput(
        header=header,
        reason="detached_background_op_completed",
        continuation_kind=ContinuationKind.ORDINARY,
        handling_mode=HandlingMode.STEER,
    )
