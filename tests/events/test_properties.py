"""Property tests of the session decider over random command sequences.

One hypothesis example is a session driven by up to ``MAX_STEPS`` random
commands (accepts of every input kind, with colliding idempotency and
supersession keys, run commands aimed at the current or a stale run, and
every lifecycle operation), with an executor bound or not (for the life of a process).
After every command:

(a) every input move appended to a history is a legal lifecycle move
    (``INPUT_TRANSITIONS``, or a recovery move when its reason says so), and
    every ``runtime.state_changed`` event is a legal move of ``TRANSITIONS``
    starting from the state observed before the command;
(b) an input that was terminal is unchanged;
refused commands (``RuntimeStateTransitionError``, ``RuntimeControlPlaneError``,
``InvalidInput``) emit nothing and leave the state as it was; and the
session's own consistency invariants hold (queues, run, wake flag, keys).
At the end of the sequence:

(c) folding all envelopes from a fresh state equals the executed state (also
    after a trip of every envelope through the wire);
(d) ``state_from_snapshot(state_to_snapshot(s)) == s``, also through orjson;
(e) every envelope's wire form round-trips.
"""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from unittest import mock

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meerkat_runtime.errors import (
    InvalidInput,
    RuntimeControlPlaneError,
    RuntimeStateTransitionError,
)
from meerkat_runtime.events import (
    INPUT_TRANSITIONS,
    TRANSITIONS,
    Accept,
    AcceptDecision,
    ApplyBoundary,
    CancelRun,
    Command,
    CompleteRun,
    ContinuationKind,
    DecisionContext,
    Destroy,
    FailRun,
    FlowOrigin,
    HandlingMode,
    Input,
    InputDurability,
    InputLifecycleState,
    InputState,
    OperatorOrigin,
    PeerOrigin,
    PeerRequest,
    Recover,
    Recycle,
    Reset,
    ResponseTerminalStatus,
    Retire,
    RunError,
    RuntimeEventEnvelope,
    RuntimeState,
    RuntimeStateChangeEvent,
    SessionState,
    SetSilentIntents,
    StartRun,
    Stop,
    SystemOrigin,
    TurnTerminalCauseKind,
    decide,
    execute,
    fold,
    wants_run,
    wire,
)
from meerkat_runtime.events import session as session_mod
from meerkat_runtime.events.input_state import RECOVERY_TRANSITIONS
from meerkat_runtime.events.session import compact, state_from_snapshot, state_to_snapshot

from . import strategies as s
from ._support import (
    NOW,
    PEER_UUID,
    SESSION,
    IdGen,
    continuation,
    external,
    fixed_uuid,
    flow_step,
    operation,
    peer,
    peer_progress,
    peer_terminal,
    prompt,
)

L = InputLifecycleState
S = RuntimeState
MAX_STEPS = 30
RECOVERY_REASONS = {"Recovery", "RecoveryReceiptFound"}
REFUSALS = (RuntimeStateTransitionError, RuntimeControlPlaneError, InvalidInput)

# ---------------------------------------------------------------- generating commands

_KINDS = [
    "prompt",
    "prompt",
    "flow_step",
    "external",
    "peer",
    "peer_request",
    "progress",
    "terminal",
    "continuation",
    "workgraph",
    "operation",
]


def draw_input(data: st.DataObject, n: int) -> Input:
    kind = data.draw(st.sampled_from(_KINDS), label="kind")
    iid = fixed_uuid(n, 0x0AAA)
    key = data.draw(st.sampled_from([None, None, None, "k1", "k2"]), label="idempotency_key")
    sup = data.draw(st.sampled_from([None, None, "s1", "s2"]), label="supersession_key")
    durability = data.draw(
        st.sampled_from(
            [
                InputDurability.DURABLE,
                InputDurability.DURABLE,
                InputDurability.EPHEMERAL,
                InputDurability.DERIVED,
            ]
        ),
        label="durability",
    )
    lane = data.draw(
        st.sampled_from([None, None, HandlingMode.QUEUE, HandlingMode.STEER]), label="lane"
    )
    system = data.draw(st.booleans(), label="system_origin")
    kw: dict[str, Any] = {
        "input_id": iid,
        "key": key,
        "supersession": sup,
        "durability": durability,
    }
    if system:
        kw["source"] = SystemOrigin()
    if kind == "prompt":
        return prompt(f"p{n}", lane=lane, **kw)
    if kind == "flow_step":
        kw.setdefault("source", FlowOrigin(flow_id="f", step_index=0))
        return flow_step(f"f{n}", lane=lane, **kw)
    if kind == "external":
        return external(lane=lane or HandlingMode.QUEUE, **kw)
    if kind == "peer":
        return peer(lane=lane, text=f"m{n}", **kw)
    if kind == "peer_request":
        return peer(PeerRequest(request_id=f"r{n}", intent="review"), lane=lane, **kw)
    if kind == "progress":
        return peer_progress(lane=lane, **kw)  # a lane makes it invalid: rejected
    if kind == "terminal":
        kw.setdefault("source", PeerOrigin(peer_id=PEER_UUID, display_identity="A"))
        status = data.draw(st.sampled_from(ResponseTerminalStatus), label="status")
        return peer_terminal(status=status, lane=lane, **kw)
    if kind in ("continuation", "workgraph"):
        ck = (
            ContinuationKind.WORKGRAPH_ATTENTION
            if kind == "workgraph"
            else ContinuationKind.ORDINARY
        )
        return continuation(lane=lane or HandlingMode.QUEUE, kind=ck, **kw)
    kw.setdefault("source", OperatorOrigin())
    return operation(**kw)


_COMMANDS = (
    ["accept"] * 8
    + ["start"] * 4
    + ["boundary", "boundary", "complete", "complete", "fail", "cancel"]
    + ["retire", "retire", "reset", "stop", "destroy", "recycle", "recycle", "recover", "represent"]
    + ["silent"]
)
#: Silent intent sets a session is given (its peer requests ask for "review").
_SILENT_SETS = [(), ("review",), ("review", "other")]


@dataclass
class Session:
    """One randomly driven session and its whole log."""

    state: SessionState = field(default_factory=lambda: SessionState(session_id=SESSION))
    log: list[RuntimeEventEnvelope] = field(default_factory=list)
    inputs: list[Input] = field(default_factory=list)
    n_inputs: int = 0
    n_runs: int = 0
    ids: IdGen = field(default_factory=IdGen)
    now: Any = NOW
    steps: int = 0

    def run_id_for(self, data: st.DataObject) -> uuid.UUID:
        current = self.state.run.run_id if self.state.run is not None else None
        if current is not None and data.draw(st.integers(0, 9), label="stale_run") > 0:
            return current
        return fixed_uuid(max(self.n_runs, 1), 0x0BBB)  # the latest (possibly ended) run

    def draw_command(self, data: st.DataObject) -> Command:
        name = data.draw(st.sampled_from(_COMMANDS), label="command")
        if name == "accept":
            self.n_inputs += 1
            inp = draw_input(data, self.n_inputs)
            self.inputs.append(inp)
            wake = data.draw(st.sampled_from([True, True, True, False]), label="wake")
            return Accept(inp, wake=wake)
        if name == "silent":
            intents = data.draw(st.sampled_from(_SILENT_SETS), label="silent_intents")
            return SetSilentIntents(frozenset(intents))
        if name == "represent" and self.inputs:
            return Accept(data.draw(st.sampled_from(self.inputs), label="same_input"))
        if name == "start":
            self.n_runs += 1
            return StartRun(fixed_uuid(self.n_runs, 0x0BBB))
        if name == "boundary":
            return ApplyBoundary(self.run_id_for(data))
        if name == "complete":
            return CompleteRun(
                self.run_id_for(data), output=data.draw(s.json_values, label="output")
            )
        if name == "fail":
            terminal = data.draw(st.booleans(), label="terminal")
            return FailRun(
                self.run_id_for(data),
                RunError(kind=TurnTerminalCauseKind.UNKNOWN, terminal=terminal),
            )
        if name == "cancel":
            return CancelRun(
                self.run_id_for(data), rollback=data.draw(st.booleans(), label="rollback")
            )
        if name == "retire":
            return Retire(loop_attached=data.draw(st.booleans(), label="loop_attached"))
        if name == "reset":
            return Reset()
        if name == "stop":
            return Stop()
        if name == "destroy":
            return Destroy()
        if name == "recycle":
            return Recycle()
        cold = data.draw(st.booleans(), label="cold")
        return Recover(cold=cold, reregister=data.draw(st.booleans(), label="reregister"))

    def ctx(self, attached: bool, ids: IdGen | None = None) -> DecisionContext:
        return DecisionContext(now=self.now, new_id=ids or self.ids, attached=attached)


# ---------------------------------------------------------------- checks


def check_input_moves(
    before: dict[uuid.UUID, InputState], after: dict[uuid.UUID, InputState]
) -> None:
    """(a) and (b): every appended history entry is a legal move; terminal inputs never change."""
    assert set(before) <= set(after), "an input vanished from the ledger"
    for iid, new in after.items():
        old = before.get(iid)
        if old is not None and old.current_state.is_terminal:
            assert new == old, (
                f"terminal input {iid} changed: {old.current_state} -> {new.current_state}"
            )
            continue
        if old is None:
            prev, start = L.ACCEPTED, 0  # a new input starts life in accepted
        else:
            prev, start = old.current_state, len(old.history)
            assert new.history[:start] == old.history, "history was rewritten"
            assert new.created_at == old.created_at
        for entry in new.history[start:]:
            assert entry.from_state is prev, f"history chain broken for {iid}"
            move = (entry.from_state, entry.to)
            legal = move in INPUT_TRANSITIONS or (
                entry.reason in RECOVERY_REASONS and move in RECOVERY_TRANSITIONS
            )
            assert legal, f"illegal input move {move} ({entry.reason}) for {iid}"
            prev = entry.to
        assert new.current_state is prev
        if new.current_state.is_terminal:
            assert new.terminal_outcome is not None
        else:
            assert new.terminal_outcome is None


def check_runtime_moves(
    observed_before: RuntimeState, events: list[RuntimeEventEnvelope], after: RuntimeState
) -> None:
    """(a): state changes chain from the observed state through legal moves to the observed state."""
    cur = observed_before
    for env in events:
        ev = env.event
        if isinstance(ev, RuntimeStateChangeEvent):
            assert ev.from_state is cur, (
                f"state change from {ev.from_state}, but the state was {cur}"
            )
            assert (ev.from_state, ev.to) in TRANSITIONS, (
                f"illegal runtime move {ev.from_state} -> {ev.to}"
            )
            assert ev.from_state is not ev.to, "a no-op state change was emitted"
            cur = ev.to
    assert after is cur, f"state is {after} but the events say {cur}"


def check_invariants(st_: SessionState, log_len: int) -> None:
    """The session's own consistency: what the queues, run and flags say agrees with the ledger."""
    assert st_.version == log_len
    queued = {i for i, r in st_.inputs.items() if r.current_state is L.QUEUED}
    ordinary, steer = st_.queue.input_ids(), st_.steer_queue.input_ids()
    assert len(ordinary) + len(steer) == len(set(ordinary) | set(steer)), "an input is queued twice"
    assert set(ordinary) | set(steer) == queued, "the queues and the queued inputs disagree"
    for lane, ids in ((HandlingMode.QUEUE, ordinary), (HandlingMode.STEER, steer)):
        seqs = []
        for iid in ids:
            row = st_.inputs[iid]
            assert (row.recovery_lane or HandlingMode.QUEUE) is lane, "input in the wrong lane"
            assert row.admission_sequence is not None
            seqs.append(row.admission_sequence)
        assert seqs == sorted(seqs), "a queue is out of admission order"
    if not ordinary and not steer:
        assert not st_.wake_pending, "a wake is pending with nothing queued"
    assert st_.phase not in (S.ATTACHED, S.INITIALIZING), "the persisted phase is never attached"
    run = st_.run
    if st_.phase is S.RUNNING:
        assert run is not None, "running without a run"
    if run is not None:
        assert st_.phase in (S.RUNNING, S.RETIRED)
        assert len(run.input_ids) == len(set(run.input_ids))
        for iid in run.input_ids:
            assert (
                st_.inputs[iid].last_run_id == run.run_id
                or st_.inputs[iid].current_state.is_terminal
            )
    in_run = set(run.input_ids) if run is not None else set()
    for iid, row in st_.inputs.items():
        if row.current_state in (L.STAGED, L.APPLIED, L.APPLIED_PENDING_CONSUMPTION):
            assert iid in in_run, f"{row.current_state} input {iid} belongs to no run in flight"
        if row.current_state is L.ACCEPTED:
            raise AssertionError(f"input {iid} left in accepted after a decision")
    if st_.phase in (S.STOPPED, S.DESTROYED):
        assert st_.non_terminal_ids() == [], f"a {st_.phase} session holds live inputs"
        assert st_.silent_intents == frozenset(), f"a {st_.phase} session keeps silent intents"
    # Inputs waiting for a wake are ordinary-queue inputs, and a run drains them all.
    assert st_.unwoken <= set(ordinary), "an unwoken input is not in the ordinary queue"
    if run is not None:
        assert not st_.unwoken, "inputs still wait for a wake while a run is draining"
    # Every key maps to the first input accepted with it.
    first: dict[str, uuid.UUID] = {}
    for iid, row in st_.inputs.items():
        if row.idempotency_key is not None:
            first.setdefault(row.idempotency_key, iid)
    assert st_.idempotency == first


def step(sess: Session, data: st.DataObject, attached: bool) -> None:
    command = sess.draw_command(data)
    st_ = sess.state
    snap_before = state_to_snapshot(st_)
    inputs_before = dict(st_.inputs)
    observed_before = st_.observed_state(attached)
    # decide is pure and deterministic: a dry run with the same ids gives the same events.
    probe_ids = IdGen(prefix=0xF000)
    # The same state compacted (terminal inputs out, as a snapshot holds it) decides alike.
    twin = state_from_snapshot(snap_before)
    twin_events: list[object]
    try:
        twin_events = [
            e.event for e in decide(twin, command, sess.ctx(attached, IdGen(prefix=0xF000))).events
        ]
    except REFUSALS as exc:
        twin_events = [type(exc)]
    try:
        dry = decide(st_, command, sess.ctx(attached, probe_ids))
    except REFUSALS as exc:
        assert twin_events == [type(exc)], "a compacted state decided what the full one refused"
        assert state_to_snapshot(st_) == snap_before, "a refused decide changed the state"
        try:
            execute(st_, command, sess.ctx(attached))
        except type(exc):
            pass
        else:
            raise AssertionError("decide refused once and accepted the second time") from None
        assert state_to_snapshot(st_) == snap_before, "a refused command changed the state"
        if isinstance(exc, RuntimeStateTransitionError):
            assert str(exc).startswith("Invalid runtime state transition: ")
        return
    assert state_to_snapshot(st_) == snap_before, "decide mutated the state"
    assert twin_events == [e.event for e in dry.events], "a compacted state decides otherwise"
    decision, _ = execute(st_, command, sess.ctx(attached))
    assert [e.event for e in dry.events] == [e.event for e in decision.events]
    assert (dry.reply is None) == (decision.reply is None)
    for n, env in enumerate(decision.events, start=len(sess.log) + 1):
        assert env.sequence == n
        assert env.runtime_id == SESSION
        assert env.timestamp == sess.now
    sess.log.extend(decision.events)
    check_input_moves(inputs_before, st_.inputs)
    check_runtime_moves(observed_before, decision.events, st_.observed_state(attached))
    check_invariants(st_, len(sess.log))
    if isinstance(command, Accept):
        reply = decision.reply
        assert isinstance(reply, AcceptDecision)
        assert reply.input_id == command.input.input_header.id
        if reply.kind == "rejected":
            assert decision.events == []
        if reply.kind == "accepted":
            assert st_.inputs[reply.input_id].persisted_input == command.input
    sess.now += timedelta(milliseconds=1)


def run_session(data: st.DataObject) -> Session:
    # An actor binds its executor (or none) for its whole life, so ``attached`` is
    # constant within a process; it changes only across a restart (see below).
    sess = Session()
    attached = data.draw(st.booleans(), label="attached")
    n_steps = data.draw(st.integers(1, MAX_STEPS), label="steps")
    for _ in range(n_steps):
        step(sess, data, attached)
    return sess


PROPS = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@PROPS
@given(st.data())
def test_commands_never_make_illegal_moves_and_keep_the_state_consistent(
    data: st.DataObject,
) -> None:
    """(a), (b), refusals, invariants: checked after every command inside ``step``."""
    sess = run_session(data)
    assert sess.state.version == len(sess.log)


@PROPS
@given(st.data())
def test_fold_of_the_log_equals_the_executed_state(data: st.DataObject) -> None:
    """(c) and (e): the log is the truth, also after a trip through the wire."""
    sess = run_session(data)
    folded = fold(sess.log, session_id=SESSION)
    assert folded == sess.state
    decoded = []
    for env in sess.log:
        raw = wire.encode(env)
        back = wire.decode(RuntimeEventEnvelope, raw)
        assert back == env
        assert wire.encode(back) == raw
        decoded.append(back)
    assert fold(decoded, session_id=SESSION) == sess.state
    # Folding in two parts (a snapshot then the tail) gives the same state.
    # A snapshot is compacted (terminal inputs out): compare with the compacted state.
    cut = data.draw(st.integers(0, len(sess.log)), label="cut")
    head = fold(sess.log[:cut], session_id=SESSION)
    resumed = fold(
        sess.log[cut:], state_from_snapshot(orjson.loads(orjson.dumps(state_to_snapshot(head))))
    )
    compact(resumed)
    compact(folded)
    assert resumed == folded


@PROPS
@given(st.data())
def test_snapshot_round_trip(data: st.DataObject) -> None:
    """(d): snapshots rebuild the same state, as dicts and as orjson bytes."""
    sess = run_session(data)
    snap = state_to_snapshot(sess.state)
    compacted = fold(sess.log, session_id=SESSION)
    compact(compacted)  # what a snapshot holds
    assert state_from_snapshot(snap) == compacted
    raw = orjson.dumps(snap)
    again = state_from_snapshot(orjson.loads(raw))
    assert again == compacted
    assert orjson.dumps(state_to_snapshot(again)) == raw
    assert wants_run(again) == wants_run(sess.state)


@PROPS
@given(st.data(), st.integers(0, 3))
def test_a_snapshot_with_the_memo_is_the_snapshot_without_it(
    data: st.DataObject, memo_min: int
) -> None:
    """(d) with a session's snapshot memo: after any commands, the memo's snapshot is
    byte for byte the snapshot encoded afresh (inputs that moved are never reused)."""
    sess = Session()
    attached = data.draw(st.booleans(), label="attached")
    memo = session_mod.SnapshotMemo()
    with mock.patch.object(session_mod, "SNAPSHOT_MEMO_MIN_INPUTS", memo_min):
        for _ in range(data.draw(st.integers(1, MAX_STEPS), label="steps")):
            step(sess, data, attached)
            if data.draw(st.booleans(), label="snapshot now"):
                fresh = orjson.dumps(state_to_snapshot(sess.state))
                assert orjson.dumps(state_to_snapshot(sess.state, memo)) == fresh
                kept = {
                    i.input_id for i in state_from_snapshot(orjson.loads(fresh)).inputs.values()
                }
                assert (
                    set(memo.states)
                    == set(memo.fragments)
                    == (kept if len(kept) >= memo_min else set())
                )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_a_cold_restart_at_any_point_recovers_to_a_consistent_state(data: st.DataObject) -> None:
    """A process dies after any command: the next folds the log, recovers cold, and carries on."""
    sess = run_session(data)
    restarted = Session(state=fold(sess.log, session_id=SESSION), log=list(sess.log), inputs=sess.inputs,
                        n_inputs=sess.n_inputs, n_runs=sess.n_runs, now=sess.now)  # fmt: skip
    attached = data.draw(st.booleans(), label="attached_after_restart")
    before = restarted.state.observed_state(attached)
    try:
        decision, _ = execute(restarted.state, Recover(cold=True), restarted.ctx(attached))
    except RuntimeStateTransitionError:
        assert before is S.DESTROYED
        return
    restarted.log.extend(decision.events)
    check_invariants(restarted.state, len(restarted.log))
    assert restarted.state.run is None
    assert restarted.state.phase is not S.RUNNING
    for row in restarted.state.inputs.values():
        assert row.current_state not in (
            L.ACCEPTED,
            L.STAGED,
            L.APPLIED,
            L.APPLIED_PENDING_CONSUMPTION,
        )
        if row.durability is InputDurability.EPHEMERAL:
            assert row.current_state.is_terminal
    assert fold(restarted.log, session_id=SESSION) == restarted.state
    # ... and the restarted session keeps obeying every rule.
    for _ in range(data.draw(st.integers(0, 8), label="more_steps")):
        step(restarted, data, attached)


@settings(max_examples=150, deadline=None)
@given(s.envelopes)
def test_every_envelope_wire_form_round_trips(env: RuntimeEventEnvelope) -> None:
    """(e) for arbitrary envelopes, not only the ones the decider makes."""
    assert wire.decode(RuntimeEventEnvelope, wire.encode(env)) == env


_CORRUPTIONS: list[tuple[str, Any]] = [
    ("format", 3),
    ("format", 0),
    ("version", float("inf")),
    ("version", float("nan")),
    ("version", None),
    ("admission_counter", float("-inf")),
    ("inputs", None),
    ("inputs", [{"input_id": "x"}]),
    ("run", {"run_id": "not-a-uuid"}),
    ("run", []),
    ("queue", 5),
    ("queue", ["nope"]),
    ("phase", "sleeping"),
    ("phase", None),
    ("updated_at", 5),
    ("updated_at", "yesterday"),
    ("session_id", KeyError),  # removed
    ("retired", "not base64!"),
    ("retired", "AAAA"),  # 3 bytes: not a whole id
    ("retired", 5),
    ("idempotency", {"k": "not-a-uuid"}),
    ("idempotency", []),
]


def _corrupt(snap: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    out = dict(snap)
    if value is KeyError:
        del out[key]
    else:
        out[key] = value
    return out


def test_unreadable_snapshots_raise_invalid_input() -> None:
    sess = Session()
    step_ctx = sess.ctx(False)
    execute(sess.state, Accept(prompt(input_id=fixed_uuid(1, 0x0AAA))), step_ctx)
    execute(sess.state, StartRun(fixed_uuid(1, 0x0BBB)), step_ctx)
    snap = state_to_snapshot(sess.state)
    assert state_from_snapshot(snap) == sess.state
    for key, value in _CORRUPTIONS:
        try:
            state_from_snapshot(_corrupt(snap, key, value))
        except InvalidInput:
            continue
        raise AssertionError(f"snapshot with {key}={value!r} was accepted")
    not_a_snapshot: tuple[object, ...] = (None, [], "snapshot", 1)
    for doc in not_a_snapshot:
        try:
            state_from_snapshot(doc)  # type: ignore[arg-type]
        except InvalidInput:
            continue
        raise AssertionError(f"snapshot {doc!r} was accepted")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzzed_snapshots_raise_only_invalid_input(data: st.DataObject) -> None:
    sess = run_session(data)
    snap = state_to_snapshot(sess.state)
    path = data.draw(st.sampled_from(s.json_paths(snap)), label="path")
    mutated = s.replace_at(snap, path, data.draw(s.wild_json, label="value"))
    with contextlib.suppress(InvalidInput):
        state_from_snapshot(mutated)
