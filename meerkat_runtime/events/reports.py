"""Reject reasons and lifecycle reports (docs: concepts/lifecycle-operations.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from meerkat_runtime.events._codec import tagged, wfield
from meerkat_runtime.events.runtime_state import RuntimeState

__all__ = [
    "DestroyReport",
    "DurabilityViolation",
    "NotReady",
    "PeerHandlingModeInvalid",
    "PeerResponseTerminalInvalid",
    "RecoveryReport",
    "RecycleReport",
    "RejectReason",
    "ResetReport",
    "RetireReport",
    "StopReport",
]


@dataclass(frozen=True, slots=True)
class RejectReason:
    """Why the runtime refused an input (tag ``reject_type``); ``str()`` is a readable sentence."""

    __tag_key__: ClassVar[str] = "reject_type"


@tagged
@dataclass(frozen=True, slots=True)
class NotReady(RejectReason):
    __tag__: ClassVar[str] = "not_ready"
    state: RuntimeState

    def __str__(self) -> str:
        return f"runtime not accepting input while in state: {self.state}"


@tagged
@dataclass(frozen=True, slots=True)
class DurabilityViolation(RejectReason):
    __tag__: ClassVar[str] = "durability_violation"
    detail: str

    def __str__(self) -> str:
        return self.detail


@tagged
@dataclass(frozen=True, slots=True)
class PeerHandlingModeInvalid(RejectReason):
    __tag__: ClassVar[str] = "peer_handling_mode_invalid"
    detail: str

    def __str__(self) -> str:
        return self.detail


@tagged
@dataclass(frozen=True, slots=True)
class PeerResponseTerminalInvalid(RejectReason):
    __tag__: ClassVar[str] = "peer_response_terminal_invalid"
    detail: str

    def __str__(self) -> str:
        return self.detail


@dataclass(frozen=True, slots=True)
class RetireReport:
    inputs_abandoned: int = wfield(ge=0)
    inputs_pending_drain: int = wfield(default=0, ge=0)


@dataclass(frozen=True, slots=True)
class ResetReport:
    inputs_abandoned: int = wfield(ge=0)


@dataclass(frozen=True, slots=True)
class RecycleReport:
    inputs_transferred: int = wfield(ge=0)


@dataclass(frozen=True, slots=True)
class DestroyReport:
    inputs_abandoned: int = wfield(ge=0)


@dataclass(frozen=True, slots=True)
class StopReport:
    """How many inputs a stop abandoned (the original runtime's stop returns nothing)."""

    inputs_abandoned: int = wfield(ge=0)


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    inputs_recovered: int = wfield(ge=0)
    inputs_abandoned: int = wfield(ge=0)
    inputs_requeued: int = wfield(ge=0)
    details: tuple[str, ...] = wfield(default=(), omit="empty")
