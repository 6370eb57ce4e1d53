"""The session decider: ``decide(state, command, ctx)`` and ``evolve(state, envelope)``.

A session's whole state is ``fold(evolve, SessionState(id), log)``. Every rule
of the spec that changes a session is a decision here: accepting (validation,
idempotency, policy, coalescing, supersession, queueing), staging a run,
applying its boundary, completing, failing or cancelling it, and the lifecycle
operations (retire, recycle, reset, destroy, stop, recover). No threads, no
clocks, no I/O: time and fresh ids come in through :class:`DecisionContext`.

Design choices, with reasons:

* **What the log holds.** The spec's own events, in envelopes, with a few
  extra optional fields a fold needs (see ``runtime_event``). One decision is
  one atomic append of all its envelopes, the event-sourced form of the Rust
  ``atomic_apply``; the Rust stored row is a fold (``InputState``).
* **Persisted coarse state.** The fold keeps a phase in ``{idle, running,
  retired, stopped, destroyed}``; ``attached`` is the observed form of
  ``idle`` while an executor is bound (``DecisionContext.attached``), so
  events name the states a host saw, and a restart never resurrects a binding
  that died with its process. ``initializing`` is reachable only in the
  runtime state table: a session comes into being with its first event.
* **Runs.** A run stages the head of the ordinary queue (``queue_next_turn``)
  plus every input of the steer queue (``steer_batch``). A session wants a run
  when it may prepare one (idle, or retired draining) and its ordinary queue
  is non-empty, or its steer queue is non-empty and a wake is pending. So an
  input whose wake mode is ``none`` never starts a run on its own, except in a
  retired session: it accepts nothing that could wake it, so it drains every
  queued input (retire with a loop drains what was queued).
* **Receipts.** A checkpoint boundary (:class:`ApplyBoundary`, reported by
  an executor through ``request.checkpoint``) writes its ``input.applied``
  events and a ``run.checkpointed`` event carrying the
  :class:`RunBoundaryReceipt` in one atomic append. At a cold restart an
  applied input of the interrupted run whose boundary has its receipt in the
  log is ``consumed`` (not run again); one whose receipt is proven missing
  (an ``input.applied`` with no ``run.checkpointed`` for its boundary, as a
  log written before receipts existed may hold) is re-queued. The fold keeps
  the receipted sequences of the run in flight only; a receipt itself is
  read back from the log (``session.boundary_receipt``).
* **Completion outcomes.** ``run.completed`` carries the outcome
  when it is not ``completed`` with the output (``completed_without_result``,
  ``callback_pending``, ``callback_batch_pending``,
  ``completed_with_finalization_failure``); inputs abandoned by a cancel-run
  resolve as ``cancelled``; a non-recoverable failure consumes its
  contributors (``abandoned_with_error``); inputs abandoned after their last
  attempt resolve as ``abandoned`` whose ``error`` is the last failed run's
  error (made terminal).
* **Retries.** ``DecisionContext.max_attempts`` (the runtime's retry policy,
  3 by default) bounds the attempts of a staged input.
* **Crash loops.** Cold recovery applies the max-attempts rule to staged
  inputs too (the spec re-queues them unconditionally), so an input that kills
  its process three times is abandoned instead of looping forever.
* **Policy.** ``DecisionContext.policy`` (the runtime's, the default table
  otherwise) decides each accept; its version is recorded with the decision in
  ``input.accepted``. Folding reads recorded decisions and never asks a policy,
  so a log replays the same under any policy.
* **Unwoken inputs.** An ordinary-queue input admitted with wake ``none`` while
  no run is in flight (a silent intent, ``wake=False``) does not start a run:
  it waits until something wakes the session, and the next run drains it (the
  Rust loop drains its whole queue once woken). Inputs queued during a run are
  drained after it, as before.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

import orjson

from meerkat_runtime.errors import (
    InvalidInput,
    OperationLifecycleError,
    RuntimeControlPlaneError,
    RuntimeStateTransitionError,
)
from meerkat_runtime.events._codec import from_wire, interned, to_wire, to_wire_tagged
from meerkat_runtime.events.coalescing import Supersedes, check_supersession
from meerkat_runtime.events.completion import (
    Abandoned,
    AbandonedWithError,
    Cancelled,
    Completed,
    CompletedWithoutResult,
    CompletionOutcome,
    TurnTerminalCauseKind,
    TurnTerminalOutcome,
)
from meerkat_runtime.events.ids import parse_uuid
from meerkat_runtime.events.input_fold import (
    REASON_RECEIPT_FOUND,
    REASON_RECEIPT_MISSING,
    REASON_RECOVERY,
    evolve_input,
    needs_admission_sequence,
)
from meerkat_runtime.events.input_state import (
    MAX_STAGE_ATTEMPTS,
    AbandonKind,
    InputAbandonReason,
    InputLifecycleState,
    InputState,
    with_completion,
)
from meerkat_runtime.events.inputs import (
    ContentInput,
    ContinuationInput,
    ExternalEventInput,
    ExternalOrigin,
    FlowOrigin,
    FlowStepInput,
    Input,
    InputDurability,
    InputKind,
    OperationInput,
    OperatorOrigin,
    PeerInput,
    PeerMessage,
    PeerOrigin,
    PeerResponseProgress,
    PeerResponseTerminal,
    PromptInput,
    ResponseTerminalStatus,
)
from meerkat_runtime.events.operations import (
    OWNER_GONE,
    OperationRegistry,
    check_operation_input,
)
from meerkat_runtime.events.policy import (
    DEFAULT_POLICY,
    AdmissionPlan,
    Policy,
    PolicySnapshot,
    WakeMode,
)
from meerkat_runtime.events.queue import InputQueue
from meerkat_runtime.events.reports import (
    DestroyReport,
    DurabilityViolation,
    NotReady,
    PeerHandlingModeInvalid,
    PeerResponseTerminalInvalid,
    RecoveryReport,
    RecycleReport,
    RejectReason,
    ResetReport,
    RetireReport,
    StopReport,
)
from meerkat_runtime.events.run_primitive import (
    BlocksRenderable,
    ConversationAppend,
    ConversationAppendRole,
    ConversationContextAppend,
    CoreRenderable,
    HandlingMode,
    JsonRenderable,
    RunApplyBoundary,
    RunPrimitive,
    RuntimeExecutionKind,
    RuntimeTurnMetadata,
    StagedRunInput,
    TextRenderable,
)
from meerkat_runtime.events.runtime_event import (
    InputAbandoned,
    InputAccepted,
    InputApplied,
    InputCoalesced,
    InputConsumed,
    InputDeduplicated,
    InputLifecycleEvent,
    InputQueued,
    InputStaged,
    InputStateTransitioned,
    InputSuperseded,
    RunBoundaryReceipt,
    RunCancelled,
    RunCheckpointed,
    RunCompleted,
    RunError,
    RunFailed,
    RunStarted,
    RuntimeCreated,
    RuntimeDestroyed,
    RuntimeEvent,
    RuntimeEventEnvelope,
    RuntimeProjectionEvent,
    RuntimeRecycled,
    RuntimeRetired,
    RuntimeStateChangeEvent,
    SilentIntentsSet,
    new_envelope,
)
from meerkat_runtime.events.runtime_state import RuntimeState, check_transition
from meerkat_runtime.events.silent_intent import matches_silent_intent
from meerkat_runtime.events.timefmt import format_timestamp, parse_timestamp
from meerkat_runtime.events.upcast import input_state_from_stored

__all__ = [
    "SNAPSHOT_MEMO_MIN_INPUTS",
    "Accept",
    "AcceptDecision",
    "ApplyBoundary",
    "CancelRun",
    "Command",
    "CompleteRun",
    "Create",
    "Decision",
    "DecisionContext",
    "Destroy",
    "FailRun",
    "Recover",
    "Recycle",
    "Reset",
    "Retire",
    "RunInfo",
    "SessionState",
    "SetSilentIntents",
    "SnapshotMemo",
    "StartRun",
    "Stop",
    "compact",
    "completion_outcome",
    "decide",
    "evolve",
    "evolve_settling",
    "execute",
    "fold",
    "settle_run_inputs",
    "state_from_snapshot",
    "state_to_snapshot",
    "wants_run",
]

L = InputLifecycleState
S = RuntimeState
SNAPSHOT_FORMAT = 2
"""2: terminal inputs compacted out (``retired``); 1 (every input kept) still loads."""

# ---------------------------------------------------------------- state


@dataclass(slots=True)
class RunInfo:
    """The run in flight."""

    run_id: uuid.UUID
    pre_run_phase: RuntimeState
    primitive: RunPrimitive | None = None
    input_ids: list[uuid.UUID] = field(default_factory=list)
    boundary_sequence: int = 0
    # Boundary sequences of this run whose receipt (run.checkpointed) is in the log.
    receipts: set[int] = field(default_factory=set)


@dataclass(slots=True)
class SessionState:
    """Everything known about one session, folded from its log.

    ``evolve`` updates it in place (a fold of 100,000 events must not copy a
    growing dict per event); ``decide`` only reads it.
    """

    session_id: str
    version: int = 0
    created: bool = False
    phase: RuntimeState = S.IDLE
    run: RunInfo | None = None
    inputs: dict[uuid.UUID, InputState] = field(default_factory=dict)
    queue: InputQueue = field(default_factory=InputQueue)
    steer_queue: InputQueue = field(default_factory=InputQueue)
    idempotency: dict[str, uuid.UUID] = field(default_factory=dict)
    # Ids (as ints) of the terminal inputs :func:`compact` took out of ``inputs``: an
    # input presented again under the same id is still a duplicate.
    retired: set[int] = field(default_factory=set)
    admission_counter: int = 0
    wake_pending: bool = False
    updated_at: datetime | None = None
    silent_intents: frozenset[str] = frozenset()
    # Ordinary-queue inputs admitted with wake none while no run was in flight: they
    # start no run of their own (see the module docstring); the next run clears it.
    unwoken: set[uuid.UUID] = field(default_factory=set)
    # The operations its operation inputs report (events/operations.py).
    operations: OperationRegistry = field(default_factory=OperationRegistry)

    def observed_state(self, attached: bool) -> RuntimeState:
        """The state a host sees: ``idle`` reads ``attached`` while an executor is bound."""
        if self.phase is S.IDLE and attached:
            return S.ATTACHED
        return self.phase

    def knows(self, input_id: uuid.UUID) -> bool:
        """Whether the session ever accepted ``input_id`` (held, or compacted out)."""
        if input_id in self.inputs:
            return True
        # a malformed id (not a UUID) reaches here only to be refused at the append
        return isinstance(input_id, uuid.UUID) and input_id.int in self.retired

    def non_terminal_ids(self) -> list[uuid.UUID]:
        return [i for i, s in self.inputs.items() if not s.current_state.is_terminal]

    def lane_of(self, input_id: uuid.UUID) -> InputQueue:
        st = self.inputs[input_id]
        return self.steer_queue if st.recovery_lane is HandlingMode.STEER else self.queue


def compact(state: SessionState, candidates: Iterable[uuid.UUID] | None = None) -> int:
    """Take the terminal inputs out of ``state.inputs`` (only ``candidates``, when
    given: say, the inputs a commit settled); returns how many.

    What stays is what deciding needs: live inputs, every input of the run in
    flight (its end still writes their completion), the idempotency keys and the
    ids of the inputs taken out (:attr:`SessionState.retired`, for deduplication).
    So a session's state and snapshot grow with its live inputs, not its history;
    the log (and the ledger) keep every input's full state. ``decide`` gives the
    same decisions on a compacted state as on a full one.
    """
    inputs = state.inputs
    run = state.run
    in_run = set(run.input_ids) if run is not None else set()
    gone = [
        iid
        for iid in (list(inputs) if candidates is None else candidates)
        if (st := inputs.get(iid)) is not None
        and st.current_state.is_terminal
        and iid not in in_run
    ]
    for iid in gone:
        del inputs[iid]
        state.retired.add(iid.int)
    return len(gone)


def wants_run(state: SessionState) -> bool:
    """True when the session should start a run now (see the module docstring)."""
    if state.run is not None or state.phase not in (S.IDLE, S.RETIRED):
        return False
    if state.phase is S.RETIRED:
        return bool(state.queue) or bool(state.steer_queue)
    if state.wake_pending:
        return bool(state.queue) or bool(state.steer_queue)
    if state.unwoken:
        return any(i not in state.unwoken for i in state.queue)
    return bool(state.queue)


# ---------------------------------------------------------------- commands


@dataclass(frozen=True, slots=True)
class Accept:
    """Admit ``input``; ``wake=False`` is spec 6.2's "without wake" (wake ``none``)."""

    input: Input
    wake: bool = True


@dataclass(frozen=True, slots=True)
class StartRun:
    run_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class ApplyBoundary:
    """A checkpoint boundary of the run: stage the ``absorbed`` steer-lane inputs still
    queued, apply every staged contributor, and write the boundary receipt (the reply;
    None when ``run_id`` is not the run in flight)."""

    run_id: uuid.UUID
    absorbed: tuple[uuid.UUID, ...] = ()
    conversation_digest: str | None = None
    message_count: int = 0


@dataclass(frozen=True, slots=True)
class CompleteRun:
    """Complete the run; ``outcome`` is what waiters get when it is not ``completed``."""

    run_id: uuid.UUID
    output: Any = None
    outcome: CompletionOutcome | None = None


@dataclass(frozen=True, slots=True)
class FailRun:
    run_id: uuid.UUID
    error: RunError


@dataclass(frozen=True, slots=True)
class CancelRun:
    """Cancel the run; ``rollback`` re-queues its staged inputs (an executor's own cancel)
    instead of abandoning them (the spec's control-plane cancel)."""

    run_id: uuid.UUID
    rollback: bool = False


@dataclass(frozen=True, slots=True)
class Retire:
    loop_attached: bool


@dataclass(frozen=True, slots=True)
class Reset:
    pass


@dataclass(frozen=True, slots=True)
class Stop:
    pass


@dataclass(frozen=True, slots=True)
class Destroy:
    pass


@dataclass(frozen=True, slots=True)
class Recycle:
    pass


@dataclass(frozen=True, slots=True)
class Recover:
    """Apply the recovery rules. ``cold``: the log was written by a process that is gone.
    ``reregister``: a stopped session comes back to idle (only an explicit ``session.recover()``)."""

    cold: bool = False
    reregister: bool = False


@dataclass(frozen=True, slots=True)
class SetSilentIntents:
    """Replace the session's silent intents (empty clears them); allowed while idle,
    attached, running or retired, as in the Rust machine (not stopped or destroyed)."""

    intents: frozenset[str]


@dataclass(frozen=True, slots=True)
class Create:
    """Bring a session into being (``runtime_created``) without an input; a no-op if it
    exists (a destroyed session stays destroyed)."""


Command = (
    Accept
    | StartRun
    | ApplyBoundary
    | CompleteRun
    | FailRun
    | CancelRun
    | Retire
    | Reset
    | Stop
    | Destroy
    | Recycle
    | Recover
    | Create
    | SetSilentIntents
)


@dataclass(slots=True)
class DecisionContext:
    """What a decision may know of the outside world."""

    now: datetime
    new_id: Callable[[], uuid.UUID]
    attached: bool = False
    max_attempts: int = MAX_STAGE_ATTEMPTS
    policy: Policy = DEFAULT_POLICY


@dataclass(frozen=True, slots=True)
class AcceptDecision:
    """The pure outcome of an accept; the actor layer adds the state and completion handle."""

    kind: Literal["accepted", "deduplicated", "rejected"]
    input_id: uuid.UUID
    existing_id: uuid.UUID | None = None
    reason: RejectReason | None = None
    plan: AdmissionPlan | None = None
    # An accepted operation input whose event its operation's lifecycle refuses: the
    # registry is left as it was (see events/operations.py).
    operation_error: OperationLifecycleError | None = None


@dataclass(slots=True)
class Decision:
    events: list[RuntimeEventEnvelope]
    reply: Any = None


# ---------------------------------------------------------------- decide


class _Builder:
    """Collects the events of one decision into envelopes with fresh ids and sequences."""

    __slots__ = ("ctx", "envelopes", "state")

    def __init__(self, state: SessionState, ctx: DecisionContext) -> None:
        self.state = state
        self.ctx = ctx
        self.envelopes: list[RuntimeEventEnvelope] = []

    def add(self, event: RuntimeEvent) -> None:
        if not self.state.created and not self.envelopes:
            self.add_created()
        self._append(event)

    def add_created(self) -> None:
        self._append(RuntimeCreated(runtime_id=self.state.session_id))

    def _append(self, event: RuntimeEvent) -> None:
        self.envelopes.append(
            new_envelope(
                self.ctx.new_id(),
                self.ctx.now,
                self.state.session_id,
                event,
                self.state.version + len(self.envelopes) + 1,
            )
        )

    def state_change(self, frm: RuntimeState, to: RuntimeState) -> None:
        check_transition(frm, to)
        if frm is not to:
            self.add(RuntimeStateChangeEvent(from_state=frm, to=to))

    def to_ready(self, frm: RuntimeState) -> None:
        """Move to ``idle``, observed as ``attached`` while an executor is bound.

        The table has no ``retired -> attached`` (or ``initializing -> attached``):
        such a move is written as ``-> idle`` then ``idle -> attached``, so every
        event is a legal move and the last one names the state the host sees.
        """
        ready = S.ATTACHED if self.ctx.attached else S.IDLE
        if frm not in (S.IDLE, S.ATTACHED):
            self.state_change(frm, S.IDLE)
            frm = S.IDLE
        self.state_change(frm, ready)

    def done(self, reply: Any = None) -> Decision:
        return Decision(self.envelopes, reply)


def decide(state: SessionState, command: Command, ctx: DecisionContext) -> Decision:
    """Decide what ``command`` does to ``state``: the events to append and the reply.

    Raises :class:`RuntimeStateTransitionError` (nothing changes) when the
    current state forbids the operation, and :class:`InvalidInput` for a
    structurally invalid directed input. Never mutates ``state``.
    """
    handler = _DECIDERS[type(command)]
    return handler(state, command, _Builder(state, ctx))


def _decide_accept(state: SessionState, cmd: Accept, b: _Builder) -> Decision:
    inp = cmd.input
    header = inp.input_header
    input_id = header.id
    observed = state.observed_state(b.ctx.attached)
    if not observed.accepts_input:
        return b.done(AcceptDecision("rejected", input_id, reason=NotReady(state=observed)))
    _check_directed(inp)
    reason = _validate(inp)
    if reason is not None:
        return b.done(AcceptDecision("rejected", input_id, reason=reason))
    existing = state.idempotency.get(header.idempotency_key) if header.idempotency_key else None
    if existing is None and state.knows(input_id):
        existing = input_id  # the same input presented again: never overwrite the ledger
    if existing is not None:
        b.add(InputDeduplicated(input_id=input_id, existing_id=existing))
        return b.done(AcceptDecision("deduplicated", input_id, existing_id=existing))
    # Admitted whatever the operation's lifecycle says (as Rust admits it); the registry
    # applies the event only when legal, and the reply names a refused one.
    refusal = (
        check_operation_input(state.operations, inp) if isinstance(inp, OperationInput) else None
    )

    plan = _resolve(state, cmd, b.ctx.policy)
    b.add(
        InputAccepted(
            input_id=input_id,
            input=inp,
            policy=interned(
                PolicySnapshot(version=plan.decision.policy_version, decision=plan.decision)
            ),
            runtime_semantics=plan.semantics,
        )
    )
    if not plan.consume_on_accept:
        older = _older_in_scope(state, inp)
        if older is not None:
            if plan.coalesces:
                b.add(InputCoalesced(input_id=older, aggregate_id=input_id))
            else:
                b.add(InputSuperseded(input_id=older, superseded_by=input_id))
        b.add(InputQueued(input_id=input_id, lane=plan.lane))
    return b.done(AcceptDecision("accepted", input_id, plan=plan, operation_error=refusal))


def _resolve(state: SessionState, cmd: Accept, policy: Policy) -> AdmissionPlan:
    """Ask the policy; the decision carries the policy's own version, whatever it wrote."""
    plan = policy.resolve(
        cmd.input,
        state.phase is not S.RUNNING,
        silent_intent=matches_silent_intent(cmd.input, state.silent_intents),
        without_wake=not cmd.wake,
        # The run in flight is this port's only turn boundary (it is running then).
        active_turn_boundary=state.run is not None,
    )
    version = policy.version
    if plan.decision.policy_version != version:
        plan = replace(plan, decision=replace(plan.decision, policy_version=version))
    return plan


def _older_in_scope(state: SessionState, inp: Input) -> uuid.UUID | None:
    if inp.input_header.supersession_key is None:
        return None
    for lane in (state.queue, state.steer_queue):
        for qid in lane:
            queued = state.inputs[qid].persisted_input
            if queued is not None and isinstance(
                check_supersession(inp, queued, state.session_id), Supersedes
            ):
                return qid
    return None


def _check_directed(inp: Input) -> None:
    """Directed-interaction checks; a violation is malformed input."""
    if not isinstance(inp, (FlowStepInput, PeerInput)) or inp.directed_interaction_id is None:
        return
    h = inp.input_header
    did = inp.directed_interaction_id
    path = "directed_interaction_id"

    def fail(msg: str) -> None:
        raise InvalidInput(f"directed input invalid: {msg}", path)

    if did != h.id:
        fail("interaction id must equal the header id")
    if h.correlation_id != did:
        fail("correlation id must equal the interaction id")
    if h.idempotency_key != str(did):
        fail("idempotency key must equal the interaction id")
    if h.durability is not InputDurability.DURABLE:
        fail("durability must be durable")
    if isinstance(inp, FlowStepInput):
        src = h.source
        if not isinstance(src, FlowOrigin) or not src.flow_id or src.step_index != 0:
            fail("a directed flow step needs origin flow with a flow id and step index 0")
    else:
        src = h.source
        if not isinstance(src, PeerOrigin) or not src.peer_id or not src.runtime_id:
            fail("a directed peer input needs origin peer with a peer id and a runtime id")
        if not (inp.convention is None or isinstance(inp.convention, PeerMessage)):
            fail("a directed peer input must use the message convention")
        if inp.payload is not None or inp.sender_taint is not None:
            fail("a directed peer input carries no payload and no sender taint")
        if h.supersession_key is not None:
            fail("a directed peer input carries no supersession key")


_DERIVED_FORBIDDEN = frozenset(
    {
        InputKind.PROMPT,
        InputKind.PEER_MESSAGE,
        InputKind.PEER_REQUEST,
        InputKind.PEER_RESPONSE_TERMINAL,
        InputKind.FLOW_STEP,
    }
)


def _validate(inp: Input) -> RejectReason | None:
    """Admission validation (durability, peer handling mode, peer terminal response), in order."""
    h = inp.input_header
    kind = inp.kind
    if h.durability is InputDurability.DERIVED:
        if isinstance(h.source, (OperatorOrigin, PeerOrigin, ExternalOrigin)):
            return DurabilityViolation(detail="External ingress cannot submit derived inputs")
        if kind in _DERIVED_FORBIDDEN:
            return DurabilityViolation(detail=f"Derived durability forbidden for {kind}")
    if isinstance(inp, PeerInput):
        if inp.handling_mode is HandlingMode.STEER and inp.injected_context:
            return PeerHandlingModeInvalid(
                detail="steer handling_mode cannot carry injected context on peer inputs"
            )
        if isinstance(inp.convention, PeerResponseProgress) and inp.handling_mode is not None:
            return PeerHandlingModeInvalid(
                detail="handling_mode is forbidden on ResponseProgress peer inputs"
            )
        if isinstance(inp.convention, PeerResponseTerminal) and isinstance(h.source, PeerOrigin):
            return _validate_peer_terminal(inp.convention, h.source)
    return None


def _is_uuid(text: str) -> bool:
    """The codec's rule (``parse_uuid``): ``uuid.UUID`` would also take ``0195_b3c...``."""
    try:
        parse_uuid(text)
    except InvalidInput:
        return False
    return True


def _validate_peer_terminal(
    conv: PeerResponseTerminal, origin: PeerOrigin
) -> PeerResponseTerminalInvalid | None:
    def bad(detail: str) -> PeerResponseTerminalInvalid:
        return PeerResponseTerminalInvalid(detail=detail)

    rid = conv.request_id.strip()
    if not rid:
        return bad("correlation id cannot be empty")
    if not _is_uuid(rid):
        return bad(f"correlation id must be a UUID: {conv.request_id}")
    if not _is_uuid(origin.peer_id.strip()):
        return bad(f"peer id must be a UUID: {origin.peer_id}")
    name = origin.display_identity
    if name is None or not name.strip():
        return bad("display identity cannot be empty")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return bad("display identity cannot contain control characters")
    if origin.runtime_id is not None and not origin.runtime_id.strip():
        return bad("runtime id cannot be blank")
    if conv.status is ResponseTerminalStatus.CANCELLED:
        return bad("peer response terminal status rejected by generated authority: cancelled")
    return None


# ---- runs


def _decide_start_run(state: SessionState, cmd: StartRun, b: _Builder) -> Decision:
    if state.run is not None:
        raise RuntimeControlPlaneError("invalid_state", "a run is already in flight")
    observed = state.observed_state(b.ctx.attached)
    check_transition(observed, S.RUNNING)
    batch: list[uuid.UUID] = []
    head = state.queue.peek()
    if head is not None:
        batch.append(head)
    batch.extend(state.steer_queue)
    if not batch:
        raise RuntimeControlPlaneError("invalid_state", "no queued input to run")
    primitive = _lower(state, batch, head is not None)
    b.add(RunStarted(run_id=cmd.run_id, primitive=primitive))
    b.state_change(observed, S.RUNNING)
    for iid in batch:
        b.add(InputStaged(input_id=iid, run_id=cmd.run_id))
    return b.done(primitive)


def _renderable(content: ContentInput) -> CoreRenderable | None:
    if isinstance(content, str):
        return TextRenderable(text=content) if content else None
    return BlocksRenderable(blocks=content) if content else None


def _lower(state: SessionState, batch: Sequence[uuid.UUID], has_head: bool) -> StagedRunInput:
    """Lower staged inputs into one run primitive (core never sees inputs)."""
    appends: list[ConversationAppend] = []
    context: list[ConversationContextAppend] = []
    metadata: RuntimeTurnMetadata | None = None
    kinds: list[RuntimeExecutionKind] = []
    user = ConversationAppendRole.USER
    for iid in batch:
        st = state.inputs[iid]
        inp = st.persisted_input
        if st.runtime_semantics and st.runtime_semantics.execution_kind:
            kinds.append(st.runtime_semantics.execution_kind)
        if isinstance(inp, PromptInput):
            appends.extend(inp.typed_turn_appends)
            r = _renderable(inp.content)
            if r is not None:
                appends.append(ConversationAppend(role=user, content=r))
            metadata = metadata or inp.turn_metadata
        elif isinstance(inp, FlowStepInput):
            r = _renderable(inp.content)
            if r is not None:
                appends.append(ConversationAppend(role=user, content=r))
            metadata = metadata or inp.turn_metadata
        elif isinstance(inp, PeerInput):
            r = _renderable(inp.content)
            if r is not None:
                appends.append(ConversationAppend(role=user, content=r))
            if inp.payload is not None:
                appends.append(ConversationAppend(role=user, content=JsonRenderable(inp.payload)))
        elif isinstance(inp, ExternalEventInput):
            content: CoreRenderable = (
                BlocksRenderable(blocks=inp.blocks)
                if inp.blocks
                else JsonRenderable({"event_type": inp.event_type, "payload": inp.payload})
            )
            appends.append(ConversationAppend(role=user, content=content))
        elif isinstance(inp, ContinuationInput) and inp.turn_append is not None:
            appends.append(inp.turn_append)
        injected: Iterable[ContentInput] = getattr(inp, "injected_context", ())
        for n, ctx_content in enumerate(injected):
            r = _renderable(ctx_content)
            if r is not None:
                context.append(ConversationContextAppend(key=f"{iid}:{n}", content=r))
    if kinds and all(k is RuntimeExecutionKind.RESUME_PENDING for k in kinds):
        exec_kind = RuntimeExecutionKind.RESUME_PENDING
    else:
        exec_kind = RuntimeExecutionKind.CONTENT_TURN
    metadata = replace(metadata or RuntimeTurnMetadata(), execution_kind=exec_kind)
    boundary = RunApplyBoundary.RUN_START if has_head else RunApplyBoundary.RUN_CHECKPOINT
    return StagedRunInput(
        boundary=boundary,
        appends=tuple(appends),
        context_appends=tuple(context),
        contributing_input_ids=tuple(batch),
        turn_metadata=metadata,
    )


def _current_run(state: SessionState, run_id: uuid.UUID) -> RunInfo | None:
    run = state.run
    return run if run is not None and run.run_id == run_id else None


def _run_inputs(state: SessionState, run: RunInfo, phase: InputLifecycleState) -> list[uuid.UUID]:
    return [i for i in run.input_ids if state.inputs[i].current_state is phase]


def _apply_boundary(state: SessionState, run: RunInfo, b: _Builder) -> None:
    staged = _run_inputs(state, run, L.STAGED)
    if staged:
        seq = run.boundary_sequence + 1
        for iid in staged:
            b.add(InputApplied(input_id=iid, run_id=run.run_id, boundary_sequence=seq))


def _end_run(state: SessionState, run: RunInfo, b: _Builder, event: RuntimeEvent) -> None:
    b.add(event)
    if state.phase is S.RUNNING:
        pre = run.pre_run_phase
        to = S.ATTACHED if pre is S.IDLE and b.ctx.attached else pre
        b.state_change(S.RUNNING, to)


def _decide_apply_boundary(state: SessionState, cmd: ApplyBoundary, b: _Builder) -> Decision:
    run = _current_run(state, cmd.run_id)
    if run is None:
        return b.done(None)  # a checkpoint of a run that already ended: fenced off
    staged = _run_inputs(state, run, L.STAGED)
    for iid in dict.fromkeys(cmd.absorbed):
        st = state.inputs.get(iid)
        if st is not None and st.current_state is L.QUEUED and iid in state.steer_queue:
            b.add(InputStaged(input_id=iid, run_id=run.run_id))
            staged.append(iid)
    seq = run.boundary_sequence + 1
    for iid in staged:
        b.add(InputApplied(input_id=iid, run_id=run.run_id, boundary_sequence=seq))
    receipt = RunBoundaryReceipt(
        run_id=run.run_id,
        boundary=RunApplyBoundary.RUN_CHECKPOINT,
        contributing_input_ids=tuple(staged),
        conversation_digest=cmd.conversation_digest,
        message_count=cmd.message_count,
        sequence=seq,
    )
    b.add(RunCheckpointed(run_id=run.run_id, receipt=receipt))
    return b.done(receipt)


def _decide_complete(state: SessionState, cmd: CompleteRun, b: _Builder) -> Decision:
    run = _current_run(state, cmd.run_id)
    if run is None:
        return b.done(None)  # a late result of a run that already ended: ignored
    _apply_boundary(state, run, b)
    applied = _run_inputs(state, run, L.STAGED) + _run_inputs(
        state, run, L.APPLIED_PENDING_CONSUMPTION
    )
    for iid in applied:
        b.add(InputConsumed(input_id=iid, run_id=run.run_id))
    event = RunCompleted(run_id=run.run_id, output=cmd.output, outcome=cmd.outcome)
    _end_run(state, run, b, event)
    return b.done(None)


def _rollback(state: SessionState, run: RunInfo, b: _Builder, reason: str) -> None:
    for iid in _run_inputs(state, run, L.STAGED):
        attempts = state.inputs[iid].attempt_count
        if attempts >= b.ctx.max_attempts:
            why = InputAbandonReason.max_attempts_exhausted(attempts)
            b.add(InputAbandoned(input_id=iid, reason=why))
        else:
            b.add(
                InputStateTransitioned(
                    input_id=iid, from_state=L.STAGED, to=L.QUEUED, reason=reason
                )
            )


def _consume_applied(state: SessionState, run: RunInfo, b: _Builder) -> None:
    for iid in _run_inputs(state, run, L.APPLIED_PENDING_CONSUMPTION):
        b.add(InputConsumed(input_id=iid, run_id=run.run_id))


def _decide_fail(state: SessionState, cmd: FailRun, b: _Builder) -> Decision:
    run = _current_run(state, cmd.run_id)
    if run is None:
        return b.done(None)
    if cmd.error.terminal:
        for iid in _run_inputs(state, run, L.STAGED):
            b.add(
                InputStateTransitioned(
                    input_id=iid,
                    from_state=L.STAGED,
                    to=L.APPLIED_PENDING_CONSUMPTION,
                    reason="RunFailedTerminal(boundary_sequence=0)",
                )
            )
            b.add(InputConsumed(input_id=iid, run_id=run.run_id))
    else:
        _rollback(state, run, b, "ResolveStagedRollback")
    _consume_applied(state, run, b)
    _end_run(state, run, b, RunFailed(run_id=run.run_id, error=cmd.error))
    return b.done(None)


def _decide_cancel(state: SessionState, cmd: CancelRun, b: _Builder) -> Decision:
    run = _current_run(state, cmd.run_id)
    if run is None:
        return b.done(None)
    if cmd.rollback:
        _rollback(state, run, b, "ResolveStagedRollback")
    else:
        cancelled = InputAbandonReason(AbandonKind.CANCELLED)
        for iid in _run_inputs(state, run, L.STAGED):
            b.add(InputAbandoned(input_id=iid, reason=cancelled))
    _consume_applied(state, run, b)
    _end_run(state, run, b, RunCancelled(run_id=run.run_id))
    return b.done(None)


# ---- lifecycle operations


def _abandon_all(state: SessionState, b: _Builder, kind: AbandonKind) -> int:
    ids = state.non_terminal_ids()
    reason = InputAbandonReason(kind)
    for iid in ids:
        b.add(InputAbandoned(input_id=iid, reason=reason))
    return len(ids)


def _decide_retire(state: SessionState, cmd: Retire, b: _Builder) -> Decision:
    observed = state.observed_state(b.ctx.attached)
    check_transition(observed, S.RETIRED)
    if cmd.loop_attached:
        pending = len(state.non_terminal_ids())
        b.state_change(observed, S.RETIRED)
        if observed is not S.RETIRED:
            b.add(RuntimeRetired(runtime_id=state.session_id))
        return b.done(RetireReport(inputs_abandoned=0, inputs_pending_drain=pending))
    if state.run is not None:
        b.add(RunCancelled(run_id=state.run.run_id))
    abandoned = _abandon_all(state, b, AbandonKind.RETIRED)
    b.state_change(observed, S.RETIRED)
    if observed is not S.RETIRED:
        b.add(RuntimeRetired(runtime_id=state.session_id))
    return b.done(RetireReport(inputs_abandoned=abandoned, inputs_pending_drain=0))


_RESET_FROM = frozenset({S.INITIALIZING, S.IDLE, S.ATTACHED, S.RETIRED})
_STOP_FROM = frozenset({S.INITIALIZING, S.IDLE, S.ATTACHED, S.RUNNING, S.RETIRED})
_RECYCLE_FROM = frozenset({S.IDLE, S.ATTACHED, S.RETIRED})
_RECOVER_FROM = frozenset({S.INITIALIZING, S.IDLE, S.ATTACHED, S.RETIRED, S.STOPPED})


def _refuse(frm: RuntimeState, to: RuntimeState) -> None:
    raise RuntimeStateTransitionError(frm.value, to.value)


def _decide_reset(state: SessionState, cmd: Reset, b: _Builder) -> Decision:
    observed = state.observed_state(b.ctx.attached)
    target = S.ATTACHED if b.ctx.attached else S.IDLE
    if observed not in _RESET_FROM or state.run is not None:
        _refuse(observed if state.run is None else S.RUNNING, target)
    abandoned = _abandon_all(state, b, AbandonKind.RESET)
    _clear_silent_intents(state, b)
    b.to_ready(observed)
    return b.done(ResetReport(inputs_abandoned=abandoned))


def _decide_stop(state: SessionState, cmd: Stop, b: _Builder) -> Decision:
    observed = state.observed_state(b.ctx.attached)
    if observed not in _STOP_FROM:
        _refuse(observed, S.STOPPED)
    if state.run is not None:
        b.add(RunCancelled(run_id=state.run.run_id))
    abandoned = _abandon_all(state, b, AbandonKind.STOPPED)
    _clear_silent_intents(state, b)
    if observed is not S.RETIRED:
        b.state_change(observed, S.STOPPED)
    return b.done(StopReport(inputs_abandoned=abandoned))


def _decide_destroy(state: SessionState, cmd: Destroy, b: _Builder) -> Decision:
    observed = state.observed_state(b.ctx.attached)
    check_transition(observed, S.DESTROYED)
    if state.run is not None:
        b.add(RunCancelled(run_id=state.run.run_id))
    abandoned = _abandon_all(state, b, AbandonKind.DESTROYED)
    _clear_silent_intents(state, b)
    b.state_change(observed, S.DESTROYED)
    b.add(RuntimeDestroyed(runtime_id=state.session_id))
    return b.done(DestroyReport(inputs_abandoned=abandoned))


def _decide_recycle(state: SessionState, cmd: Recycle, b: _Builder) -> Decision:
    observed = state.observed_state(b.ctx.attached)
    target = S.ATTACHED if observed is S.ATTACHED else S.IDLE
    if observed not in _RECYCLE_FROM:
        _refuse(observed, target)
    transferred = len(state.non_terminal_ids())
    if state.run is not None:  # a retired session draining a run: the fresh driver starts over
        # Its applied inputs have their boundary receipt (input.applied): consumed, as on
        # any cancel; left applied with no run, nothing in this process would end them.
        _consume_applied(state, state.run, b)
        b.add(RunCancelled(run_id=state.run.run_id))
    for iid, st in state.inputs.items():
        if st.current_state in (L.ACCEPTED, L.STAGED):
            b.add(
                InputStateTransitioned(
                    input_id=iid, from_state=st.current_state, to=L.QUEUED, reason="Recycle"
                )
            )
    b.to_ready(observed)
    b.add(RuntimeRecycled(runtime_id=state.session_id))
    return b.done(RecycleReport(inputs_transferred=transferred))


def _decide_recover(state: SessionState, cmd: Recover, b: _Builder) -> Decision:
    observed = state.observed_state(b.ctx.attached)
    run = state.run
    if observed not in _RECOVER_FROM and not (cmd.cold and observed is S.RUNNING):
        _refuse(observed, S.IDLE)
    recovered = requeued = abandoned = 0
    details: list[str] = []
    live_run = set(run.input_ids) if run is not None and not cmd.cold else set()
    if run is not None and cmd.cold:
        _end_run(
            state,
            run,
            b,
            RunFailed(
                run_id=run.run_id,
                error=RunError(
                    kind=TurnTerminalCauseKind.RUNTIME_APPLY_FAILURE,
                    outcome=TurnTerminalOutcome.FAILED,
                    detail="interrupted: the process ended during the run",
                ),
            ),
        )
        details.append(f"run {run.run_id} closed as interrupted")
    for iid, st in state.inputs.items():
        phase = st.current_state
        if phase.is_terminal:
            continue
        if cmd.cold and st.durability is InputDurability.EPHEMERAL:
            b.add(InputAbandoned(input_id=iid, reason=InputAbandonReason(AbandonKind.CANCELLED)))
            abandoned += 1
            details.append(f"{iid}: ephemeral input abandoned at restart")
            continue
        recovered += 1
        if iid in live_run:
            continue  # belongs to the run in flight in this process: left to it
        if phase in (L.ACCEPTED, L.STAGED):
            if phase is L.STAGED and cmd.cold and st.attempt_count >= b.ctx.max_attempts:
                why = InputAbandonReason.max_attempts_exhausted(st.attempt_count)
                b.add(InputAbandoned(input_id=iid, reason=why))
                recovered -= 1
                abandoned += 1
                details.append(f"{iid}: abandoned after {st.attempt_count} interrupted attempts")
                continue
            b.add(
                InputStateTransitioned(
                    input_id=iid, from_state=phase, to=L.QUEUED, reason=REASON_RECOVERY
                )
            )
            requeued += 1
        elif cmd.cold and phase in (L.APPLIED, L.APPLIED_PENDING_CONSUMPTION):
            if _receipt_missing(run, st):
                b.add(
                    InputStateTransitioned(
                        input_id=iid, from_state=phase, to=L.QUEUED, reason=REASON_RECEIPT_MISSING
                    )
                )
                details.append(f"{iid}: boundary receipt missing; re-queued")
                continue
            b.add(
                InputStateTransitioned(
                    input_id=iid, from_state=phase, to=L.CONSUMED, reason=REASON_RECEIPT_FOUND
                )
            )
    if observed is S.STOPPED and cmd.reregister:
        b.state_change(S.STOPPED, S.ATTACHED if b.ctx.attached else S.IDLE)
    report = RecoveryReport(
        inputs_recovered=recovered,
        inputs_abandoned=abandoned,
        inputs_requeued=requeued,
        details=tuple(details),
    )
    return b.done(report)


def _receipt_missing(run: RunInfo | None, st: InputState) -> bool:
    """True when the log proves the input's boundary was never receipted.

    Only the run in flight keeps its receipted sequences, so only an input of
    that run can be proven missing; any other applied input counts as found
    (its run ended, and every run end consumes what it applied).
    """
    if run is None or st.last_run_id != run.run_id:
        return False
    return (st.last_boundary_sequence or 0) not in run.receipts


def _clear_silent_intents(state: SessionState, b: _Builder) -> None:
    """Reset (spec 14), stop and destroy (the Rust machine) clear the silent intents."""
    if state.silent_intents:
        b.add(SilentIntentsSet(intents=()))


_SILENT_INTENTS_FROM = frozenset({S.IDLE, S.ATTACHED, S.RUNNING, S.RETIRED})


def _decide_set_silent_intents(state: SessionState, cmd: SetSilentIntents, b: _Builder) -> Decision:
    """Replace the silent intents; nothing is written when they are already those."""
    observed = state.observed_state(b.ctx.attached)
    if observed not in _SILENT_INTENTS_FROM:
        raise RuntimeControlPlaneError(
            "invalid_state", f"silent intents cannot be set on a {observed} session"
        )
    if cmd.intents != state.silent_intents:
        b.add(SilentIntentsSet(intents=tuple(sorted(cmd.intents))))
    return b.done(None)


def _decide_create(state: SessionState, cmd: Create, b: _Builder) -> Decision:
    """Reply True when this decision creates the session, False when it existed."""
    if state.created or state.version > 0:
        return b.done(False)
    b.add_created()
    return b.done(True)


_DECIDERS: dict[type, Callable[[SessionState, Any, _Builder], Decision]] = {
    Accept: _decide_accept,
    StartRun: _decide_start_run,
    ApplyBoundary: _decide_apply_boundary,
    CompleteRun: _decide_complete,
    FailRun: _decide_fail,
    CancelRun: _decide_cancel,
    Retire: _decide_retire,
    Reset: _decide_reset,
    Stop: _decide_stop,
    Destroy: _decide_destroy,
    Recycle: _decide_recycle,
    Recover: _decide_recover,
    Create: _decide_create,
    SetSilentIntents: _decide_set_silent_intents,
}

# ---------------------------------------------------------------- evolve


def evolve(state: SessionState, envelope: RuntimeEventEnvelope) -> SessionState:
    """Apply one event to ``state`` in place and return it."""
    handler = _EVOLVERS.get(type(envelope.event))
    if handler is not None:
        handler(state, envelope.event, envelope.timestamp)
    state.version += 1
    state.updated_at = envelope.timestamp
    return state


def fold(
    events: Iterable[RuntimeEventEnvelope],
    state: SessionState | None = None,
    *,
    session_id: str = "",
) -> SessionState:
    """Fold envelopes into a state (a fresh one for ``session_id`` when ``state`` is None)."""
    st = state if state is not None else SessionState(session_id=session_id)
    for env in events:
        evolve(st, env)
    return st


def _dequeue(state: SessionState, iid: uuid.UUID) -> None:
    state.unwoken.discard(iid)
    if state.queue.remove(iid) is None:
        state.steer_queue.remove(iid)
    if not state.queue and not state.steer_queue:
        state.wake_pending = False


def _enqueue_ordered(state: SessionState, iid: uuid.UUID) -> None:
    """Insert by admission sequence, so re-queued work keeps its admission order."""
    q = state.lane_of(iid)
    seq = state.inputs[iid].admission_sequence or 0
    items = q.input_ids()
    pos = len(items)
    for n, other in enumerate(items):
        if (state.inputs[other].admission_sequence or 0) > seq:
            pos = n
            break
    items.insert(pos, iid)
    q.drain()
    for x in items:
        q.enqueue(x)


def _ev_input(state: SessionState, ev: InputLifecycleEvent, at: datetime) -> None:
    """The per-input fold (shared with the ledger), then the session-level effects."""
    iid = ev.input_id
    prev = state.inputs.get(iid)
    seq = None
    if needs_admission_sequence(prev, ev):
        state.admission_counter += 1
        seq = state.admission_counter
    st = evolve_input(prev, ev, at, seq)
    if st is None or st is prev:
        return
    state.inputs[iid] = st
    if isinstance(ev, InputAccepted):
        if isinstance(ev.input, OperationInput):
            state.operations.apply(ev.input.operation_id, ev.input.event, at, state.version + 1)
        if st.idempotency_key is not None:
            state.idempotency.setdefault(st.idempotency_key, iid)
        if not st.is_terminal and _wakes(st):
            state.wake_pending = True
    elif isinstance(ev, InputQueued):
        lane = state.lane_of(iid)
        lane.enqueue(iid)
        if lane is state.queue and state.run is None and not _wakes(st):
            state.unwoken.add(iid)
    elif isinstance(ev, InputStaged):
        _dequeue(state, iid)
        if state.run is not None and state.run.run_id == ev.run_id:
            state.run.input_ids.append(iid)
    elif isinstance(ev, InputApplied):
        run = state.run
        if run is not None and run.run_id == ev.run_id:
            run.boundary_sequence = max(run.boundary_sequence, ev.boundary_sequence or 0)
    elif isinstance(ev, (InputAbandoned, InputSuperseded, InputCoalesced)):
        _dequeue(state, iid)
    elif isinstance(ev, InputStateTransitioned) and ev.to is L.QUEUED:
        _enqueue_ordered(state, iid)
        # Back in its queue after a failed run or a recovery: the run that took it
        # cleared the wake, so an input that woke the session on arrival wakes it again.
        if _wakes(st):
            state.wake_pending = True


def _wakes(st: InputState) -> bool:
    return st.policy is not None and st.policy.decision.wake_mode is not WakeMode.NONE


def _ev_run_started(state: SessionState, ev: RunStarted, at: datetime) -> None:
    state.run = RunInfo(run_id=ev.run_id, pre_run_phase=state.phase, primitive=ev.primitive)
    state.wake_pending = False
    state.unwoken.clear()  # the loop is draining: it takes every queued input in turn


def _finish_run(state: SessionState, run_id: uuid.UUID) -> RunInfo | None:
    run = state.run
    if run is None or run.run_id != run_id:
        return None
    state.run = None
    return run


RunEnd = RunCompleted | RunFailed | RunCancelled


def settle_run_inputs(
    inputs: dict[uuid.UUID, InputState], input_ids: Iterable[uuid.UUID], ev: RunEnd
) -> None:
    """Write what the end of a run tells its inputs' waiters into their states, in place:
    the run's output for the inputs it consumed, the run's error or the cancellation for
    those it abandoned. Shared by the session fold and the per-input fold of the log."""
    if isinstance(ev, RunCompleted):
        outcome: CompletionOutcome = ev.outcome or Completed(run_id=ev.run_id, output=ev.output)
        for iid in input_ids:
            st = inputs[iid]
            if st.current_state is L.CONSUMED and st.terminal_completion is None:
                inputs[iid] = with_completion(st, outcome)
    elif isinstance(ev, RunFailed):
        err = ev.error
        for iid in input_ids:
            st = inputs[iid]
            if st.current_state is L.CONSUMED and st.terminal_completion is None:
                inputs[iid] = with_completion(
                    st, AbandonedWithError(reason="run failed", error=err)
                )
            elif (
                st.current_state is L.ABANDONED
                and isinstance(st.terminal_completion, Abandoned)
                and getattr(st.terminal_outcome, "reason", None) is not None
                and st.terminal_outcome.reason.kind is AbandonKind.MAX_ATTEMPTS_EXHAUSTED  # type: ignore[union-attr]
            ):
                # Abandoned by this failure (its last attempt): the reason says so, and the
                # error is the failed run's own (now final), not a generic one.
                last = replace(err, terminal=True, retryable=False)
                done = replace(st.terminal_completion, error=last)
                inputs[iid] = with_completion(st, done)
    else:
        cancelled = InputAbandonReason(AbandonKind.CANCELLED)
        for iid in input_ids:
            st = inputs[iid]
            if st.current_state is L.CONSUMED and st.terminal_completion is None:
                inputs[iid] = with_completion(st, CompletedWithoutResult())
            elif (
                st.current_state is L.ABANDONED
                and st.terminal_outcome is not None
                and getattr(st.terminal_outcome, "reason", None) == cancelled
            ):
                inputs[iid] = with_completion(st, Cancelled())


def _ev_run_ended(state: SessionState, ev: RunEnd, at: datetime) -> None:
    run = _finish_run(state, ev.run_id)
    if run is not None:
        settle_run_inputs(state.inputs, run.input_ids, ev)


def _ev_run_checkpointed(state: SessionState, ev: RunCheckpointed, at: datetime) -> None:
    run = state.run
    if run is not None and run.run_id == ev.run_id:
        seq = ev.receipt.sequence
        run.receipts.add(seq)
        run.boundary_sequence = max(run.boundary_sequence, seq)


_PERSISTED_PHASE = {
    S.INITIALIZING: S.IDLE,
    S.ATTACHED: S.IDLE,
}


def _ev_state_changed(state: SessionState, ev: RuntimeStateChangeEvent, at: datetime) -> None:
    state.phase = _PERSISTED_PHASE.get(ev.to, ev.to)
    if ev.to in OWNER_GONE:
        state.operations.terminate(f"session {ev.to.value}", at, state.version + 1)


def _ev_created(state: SessionState, ev: RuntimeCreated, at: datetime) -> None:
    state.created = True


def _ev_recycled(state: SessionState, ev: RuntimeRecycled, at: datetime) -> None:
    state.unwoken.clear()  # recycle wakes the fresh loop (spec 14): it drains the queue


def _ev_silent_intents(state: SessionState, ev: SilentIntentsSet, at: datetime) -> None:
    state.silent_intents = frozenset(ev.intents)


def _ev_ignore(state: SessionState, ev: RuntimeEvent, at: datetime) -> None:
    pass


_EVOLVERS: dict[type, Callable[[SessionState, Any, datetime], None]] = {
    InputAccepted: _ev_input,
    InputQueued: _ev_input,
    InputStaged: _ev_input,
    InputApplied: _ev_input,
    InputConsumed: _ev_input,
    InputAbandoned: _ev_input,
    InputSuperseded: _ev_input,
    InputCoalesced: _ev_input,
    InputStateTransitioned: _ev_input,
    InputDeduplicated: _ev_input,
    RunStarted: _ev_run_started,
    RunCompleted: _ev_run_ended,
    RunFailed: _ev_run_ended,
    RunCancelled: _ev_run_ended,
    RunCheckpointed: _ev_run_checkpointed,
    RuntimeStateChangeEvent: _ev_state_changed,
    RuntimeCreated: _ev_created,
    RuntimeRetired: _ev_ignore,
    RuntimeRecycled: _ev_recycled,
    RuntimeDestroyed: _ev_ignore,
    RuntimeProjectionEvent: _ev_ignore,
    SilentIntentsSet: _ev_silent_intents,
}


def execute(
    state: SessionState, command: Command, ctx: DecisionContext
) -> tuple[Decision, SessionState]:
    """Decide, then evolve ``state`` in place with the decided events."""
    decision = decide(state, command, ctx)
    for env in decision.events:
        evolve(state, env)
    return decision, state


def completion_outcome(state: SessionState, input_id: uuid.UUID) -> CompletionOutcome | None:
    """The outcome a waiter on ``input_id`` receives, or None while it is not terminal."""
    st = state.inputs.get(input_id)
    if st is None or not st.current_state.is_terminal:
        return None
    return st.terminal_completion or CompletedWithoutResult()


def evolve_settling(
    state: SessionState, events: Sequence[RuntimeEventEnvelope]
) -> list[tuple[uuid.UUID, CompletionOutcome]]:
    """Evolve ``state`` by durable ``events``; the completions they settle, in order.

    An input's completion settles when an event makes it terminal: its own
    lifecycle event, or the end of a run it was staged in. Each settled input
    appears once, with the outcome its waiters receive (:func:`completion_outcome`).
    """
    touched: dict[uuid.UUID, None] = {}
    for env in events:
        evolve(state, env)
        ev = env.event
        if isinstance(ev, InputLifecycleEvent):
            touched[ev.input_id] = None
        elif isinstance(ev, (RunCompleted, RunFailed, RunCancelled)) and state.inputs:
            touched.update((i, None) for i, s in state.inputs.items() if s.last_run_id == ev.run_id)
    return [
        (iid, outcome) for iid in touched if (outcome := completion_outcome(state, iid)) is not None
    ]


# ---------------------------------------------------------------- snapshots


#: A session holding at least this many live inputs remembers their encoded forms
#: between snapshots (see :func:`state_to_snapshot`); below it, encoding them again is
#: cheap and the memory is not worth it (10,000 small live sessions stay small).
SNAPSHOT_MEMO_MIN_INPUTS = 8


class SnapshotMemo:
    """A session's encoded inputs from its last snapshot (see :func:`state_to_snapshot`).

    Two dicts by input id, the state encoded and its JSON, rather than one of pairs:
    a pair holding an input state would be one more object per live input for the
    cyclic garbage collector to walk; dict entries and ``orjson.Fragment`` are not.
    """

    __slots__ = ("fragments", "states")

    def __init__(self) -> None:
        self.states: dict[uuid.UUID, InputState] = {}
        self.fragments: dict[uuid.UUID, orjson.Fragment] = {}

    def clear(self) -> None:
        self.states = {}
        self.fragments = {}


# As the stores dump snapshots: anything not JSON-native is an error, not a conversion.
_FRAGMENT_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def state_to_snapshot(state: SessionState, memo: SnapshotMemo | None = None) -> dict[str, Any]:
    """The session state as a JSON-native snapshot (a cache: the log stays the truth).

    It is compacted (see :func:`compact`) whether ``state`` is or not.

    ``memo`` (owned by the caller, one per session) makes a snapshot cost about one
    input's encoding per input that moved since the last one, not per input held: an
    :class:`InputState` is never changed in place (a transition returns a new one),
    so an input whose state is the same object as at the last snapshot reuses the
    JSON encoded then, as an ``orjson.Fragment`` (the snapshot is then for
    ``orjson.dumps``, which the stores use). Without the memo a session with ``n``
    queued inputs, snapshotted every ``n`` events, spent one input's encoding
    (about 15 us) on every event. The memo is rewritten to hold the inputs of this
    snapshot only, and only when they are at least :data:`SNAPSHOT_MEMO_MIN_INPUTS`.
    """
    run = state.run
    in_run = set(run.input_ids) if run is not None else set()
    kept = []
    retired = set(state.retired)
    for iid, st in state.inputs.items():
        if st.current_state.is_terminal and iid not in in_run:
            retired.add(iid.int)
        else:
            kept.append(st)
    return {
        "format": SNAPSHOT_FORMAT,
        "session_id": state.session_id,
        "version": state.version,
        "created": state.created,
        "phase": state.phase.value,
        "run": None
        if run is None
        else {
            "run_id": str(run.run_id),
            "pre_run_phase": run.pre_run_phase.value,
            "primitive": to_wire_tagged(run.primitive) if run.primitive is not None else None,
            "input_ids": [str(i) for i in run.input_ids],
            "boundary_sequence": run.boundary_sequence,
            "receipts": sorted(run.receipts),
        },
        "inputs": [to_wire(s) for s in kept] if memo is None else _memo_inputs(kept, memo),
        "idempotency": {k: str(v) for k, v in state.idempotency.items()},
        "retired": base64.b64encode(
            b"".join(i.to_bytes(16, "big") for i in sorted(retired))
        ).decode(),
        "queue": [str(i) for i in state.queue],
        "steer_queue": [str(i) for i in state.steer_queue],
        "admission_counter": state.admission_counter,
        "wake_pending": state.wake_pending,
        "updated_at": None if state.updated_at is None else format_timestamp(state.updated_at),
        "silent_intents": sorted(state.silent_intents),
        "unwoken": [str(i) for i in state.queue if i in state.unwoken],
        "operations": state.operations.to_json(),
    }


def _memo_inputs(kept: list[InputState], memo: SnapshotMemo) -> list[Any]:
    """``kept`` encoded as ``orjson.Fragment``s, reusing ``memo``'s; ``memo`` is refilled."""
    if len(kept) < SNAPSHOT_MEMO_MIN_INPUTS:
        memo.clear()
        return [to_wire(s) for s in kept]
    out: list[Any] = []
    states: dict[uuid.UUID, InputState] = {}
    fragments: dict[uuid.UUID, orjson.Fragment] = {}
    old_state, old_fragment = memo.states.get, memo.fragments
    for st in kept:
        iid = st.input_id
        if old_state(iid) is st:
            frag = old_fragment[iid]
        else:
            frag = orjson.Fragment(orjson.dumps(to_wire(st), option=_FRAGMENT_OPTIONS))
        states[iid] = st
        fragments[iid] = frag
        out.append(frag)
    memo.states, memo.fragments = states, fragments
    return out


def _registry_from_snapshot(
    data: dict[str, Any], inputs: dict[uuid.UUID, InputState]
) -> OperationRegistry:
    """The snapshot's operations registry. A snapshot written before the registry existed
    has none: it is empty if the snapshot holds no operation input (it holds every input
    it accepted), else the snapshot is unreadable and the log is refolded."""
    stored = data.get("operations")
    if stored is not None:
        return OperationRegistry.from_json(stored)
    if data.get("format") != 1:  # a compacted snapshot always writes its registry
        raise InvalidInput("snapshot has no operations registry", "operations")
    if any(isinstance(st.persisted_input, OperationInput) for st in inputs.values()):
        raise InvalidInput("snapshot predates the operations registry", "operations")
    return OperationRegistry()


def state_from_snapshot(data: dict[str, Any]) -> SessionState:
    """Rebuild a state from :func:`state_to_snapshot` output; :class:`InvalidInput` if unreadable."""
    if not isinstance(data, dict) or data.get("format") not in (1, SNAPSHOT_FORMAT):
        raise InvalidInput("unknown snapshot format", "format")
    try:
        inputs = {}
        idem: dict[str, uuid.UUID] = {}
        for n, row in enumerate(data["inputs"]):
            st = input_state_from_stored(row, f"inputs[{n}]")
            inputs[st.input_id] = st
            if st.idempotency_key is not None:
                idem.setdefault(st.idempotency_key, st.input_id)
        if "idempotency" in data:  # format 2: the keys of compacted inputs too
            idem = {str(k): parse_uuid(v) for k, v in data["idempotency"].items()}
        packed = base64.b64decode(data.get("retired", ""), validate=True)
        if len(packed) % 16:
            raise ValueError("retired ids are not 16 bytes each")
        retired = {int.from_bytes(packed[n : n + 16], "big") for n in range(0, len(packed), 16)}
        run_data = data["run"]
        run = None
        if run_data is not None:
            prim = run_data["primitive"]
            run = RunInfo(
                run_id=parse_uuid(run_data["run_id"]),
                pre_run_phase=RuntimeState(run_data["pre_run_phase"]),
                primitive=from_wire(RunPrimitive, prim) if prim is not None else None,
                input_ids=[parse_uuid(i) for i in run_data["input_ids"]],
                boundary_sequence=int(run_data["boundary_sequence"]),
                receipts={int(n) for n in run_data.get("receipts", ())},
            )
        updated = data["updated_at"]
        return SessionState(
            session_id=str(data["session_id"]),
            version=int(data["version"]),
            created=bool(data["created"]),
            phase=RuntimeState(data["phase"]),
            run=run,
            inputs=inputs,
            queue=InputQueue(parse_uuid(i) for i in data["queue"]),
            steer_queue=InputQueue(parse_uuid(i) for i in data["steer_queue"]),
            idempotency=idem,
            retired=retired,
            admission_counter=int(data["admission_counter"]),
            wake_pending=bool(data["wake_pending"]),
            updated_at=parse_timestamp(updated) if updated is not None else None,
            # Absent from snapshots written before silent intents existed: none then.
            silent_intents=frozenset(str(i) for i in data.get("silent_intents", ())),
            unwoken={parse_uuid(i) for i in data.get("unwoken", ())},
            operations=_registry_from_snapshot(data, inputs),
        )
    except InvalidInput:
        raise
    except (
        KeyError,
        TypeError,
        ValueError,
        OverflowError,
        AttributeError,
    ) as exc:  # int(inf): OverflowError
        raise InvalidInput(f"unreadable snapshot: {exc!r}") from None
