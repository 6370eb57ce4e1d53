"""Poison events: nothing that cannot be read back is ever written, and one that is met
anyway (an older version wrote it, someone edited the database) harms only its session.

* The append path refuses an event whose stored form would not decode, whoever
  appends it: the session actor (also when an input skips the host-side check),
  or a tool writing through the store with the runtime's codec.
* A hand-corrupted event in a real SQLite file and in PostgreSQL: its session
  fails with an error naming the session and the log position; every other
  session, the projections (under their documented failure strategy), the API's
  read calls and every CLI read command keep working, and ``health`` and
  ``verify`` point at the bad event.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner, Result

from meerkat_runtime import MeerkatRuntimeError, Runtime, StoreError, UndecodableEvent
from meerkat_runtime.actors import _messages as msg
from meerkat_runtime.cli import app
from meerkat_runtime.events.catalogue import decode_recorded, envelope_to_record
from meerkat_runtime.events.ids import uuid7
from meerkat_runtime.events.inputs import ExternalEventInput, InputHeader, PromptInput
from meerkat_runtime.events.session import Accept, DecisionContext, SessionState, decide
from meerkat_runtime.events.timefmt import utc_now
from meerkat_runtime.projections import Cursor, FailureStrategy, Projection, ProjectionSet
from meerkat_runtime.runtime import event_codec
from meerkat_runtime.store import EventStore, NewEvent, RecordedEvent, open_store
from meerkat_runtime.store._schema import EVENTS_TABLE

from ..waiting import wait_until

_runner = CliRunner()


def cli(*args: str) -> Result:
    """``meerkat-runtime ARGS`` in this process (wide, colourless output)."""
    result = _runner.invoke(app, list(args), env={"COLUMNS": "400", "NO_COLOR": "1"})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"{args} raised {result.exception!r}\n{result.output}")
    return result


@pytest.fixture(params=["memory", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "memory":
        return f"memory://{uuid.uuid4().hex}"
    return f"sqlite:///{tmp_path_factory.mktemp('poison') / 'poison.db'}"


@pytest.fixture
def rt(url: str) -> Iterator[Runtime]:
    with Runtime.open(url) as runtime:
        yield runtime


def _bad_records(inp: PromptInput | ExternalEventInput) -> list[NewEvent]:
    """The events the decider makes for ``inp``, unchecked (as if no input check ran)."""
    st = SessionState(session_id="x")
    decision = decide(st, Accept(inp), DecisionContext(now=utc_now(), new_id=uuid7, attached=False))
    return [NewEvent(*envelope_to_record(env)) for env in decision.events]


UNREADABLE = [
    ("content None", lambda: PromptInput(content=None)),  # type: ignore[arg-type]
    ("payload NaN", lambda: ExternalEventInput(event_type="e", payload=float("nan"))),
    ("header id not a uuid", lambda: PromptInput(content="x", header=_header_with_id("nope"))),
]


def _header_with_id(value: object) -> InputHeader:
    return InputHeader(id=value)  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "make"), UNREADABLE, ids=[c[0] for c in UNREADABLE])
def test_the_session_actor_never_appends_an_event_that_would_not_read_back(
    rt: Runtime, name: str, make: object
) -> None:
    """Past the host-side input check (called straight into the actor), the append path
    itself refuses: nothing written, the session goes on."""
    s = rt.session("guarded")
    assert s.accept(PromptInput(content="before")).kind == "accepted"
    head = rt.store.max_position()
    with pytest.raises(StoreError, match="would not read back"):
        s._call(msg.Accept(make()), admission=True)  # type: ignore[operator]
    assert rt.store.max_position() == head, name
    assert s.accept(PromptInput(content="after")).kind == "accepted"
    assert len(s.active_input_ids()) == 2


@pytest.mark.parametrize("policy", ["default", "custom"])
def test_the_accept_path_decodes_again_only_what_the_host_api_did_not_decode(
    url: str, policy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Accepts through the host API (single, batched, async's path is the same message)
    skip the store's second decode with the built-in policy; a custom policy's plans,
    and inputs handed to the actor undecoded, still go through it."""
    from meerkat_runtime.events.policy import DefaultPolicyTable

    class Custom(DefaultPolicyTable):
        pass

    options: dict[str, Any] = {} if policy == "default" else {"policy": Custom()}
    with Runtime.open(url, projections=False, **options) as rt:
        codec = rt.store.serializer.codec
        calls: list[str] = []
        real = codec._check
        assert real is not None

        def spy(topic: str, data: dict[str, Any]) -> None:
            calls.append(topic)
            real(topic, data)

        monkeypatch.setattr(codec, "_check", spy)
        s = rt.session("checked")
        assert s.accept({"input_type": "prompt", "content": "a"}).kind == "accepted"
        assert s.accept(PromptInput(content="b")).kind == "accepted"
        assert len(s.accept_many([PromptInput(content="c"), PromptInput(content="d")])) == 2
        assert len(rt.accept_many([("checked", PromptInput(content="e"))])) == 1
        host_api = len(calls)
        s._call(msg.Accept(PromptInput(content="f")), admission=True)
        direct = len(calls) - host_api
        assert rt.store.session_version("checked") >= 12
    if policy == "default":
        assert host_api == 0
    else:
        assert host_api >= 10  # two events (accepted, queued) per input
    assert direct >= 2


def test_a_tool_writing_with_the_runtime_codec_cannot_store_an_unreadable_event(url: str) -> None:
    with open_store(url, codec=event_codec()) as store:
        bad = _bad_records(PromptInput(content=None))  # type: ignore[arg-type]
        with pytest.raises(StoreError, match=r"would not read back .*content: must not be null"):
            store.append("tool", 0, bad)
        good = _bad_records(PromptInput(content="ok"))
        mislabelled = [NewEvent("input.queued", good[0].data), *good[1:]]
        with pytest.raises(StoreError, match=r"stored under topic 'input\.queued'"):
            store.append("tool", 0, mislabelled)
        assert store.max_position() == 0
        assert store.session_ids() == []
        store.append("tool", 0, good)
        assert len(store.read_session("tool")) == len(good)


# ---------------------------------------------------------------------- a poison event met anyway

GOOD = ("good-a", "good-b")
BAD = "bad"


@dataclass
class Poisoned:
    url: str
    version: int  # of the bad event in its session
    position: int  # of the bad event in the log
    good_inputs: int
    detail: str  # what the error says is wrong with it
    events: dict[str, int]  # per session


def _corrupt(store: EventStore, session_id: str, version: int, edit: Any) -> None:
    """Rewrite one stored event's bytes by hand, in the database itself (what an older
    version or a careless operator may have left): ``edit(stored bytes) -> new bytes``."""
    mark = "?"
    table = store.table_name(EVENTS_TABLE)
    with store.transaction() as cur:
        cur.execute(
            f"SELECT state FROM {table} WHERE originator_id = {mark} AND originator_version = {mark}",
            (session_id, version),
        )
        row = cur.fetchone()
        cur.execute(
            f"UPDATE {table} SET state = {mark} "
            f"WHERE originator_id = {mark} AND originator_version = {mark}",
            (edit(bytes(row["state"])), session_id, version),
        )


def _null_content(state: bytes) -> bytes:
    """Valid JSON, but an input the wire refuses (what unchecked typed inputs used to store)."""
    envelope = orjson.loads(state)
    envelope["d"]["event"]["data"]["input"]["content"] = None
    return orjson.dumps(envelope)


def _truncate(state: bytes) -> bytes:
    """Not even JSON any more: the store itself cannot read it."""
    return state[: len(state) // 2]


CORRUPTIONS = {
    "content-null": (_null_content, "content: must not be null"),
    "truncated-bytes": (_truncate, "not JSON"),
}


def _poison(url: str, corruption: str) -> Poisoned:
    """Three sessions with three inputs each, written with projections off; then the second
    ``input.accepted`` of session ``bad`` is corrupted by hand.

    Without snapshots: a session's stop snapshots its head, and a load from it would
    never read the event behind it. The log is left as a crash leaves it."""
    edit, detail = CORRUPTIONS[corruption]
    with Runtime.open(url, projections=False, snapshot_interval=0) as rt:
        for i in range(3):
            for sid in (*GOOD, BAD):
                assert rt.session(sid).accept(PromptInput(content=f"{sid} {i}")).is_accepted
        accepted = [r for r in rt.store.read_session(BAD) if r.topic == "input.accepted"]
        target = accepted[1]
        events = {sid: len(rt.store.read_session(sid)) for sid in (*GOOD, BAD)}
        _corrupt(rt.store, BAD, target.version, edit)
    return Poisoned(url, target.version, target.position, 3 * len(GOOD), detail, events)


@pytest.fixture(
    params=[
        ("sqlite", "content-null"),
        ("sqlite", "truncated-bytes"),
        ("postgres", "content-null"),
        ("postgres", "truncated-bytes"),
    ],
    ids="-".join,
)
def poisoned(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Poisoned:
    backend, corruption = request.param
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('poisoned') / 'runtime.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    return _poison(url, corruption)


def _names_the_bad_event(text: str, p: Poisoned) -> bool:
    return f"session {BAD!r}" in text and f"log position {p.position}" in text


def test_an_unreadable_event_affects_only_its_session(
    poisoned: Poisoned, caplog: pytest.LogCaptureFixture
) -> None:
    p = poisoned
    with Runtime.open(p.url) as rt:
        bad = rt.session(BAD)
        head = rt.store.max_position()
        calls = (
            bad.state,
            lambda: bad.accept(PromptInput(content="more")),
            bad.reset,
            lambda: bad.interaction_status(idempotency_key="k"),  # the durable witness
        )
        for call in calls:
            with pytest.raises(UndecodableEvent) as caught:
                call()
            err = caught.value
            assert (err.session_id, err.version, err.position) == (BAD, p.version, p.position)
            assert _names_the_bad_event(str(err), p) and p.detail in str(err)
        with pytest.raises(UndecodableEvent):
            list(bad.events())
        assert rt.store.max_position() == head  # nothing written for the bad session

        # Every other session works, reads and writes.
        for sid in GOOD:
            s = rt.session(sid)
            assert s.accept(PromptInput(content="after")).is_accepted
            assert len(s.active_input_ids()) == 4
            assert len(list(s.events())) > 0

        # The projections skip the bad event, hold its session back and go on for the others.
        rt.projections.wait_caught_up(timeout=60)
        assert {s.name: s.status for s in rt.projections.status()} == {
            "ledger": "running",
            "views": "running",
        }
        skipped = [s for s in rt.projections.skipped("ledger") if s.position == p.position]
        assert len(skipped) == 1 and skipped[0].session_id == BAD
        assert _names_the_bad_event(skipped[0].error, p)
        for sid in GOOD:
            rows = rt.ledger.list(session_id=sid, limit=100)
            assert len(rows) == 4 and all(r.state == "queued" for r in rows)
            view = rt.views.get(sid)
            assert view is not None and view.queued == 4

        # verify names the bad event and nothing else.
        report = rt.verify()
        assert len(report.mismatches) == 1, report.mismatches
        assert _names_the_bad_event(report.mismatches[0], p)

        # recovery of the store recovers the others and logs the bad one.
        with caplog.at_level(logging.ERROR, logger="meerkat_runtime"):
            reports = rt.recover_by_session()
        assert set(reports) == set(GOOD)
        assert any(_names_the_bad_event(r.getMessage(), p) for r in caplog.records)


def test_cli_read_commands_work_around_an_unreadable_event(poisoned: Poisoned) -> None:
    p = poisoned
    store = ("--store", p.url)
    sessions = cli("sessions", *store, "--json")
    assert sessions.exit_code == 0, sessions.output
    assert {r["session_id"] for r in orjson.loads(sessions.stdout)} == {*GOOD, BAD}
    ledger = cli("ledger", *store, "--json")
    assert ledger.exit_code == 0, ledger.output
    rows = orjson.loads(ledger.stdout)
    rows = rows["rows"] if isinstance(rows, dict) else rows
    assert sum(1 for r in rows if r["session_id"] in GOOD) == p.good_inputs
    for args in (
        ("views",),
        ("inspect", GOOD[0]),
        ("events", GOOD[1]),
        ("interaction-status", GOOD[0], "--run", str(uuid.uuid4())),
    ):
        result = cli(*args, *store, "--json")
        assert result.exit_code == 0, (args, result.output)

    # The bad session itself: a clean error naming it and the event.
    for args in (("inspect", BAD), ("events", BAD), ("interaction-status", BAD, "--key", "k")):
        result = cli(*args, *store)
        assert result.exit_code == 1, (args, result.output)
        assert "Traceback" not in result.output
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("error:")]
        assert len(errors) == 1 and _names_the_bad_event(errors[0], p), lines
        assert any(line.startswith("hint: only this session") for line in lines), lines

    # health and verify point at it (and report the store as not healthy / not consistent).
    health = cli("health", *store, "--json")
    assert health.exit_code == 1, health.output
    signals = orjson.loads(health.stdout)
    assert any(_names_the_bad_event(problem, p) for problem in signals["problems"]), signals
    assert all(pr["status"] == "running" for pr in signals["projections"]), signals
    verify = cli("verify", *store)
    assert verify.exit_code == 1, verify.output
    assert _names_the_bad_event(" ".join(verify.stdout.split()), p), verify.stdout


class DecodingCounter(Projection):
    """Decodes every event (as a read model of its own would) and counts them per session."""

    def __init__(self, name: str, strategy: FailureStrategy) -> None:
        self.name = name
        self.tables = (name,)
        self.failure_strategy = strategy

    def create_schema(self, cur: Cursor) -> None:
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {cur.table(self.name)} "
            "(session_id TEXT PRIMARY KEY, n INTEGER NOT NULL)"
        )

    def apply(self, cur: Cursor, events: Sequence[RecordedEvent]) -> None:
        for e in events:
            decode_recorded(e)
            cur.execute(
                f"INSERT INTO {cur.table(self.name)} AS c (session_id, n) VALUES (?, 1) "
                "ON CONFLICT (session_id) DO UPDATE SET n = c.n + 1",
                (e.session_id,),
            )

    def counts(self, pset: ProjectionSet) -> dict[str, int]:
        with pset.sql.transaction() as cur:
            rows = cur.execute(f"SELECT session_id, n FROM {cur.table(self.name)}").fetchall()
        return {r["session_id"]: int(r["n"]) for r in rows}


def test_the_failure_strategy_decides_skip_or_stop_for_an_unreadable_event(
    poisoned: Poisoned,
) -> None:
    """Default (``retry``): the bad event is skipped at once, its session held back, the
    others projected to the end; ``unreadable="fail"`` (or kind ``fail``): the projection
    stops before it, naming it. ``rebuild`` starts over (still skipping it)."""
    p = poisoned
    lenient = DecodingCounter("lenient", FailureStrategy())
    strict = DecodingCounter("strict", FailureStrategy(unreadable="fail"))
    stopper = DecodingCounter("stopper", FailureStrategy("fail"))
    with open_store(p.url, codec=event_codec()) as store:
        per_session = p.events
        pset = ProjectionSet(store, [lenient, strict, stopper], poll_interval=0.05)
        try:
            with pytest.raises(MeerkatRuntimeError, match="has failed"):
                pset.wait_caught_up(timeout=60)
            head = store.max_position()

            def settled() -> bool:
                status = {s.name: s for s in pset.status()}
                return status["lenient"].position == head and all(
                    status[n].status == "failed" for n in ("strict", "stopper")
                )

            wait_until(settled, what="lenient caught up, strict and stopper failed")
            status = {s.name: s for s in pset.status()}
            assert status["lenient"].status == "running"
            for name in ("strict", "stopper"):
                assert status[name].status == "failed"
                assert status[name].position < p.position
                assert _names_the_bad_event(status[name].error or "", p)
            # Good sessions fully counted; the bad one up to its bad event, then held back.
            counts = lenient.counts(pset)
            assert {sid: counts[sid] for sid in GOOD} == {sid: per_session[sid] for sid in GOOD}
            assert counts[BAD] == p.version - 1
            skipped = pset.skipped("lenient")
            assert {s.session_id for s in skipped} == {BAD}
            assert skipped[0].position == p.position
            assert len(skipped) == per_session[BAD] - (p.version - 1)
            # A rebuild starts over: same result, the bad session held back again.
            pset.rebuild("lenient")
            wait_until(
                lambda: next(s for s in pset.status() if s.name == "lenient").position == head,
                what="lenient rebuilt",
            )
            assert lenient.counts(pset) == counts
            assert len(pset.skipped("lenient")) == len(skipped)
        finally:
            pset.close()
