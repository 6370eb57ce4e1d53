"""``sessions``, ``inspect``, ``events``, ``ledger`` and ``views`` on a populated store.

Each command is run in table mode (the values are on screen) and with
``--json`` (the document parses and carries the values the public API has).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from meerkat_runtime import Runtime
from meerkat_runtime.events import wire
from meerkat_runtime.events.timefmt import parse_timestamp

from ._support import KINDS, Populated, cli, cli_json

# The views keep a session's state as its events last recorded it: sessions that ran
# with an executor bound stay "attached" there (verify reads that as idle).
VIEW_STATES = {
    "alpha": "attached",
    "beta": "attached",
    "retired-one": "retired",
    "destroyed-one": "destroyed",
    "stopped-one": "stopped",
    "queued-one": "idle",
    "ephemeral-one": "idle",
}


def test_help_lists_every_command() -> None:
    result = cli("--help")
    assert result.exit_code == 0
    for name in (
        "demo",
        "sessions",
        "inspect",
        "events",
        "ledger",
        "views",
        "verify",
        "recover",
        "rebuild-projections",
        "export",
        "import",
        "health",
        "bench",
    ):
        assert name in result.stdout
    assert "_demo-child" not in result.stdout


@pytest.mark.parametrize(
    "command",
    [
        "demo",
        "sessions",
        "inspect",
        "events",
        "ledger",
        "views",
        "verify",
        "recover",
        "rebuild-projections",
        "import",
        "health",
    ],
)
def test_operator_commands_take_store_and_json(command: str) -> None:
    result = cli(command, "--help")
    assert result.exit_code == 0
    assert "--store" in result.stdout
    assert "--json" in result.stdout


# ---------------------------------------------------------------- sessions


def test_sessions_json(populated: Populated) -> None:
    rows = cli_json("sessions", "--store", populated.url)
    assert [r["session_id"] for r in rows] == populated.sessions
    by_id = {r["session_id"]: r for r in rows}
    for sid, state in VIEW_STATES.items():
        assert by_id[sid]["state"] == populated.states[sid]  # the phase, as inspect says
        assert by_id[sid]["attached"] is (state == "attached")
        assert by_id[sid]["queued"] == len(populated.queued.get(sid, []))
        assert by_id[sid]["staged"] == 0
        assert by_id[sid]["current_run_id"] is None
        parse_timestamp(by_id[sid]["updated_at"])
    with Runtime.open(populated.url) as rt:
        for sid in populated.sessions:
            assert by_id[sid]["last_sequence"] == len(list(rt.session(sid).events()))


def test_sessions_table(populated: Populated) -> None:
    result = cli("sessions", "--store", populated.url)
    assert result.exit_code == 0, result.output
    assert f"{len(populated.sessions)} sessions" in result.stdout
    lines = result.stdout.splitlines()
    for sid, state in VIEW_STATES.items():
        (line,) = [line for line in lines if f" {sid} " in line]
        cells = [c.strip() for c in line.split("│")]
        assert cells[2:4] == [populated.states[sid], "yes" if state == "attached" else "no"]


def test_sessions_and_inspect_agree_on_every_state(populated: Populated) -> None:
    """One session, one state: ``sessions`` (views) and ``inspect`` (fold) say the same,
    and both say whether the last recorded state change bound an executor."""
    rows = {r["session_id"]: r for r in cli_json("sessions", "--store", populated.url)}
    for sid in populated.sessions:
        info = cli_json("inspect", sid, "--store", populated.url)
        assert (rows[sid]["state"], rows[sid]["attached"]) == (info["state"], info["attached"])
    assert rows["alpha"]["attached"] is True and rows["queued-one"]["attached"] is False


# ---------------------------------------------------------------- inspect


def test_inspect_json_matches_the_session(populated: Populated, store_copy: str) -> None:
    # ephemeral-one is left out: starting its actor (state()) is a restart, which abandons
    # its ephemeral input; inspect folds the log and never starts an actor.
    sids = [s for s in populated.sessions if s != "ephemeral-one"]
    infos = {sid: cli_json("inspect", sid, "--store", store_copy) for sid in sids}
    with Runtime.open(store_copy) as rt:
        for sid, info in infos.items():
            session = rt.session(sid)
            assert info["session_id"] == sid
            assert info["state"] == str(session.state()) == populated.states[sid]
            active = {str(i) for i in session.active_input_ids()}
            staged = info["current_run"]["inputs"] if info["current_run"] else []
            assert set(info["queue"] + info["steer_queue"] + staged) == active
            assert info["queue"] == populated.queued.get(sid, [])
            assert info["version"] == len(list(session.events()))
            assert sum(info["counts"].values()) == len(populated.accepted[sid])


def test_inspect_json_recent_events_are_the_log_tail(populated: Populated) -> None:
    info = cli_json("inspect", "alpha", "--recent", "4", "--store", populated.url)
    with Runtime.open(populated.url) as rt:
        tail = list(rt.session("alpha").events())[-4:]
    assert [e["sequence"] for e in info["recent_events"]] == [e.sequence for e in tail]
    assert [{k: v for k, v in e.items() if k != "sequence"} for e in info["recent_events"]] == [
        wire.to_json_value(e) for e in tail
    ]
    assert info["counts"] == {"consumed": 6, "queued": 1}
    assert (
        cli_json("inspect", "alpha", "--recent", "0", "--store", populated.url)["recent_events"]
        == []
    )


def test_inspect_does_not_recover(populated: Populated, store_copy: str) -> None:
    """Looking never changes anything: the ephemeral input stays queued in the log."""
    info = cli_json("inspect", "ephemeral-one", "--store", store_copy)
    assert info["queue"] == [populated.ephemeral]
    assert info["counts"] == {"queued": 1}
    assert cli_json("inspect", "ephemeral-one", "--store", store_copy) == info


def test_inspect_table(populated: Populated) -> None:
    result = cli("inspect", "queued-one", "--store", populated.url)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "queued-one" in out
    assert "state idle" in out
    assert "queue: 3" in out
    assert "recent events" in out
    assert "input.queued" in out
    assert "topology.runtime_created" in out


def test_inspect_shows_destroyed_and_stopped(populated: Populated) -> None:
    for sid in ("destroyed-one", "stopped-one", "retired-one"):
        info = cli_json("inspect", sid, "--store", populated.url)
        assert info["state"] == populated.states[sid]
        assert info["queue"] == []


# ---------------------------------------------------------------- events


def test_events_json_are_the_session_log(populated: Populated) -> None:
    got = cli_json("events", "beta", "--limit", "1000", "--store", populated.url)
    with Runtime.open(populated.url) as rt:
        want = list(rt.session("beta").events())
    assert [e["sequence"] for e in got] == list(range(1, len(want) + 1))
    assert [{k: v for k, v in e.items() if k != "sequence"} for e in got] == [
        wire.to_json_value(e) for e in want
    ]


def test_events_filter_by_type_and_page(populated: Populated) -> None:
    url = populated.url
    accepted = cli_json("events", "alpha", "--type", "input.accepted", "--store", url)
    assert [e["event"]["data"]["input_id"] for e in accepted] == populated.accepted["alpha"]
    assert [e["event"]["data"]["input"]["input_type"] for e in accepted[:6]] == KINDS
    assert all(e["event"]["data"]["code"] == "accepted" for e in accepted)

    # Page through with --limit/--after: the pages join up to the whole filtered list.
    pages: list[list[dict[str, Any]]] = []
    after = 0
    while True:
        page = cli_json(
            "events", "alpha", "--type", "input.accepted", "--limit", "3", "--after", str(after),
            "--store", url,
        )  # fmt: skip
        if not page:
            break
        assert len(page) <= 3
        pages.append(page)
        after = int(page[-1]["sequence"])
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [e for p in pages for e in p] == accepted

    # Several --type options: exactly the events with one of those codes, in log order.
    both = cli_json(
        "events", "alpha", "--type", "input.accepted", "--type", "run.completed", "--limit", "100",
        "--store", url,
    )  # fmt: skip
    with Runtime.open(url) as rt:
        want = [
            e.sequence
            for e in rt.session("alpha").events()
            if e.event.event_code in ("input.accepted", "run.completed")
        ]
    assert [e["sequence"] for e in both] == want
    assert len(both) > len(accepted)


def test_events_after_the_end_is_empty(populated: Populated) -> None:
    assert cli_json("events", "beta", "--after", "100000", "--store", populated.url) == []


def test_events_table_pages(populated: Populated) -> None:
    result = cli("events", "alpha", "--type", "input.accepted", "--limit", "2", "--store", populated.url)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout.count("input.accepted") == 2
    first_two = cli_json(
        "events", "alpha", "--type", "input.accepted", "--limit", "2", "--store", populated.url
    )
    assert f"next page: --after {first_two[-1]['sequence']}" in result.stdout


# ---------------------------------------------------------------- ledger


def test_ledger_json_lists_every_input(populated: Populated) -> None:
    rows = cli_json("ledger", "--limit", "1000", "--store", populated.url)
    accepted = {i for ids in populated.accepted.values() for i in ids}
    assert {r["input_id"] for r in rows} == accepted
    assert len(rows) == len(accepted)
    positions = [r["position"] for r in rows]
    assert positions == sorted(positions)
    by_id = {r["input_id"]: r for r in rows}
    alpha = [by_id[i] for i in populated.accepted["alpha"][:6]]
    assert [r["kind"] for r in alpha] == [
        "prompt", "peer_message", "flow_step", "external_event", "continuation", "operation",
    ]  # fmt: skip
    for r in alpha:
        assert r["session_id"] == "alpha"
        assert r["state"] == "consumed"
        # spec objects are in their wire form: a tagged outcome, history entries with "from"
        assert r["terminal_outcome"] == {"outcome_type": "consumed"}
        assert r["history"][-1]["to"] == "consumed"
        assert r["history"][0]["from"] == "accepted"
    for r in alpha[:5]:
        uuid.UUID(r["run_id"])
    assert alpha[5]["run_id"] is None  # an operation completes without a run
    assert alpha[0]["idempotency_key"] == "k-hello"


def test_ledger_json_matches_input_state(populated: Populated, store_copy: str) -> None:
    rows = cli_json("ledger", "--session", "queued-one", "--store", store_copy)
    with Runtime.open(store_copy) as rt:
        session = rt.session("queued-one")
        for row in rows:
            st = session.input_state(row["input_id"])
            assert st is not None
            assert row["state"] == st.current_state.value
            assert row["idempotency_key"] == st.idempotency_key
            assert row["history"] == wire.to_json_value(st)["history"]


def test_ledger_state_queued_lists_exactly_the_queued_inputs(populated: Populated) -> None:
    rows = cli_json("ledger", "--state", "queued", "--store", populated.url)
    assert {r["input_id"] for r in rows} == populated.all_queued()
    assert len(rows) == len(populated.all_queued())
    assert all(r["state"] == "queued" and r["terminal_outcome"] is None for r in rows)


def test_ledger_filters(populated: Populated) -> None:
    url = populated.url
    rows = cli_json("ledger", "--session", "queued-one", "--store", url)
    assert [r["input_id"] for r in rows] == populated.queued["queued-one"]
    assert [r["idempotency_key"] for r in rows] == ["w-0", "w-1", "w-2"]
    rows = cli_json("ledger", "--session", "alpha", "--state", "consumed", "--store", url)
    assert [r["input_id"] for r in rows] == populated.accepted["alpha"][:6]
    assert cli_json("ledger", "--session", "no-such-session", "--store", url) == []
    assert cli_json("ledger", "--state", "staged", "--store", url) == []


def test_ledger_queued_longer_than(populated: Populated) -> None:
    url = populated.url
    old = cli_json("ledger", "--queued-longer-than", "0", "--store", url)
    assert {r["input_id"] for r in old} == populated.all_queued()
    assert cli_json("ledger", "--queued-longer-than", "3600", "--store", url) == []
    # it combines with --session
    rows = cli_json("ledger", "--queued-longer-than", "0", "--session", "alpha", "--store", url)
    assert [r["input_id"] for r in rows] == populated.queued["alpha"]


def test_ledger_pages(populated: Populated) -> None:
    url = populated.url
    everything = cli_json("ledger", "--limit", "1000", "--store", url)
    seen: list[str] = []
    after: int | None = None
    while True:
        args = ["ledger", "--limit", "4", "--store", url]
        if after is not None:
            args += ["--after", str(after)]
        page = cli_json(*args)
        if not page:
            break
        assert len(page) <= 4
        seen += [r["input_id"] for r in page]
        after = page[-1]["position"]
    assert seen == [r["input_id"] for r in everything]


def test_ledger_table(populated: Populated) -> None:
    result = cli("ledger", "--state", "queued", "--store", populated.url)
    assert result.exit_code == 0, result.output
    assert f"ledger: {len(populated.all_queued())} inputs" in result.stdout
    for input_id in populated.all_queued():
        assert input_id in result.stdout


# ---------------------------------------------------------------- views


def test_views_json_counts(populated: Populated) -> None:
    rows = cli_json("views", "--store", populated.url)
    assert [r["session_id"] for r in rows] == populated.sessions
    by_id = {r["session_id"]: r for r in rows}
    assert by_id["alpha"]["counts"] == {"consumed": 6, "queued": 1}
    assert by_id["beta"]["counts"] == {"consumed": 3}
    assert by_id["queued-one"]["counts"] == {"queued": 3}
    assert by_id["queued-one"]["queued"] == 3
    assert by_id["ephemeral-one"]["counts"] == {"queued": 1}
    for sid in ("retired-one", "destroyed-one", "stopped-one"):
        assert sum(by_id[sid]["counts"].values()) == 1
    for sid, row in by_id.items():
        assert row["state"] == VIEW_STATES[sid]
        assert sum(row["counts"].values()) == len(populated.accepted[sid])
    positions = [r["position"] for r in rows]
    assert positions == sorted(positions)


def test_views_filter_and_page(populated: Populated) -> None:
    url = populated.url
    assert [r["session_id"] for r in cli_json("views", "--state", "retired", "--store", url)] == [
        "retired-one"
    ]
    idle = cli_json("views", "--state", "idle", "--store", url)
    assert [r["session_id"] for r in idle] == ["queued-one", "ephemeral-one"]
    first = cli_json("views", "--limit", "3", "--store", url)
    rest = cli_json("views", "--after", str(first[-1]["position"]), "--store", url)
    assert [r["session_id"] for r in first + rest] == populated.sessions


def test_views_table(populated: Populated) -> None:
    result = cli("views", "--store", populated.url)
    assert result.exit_code == 0, result.output
    assert f"views: {len(populated.sessions)} sessions" in result.stdout
    assert '{"queued":3}' in result.stdout
    for sid in populated.sessions:
        assert sid in result.stdout


def test_ledger_queued_longer_than_conflicts_with_another_state(populated: Populated) -> None:
    result = cli("ledger", "--queued-longer-than", "0", "--state", "consumed", "--store", populated.url)  # fmt: skip
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "cannot go with --state consumed" in result.stderr
