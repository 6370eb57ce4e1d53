"""The node list holds running processes: commands that only read never join it, and
the rows of processes that exited (cleanly, or killed) go away.

A command that only reads (``sessions``, ``ledger``, ``views``, ``verify``,
``health``, ``inspect``, ``events``, ``cluster``) takes no lease and writes no
node row. A command that writes (``recover``) is a node while it runs and
removes its row when it exits, as every runtime does on ``close()``. A killed
process cannot remove its row: it shows as not alive, and the row is deleted
once its heartbeat is ten lease TTLs old. On SQLite files and PostgreSQL alike.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from meerkat_runtime import Runtime, SessionNotFound
from meerkat_runtime.cli import app

from ..waiting import wait_until
from ._support import nodes, start_nodes

PROMPT = {"input_type": "prompt", "content": "hi"}
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def _url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'nodes.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


def cli(*args: str) -> Any:
    result = CliRunner().invoke(
        app, list(args), env={"COLUMNS": "300", "NO_COLOR": "1", "MEERKAT_DEBUG": None}
    )
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"{args} raised {result.exception!r}\n{result.output}")
    return result


def node_ids(url: str) -> list[str]:
    result = cli("cluster", "--store", url, "--json")
    assert result.exit_code == 0, result.output
    return sorted(n["node_id"] for n in json.loads(result.stdout)["nodes"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_cli_commands_leave_no_node_behind(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = _url(backend, tmp_path, request)
    with Runtime.open(url, node_id="node-p") as rt:
        rt.session("p-1").accept(PROMPT)
        for args in (
            ["sessions"],
            ["ledger"],
            ["views"],
            ["verify"],
            ["health"],
            ["inspect", "p-1"],
            ["events", "p-1"],
        ):
            result = cli(*args, "--store", url)
            assert result.exit_code in (0, 1), (args, result.output)
            assert node_ids(url) == ["node-p"], args
        # A writing command is a node while it runs, and leaves the list when it exits.
        assert cli("recover", "--store", url).exit_code == 1  # p-1 is node-p's
        assert node_ids(url) == ["node-p"]
        leases = {x.owner for x in rt.store.shared().list_leases() if x.live}
        assert leases == {"node-p"}
    assert node_ids(url) == []  # and so does the runtime, on close


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_row_of_a_killed_node_is_deleted_after_ten_ttls(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = _url(backend, tmp_path, request)
    ttl = 0.5
    with nodes() as started, Runtime.open(url, node_id="node-p", lease_ttl=ttl) as rt:
        (w,) = start_nodes(started, url, ["node-w"], ttl, "--executor", "none")
        assert w.call("accept", sid="w-1", count=1)["error"] is None
        assert node_ids(url) == ["node-p", "node-w"]
        w.kill()

        def alive(node: str) -> bool | None:
            result = cli("cluster", "--store", url, "--json")
            rows = {n["node_id"]: n["alive"] for n in json.loads(result.stdout)["nodes"]}
            return rows.get(node)

        wait_until(lambda: alive("node-w") is False, 30, "node-w to show as dead")
        # node-p's heartbeats delete the row once it is 10 TTLs (5 s) old.
        wait_until(lambda: node_ids(url) == ["node-p"], 60, "node-w's row to be deleted")
        assert rt.session("w-1").accept(PROMPT).kind == "accepted"  # its lease long expired


@pytest.mark.parametrize("backend", BACKENDS)
def test_writing_commands_leave_what_a_live_process_owns_alone_unless_forced(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = _url(backend, tmp_path, request)
    source = f"sqlite:///{tmp_path / 'source.db'}"
    with Runtime.open(source) as src:
        src.session("x").accept(PROMPT)
    exported = tmp_path / "x.jsonl"
    assert cli("export", "x", "--store", source, "-o", str(exported)).exit_code == 0
    with Runtime.open(url, node_id="node-p") as rt:
        rt.session("p-1").accept(PROMPT)
        with pytest.raises(SessionNotFound):  # no event of it yet, but node-p serves it now
            rt.session("x").state()
        rt.projections.wait_caught_up(60)

        result = cli("import", str(exported), "--store", url)
        assert result.exit_code == 1, result.output
        assert "x (node node-p)" in result.stderr and "--force" in result.stderr
        assert rt.store.session_version("x") == 0  # nothing written

        result = cli("rebuild-projections", "--store", url)
        assert result.exit_code == 1, result.output
        assert "owned by a live runtime process" in result.stderr
        assert "node-p" in result.stderr

        token = next(x.token for x in rt.store.shared().list_leases("session:p-1"))
        result = cli("recover", "--store", url, "--force")
        assert result.exit_code == 0, result.output
        (lease,) = rt.store.shared().list_leases("session:p-1")
        assert lease.token > token and lease.owner.startswith("cli-recover-")
