"""Shared builders for the pure-core tests: fixed clock, deterministic ids, inputs, a session driver.

Nothing here asserts; the tests do. The driver only runs ``decide``/``evolve``
through :func:`meerkat_runtime.events.session.execute` and keeps the log, so
a test can fold it again or check every event it produced.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from meerkat_runtime.events import (
    DEFAULT_POLICY,
    Accept,
    AcceptDecision,
    ApplyBoundary,
    Command,
    ContinuationInput,
    ContinuationKind,
    Decision,
    DecisionContext,
    ExternalEventInput,
    ExternalOrigin,
    FlowOrigin,
    FlowStepInput,
    HandlingMode,
    Input,
    InputDurability,
    InputHeader,
    InputOrigin,
    InputVisibility,
    OperationInput,
    OperationStarted,
    OperatorOrigin,
    PeerConvention,
    PeerInput,
    PeerOrigin,
    PeerRequest,
    PeerResponseProgress,
    PeerResponseTerminal,
    Policy,
    PromptInput,
    ResponseProgressPhase,
    ResponseTerminalStatus,
    RuntimeEventEnvelope,
    RuntimeTurnMetadata,
    SessionState,
    StartRun,
    execute,
)
from meerkat_runtime.events.session import state_to_snapshot

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SESSION = "rt:session:01955b3c-1111-7000-8000-000000000000"
PEER_UUID = "01955b3c-aaaa-7000-8000-00000000beef"


def fixed_uuid(n: int, prefix: int = 0x0195) -> uuid.UUID:
    """A readable deterministic uuid: ``0195....-....-7...-8...-<n>``."""
    return uuid.UUID(f"{prefix:04x}5b3c-0000-7000-8000-{n:012x}")


class IdGen:
    """A deterministic id generator for ``DecisionContext.new_id``."""

    def __init__(self, prefix: int = 0xE000) -> None:
        self._prefix = prefix
        self._n: Iterator[int] = itertools.count(1)

    def __call__(self) -> uuid.UUID:
        return fixed_uuid(next(self._n), self._prefix)


_input_ids = itertools.count(1)


def next_input_id() -> uuid.UUID:
    return fixed_uuid(next(_input_ids), 0x0100)


_run_ids = itertools.count(1)


def next_run_id() -> uuid.UUID:
    return fixed_uuid(next(_run_ids), 0x0200)


def header(
    *,
    source: InputOrigin | None = None,
    durability: InputDurability = InputDurability.DURABLE,
    key: str | None = None,
    supersession: str | None = None,
    correlation: uuid.UUID | None = None,
    input_id: uuid.UUID | None = None,
    visibility: InputVisibility | None = None,
) -> InputHeader:
    return InputHeader(
        id=input_id or next_input_id(),
        timestamp=NOW,
        source=source or OperatorOrigin(),
        durability=durability,
        visibility=visibility or InputVisibility(),
        idempotency_key=key,
        supersession_key=supersession,
        correlation_id=correlation,
    )


def prompt(text: str = "hello", lane: HandlingMode | None = None, **kw: Any) -> PromptInput:
    meta = RuntimeTurnMetadata(handling_mode=lane) if lane is not None else None
    return PromptInput(content=text, header=header(**kw), turn_metadata=meta)


def flow_step(text: str = "step", lane: HandlingMode | None = None, **kw: Any) -> FlowStepInput:
    kw.setdefault("source", FlowOrigin(flow_id="flow-1", step_index=0))
    meta = RuntimeTurnMetadata(handling_mode=lane) if lane is not None else None
    return FlowStepInput(step_id="s1", content=text, header=header(**kw), turn_metadata=meta)


def external(
    event_type: str = "ci.status", lane: HandlingMode = HandlingMode.QUEUE, **kw: Any
) -> ExternalEventInput:
    kw.setdefault("source", ExternalOrigin(source_name="github"))
    return ExternalEventInput(
        event_type=event_type, payload={"state": "green"}, handling_mode=lane, header=header(**kw)
    )


def peer(
    convention: PeerConvention | None = None,
    lane: HandlingMode | None = None,
    text: str = "hi",
    injected: tuple[str, ...] = (),
    **kw: Any,
) -> PeerInput:
    kw.setdefault("source", PeerOrigin(peer_id=PEER_UUID, display_identity="Alice"))
    return PeerInput(
        content=text,
        header=header(**kw),
        convention=convention,
        handling_mode=lane,
        injected_context=injected,
    )


def peer_request(intent: str = "review", **kw: Any) -> PeerInput:
    return peer(PeerRequest(request_id="r-1", intent=intent), **kw)


def peer_progress(request_id: str = "r-7", **kw: Any) -> PeerInput:
    return peer(
        PeerResponseProgress(request_id=request_id, phase=ResponseProgressPhase.IN_PROGRESS),
        text="",
        **kw,
    )


def peer_terminal(
    request_id: str | None = None,
    status: ResponseTerminalStatus = ResponseTerminalStatus.COMPLETED,
    **kw: Any,
) -> PeerInput:
    rid = request_id if request_id is not None else str(fixed_uuid(0xABC, 0x0300))
    return peer(PeerResponseTerminal(request_id=rid, status=status), text="", **kw)


def continuation(
    lane: HandlingMode = HandlingMode.QUEUE,
    kind: ContinuationKind = ContinuationKind.ORDINARY,
    **kw: Any,
) -> ContinuationInput:
    return ContinuationInput(
        reason="resume", continuation_kind=kind, handling_mode=lane, header=header(**kw)
    )


_OP_IDS = itertools.count(1)


def operation(op_id: str | None = None, **kw: Any) -> OperationInput:
    """A ``started`` operation input, for a fresh operation unless ``op_id`` names one."""
    op_id = op_id or f"op-{next(_OP_IDS)}"
    return OperationInput(
        operation_id=op_id, event=OperationStarted(id=op_id, kind="shell"), header=header(**kw)
    )


@dataclass
class Driver:
    """Runs commands against one session with a fixed clock and deterministic ids.

    ``log`` collects every envelope decided so far, in order, so a test can
    fold it from scratch and compare.
    """

    session_id: str = SESSION
    attached: bool = False
    now: datetime = NOW
    ids: IdGen = field(default_factory=IdGen)
    log: list[RuntimeEventEnvelope] = field(default_factory=list)
    policy: Policy = DEFAULT_POLICY
    state: SessionState = field(init=False)

    def __post_init__(self) -> None:
        self.state = SessionState(session_id=self.session_id)

    def ctx(self, attached: bool | None = None) -> DecisionContext:
        return DecisionContext(
            now=self.now,
            new_id=self.ids,
            attached=self.attached if attached is None else attached,
            policy=self.policy,
        )

    def run(self, command: Command, *, attached: bool | None = None) -> Decision:
        decision, _ = execute(self.state, command, self.ctx(attached))
        self.log.extend(decision.events)
        self.now += timedelta(milliseconds=1)
        return decision

    def accept(self, inp: Input) -> AcceptDecision:
        reply = self.run(Accept(inp)).reply
        assert isinstance(reply, AcceptDecision)
        return reply

    def start(self, run_id: uuid.UUID | None = None) -> uuid.UUID:
        rid = run_id or next_run_id()
        self.run(StartRun(rid))
        return rid

    def boundary(self, run_id: uuid.UUID) -> Decision:
        return self.run(ApplyBoundary(run_id))

    def snapshot(self) -> dict[str, Any]:
        return state_to_snapshot(self.state)

    def phase_of(self, input_id: uuid.UUID) -> str:
        return self.state.inputs[input_id].current_state.value

    def codes(self, decision: Decision) -> list[str]:
        return [env.event.event_code for env in decision.events]
