"""Coalescing and supersession (docs: concepts/policy-and-queueing.md)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from meerkat_runtime.events.inputs import (
    ExternalEventInput,
    Input,
    InputKind,
    PeerInput,
    PeerResponseProgress,
)

__all__ = [
    "AggregateDescriptor",
    "Standalone",
    "Supersedes",
    "SupersessionResult",
    "SupersessionScope",
    "check_supersession",
    "create_aggregate_input",
    "is_coalescing_eligible",
    "supersession_scope",
]


def is_coalescing_eligible(input: Input) -> bool:
    """True only for external events and peer response-progress inputs."""
    if isinstance(input, ExternalEventInput):
        return True
    return isinstance(input, PeerInput) and isinstance(input.convention, PeerResponseProgress)


@dataclass(frozen=True, slots=True)
class SupersessionScope:
    runtime_id: str
    kind: InputKind
    key: str


def supersession_scope(input: Input, runtime_id: str) -> SupersessionScope | None:
    """The input's scope, or None when its header has no supersession key."""
    key = input.input_header.supersession_key
    if key is None:
        return None
    return SupersessionScope(runtime_id=runtime_id, kind=input.kind, key=key)


@dataclass(frozen=True, slots=True)
class Supersedes:
    superseded_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class Standalone:
    pass


SupersessionResult = Supersedes | Standalone


def check_supersession(new: Input, existing: Input, runtime_id: str) -> SupersessionResult:
    """``Supersedes(existing id)`` when both have a scope and the scopes are equal, else ``Standalone``."""
    a = supersession_scope(new, runtime_id)
    if a is not None and a == supersession_scope(existing, runtime_id):
        return Supersedes(existing.input_header.id)
    return Standalone()


@dataclass(frozen=True, slots=True)
class AggregateDescriptor:
    aggregate_id: uuid.UUID
    source_ids: tuple[uuid.UUID, ...]
    summary: str
    created_at: datetime


def create_aggregate_input(
    sources: Sequence[Input], aggregate_id: uuid.UUID, now: datetime
) -> AggregateDescriptor | None:
    """Describe an aggregate of ``sources`` (None when there are none)."""
    if not sources:
        return None
    return AggregateDescriptor(
        aggregate_id=aggregate_id,
        source_ids=tuple(s.input_header.id for s in sources),
        summary=f"{len(sources)} coalesced inputs",
        created_at=now,
    )
