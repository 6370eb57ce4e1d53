"""``meerkat-runtime operations SESSION``: a session's operations registry, read-only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from meerkat_runtime import Runtime

from ._support import assert_clean_error, cli, cli_json


def op(op_id: str, event: dict[str, Any]) -> dict[str, Any]:
    return {"input_type": "operation", "operation_id": op_id, "event": {**event, "id": op_id}}


@pytest.fixture
def ops_store(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'ops.db'}"
    with Runtime.open(url) as rt:
        rt.session("s").accept_many(
            [
                op("op-a", {"type": "started", "kind": "shell"}),
                op("op-a", {"type": "progress", "message": "half", "percent": 50}),
                op("op-b", {"type": "started", "kind": "tool"}),
                op("op-b", {"type": "completed", "result": {"rows": 3}}),
                op("op-c", {"type": "started", "kind": "tool"}),
                op("op-c", {"type": "failed", "error": "disk full"}),
            ]
        )
    return url


def test_operations_lists_each_operation(ops_store: str) -> None:
    result = cli("operations", "s", "--store", ops_store)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "s: 3 operations (feed watermark 2)" in result.stdout
    row_a = next(line for line in lines if "op-a" in line)
    assert "shell" in row_a and "running" in row_a and "1 50%" in row_a and "half" in row_a
    row_b = next(line for line in lines if "op-b" in line)
    assert "completed" in row_b and '{"rows":3}' in row_b
    row_c = next(line for line in lines if "op-c" in line)
    assert "failed" in row_c and "disk full" in row_c


def test_operations_json_and_status_filter(ops_store: str) -> None:
    doc = cli_json("operations", "s", "--store", ops_store)
    assert (doc["session_id"], doc["watermark"], doc["dropped_through"]) == ("s", 2, 0)
    by_id = {o["operation_id"]: o for o in doc["operations"]}
    assert by_id["op-a"]["status"] == "running" and by_id["op-a"]["progress_percent"] == 50.0
    assert by_id["op-b"]["result"] == {"rows": 3} and by_id["op-b"]["completion_seq"] == 1
    assert by_id["op-c"]["public_result_class"] == "failed" and by_id["op-c"]["terminal"]
    only = cli_json(
        "operations", "s", "--status", "running", "--status", "failed", "--store", ops_store
    )
    assert [o["operation_id"] for o in only["operations"]] == ["op-a", "op-c"]


def test_operations_refuses_an_unknown_session_and_status(ops_store: str) -> None:
    assert_clean_error(cli("operations", "nope", "--store", ops_store), "unknown session 'nope'")
    assert_clean_error(
        cli("operations", "s", "--status", "runing", "--store", ops_store),
        "unknown operation state 'runing'",
    )


def test_operations_writes_nothing(ops_store: str) -> None:
    with Runtime.open(ops_store) as rt:
        before = rt.store.max_position()
    cli("operations", "s", "--store", ops_store)
    with Runtime.open(ops_store) as rt:
        assert rt.store.max_position() == before
