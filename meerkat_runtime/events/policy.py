"""Policy: the policy enums, ``PolicyDecision``, the :class:`Policy` protocol and
``DefaultPolicyTable``.

For users: docs/concepts/policy-and-queueing.md.

The default table is data: :data:`DEFAULT_ROWS` maps a row family and
``runtime idle?`` to the decision and run semantics, and :data:`LANE_OVERRIDES`
holds the requested-lane overrides. :class:`DefaultPolicyTable`
only looks rows up and lays the overrides over them, then the three admission
facts of spec 6.2 (silent intent match, without wake, active turn boundary).

A runtime asks its policy (``Runtime.open(..., policy=...)``, the default table
otherwise) once per accepted input; the decision is recorded in the input's
``input.accepted`` event with the policy's version, and nothing ever asks again:
folding, recovery and re-queueing read the recorded decision.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, ClassVar, Protocol, runtime_checkable

from meerkat_runtime.errors import RuntimeControlPlaneError
from meerkat_runtime.events._codec import wfield
from meerkat_runtime.events.inputs import (
    ContinuationInput,
    ContinuationKind,
    Input,
    InputKind,
)
from meerkat_runtime.events.run_primitive import (
    HandlingMode,
    RunApplyBoundary,
    RuntimeExecutionKind,
)

__all__ = [
    "DEFAULT_POLICY",
    "DEFAULT_POLICY_VERSION",
    "AdmissionPlan",
    "ApplyMode",
    "ConsumePoint",
    "DefaultPolicyTable",
    "DrainPolicy",
    "PeerResponseTerminalApplyIntent",
    "PeerTerminalApplyIntent",
    "Policy",
    "PolicyDecision",
    "PolicySnapshot",
    "PostAdmissionSignal",
    "QueueMode",
    "RoutingDisposition",
    "RuntimeSemantics",
    "WakeMode",
    "generated_default_policy_version",
    "handling_mode_for",
]

DEFAULT_POLICY_VERSION = 1


class ApplyMode(StrEnum):
    STAGE_RUN_START = "stage_run_start"
    STAGE_RUN_BOUNDARY = "stage_run_boundary"
    INJECT_NOW = "inject_now"
    IGNORE = "ignore"


class WakeMode(StrEnum):
    WAKE_IF_IDLE = "wake_if_idle"
    INTERRUPT_YIELDING = "interrupt_yielding"
    NONE = "none"


class QueueMode(StrEnum):
    NONE = "none"
    FIFO = "fifo"
    COALESCE = "coalesce"
    SUPERSEDE = "supersede"
    PRIORITY = "priority"


class ConsumePoint(StrEnum):
    ON_ACCEPT = "on_accept"
    ON_APPLY = "on_apply"
    ON_RUN_START = "on_run_start"
    ON_RUN_COMPLETE = "on_run_complete"
    EXPLICIT_ACK = "explicit_ack"


class DrainPolicy(StrEnum):
    QUEUE_NEXT_TURN = "queue_next_turn"
    STEER_BATCH = "steer_batch"
    IMMEDIATE = "immediate"
    IGNORE = "ignore"


class RoutingDisposition(StrEnum):
    QUEUE = "queue"
    STEER = "steer"
    IMMEDIATE = "immediate"
    DROP = "drop"


class PeerTerminalApplyIntent(StrEnum):
    APPEND_CONTENT_AND_RUN = "append_content_and_run"


#: The spec's (Rust's) name of :class:`PeerTerminalApplyIntent`.
PeerResponseTerminalApplyIntent = PeerTerminalApplyIntent


class PostAdmissionSignal(StrEnum):
    """What accepting an input asks of the loop, weakest first; the strongest pending one wins."""

    NONE = "none"
    WAKE_LOOP = "wake_loop"
    INTERRUPT_YIELDING = "interrupt_yielding"
    REQUEST_IMMEDIATE_PROCESSING = "request_immediate_processing"

    @property
    def strength(self) -> int:
        return _SIGNAL_ORDER.index(self)


_SIGNAL_ORDER = list(PostAdmissionSignal)


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    """How one input is applied, woken, queued and consumed."""

    __interned__: ClassVar[bool] = True

    apply_mode: ApplyMode
    wake_mode: WakeMode
    queue_mode: QueueMode
    consume_point: ConsumePoint
    drain_policy: DrainPolicy = DrainPolicy.QUEUE_NEXT_TURN
    routing_disposition: RoutingDisposition = RoutingDisposition.QUEUE
    record_transcript: bool = True
    emit_operator_content: bool = True
    policy_version: int = wfield(default=DEFAULT_POLICY_VERSION, required=True, ge=0)


@dataclass(frozen=True, slots=True)
class PolicySnapshot:
    __interned__: ClassVar[bool] = True

    version: int = wfield(ge=0)
    decision: PolicyDecision = wfield(required=True)


@dataclass(frozen=True, slots=True)
class RuntimeSemantics:
    """Run-side facts of an admitted input: where it applies and what kind of turn it makes.

    Rust's ``RuntimeInputSemantics``: ``boundary`` and ``execution_kind`` are
    required; the two optional fields are written as ``null`` when absent (no
    skip attribute); ``live_interrupt_required`` defaults to false on read.
    """

    __interned__: ClassVar[bool] = True

    boundary: RunApplyBoundary
    execution_kind: RuntimeExecutionKind
    execution_handling_mode: HandlingMode | None = None
    peer_response_terminal_apply_intent: PeerTerminalApplyIntent | None = None
    live_interrupt_required: bool = False


def handling_mode_for(decision: PolicyDecision) -> HandlingMode:
    """Routing ``steer`` or ``immediate`` means the steer lane; anything else the ordinary queue."""
    if decision.routing_disposition in (RoutingDisposition.STEER, RoutingDisposition.IMMEDIATE):
        return HandlingMode.STEER
    return HandlingMode.QUEUE


@dataclass(frozen=True, slots=True)
class AdmissionPlan:
    """A resolved policy row: the decision plus run semantics and the post-admission signal."""

    decision: PolicyDecision
    semantics: RuntimeSemantics | None
    signal: PostAdmissionSignal

    @property
    def lane(self) -> HandlingMode:
        return handling_mode_for(self.decision)

    @property
    def consume_on_accept(self) -> bool:
        return self.decision.consume_point is ConsumePoint.ON_ACCEPT

    @property
    def coalesces(self) -> bool:
        return self.decision.queue_mode is QueueMode.COALESCE


# ---------------------------------------------------------------- the table as data


class _Row(StrEnum):
    CONTENT = "content"  # prompt, flow_step, external_event
    PEER_CONTENT = "peer_content"  # peer_message, peer_request
    PEER_PROGRESS = "peer_progress"
    PEER_TERMINAL = "peer_terminal"
    CONTINUATION = "continuation"  # ordinary, no lane (resolve_by_kind only)
    WORKGRAPH = "workgraph"  # workgraph-attention continuation
    OPERATION = "operation"


_KIND_ROW = {
    InputKind.PROMPT: _Row.CONTENT,
    InputKind.FLOW_STEP: _Row.CONTENT,
    InputKind.EXTERNAL_EVENT: _Row.CONTENT,
    InputKind.PEER_MESSAGE: _Row.PEER_CONTENT,
    InputKind.PEER_REQUEST: _Row.PEER_CONTENT,
    InputKind.PEER_RESPONSE_PROGRESS: _Row.PEER_PROGRESS,
    InputKind.PEER_RESPONSE_TERMINAL: _Row.PEER_TERMINAL,
    InputKind.CONTINUATION: _Row.CONTINUATION,
    InputKind.OPERATION: _Row.OPERATION,
}

A, W, Q, C, D, R = ApplyMode, WakeMode, QueueMode, ConsumePoint, DrainPolicy, RoutingDisposition
B, X = RunApplyBoundary, RuntimeExecutionKind


def _row(
    apply: ApplyMode,
    wake: WakeMode,
    queue: QueueMode,
    consume: ConsumePoint,
    drain: DrainPolicy,
    routing: RoutingDisposition,
    transcript: bool,
    boundary: RunApplyBoundary | None,
    kind: RuntimeExecutionKind | None,
    intent: PeerTerminalApplyIntent | None = None,
) -> tuple[PolicyDecision, RuntimeSemantics | None]:
    decision = PolicyDecision(
        apply_mode=apply,
        wake_mode=wake,
        queue_mode=queue,
        consume_point=consume,
        drain_policy=drain,
        routing_disposition=routing,
        record_transcript=transcript,
        emit_operator_content=transcript,
        policy_version=DEFAULT_POLICY_VERSION,
    )
    semantics = (
        None
        if boundary is None or kind is None
        else RuntimeSemantics(
            boundary=boundary,
            execution_kind=kind,
            execution_handling_mode=handling_mode_for(decision),
            peer_response_terminal_apply_intent=intent,
        )
    )
    return decision, semantics


_APPEND_AND_RUN = PeerTerminalApplyIntent.APPEND_CONTENT_AND_RUN

#: The default rows, keyed by (row, runtime idle?).
DEFAULT_ROWS: dict[tuple[_Row, bool], tuple[PolicyDecision, RuntimeSemantics | None]] = {
    (_Row.CONTENT, True): _row(A.STAGE_RUN_START, W.WAKE_IF_IDLE, Q.FIFO, C.ON_RUN_COMPLETE, D.QUEUE_NEXT_TURN, R.QUEUE, True, B.RUN_START, X.CONTENT_TURN),
    (_Row.CONTENT, False): _row(A.STAGE_RUN_START, W.NONE, Q.FIFO, C.ON_RUN_COMPLETE, D.QUEUE_NEXT_TURN, R.QUEUE, True, B.RUN_START, X.CONTENT_TURN),
    (_Row.PEER_CONTENT, True): _row(A.STAGE_RUN_START, W.WAKE_IF_IDLE, Q.FIFO, C.ON_RUN_COMPLETE, D.QUEUE_NEXT_TURN, R.QUEUE, True, B.RUN_START, X.CONTENT_TURN),
    (_Row.PEER_CONTENT, False): _row(A.STAGE_RUN_START, W.INTERRUPT_YIELDING, Q.FIFO, C.ON_RUN_COMPLETE, D.QUEUE_NEXT_TURN, R.QUEUE, True, B.RUN_START, X.CONTENT_TURN),
    (_Row.PEER_PROGRESS, True): _row(A.STAGE_RUN_BOUNDARY, W.NONE, Q.COALESCE, C.ON_RUN_COMPLETE, D.STEER_BATCH, R.STEER, True, B.RUN_CHECKPOINT, X.CONTENT_TURN),
    (_Row.PEER_PROGRESS, False): _row(A.STAGE_RUN_BOUNDARY, W.NONE, Q.COALESCE, C.ON_RUN_COMPLETE, D.STEER_BATCH, R.STEER, True, B.RUN_CHECKPOINT, X.CONTENT_TURN),
    (_Row.PEER_TERMINAL, True): _row(A.STAGE_RUN_START, W.WAKE_IF_IDLE, Q.FIFO, C.ON_RUN_COMPLETE, D.QUEUE_NEXT_TURN, R.QUEUE, True, B.RUN_START, X.CONTENT_TURN, _APPEND_AND_RUN),
    (_Row.PEER_TERMINAL, False): _row(A.STAGE_RUN_START, W.WAKE_IF_IDLE, Q.FIFO, C.ON_RUN_COMPLETE, D.QUEUE_NEXT_TURN, R.QUEUE, True, B.RUN_START, X.CONTENT_TURN, _APPEND_AND_RUN),
    (_Row.CONTINUATION, True): _row(A.STAGE_RUN_BOUNDARY, W.WAKE_IF_IDLE, Q.FIFO, C.ON_RUN_COMPLETE, D.STEER_BATCH, R.STEER, False, B.RUN_CHECKPOINT, X.RESUME_PENDING),
    (_Row.CONTINUATION, False): _row(A.STAGE_RUN_BOUNDARY, W.INTERRUPT_YIELDING, Q.FIFO, C.ON_RUN_COMPLETE, D.STEER_BATCH, R.STEER, False, B.RUN_CHECKPOINT, X.RESUME_PENDING),
    (_Row.WORKGRAPH, True): _row(A.STAGE_RUN_START, W.WAKE_IF_IDLE, Q.FIFO, C.ON_RUN_COMPLETE, D.QUEUE_NEXT_TURN, R.QUEUE, False, B.RUN_START, X.CONTENT_TURN),
    (_Row.WORKGRAPH, False): _row(A.STAGE_RUN_START, W.NONE, Q.FIFO, C.ON_RUN_COMPLETE, D.QUEUE_NEXT_TURN, R.QUEUE, False, B.RUN_START, X.CONTENT_TURN),
    (_Row.OPERATION, True): _row(A.IGNORE, W.NONE, Q.PRIORITY, C.ON_ACCEPT, D.IGNORE, R.DROP, False, None, None),
    (_Row.OPERATION, False): _row(A.IGNORE, W.NONE, Q.PRIORITY, C.ON_ACCEPT, D.IGNORE, R.DROP, False, None, None),
}  # fmt: skip

#: What a requested lane changes, keyed by (lane, runtime idle?).
#: ``None`` values leave the base row's value in place.
LANE_OVERRIDES: dict[tuple[HandlingMode, bool], dict[str, Any]] = {
    (HandlingMode.QUEUE, True): {"apply_mode": A.STAGE_RUN_START, "wake_mode": W.WAKE_IF_IDLE, "queue_mode": Q.FIFO, "drain_policy": D.QUEUE_NEXT_TURN, "routing_disposition": R.QUEUE, "boundary": B.RUN_START},
    (HandlingMode.QUEUE, False): {"apply_mode": A.STAGE_RUN_START, "wake_mode": W.NONE, "queue_mode": Q.FIFO, "drain_policy": D.QUEUE_NEXT_TURN, "routing_disposition": R.QUEUE, "boundary": B.RUN_START},
    (HandlingMode.STEER, True): {"apply_mode": A.STAGE_RUN_BOUNDARY, "wake_mode": W.WAKE_IF_IDLE, "queue_mode": Q.FIFO, "drain_policy": D.STEER_BATCH, "routing_disposition": R.STEER, "boundary": B.RUN_CHECKPOINT},
    (HandlingMode.STEER, False): {"apply_mode": A.STAGE_RUN_BOUNDARY, "wake_mode": W.INTERRUPT_YIELDING, "queue_mode": Q.FIFO, "drain_policy": D.STEER_BATCH, "routing_disposition": R.STEER, "boundary": B.RUN_CHECKPOINT},
}  # fmt: skip

#: Peer terminal responses keep their row; a steer lane only re-routes them (6.2).
PEER_TERMINAL_STEER: dict[bool, dict[str, Any]] = {
    True: {"wake_mode": W.WAKE_IF_IDLE, "drain_policy": D.STEER_BATCH, "routing_disposition": R.STEER},
    False: {"wake_mode": W.INTERRUPT_YIELDING, "drain_policy": D.STEER_BATCH, "routing_disposition": R.STEER},
}  # fmt: skip

#: The post-admission signal each wake mode raises; a steer lane requests immediate processing.
WAKE_SIGNAL = {
    W.WAKE_IF_IDLE: PostAdmissionSignal.WAKE_LOOP,
    W.INTERRUPT_YIELDING: PostAdmissionSignal.INTERRUPT_YIELDING,
    W.NONE: PostAdmissionSignal.NONE,
}

_LANE_ELIGIBLE = frozenset(_Row) - {_Row.PEER_PROGRESS, _Row.PEER_TERMINAL, _Row.WORKGRAPH}


@runtime_checkable
class Policy(Protocol):
    """An admission policy: what a runtime asks once per accepted input.

    ``resolve`` must be a pure function of its arguments (it runs inside the
    session's decision, which has no I/O and no clock, on several session host
    threads at once). ``version`` is recorded
    with every decision it makes (``PolicySnapshot.version`` and
    ``PolicyDecision.policy_version`` of the ``input.accepted`` event): change it
    whenever the rules change, so the log says which rules admitted an input.
    Subclassing :class:`DefaultPolicyTable` is the easy way to write one.
    """

    @property
    def version(self) -> int:
        """The version recorded with each decision (an int >= 0)."""
        ...

    def resolve(
        self,
        input: Input,
        runtime_idle: bool,
        *,
        silent_intent: bool = False,
        without_wake: bool = False,
        active_turn_boundary: bool = False,
    ) -> AdmissionPlan:
        """The plan for ``input``; the keyword facts are those of spec 6.2's overrides."""
        ...


class DefaultPolicyTable:
    """The default policy table, version 1: a pure function of kind, idleness, requested
    lane and the three admission facts (spec 6.1 and 6.2)."""

    version = DEFAULT_POLICY_VERSION

    def resolve(
        self,
        input: Input,
        runtime_idle: bool,
        *,
        silent_intent: bool = False,
        without_wake: bool = False,
        active_turn_boundary: bool = False,
    ) -> AdmissionPlan:
        """The plan for a real input: its kind, requested lane and continuation kind.

        * ``silent_intent``: the input is a peer request whose intent the session
          configured silent: wake ``none`` and no wake signal; with a steer lane it
          applies at run start. For any other kind no rule matches: raises
          :class:`RuntimeControlPlaneError` (``internal``).
        * ``without_wake``: admission that must not wake the loop: wake ``none``.
        * ``active_turn_boundary``: a turn boundary is available; counts as running
          for the wake mode only.
        """
        kind = input.kind
        row = _KIND_ROW[kind]
        if (
            isinstance(input, ContinuationInput)
            and input.continuation_kind is ContinuationKind.WORKGRAPH_ATTENTION
        ):
            row = _Row.WORKGRAPH
        if silent_intent and kind is not InputKind.PEER_REQUEST:
            raise RuntimeControlPlaneError(
                "internal", f"no admission rule matches a silent intent on a {kind} input"
            )
        return self._plan(
            row,
            input.requested_handling_mode(),
            runtime_idle and not active_turn_boundary,
            silent=silent_intent,
            without_wake=without_wake,
        )

    def resolve_by_kind(self, kind: InputKind, runtime_idle: bool) -> AdmissionPlan:
        """The plan for a kind with no requested lane and an ordinary continuation."""
        return self._plan(_KIND_ROW[kind], None, runtime_idle)

    def _plan(
        self,
        row: _Row,
        lane: HandlingMode | None,
        idle: bool,
        *,
        silent: bool = False,
        without_wake: bool = False,
    ) -> AdmissionPlan:
        key = (row, lane, idle, silent, without_wake, self.version)
        plan = _PLANS.get(key)
        if plan is None:
            plan = _PLANS[key] = _make_plan(*key)
        return plan


#: Every plan the table has made, by its inputs and version (a subclass's own version
#: is stamped here once, not per accept): 7 rows x 3 lanes x 8 facts per version, each
#: a frozen value, so one object serves every accept that asks the same.
_PLANS: dict[tuple[_Row, HandlingMode | None, bool, bool, bool, int], AdmissionPlan] = {}


def _make_plan(
    row: _Row,
    lane: HandlingMode | None,
    idle: bool,
    silent: bool,
    without_wake: bool,
    version: int,
) -> AdmissionPlan:
    """The row for ``(row, idle)``, the requested lane's overrides, then the 6.2 facts."""
    # Every row differs between idle and running in its wake mode only, so an
    # active turn boundary (running for the wake) can pick the running row.
    decision, semantics = DEFAULT_ROWS[(row, idle)]
    steer = False
    if lane is not None and row in _LANE_ELIGIBLE:
        changes = dict(LANE_OVERRIDES[(lane, idle)])
        boundary = changes.pop("boundary")
        steer = lane is HandlingMode.STEER
        if silent and steer:  # a silent steer request applies at run start (6.2)
            changes["apply_mode"] = A.STAGE_RUN_START
            boundary = B.RUN_START
        decision = replace(decision, **changes)
        if semantics is not None:
            semantics = replace(
                semantics,
                boundary=boundary,
                execution_handling_mode=handling_mode_for(decision),
            )
    elif lane is HandlingMode.STEER and row is _Row.PEER_TERMINAL:
        decision = replace(decision, **PEER_TERMINAL_STEER[idle])
        if semantics is not None:
            semantics = replace(semantics, execution_handling_mode=HandlingMode.STEER)
        steer = True
    if (silent or without_wake) and decision.wake_mode is not W.NONE:
        decision = replace(decision, wake_mode=W.NONE)
    if decision.policy_version != version:
        decision = replace(decision, policy_version=version)
    signal = (
        PostAdmissionSignal.REQUEST_IMMEDIATE_PROCESSING
        if steer
        else WAKE_SIGNAL[decision.wake_mode]
    )
    return AdmissionPlan(decision=decision, semantics=semantics, signal=signal)


#: The policy a runtime uses when ``Runtime.open`` is given none.
DEFAULT_POLICY: Policy = DefaultPolicyTable()


def generated_default_policy_version() -> int:
    """The default policy version (that of the idle prompt row): 1."""
    return DEFAULT_ROWS[(_Row.CONTENT, True)][0].policy_version
