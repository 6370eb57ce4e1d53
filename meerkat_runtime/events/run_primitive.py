"""Run primitives: what core receives instead of inputs (docs: concepts/runtime-and-runs.md).

``StagedRunInput`` is a struct of its own that the ``staged_input`` variant of
:class:`RunPrimitive` wraps, as in Rust: encoded on its own it is
``{"boundary": ...}`` with no tag, and decoding it ignores a ``primitive_type``
key; as a ``RunPrimitive`` (a field of that type, or
``wire.encode(x, as_type=RunPrimitive)``) it is written with
``"primitive_type": "staged_input"`` first. ``ImmediateAppend`` and
``ImmediateContextAppend`` are the variants for a ``ConversationAppend`` and a
``ConversationContextAppend``, so their own form is the tagged one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

from meerkat_runtime.events._codec import JsonValue, tagged, wfield

__all__ = [
    "BlocksRenderable",
    "ConversationAppend",
    "ConversationAppendRole",
    "ConversationContextAppend",
    "CoreRenderable",
    "HandlingMode",
    "ImmediateAppend",
    "ImmediateContextAppend",
    "JsonRenderable",
    "ReferenceRenderable",
    "RunApplyBoundary",
    "RunPrimitive",
    "RuntimeExecutionKind",
    "RuntimeTurnMetadata",
    "StagedRunInput",
    "TextRenderable",
    "TurnToolOverlay",
]


class RunApplyBoundary(StrEnum):
    IMMEDIATE = "immediate"
    RUN_START = "run_start"
    RUN_CHECKPOINT = "run_checkpoint"


class RuntimeExecutionKind(StrEnum):
    CONTENT_TURN = "content_turn"
    RESUME_PENDING = "resume_pending"


class HandlingMode(StrEnum):
    """The requested lane: the ordinary queue or the steer queue."""

    QUEUE = "queue"
    STEER = "steer"


class ConversationAppendRole(StrEnum):
    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM_NOTICE = "system_notice"
    TOOL = "tool"


@dataclass(frozen=True, slots=True)
class CoreRenderable:
    """Something core can render into a conversation (tag ``type``)."""

    __tag_key__: ClassVar[str] = "type"


@tagged
@dataclass(frozen=True, slots=True)
class TextRenderable(CoreRenderable):
    __tag__: ClassVar[str] = "text"
    text: str


@tagged
@dataclass(frozen=True, slots=True)
class BlocksRenderable(CoreRenderable):
    __tag__: ClassVar[str] = "blocks"
    blocks: tuple[dict[str, Any], ...]


@tagged
@dataclass(frozen=True, slots=True)
class JsonRenderable(CoreRenderable):
    __tag__: ClassVar[str] = "json"
    value: JsonValue = wfield(default=None, required=True)


@tagged
@dataclass(frozen=True, slots=True)
class ReferenceRenderable(CoreRenderable):
    __tag__: ClassVar[str] = "reference"
    uri: str
    label: str | None = None  # written as null when absent (no skip attribute in the seed)


@dataclass(frozen=True, slots=True)
class ConversationAppend:
    role: ConversationAppendRole
    content: CoreRenderable


@dataclass(frozen=True, slots=True)
class ConversationContextAppend:
    key: str
    content: CoreRenderable


# ------------------------------------------------------------------ turn metadata


@dataclass(frozen=True, slots=True)
class TurnToolOverlay:
    """Per-turn tool visibility; both lists are written as ``null`` when absent."""

    allowed_tools: tuple[str, ...] | None = None
    blocked_tools: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class RuntimeTurnMetadata:
    """Per-turn hints; every field optional and omitted when absent (``{}`` is valid)."""

    handling_mode: HandlingMode | None = wfield(default=None, omit="none")
    keep_alive: bool | None = wfield(default=None, omit="none")
    skill_references: tuple[JsonValue, ...] | None = wfield(default=None, omit="none")
    flow_tool_overlay: TurnToolOverlay | None = wfield(default=None, omit="none")
    additional_instructions: tuple[str, ...] | None = wfield(default=None, omit="none")
    model: str | None = wfield(default=None, omit="none")
    provider: str | None = wfield(default=None, omit="none")
    provider_params: JsonValue = wfield(default=None, omit="none")
    render_metadata: JsonValue = wfield(default=None, omit="none")
    execution_kind: RuntimeExecutionKind | None = wfield(default=None, omit="none")


Content = str | tuple[dict[str, Any], ...]


@dataclass(frozen=True, slots=True)
class RunPrimitive:
    """What a run applies (tag ``primitive_type``)."""

    __tag_key__: ClassVar[str] = "primitive_type"

    def primitive_input_ids(self) -> tuple[uuid.UUID, ...]:
        """The contributing inputs (empty for immediate primitives)."""
        return ()

    def primitive_turn_metadata(self) -> RuntimeTurnMetadata | None:
        """The turn metadata (None for immediate primitives)."""
        return None

    def apply_boundary(self) -> RunApplyBoundary:
        return RunApplyBoundary.IMMEDIATE

    def is_context_only_immediate(self) -> bool:
        return False

    def extract_content(self) -> Content:
        """The content for a turn: plain text for zero or one text block, else the block list."""
        raise NotImplementedError


def _blocks_to_content(blocks: list[dict[str, Any]]) -> Content:
    if not blocks:
        return ""
    if len(blocks) == 1 and blocks[0].get("type") == "text":
        text: str = blocks[0].get("text", "")
        return text
    return tuple(blocks)


@tagged
@dataclass(frozen=True, slots=True)
class StagedRunInput(RunPrimitive):
    """Inputs staged for a run at a boundary."""

    __tag__: ClassVar[str] = "staged_input"
    __newtype_variant__: ClassVar[bool] = True
    boundary: RunApplyBoundary
    appends: tuple[ConversationAppend, ...] = wfield(default=(), omit="empty")
    context_appends: tuple[ConversationContextAppend, ...] = wfield(default=(), omit="empty")
    contributing_input_ids: tuple[uuid.UUID, ...] = wfield(default=(), omit="empty")
    turn_metadata: RuntimeTurnMetadata | None = wfield(default=None, omit="none")

    def primitive_input_ids(self) -> tuple[uuid.UUID, ...]:
        return self.contributing_input_ids

    def primitive_turn_metadata(self) -> RuntimeTurnMetadata | None:
        return self.turn_metadata

    def apply_boundary(self) -> RunApplyBoundary:
        return self.boundary

    def is_context_only_immediate(self) -> bool:
        return (
            not self.appends
            and bool(self.context_appends)
            and self.boundary is RunApplyBoundary.IMMEDIATE
        )

    def extract_content(self) -> Content:
        blocks: list[dict[str, Any]] = []
        for append in self.appends:
            c = append.content
            if isinstance(c, TextRenderable):
                blocks.append({"type": "text", "text": c.text})
            elif isinstance(c, BlocksRenderable):
                blocks.extend(c.blocks)
        return _blocks_to_content(blocks)


@tagged
@dataclass(frozen=True, slots=True)
class ImmediateAppend(RunPrimitive):
    """A conversation append applied immediately."""

    __tag__: ClassVar[str] = "immediate_append"
    role: ConversationAppendRole
    content: CoreRenderable

    def extract_content(self) -> Content:
        if isinstance(self.content, TextRenderable):
            return self.content.text
        if isinstance(self.content, BlocksRenderable):
            return self.content.blocks
        return ""


@tagged
@dataclass(frozen=True, slots=True)
class ImmediateContextAppend(RunPrimitive):
    """A keyed context append applied immediately."""

    __tag__: ClassVar[str] = "immediate_context_append"
    key: str
    content: CoreRenderable

    def extract_content(self) -> Content:
        return ""
