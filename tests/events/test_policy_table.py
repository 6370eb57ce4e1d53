"""The policy table (RUNTIME_SPEC 6.1) and its overrides (6.2), every cell, written out
here from the spec independently of the package's table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from meerkat_runtime.events import (
    ContinuationKind,
    DefaultPolicyTable,
    HandlingMode,
    Input,
    InputKind,
    PostAdmissionSignal,
    detached_background_op_completed,
    generated_default_policy_version,
)

from ._support import (
    Driver,
    continuation,
    external,
    flow_step,
    operation,
    peer,
    peer_progress,
    peer_request,
    peer_terminal,
    prompt,
)

# ================================================================ policy table (6.1) and overrides (6.2)


@dataclass(frozen=True)
class Row:
    apply: str
    wake: str
    queue: str
    consume: str
    drain: str
    routing: str
    transcript: bool
    boundary: str | None
    exec_kind: str | None
    signal: str = ""
    intent: str | None = None


def _row_of(plan: Any) -> Row:
    d, sem = plan.decision, plan.semantics
    assert d.emit_operator_content == d.record_transcript
    assert d.policy_version == 1
    return Row(
        apply=d.apply_mode.value,
        wake=d.wake_mode.value,
        queue=d.queue_mode.value,
        consume=d.consume_point.value,
        drain=d.drain_policy.value,
        routing=d.routing_disposition.value,
        transcript=d.record_transcript,
        boundary=sem.boundary.value if sem and sem.boundary else None,
        exec_kind=sem.execution_kind.value if sem and sem.execution_kind else None,
        signal=plan.signal.value,
        intent=sem.peer_response_terminal_apply_intent.value
        if sem and sem.peer_response_terminal_apply_intent
        else None,
    )


CONTENT_IDLE = Row(
    "stage_run_start",
    "wake_if_idle",
    "fifo",
    "on_run_complete",
    "queue_next_turn",
    "queue",
    True,
    "run_start",
    "content_turn",
    "wake_loop",
)
CONTENT_RUNNING = Row(
    "stage_run_start",
    "none",
    "fifo",
    "on_run_complete",
    "queue_next_turn",
    "queue",
    True,
    "run_start",
    "content_turn",
    "none",
)
PEER_IDLE = CONTENT_IDLE
PEER_RUNNING = Row(
    "stage_run_start",
    "interrupt_yielding",
    "fifo",
    "on_run_complete",
    "queue_next_turn",
    "queue",
    True,
    "run_start",
    "content_turn",
    "interrupt_yielding",
)
PROGRESS = Row(
    "stage_run_boundary",
    "none",
    "coalesce",
    "on_run_complete",
    "steer_batch",
    "steer",
    True,
    "run_checkpoint",
    "content_turn",
    "none",
)
TERMINAL = Row(
    "stage_run_start",
    "wake_if_idle",
    "fifo",
    "on_run_complete",
    "queue_next_turn",
    "queue",
    True,
    "run_start",
    "content_turn",
    "wake_loop",
    "append_content_and_run",
)
CONT_IDLE = Row(
    "stage_run_boundary",
    "wake_if_idle",
    "fifo",
    "on_run_complete",
    "steer_batch",
    "steer",
    False,
    "run_checkpoint",
    "resume_pending",
    "wake_loop",
)
CONT_RUNNING = Row(
    "stage_run_boundary",
    "interrupt_yielding",
    "fifo",
    "on_run_complete",
    "steer_batch",
    "steer",
    False,
    "run_checkpoint",
    "resume_pending",
    "interrupt_yielding",
)
WORKGRAPH_IDLE = Row(
    "stage_run_start",
    "wake_if_idle",
    "fifo",
    "on_run_complete",
    "queue_next_turn",
    "queue",
    False,
    "run_start",
    "content_turn",
    "wake_loop",
)
WORKGRAPH_RUNNING = Row(
    "stage_run_start",
    "none",
    "fifo",
    "on_run_complete",
    "queue_next_turn",
    "queue",
    False,
    "run_start",
    "content_turn",
    "none",
)
OPERATION = Row("ignore", "none", "priority", "on_accept", "ignore", "drop", False, None, None, "none")  # fmt: skip

DEFAULT_TABLE = [
    (InputKind.PROMPT, True, CONTENT_IDLE),
    (InputKind.PROMPT, False, CONTENT_RUNNING),
    (InputKind.FLOW_STEP, True, CONTENT_IDLE),
    (InputKind.FLOW_STEP, False, CONTENT_RUNNING),
    (InputKind.EXTERNAL_EVENT, True, CONTENT_IDLE),
    (InputKind.EXTERNAL_EVENT, False, CONTENT_RUNNING),
    (InputKind.PEER_MESSAGE, True, PEER_IDLE),
    (InputKind.PEER_MESSAGE, False, PEER_RUNNING),
    (InputKind.PEER_REQUEST, True, PEER_IDLE),
    (InputKind.PEER_REQUEST, False, PEER_RUNNING),
    (InputKind.PEER_RESPONSE_PROGRESS, True, PROGRESS),
    (InputKind.PEER_RESPONSE_PROGRESS, False, PROGRESS),
    (InputKind.PEER_RESPONSE_TERMINAL, True, TERMINAL),
    (InputKind.PEER_RESPONSE_TERMINAL, False, TERMINAL),
    (InputKind.CONTINUATION, True, CONT_IDLE),
    (InputKind.CONTINUATION, False, CONT_RUNNING),
    (InputKind.OPERATION, True, OPERATION),
    (InputKind.OPERATION, False, OPERATION),
]


@pytest.mark.parametrize(("kind", "idle", "expected"), DEFAULT_TABLE, ids=str)
def test_policy_table_6_1_resolve_by_kind(kind: InputKind, idle: bool, expected: Row) -> None:
    plan = DefaultPolicyTable().resolve_by_kind(kind, runtime_idle=idle)
    assert _row_of(plan) == expected
    if kind is InputKind.OPERATION:
        assert plan.semantics is None  # consumed on accept, never queued
        assert plan.consume_on_accept


def test_policy_table_6_1_covers_every_kind() -> None:
    assert {k for k, _, _ in DEFAULT_TABLE} == set(InputKind)
    assert generated_default_policy_version() == 1


def _steer(base: Row, idle: bool, transcript: bool, exec_kind: str) -> Row:
    return Row("stage_run_boundary", "wake_if_idle" if idle else "interrupt_yielding", "fifo",
               "on_run_complete", "steer_batch", "steer", transcript, "run_checkpoint", exec_kind,
               "request_immediate_processing", base.intent)  # fmt: skip


def _queue(idle: bool, transcript: bool, exec_kind: str) -> Row:
    return Row("stage_run_start", "wake_if_idle" if idle else "none", "fifo", "on_run_complete",
               "queue_next_turn", "queue", transcript, "run_start", exec_kind,
               "wake_loop" if idle else "none")  # fmt: skip


Q, ST = HandlingMode.QUEUE, HandlingMode.STEER
OVERRIDES: list[tuple[str, Callable[[], Input], bool, Row]] = [
    # requested queue lane: like the prompt row
    ("prompt+queue idle", lambda: prompt(lane=Q), True, _queue(True, True, "content_turn")),
    ("prompt+queue running", lambda: prompt(lane=Q), False, _queue(False, True, "content_turn")),
    ("flow+queue running", lambda: flow_step(lane=Q), False, _queue(False, True, "content_turn")),
    ("external+queue idle", lambda: external(lane=Q), True, CONTENT_IDLE),
    ("external+queue running", lambda: external(lane=Q), False, CONTENT_RUNNING),
    ("peer msg+queue idle", lambda: peer(lane=Q), True, _queue(True, True, "content_turn")),
    ("peer msg+queue running", lambda: peer(lane=Q), False, _queue(False, True, "content_turn")),
    ("peer req+queue running", lambda: peer_request(lane=Q), False, _queue(False, True, "content_turn")),
    ("continuation+queue idle", lambda: continuation(lane=Q), True, _queue(True, False, "resume_pending")),
    ("continuation+queue running", lambda: continuation(lane=Q), False, _queue(False, False, "resume_pending")),
    # requested steer lane
    ("prompt+steer idle", lambda: prompt(lane=ST), True, _steer(CONTENT_IDLE, True, True, "content_turn")),
    ("prompt+steer running", lambda: prompt(lane=ST), False, _steer(CONTENT_IDLE, False, True, "content_turn")),
    ("flow+steer idle", lambda: flow_step(lane=ST), True, _steer(CONTENT_IDLE, True, True, "content_turn")),
    ("external+steer running", lambda: external(lane=ST), False, _steer(CONTENT_IDLE, False, True, "content_turn")),
    ("peer msg+steer running", lambda: peer(lane=ST), False, _steer(PEER_IDLE, False, True, "content_turn")),
    ("peer req+steer idle", lambda: peer_request(lane=ST), True, _steer(PEER_IDLE, True, True, "content_turn")),
    ("continuation+steer idle", lambda: continuation(lane=ST), True, _steer(CONT_IDLE, True, False, "resume_pending")),
    ("continuation+steer running", lambda: continuation(lane=ST), False, _steer(CONT_IDLE, False, False, "resume_pending")),
    ("detached continuation idle", detached_background_op_completed, True, _steer(CONT_IDLE, True, False, "resume_pending")),
    # peer terminal: queue = default row; steer re-routes only
    ("terminal+queue running", lambda: peer_terminal(lane=Q), False, TERMINAL),
    ("terminal+steer idle", lambda: peer_terminal(lane=ST), True,
     Row("stage_run_start", "wake_if_idle", "fifo", "on_run_complete", "steer_batch", "steer", True,
         "run_start", "content_turn", "request_immediate_processing", "append_content_and_run")),
    ("terminal+steer running", lambda: peer_terminal(lane=ST), False,
     Row("stage_run_start", "interrupt_yielding", "fifo", "on_run_complete", "steer_batch", "steer", True,
         "run_start", "content_turn", "request_immediate_processing", "append_content_and_run")),
    # no lane: the default rows
    ("prompt no lane running", prompt, False, CONTENT_RUNNING),
    ("peer msg no lane running", peer, False, PEER_RUNNING),
    ("progress no lane", peer_progress, True, PROGRESS),
    ("progress ignores a lane", lambda: peer_progress(lane=ST), False, PROGRESS),
    # workgraph attention ignores the lane
    ("workgraph+steer idle", lambda: continuation(lane=ST, kind=ContinuationKind.WORKGRAPH_ATTENTION), True, WORKGRAPH_IDLE),
    ("workgraph+queue running", lambda: continuation(lane=Q, kind=ContinuationKind.WORKGRAPH_ATTENTION), False, WORKGRAPH_RUNNING),
    ("operation", operation, True, OPERATION),
    ("operation running", operation, False, OPERATION),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "make", "idle", "expected"), OVERRIDES, ids=[o[0] for o in OVERRIDES]
)
def test_policy_overrides_6_2_resolve(
    name: str, make: Callable[[], Input], idle: bool, expected: Row
) -> None:
    plan = DefaultPolicyTable().resolve(make(), runtime_idle=idle)
    assert _row_of(plan) == expected
    lane = "steer" if expected.routing in ("steer", "immediate") else "queue"
    assert plan.lane.value == lane
    if plan.semantics is not None:
        assert plan.semantics.execution_handling_mode is not None
        assert plan.semantics.execution_handling_mode.value == lane


@pytest.mark.parametrize("idle", [True, False])
def test_policy_accept_uses_runtime_idle(idle: bool) -> None:
    """Accept resolves with ``runtime_idle`` false only while a run is active."""
    d = Driver()
    if not idle:
        d.accept(prompt())
        d.start()
    reply = d.accept(peer())
    assert reply.plan is not None
    expected = PEER_IDLE if idle else PEER_RUNNING
    assert _row_of(reply.plan) == expected
    row = d.state.inputs[reply.input_id]
    assert row.policy is not None
    assert row.policy.version == 1
    assert row.policy.decision == reply.plan.decision
    assert row.runtime_semantics == reply.plan.semantics


def test_signal_strength_order() -> None:
    order = [PostAdmissionSignal.NONE, PostAdmissionSignal.WAKE_LOOP,
             PostAdmissionSignal.INTERRUPT_YIELDING, PostAdmissionSignal.REQUEST_IMMEDIATE_PROCESSING]  # fmt: skip
    assert [s.strength for s in order] == sorted(s.strength for s in order)
    assert len({s.strength for s in order}) == 4
