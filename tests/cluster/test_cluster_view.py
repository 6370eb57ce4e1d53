"""``rt.cluster()`` and ``meerkat-runtime cluster``: nodes, session leases, projection owners.

A runtime in this process and one in a child process share a PostgreSQL
store; both see each other, the sessions each owns and who runs the
projections. A node that is SIGKILLed shows as not alive once its lease TTL
has passed, and its leases as free. Stores that are not shared (SQLite,
memory) have no cluster: ``cluster()`` raises, ``node_id`` is refused, and
the command exits with a one-line error.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from meerkat_runtime import MeerkatRuntimeError, Runtime, SessionOwnedElsewhere
from meerkat_runtime.cli import app
from meerkat_runtime.errors import StoreError
from meerkat_runtime.projections import ProjectionSet
from meerkat_runtime.store import EventCodec, Fence, NewEvent, open_store

from ..waiting import wait_until
from ._support import nodes, start_nodes

TTL = 2.0
PROMPT = {"input_type": "prompt", "content": "hi"}


def cli(*args: str) -> Result:
    result = CliRunner().invoke(
        app, list(args), env={"COLUMNS": "300", "NO_COLOR": "1", "MEERKAT_DEBUG": None}
    )
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"{args} raised {result.exception!r}\n{result.output}")
    return result


def cli_json(*args: str) -> Any:
    result = cli(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_cluster_lists_nodes_leases_and_projection_owners(postgres_url: str) -> None:
    with nodes() as started, Runtime.open(postgres_url, node_id="node-p", lease_ttl=TTL) as rt:
        rt.session("p-1").accept(PROMPT)
        rt.session("p-2").accept(PROMPT)
        # This node started first, so it runs the projections.
        wait_until(lambda: set(rt.cluster().projection_owners.values()) == {"node-p"})
        (w,) = start_nodes(started, postgres_url, ["node-w"], TTL, "--executor", "none")
        assert w.call("accept", sid="w-1", count=1)["error"] is None

        view = rt.cluster()
        assert view.node_id == "node-p"
        assert {n.node_id for n in view.nodes} == {"node-p", "node-w"}
        node_w = next(n for n in view.nodes if n.node_id == "node-w")
        assert node_w.incarnation == w.incarnation
        assert node_w.info["lease_ttl"] == TTL
        owners = {x.name: (x.owner, x.live) for x in view.leases}
        assert owners == {
            "session:p-1": ("node-p", True),
            "session:p-2": ("node-p", True),
            "session:w-1": ("node-w", True),
        }
        assert all(x.token >= 1 for x in view.leases)
        assert view.projection_owners == {"ledger": "node-p", "views": "node-p"}
        # The worker's view agrees; it stands by for the projections (from its first poll).
        wait_until(
            lambda: {s[0] for s in w.call("info")["projections"].values()} == {"standby"},
            what="node-w to stand by",
        )
        assert w.call("info")["owners"] == {"ledger": "node-p", "views": "node-p"}
        # A session owned elsewhere: refused here, naming the owner, nothing written.
        before = rt.store.session_version("w-1")
        with pytest.raises(SessionOwnedElsewhere) as owned:
            rt.session("w-1").accept(PROMPT)
        assert (owned.value.owner, owned.value.session_id) == ("node-w", "w-1")
        assert rt.store.session_version("w-1") == before

        # The command shows the same, from the store alone (it joins no cluster).
        out = cli_json("cluster", "--store", postgres_url)
        assert {n["node_id"]: n["alive"] for n in out["nodes"]} == {"node-p": True, "node-w": True}
        assert {n["node_id"]: n["leases_held"] for n in out["nodes"]} == {"node-p": 4, "node-w": 1}
        assert all(0 <= n["heartbeat_age_seconds"] < TTL for n in out["nodes"])
        assert {s["session_id"]: (s["owner"], s["live"]) for s in out["sessions"]} == {
            "p-1": ("node-p", True),
            "p-2": ("node-p", True),
            "w-1": ("node-w", True),
        }
        assert {p["name"]: p["owner"] for p in out["projections"]} == {
            "ledger": "node-p",
            "views": "node-p",
        }
        table = cli("cluster", "--store", postgres_url)
        assert table.exit_code == 0, table.output
        for text in ("nodes: 2 alive of 2", "node-w", "session leases: 3 live of 3", "w-1"):
            assert text in table.stdout, text
        assert "projection owners" in table.stdout

        # A dead node: not alive once its TTL has passed, its leases free (still listed
        # with their last owner and token), and its session can be taken over here.
        w.kill()
        wait_until(
            lambda: not next(
                n["alive"] for n in cli_json("cluster", "--store", postgres_url)["nodes"]
                if n["node_id"] == "node-w"
            ),
            TTL + 10,
            "node-w to show as dead",
        )  # fmt: skip
        out = cli_json("cluster", "--store", postgres_url)
        dead = next(n for n in out["nodes"] if n["node_id"] == "node-w")
        assert dead["heartbeat_age_seconds"] >= TTL and dead["leases_held"] == 0
        assert {s["session_id"]: s["live"] for s in out["sessions"]}["w-1"] is False
        assert "nodes: 1 alive of 2" in cli("cluster", "--store", postgres_url).stdout
        assert rt.session("w-1").accept(PROMPT).kind == "accepted"
        w1 = next(x for x in rt.cluster().leases if x.name == "session:w-1")
        assert (w1.owner, w1.live, w1.token) == ("node-p", True, 2)


def test_clean_close_and_passivation_free_leases_at_once(postgres_url: str) -> None:
    """A node that closes (or passivates a session) lets another take it without waiting."""
    a = Runtime.open(postgres_url, node_id="node-a", lease_ttl=30, idle_timeout=0.5)
    b = Runtime.open(postgres_url, node_id="node-b", lease_ttl=30)
    try:
        a.session("s").accept(PROMPT)
        a.session("t").accept(PROMPT)
        with pytest.raises(SessionOwnedElsewhere):
            b.session("s").accept(PROMPT)

        # Passivated after 0.5 s idle: its lease is released, not left to expire (30 s).
        def free(sid: str) -> bool:
            return not any(x.live for x in b.store.shared().list_leases(f"session:{sid}"))

        wait_until(lambda: free("s") and free("t"), 10, "node-a to passivate and release")
        assert a.live_session_count() == 0
        assert b.session("s").accept(PROMPT).kind == "accepted"
        owners = {x.name: (x.owner, x.live) for x in b.cluster().leases}
        assert owners["session:s"] == ("node-b", True)
        assert owners["session:t"][1] is False
        # node-a asks again: now node-b owns it.
        with pytest.raises(SessionOwnedElsewhere) as owned:
            a.session("s").accept(PROMPT)
        assert owned.value.owner == "node-b"
        b.close()  # releases everything: node-a takes "s" back at once
        assert a.session("s").accept(PROMPT).kind == "accepted"
        assert {x.name: x.owner for x in a.cluster().leases}["session:s"] == "node-a"
    finally:
        a.close()
        b.close()


def test_nodes_starting_together_on_a_fresh_schema(postgres_url: str) -> None:
    """Several processes opening one new schema at the same moment all start (schema
    creation of the store and of the read models is serialised across them)."""
    stores = [open_store(postgres_url, codec=EventCodec()) for _ in range(4)]
    barrier = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def start(store: Any) -> None:
        barrier.wait()
        try:
            ProjectionSet(store, []).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(s,)) for s in stores]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for s in stores:
            s.close()
    assert errors == []


def test_a_memory_store_has_no_cluster() -> None:
    url = "memory://"
    with pytest.raises(ValueError, match="node_id needs a shared store"):
        Runtime.open(url, node_id="node-x")
    with Runtime.open(url) as rt:
        assert rt.membership is None
        with pytest.raises(MeerkatRuntimeError, match="no cluster"):
            rt.cluster()
        assert rt.session("s").accept(PROMPT).kind == "accepted"  # no lease needed
        store = rt.store
        assert not store.supports_leases
        with pytest.raises(StoreError, match="leases need a shared store"):
            store.shared().acquire_lease("session:s", "node-x", 10)
        codec = EventCodec()
        codec.register("test.happened")
    with open_store(url, codec=codec) as plain, pytest.raises(StoreError, match="fenced appends"):
        plain.append("z", 0, [NewEvent("test.happened", {})], fence=Fence("session:z", "n", 1))
    result = cli("cluster", "--store", url)
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "error:" in result.stderr and "hint:" in result.stderr


def test_a_sqlite_file_has_a_cluster(tmp_path: Path) -> None:
    """Processes sharing a SQLite file are nodes too: leases, node rows, ``cluster``."""
    url = f"sqlite:///{tmp_path / 'one.db'}"
    with Runtime.open(url, node_id="node-s", lease_ttl=TTL) as rt:
        assert rt.session("s").accept(PROMPT).kind == "accepted"
        view = rt.cluster()
        assert [n.node_id for n in view.nodes] == ["node-s"]
        assert [(x.name, x.owner, x.live) for x in view.leases] == [("session:s", "node-s", True)]
        out = cli_json("cluster", "--store", url)
        assert [(n["node_id"], n["alive"], n["leases_held"]) for n in out["nodes"]] == [
            ("node-s", True, 3)  # the session and both projections
        ]
    # A clean close leaves the node list and frees the leases.
    out = cli_json("cluster", "--store", url)
    assert out["nodes"] == []
    assert not any(x["live"] for x in out["sessions"])


def test_two_runtimes_of_one_process_are_two_nodes(tmp_path: Path) -> None:
    """Default node ids differ between the runtimes of one process: the second one is
    refused the first one's session instead of taking it (as a restart would)."""
    url = f"sqlite:///{tmp_path / 'two.db'}"
    with Runtime.open(url, lease_ttl=30) as a, Runtime.open(url, lease_ttl=30) as b:
        assert a.membership is not None and b.membership is not None
        assert a.membership.node_id != b.membership.node_id
        assert a.session("s").accept(PROMPT).kind == "accepted"
        with pytest.raises(SessionOwnedElsewhere) as owned:
            b.session("s").accept(PROMPT)
        assert owned.value.owner == a.membership.node_id
        assert a.session("s").accept(PROMPT).kind == "accepted"  # still a's
