"""The CLI with one input id in two sessions (issue 13, item 2): ``import`` of a session
beside its copy, ``ledger --input``, ``export``, ``views`` counts, ``verify`` and
``rebuild-projections``."""

from __future__ import annotations

import json
from pathlib import Path

from ._support import Populated, cli, cli_json


def _import_alpha_as_copy(populated: Populated, store: str, tmp_path: Path) -> Path:
    """Export session alpha and import it as session ``alpha-copy`` into ``store``: every
    input id of alpha is then in two sessions."""
    lines = str(cli("export", "alpha", "--store", populated.url).stdout).splitlines()
    copy = []
    for line in lines:
        event = json.loads(line)
        assert event["runtime_id"] == "alpha"
        copy.append(json.dumps({**event, "runtime_id": "alpha-copy"}))
    dump = tmp_path / "alpha-copy.jsonl"
    dump.write_text("\n".join(copy) + "\n")
    result = cli("import", str(dump), "--store", store)
    assert result.exit_code == 0, result.output
    return dump


def test_a_session_imported_beside_its_copy_keeps_both_ledgers(
    populated: Populated, store_copy: str, tmp_path: Path
) -> None:
    dump = _import_alpha_as_copy(populated, store_copy, tmp_path)
    report = cli_json("verify", "--store", store_copy)
    assert report["ok"] is True, report["mismatches"]

    alpha = cli_json("ledger", "--session", "alpha", "--limit", "1000", "--store", store_copy)
    copy = cli_json("ledger", "--session", "alpha-copy", "--limit", "1000", "--store", store_copy)
    assert [r["input_id"] for r in alpha] == populated.accepted["alpha"]
    assert [(r["input_id"], r["state"], r["kind"]) for r in copy] == [
        (r["input_id"], r["state"], r["kind"]) for r in alpha
    ]

    shared = populated.accepted["alpha"][0]
    both = cli_json("ledger", "--input", shared, "--store", store_copy)
    assert sorted(r["session_id"] for r in both) == ["alpha", "alpha-copy"]
    only = cli_json("ledger", "--input", shared, "--session", "alpha-copy", "--store", store_copy)
    assert [r["session_id"] for r in only] == ["alpha-copy"]

    views = {v["session_id"]: v for v in cli_json("views", "--store", store_copy)}
    assert views["alpha-copy"]["counts"] == views["alpha"]["counts"]
    assert views["alpha-copy"]["queued"] == views["alpha"]["queued"] == 1

    # export gives the session asked for, and only it
    exported = str(cli("export", "alpha-copy", "--store", store_copy).stdout)
    assert [json.loads(x) for x in exported.splitlines()] == [
        json.loads(x) for x in dump.read_text().splitlines()
    ]

    result = cli("rebuild-projections", "--store", store_copy)
    assert result.exit_code == 0, result.output
    assert cli_json("ledger", "--input", shared, "--store", store_copy) == both
    assert cli_json("verify", "--store", store_copy)["ok"] is True


def test_ledger_input_filter_takes_a_uuid(populated: Populated) -> None:
    result = cli("ledger", "--input", "not-a-uuid", "--store", populated.url)
    assert result.exit_code == 1
    assert "not a uuid" in result.stderr and "Traceback" not in result.output
