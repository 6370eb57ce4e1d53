"""The input lifecycle: states, legal transitions, outcomes and ``InputState``.

``InputState`` is one immutable object holding the input's state and its
machine-owned seed; its wire form is the stored row, version 5 (for users:
docs/concepts/input-lifecycle.md and docs/reference/wire-format.md).
:meth:`InputState.transition` is the single gate for lifecycle moves: it
enforces :data:`INPUT_TRANSITIONS` exactly and appends a history entry.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar

from meerkat_runtime.errors import InvalidInput, MeerkatRuntimeError
from meerkat_runtime.events._codec import (
    Custom,
    JsonValue,
    join_path,
    slot_setter,
    tagged,
    wfield,
)
from meerkat_runtime.events.completion import CompletionOutcome
from meerkat_runtime.events.ingress import ContentShape
from meerkat_runtime.events.inputs import Input, InputDurability
from meerkat_runtime.events.policy import PolicySnapshot, RuntimeSemantics
from meerkat_runtime.events.run_primitive import HandlingMode

__all__ = [
    "INPUT_TRANSITIONS",
    "MAX_STAGE_ATTEMPTS",
    "STORED_INPUT_STATE_VERSION",
    "AbandonKind",
    "AbandonedOutcome",
    "CoalescedOutcome",
    "CoalescingSource",
    "ConsumedOutcome",
    "InputAbandonReason",
    "InputLifecycleState",
    "InputState",
    "InputStateEvent",
    "InputStateHistoryEntry",
    "InputTerminalOutcome",
    "InputTransitionError",
    "ProjectionSource",
    "ReconstructionSource",
    "SupersededOutcome",
    "with_completion",
]

MAX_STAGE_ATTEMPTS = 3
STORED_INPUT_STATE_VERSION = 5


class InputLifecycleState(StrEnum):
    """The nine input lifecycle states; four are terminal."""

    ACCEPTED = "accepted"
    QUEUED = "queued"
    STAGED = "staged"
    APPLIED = "applied"
    APPLIED_PENDING_CONSUMPTION = "applied_pending_consumption"
    CONSUMED = "consumed"
    SUPERSEDED = "superseded"
    COALESCED = "coalesced"
    ABANDONED = "abandoned"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL


L = InputLifecycleState
_TERMINAL = frozenset({L.CONSUMED, L.SUPERSEDED, L.COALESCED, L.ABANDONED})
_NON_TERMINAL = frozenset(L) - _TERMINAL

#: The legal moves: the lifecycle path, the side exits, and abandon from any non-terminal.
INPUT_TRANSITIONS: frozenset[tuple[InputLifecycleState, InputLifecycleState]] = frozenset(
    {
        (L.ACCEPTED, L.QUEUED),
        (L.ACCEPTED, L.CONSUMED),  # consume on accept (operations)
        (L.QUEUED, L.STAGED),
        (L.STAGED, L.QUEUED),  # rollback after a recoverable failure
        (L.STAGED, L.APPLIED),
        (L.STAGED, L.APPLIED_PENDING_CONSUMPTION),  # non-recoverable failure, boundary 0
        (L.APPLIED, L.APPLIED_PENDING_CONSUMPTION),
        (L.APPLIED_PENDING_CONSUMPTION, L.CONSUMED),
        (L.QUEUED, L.SUPERSEDED),
        (L.QUEUED, L.COALESCED),
    }
    | {(s, L.ABANDONED) for s in _NON_TERMINAL}
)

#: Recovery moves that are not ordinary lifecycle moves (docs: concepts/recovery.md).
RECOVERY_TRANSITIONS: frozenset[tuple[InputLifecycleState, InputLifecycleState]] = frozenset(
    {
        (L.ACCEPTED, L.QUEUED),
        (L.STAGED, L.QUEUED),
        (L.APPLIED, L.CONSUMED),
        (L.APPLIED_PENDING_CONSUMPTION, L.CONSUMED),
        (L.APPLIED, L.QUEUED),
        (L.APPLIED_PENDING_CONSUMPTION, L.QUEUED),
    }
)


class InputTransitionError(MeerkatRuntimeError):
    """An illegal input lifecycle move; the input is unchanged."""

    def __init__(self, input_id: uuid.UUID, from_state: str, to_state: str) -> None:
        self.input_id = input_id
        super().__init__(f"illegal input transition for {input_id}: {from_state} -> {to_state}")


# ---------------------------------------------------------------- abandon reasons


class AbandonKind(StrEnum):
    RETIRED = "retired"
    RESET = "reset"
    STOPPED = "stopped"
    DESTROYED = "destroyed"
    CANCELLED = "cancelled"
    MAX_ATTEMPTS_EXHAUSTED = "max_attempts_exhausted"


@dataclass(frozen=True, slots=True)
class InputAbandonReason:
    """Why an input was abandoned. Externally tagged on the wire: unit reasons are bare
    strings (``"reset"``), the other is ``{"max_attempts_exhausted": {"attempts": 3}}``."""

    kind: AbandonKind
    attempts: int | None = None

    def __str__(self) -> str:
        if self.kind is AbandonKind.MAX_ATTEMPTS_EXHAUSTED:
            return f"max attempts exhausted ({self.attempts} attempts)"
        return self.kind.value

    @classmethod
    def max_attempts_exhausted(cls, attempts: int) -> InputAbandonReason:
        return cls(AbandonKind.MAX_ATTEMPTS_EXHAUSTED, attempts)

    def __wire_encode__(self) -> Any:
        if self.kind is AbandonKind.MAX_ATTEMPTS_EXHAUSTED:
            return {"max_attempts_exhausted": {"attempts": self.attempts}}
        return self.kind.value

    @classmethod
    def __wire_decode__(cls, v: Any, path: str) -> InputAbandonReason:
        if isinstance(v, str):
            kind = _UNIT_REASONS.get(v)
            if kind is None:
                raise InvalidInput(f"unknown abandon reason {v[:64]!r}", path)
            return cls(kind)
        if isinstance(v, dict) and len(v) == 1 and "max_attempts_exhausted" in v:
            inner = v["max_attempts_exhausted"]
            where = join_path(path, "max_attempts_exhausted", "attempts")
            if not isinstance(inner, dict) or "attempts" not in inner:
                raise InvalidInput("missing required field", where)
            n = inner["attempts"]
            if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n < 2**64:
                raise InvalidInput("expected a non-negative 64-bit integer", where)
            return cls(AbandonKind.MAX_ATTEMPTS_EXHAUSTED, n)
        raise InvalidInput("expected an abandon reason (string or max_attempts_exhausted)", path)


_UNIT_REASONS = {k.value: k for k in AbandonKind if k is not AbandonKind.MAX_ATTEMPTS_EXHAUSTED}


# ---------------------------------------------------------------- outcomes and history


@dataclass(frozen=True, slots=True)
class InputTerminalOutcome:
    """How an input ended (tag ``outcome_type``)."""

    __tag_key__: ClassVar[str] = "outcome_type"


@tagged
@dataclass(frozen=True, slots=True)
class ConsumedOutcome(InputTerminalOutcome):
    __tag__: ClassVar[str] = "consumed"


@tagged
@dataclass(frozen=True, slots=True)
class SupersededOutcome(InputTerminalOutcome):
    __tag__: ClassVar[str] = "superseded"
    superseded_by: uuid.UUID


@tagged
@dataclass(frozen=True, slots=True)
class CoalescedOutcome(InputTerminalOutcome):
    __tag__: ClassVar[str] = "coalesced"
    aggregate_id: uuid.UUID


@tagged
@dataclass(frozen=True, slots=True)
class AbandonedOutcome(InputTerminalOutcome):
    __tag__: ClassVar[str] = "abandoned"
    reason: InputAbandonReason


@dataclass(frozen=True, slots=True)
class InputStateHistoryEntry:
    timestamp: datetime
    from_state: InputLifecycleState = wfield(wire_name="from", required=True)
    to: InputLifecycleState = wfield(required=True)
    reason: str | None = wfield(default=None, omit="none")


@dataclass(frozen=True, slots=True)
class InputStateEvent:
    timestamp: datetime
    state: InputLifecycleState
    detail: str | None = wfield(default=None, omit="none")


@dataclass(frozen=True, slots=True)
class ReconstructionSource:
    """Where a reconstructed input came from (tag ``source_type``)."""

    __tag_key__: ClassVar[str] = "source_type"


@tagged
@dataclass(frozen=True, slots=True)
class ProjectionSource(ReconstructionSource):
    __tag__: ClassVar[str] = "projection"
    rule_id: str
    source_event_id: str


@tagged
@dataclass(frozen=True, slots=True)
class CoalescingSource(ReconstructionSource):
    __tag__: ClassVar[str] = "coalescing"
    source_input_ids: tuple[uuid.UUID, ...] = wfield(default=(), required=True)


# ---------------------------------------------------------------- InputState


def _check_version(v: Any, path: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise InvalidInput("expected integer", path)
    if v not in (3, 4, STORED_INPUT_STATE_VERSION):
        raise InvalidInput(
            f"unsupported stored input state version {v} (expected current "
            f"{STORED_INPUT_STATE_VERSION}; 3 and 4 are migrated)",
            path,
        )
    return v


StoredVersion = Annotated[int, Custom(lambda v: v, _check_version)]


@dataclass(frozen=True, slots=True)
class InputState:
    """The full state of one input: lifecycle phase, outcome, history, policy and seed facts."""

    #: The stored row's key order (Rust's ``StoredInputState``).
    __wire_order__: ClassVar[tuple[str, ...]] = (
        "stored_input_state_version",
        "input_id",
        "current_state",
        "policy",
        "runtime_semantics",
        "directed_run_started_attribution",
        "terminal_outcome",
        "durability",
        "idempotency_key",
        "attempt_count",
        "recovery_count",
        "history",
        "reconstruction_source",
        "terminal_completion",
        "terminal_completion_unavailable",
        "interaction_terminal_outbox",
        "persisted_input",
        "last_run_id",
        "last_boundary_sequence",
        "admission_sequence",
        "recovery_lane",
        "created_at",
        "updated_at",
    )

    input_id: uuid.UUID
    current_state: InputLifecycleState
    created_at: datetime
    updated_at: datetime
    stored_input_state_version: StoredVersion = wfield(
        default=STORED_INPUT_STATE_VERSION, required=True
    )
    policy: PolicySnapshot | None = wfield(default=None, omit="none")
    runtime_semantics: RuntimeSemantics | None = wfield(default=None, omit="none")
    directed_run_started_attribution: JsonValue = wfield(default=None, omit="none")
    terminal_outcome: InputTerminalOutcome | None = wfield(default=None, omit="none")
    durability: InputDurability | None = wfield(default=None, omit="none")
    idempotency_key: str | None = wfield(default=None, omit="none")
    attempt_count: int = wfield(default=0, ge=0)
    recovery_count: int = wfield(default=0, ge=0)
    history: tuple[InputStateHistoryEntry, ...] = wfield(default=(), omit="empty")
    reconstruction_source: ReconstructionSource | None = wfield(default=None, omit="none")
    terminal_completion: CompletionOutcome | None = wfield(default=None, omit="none")
    terminal_completion_unavailable: bool = wfield(default=False, omit="false")
    interaction_terminal_outbox: JsonValue = wfield(default=None, omit="none")
    persisted_input: Input | None = wfield(default=None, omit="none")
    last_run_id: uuid.UUID | None = wfield(default=None, omit="none")
    last_boundary_sequence: int | None = wfield(default=None, omit="none", ge=0)
    admission_sequence: int | None = wfield(default=None, omit="none", ge=0)
    recovery_lane: HandlingMode | None = wfield(default=None, omit="none")

    def __post_init__(self) -> None:
        if self.stored_input_state_version != STORED_INPUT_STATE_VERSION:
            # Migrate v3/v4 rows: a v4 terminal row has no recorded completion.
            unavailable = self.current_state.is_terminal and self.terminal_completion is None
            object.__setattr__(self, "stored_input_state_version", STORED_INPUT_STATE_VERSION)
            if unavailable:
                object.__setattr__(self, "terminal_completion_unavailable", True)

    @property
    def is_terminal(self) -> bool:
        return self.current_state.is_terminal

    @property
    def kind(self) -> str | None:
        """The input kind of the persisted input, when it is retained."""
        return self.persisted_input.kind.value if self.persisted_input is not None else None

    @property
    def content_shape(self) -> ContentShape | None:
        """The content shape of the persisted input, when it is retained."""
        inp = self.persisted_input
        return ContentShape(inp.kind) if inp is not None else None

    def transition(
        self,
        to: InputLifecycleState,
        at: datetime,
        reason: str | None = None,
        *,
        recovery: bool = False,
        **changes: Any,
    ) -> InputState:
        """Return the state after a legal move to ``to`` (with a history entry), else raise."""
        frm = self.current_state
        legal = (frm, to) in INPUT_TRANSITIONS or (recovery and (frm, to) in RECOVERY_TRANSITIONS)
        if not legal:
            raise InputTransitionError(self.input_id, frm.value, to.value)
        entry = _history_entry(at, frm, to, reason)
        # A field-by-field copy: ``dataclasses.replace`` re-runs __init__ and
        # __post_init__ and dominated folding time (about 35 us a call).
        new = _copy_fields(self)
        object.__setattr__(new, "current_state", to)
        object.__setattr__(new, "history", (*self.history, entry))
        object.__setattr__(new, "updated_at", at)
        for name, value in changes.items():
            if name not in _FIELD_SET:
                raise TypeError(f"InputState has no field {name!r}")
            object.__setattr__(new, name, value)
        return new


def with_completion(state: InputState, completion: CompletionOutcome | None) -> InputState:
    """``state`` with ``terminal_completion`` set: ``dataclasses.replace(state,
    terminal_completion=completion)`` without re-running ``__init__`` (once per input a
    run ends, on the accept path and in every fold of a log)."""
    new = _copy_fields(state)
    object.__setattr__(new, "terminal_completion", completion)
    return new


_FIELD_NAMES = tuple(f.name for f in fields(InputState))
_FIELD_SET = frozenset(_FIELD_NAMES)


def _field_copier() -> Callable[[InputState], InputState]:
    """A straight-line copy of every slot of an ``InputState`` (no ``__init__``).

    Generated so that each field is one slot-descriptor store with no loop and no
    name lookup: about 1.2 us instead of 3.2 us for a loop of ``getattr`` and
    ``object.__setattr__``.
    """
    env: dict[str, Any] = {"_new": object.__new__, "_cls": InputState}
    lines = ["def copy_fields(src):", "    new = _new(_cls)"]
    for n, name in enumerate(_FIELD_NAMES):
        env[f"_set{n}"] = slot_setter(InputState, name)
        lines.append(f"    _set{n}(new, src.{name})")
    lines.append("    return new")
    exec("\n".join(lines), env)
    copier: Callable[[InputState], InputState] = env["copy_fields"]
    return copier


_copy_fields = _field_copier()

_new_object = object.__new__
_set_timestamp = slot_setter(InputStateHistoryEntry, "timestamp")
_set_from_state = slot_setter(InputStateHistoryEntry, "from_state")
_set_to = slot_setter(InputStateHistoryEntry, "to")
_set_reason = slot_setter(InputStateHistoryEntry, "reason")


def _history_entry(
    at: datetime, frm: InputLifecycleState, to: InputLifecycleState, reason: str | None
) -> InputStateHistoryEntry:
    """``InputStateHistoryEntry(timestamp=at, from_state=frm, to=to, reason=reason)`` by its
    slots, without the frozen ``__init__``'s four ``object.__setattr__`` calls: one per
    transition, on the accept path and in every fold of a log (0.8 against 0.35 us)."""
    entry = _new_object(InputStateHistoryEntry)
    _set_timestamp(entry, at)
    _set_from_state(entry, frm)
    _set_to(entry, to)
    _set_reason(entry, reason)
    return entry


def accepted_input_state(
    input_id: uuid.UUID,
    at: datetime,
    policy: PolicySnapshot | None,
    runtime_semantics: RuntimeSemantics | None,
    persisted_input: Input | None,
) -> InputState:
    """The ``InputState`` of a just-accepted input, equal to ``InputState(...)`` of the same.

    Copied from a template with every other field at its default instead of
    running the dataclass's ``__init__`` (23 frozen-attribute stores and
    ``__post_init__``): once per accepted input on the accept path.
    """
    header = persisted_input.input_header if persisted_input is not None else None
    new = _copy_fields(_ACCEPTED_TEMPLATE)
    _set = object.__setattr__
    _set(new, "input_id", input_id)
    _set(new, "created_at", at)
    _set(new, "updated_at", at)
    _set(new, "policy", policy)
    _set(new, "runtime_semantics", runtime_semantics)
    _set(new, "persisted_input", persisted_input)
    if header is not None:
        _set(new, "durability", header.durability)
        _set(new, "idempotency_key", header.idempotency_key)
    return new


_ACCEPTED_TEMPLATE = InputState(
    input_id=uuid.UUID(int=0),
    current_state=InputLifecycleState.ACCEPTED,
    created_at=datetime.min,
    updated_at=datetime.min,
)
