"""``export`` (JSON lines in the wire format) and ``import`` into another store.

An import checks every line first and writes nothing on any error; its
message names the file and the line.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from meerkat_runtime import Runtime
from meerkat_runtime.events import wire

from ._support import Populated, assert_clean_error, cli, cli_json, event_count


def wire_events(url: str, sid: str) -> list[object]:
    with Runtime.open(url) as rt:
        return [wire.to_json_value(e) for e in rt.session(sid).events()]


def export_all(populated: Populated, directory: Path) -> Path:
    """Every session of the populated store exported into one file."""
    out = directory / "all.jsonl"
    chunks = []
    for sid in populated.sessions:
        result = cli("export", sid, "--store", populated.url)
        assert result.exit_code == 0, result.output
        chunks.append(result.stdout)
    out.write_text("".join(chunks))
    return out


def test_export_writes_the_wire_format(populated: Populated) -> None:
    result = cli("export", "alpha", "--store", populated.url)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [json.loads(line) for line in lines] == wire_events(populated.url, "alpha")
    assert all(json.loads(line)["runtime_id"] == "alpha" for line in lines)


def test_export_to_a_file(populated: Populated, tmp_path: Path) -> None:
    out = tmp_path / "beta.jsonl"
    result = cli("export", "beta", "-o", str(out), "--store", populated.url)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    n = len(wire_events(populated.url, "beta"))
    assert f"exported {n} events of beta" in result.stderr
    assert [orjson.loads(line) for line in out.read_bytes().splitlines()] == wire_events(
        populated.url, "beta"
    )


def test_export_then_import_gives_identical_events(populated: Populated, tmp_path: Path) -> None:
    dump = export_all(populated, tmp_path)
    target = f"sqlite:///{tmp_path / 'target.db'}"
    result = cli("import", str(dump), "--store", target)
    assert result.exit_code == 0, result.output
    assert f"into {len(populated.sessions)} session(s)" in result.stdout
    for sid in populated.sessions:
        assert wire_events(target, sid) == wire_events(populated.url, sid), sid
    assert event_count(target) == event_count(populated.url)
    report = cli_json("verify", "--store", target)
    assert report["ok"] is True, report["mismatches"]

    # the read models of the copy say what the original's say (positions are the
    # copy's own: sessions are appended one after another, in file order)
    def ledger(url: str) -> dict[str, dict[str, object]]:
        rows = cli_json("ledger", "--limit", "1000", "--store", url)
        return {r.pop("input_id"): r for r in rows if r.pop("position")}

    assert ledger(target) == ledger(populated.url)
    views = cli_json("views", "--store", target)
    assert [(v["session_id"], v["state"], v["counts"]) for v in views] == [
        (v["session_id"], v["state"], v["counts"])
        for v in cli_json("views", "--store", populated.url)
    ]


def test_imported_sessions_work(populated: Populated, tmp_path: Path) -> None:
    """An imported session is a session: its queued inputs are there, and it takes more."""
    dump = tmp_path / "queued.jsonl"
    assert cli("export", "queued-one", "-o", str(dump), "--store", populated.url).exit_code == 0
    target = f"sqlite:///{tmp_path / 'target.db'}"
    assert cli_json("import", str(dump), "--store", target) == {
        "imported": {"queued-one": len(wire_events(populated.url, "queued-one"))}
    }
    with Runtime.open(target) as rt:
        session = rt.session("queued-one")
        assert [str(i) for i in session.active_input_ids()] == populated.queued["queued-one"]
        assert (
            session.accept({"input_type": "prompt", "content": "after import"}).kind == "accepted"
        )
    assert cli("verify", "--store", target).exit_code == 0


def test_import_from_stdin(populated: Populated, tmp_path: Path) -> None:
    exported = cli("export", "beta", "--store", populated.url).stdout
    target = f"sqlite:///{tmp_path / 'target.db'}"
    result = cli("import", "-", "--store", target, "--json", input=exported)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"imported": {"beta": len(exported.splitlines())}}
    assert wire_events(target, "beta") == wire_events(populated.url, "beta")


# ---------------------------------------------------------------- malformed files


def _lines(populated: Populated, sid: str = "alpha") -> list[str]:
    return str(cli("export", sid, "--store", populated.url).stdout).splitlines()


def _edit(lines: list[str], n: int, old: str, new: str) -> list[str]:
    """Replace ``old`` by ``new`` on 1-based line ``n`` (which must contain it)."""
    assert old in lines[n - 1], lines[n - 1]
    return [*lines[: n - 1], lines[n - 1].replace(old, new, 1), *lines[n:]]


def _assert_nothing_imported(target: Path) -> None:
    if target.exists():  # validation happens before the store is even opened
        assert event_count(f"sqlite:///{target}") == 0


MALFORMED: dict[str, Callable[[list[str]], list[str]]] = {
    "bad JSON": lambda ls: [*ls[:2], "{not json", *ls[3:]],
    "unknown event code": lambda ls: _edit(ls, 3, '"code":"queued"', '"code":"bogus"'),
    "unknown category": lambda ls: _edit(ls, 3, '"category":"input_lifecycle"', '"category":"x"'),
    "not an object": lambda ls: [*ls[:2], "[1, 2, 3]", *ls[3:]],
    "missing field": lambda ls: _edit(ls, 3, '"timestamp"', '"time"'),
    "bad session id": lambda ls: _edit(ls, 3, '"runtime_id":"alpha"', '"runtime_id":"a\\u0001"'),
}


@pytest.mark.parametrize("defect", list(MALFORMED))
def test_import_rejects_a_malformed_line_3(
    populated: Populated, tmp_path: Path, defect: str
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(MALFORMED[defect](_lines(populated))) + "\n")
    target = tmp_path / "target.db"
    result = cli("import", str(bad), "--store", f"sqlite:///{target}")
    assert_clean_error(result, f"{bad}:3:")
    _assert_nothing_imported(target)


def test_import_reports_a_log_that_does_not_fold(populated: Populated, tmp_path: Path) -> None:
    lines = _lines(populated)
    # drop line 2 (input.accepted): line 3 then queues an input that was never accepted
    bad = tmp_path / "gap.jsonl"
    bad.write_text("\n".join([lines[0], *lines[2:]]) + "\n")
    target = tmp_path / "target.db"
    result = cli("import", str(bad), "--store", f"sqlite:///{target}")
    error = assert_clean_error(result, f"{bad}:2:", "does not fold")
    assert "'alpha'" in error
    _assert_nothing_imported(target)


def test_import_refuses_a_session_that_exists(
    populated: Populated, store_copy: str, tmp_path: Path
) -> None:
    """A file of two sessions, the second already in the target: neither is imported."""
    beta = _lines(populated, "beta")
    fresh = [line.replace('"beta"', '"beta-2"') for line in beta]
    alpha = _lines(populated, "alpha")
    dump = tmp_path / "two.jsonl"
    dump.write_text("\n".join(fresh + alpha) + "\n")
    before = event_count(store_copy)
    result = cli("import", str(dump), "--store", store_copy)
    assert_clean_error(result, f"{dump}:{len(fresh) + 1}:", "session 'alpha' already exists")
    assert event_count(store_copy) == before
    assert "beta-2" not in [v["session_id"] for v in cli_json("views", "--store", store_copy)]


def test_import_a_later_line_is_checked_before_anything_is_written(
    populated: Populated, tmp_path: Path
) -> None:
    good = _lines(populated, "beta")
    dump = tmp_path / "late.jsonl"
    dump.write_text("\n".join([*good, *_lines(populated, "alpha")[:1], "oops"]) + "\n")
    target = tmp_path / "target.db"
    result = cli("import", str(dump), "--store", f"sqlite:///{target}")
    assert_clean_error(result, f"{dump}:{len(good) + 2}:")
    _assert_nothing_imported(target)


def test_import_an_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    result = cli("import", str(empty), "--store", f"sqlite:///{tmp_path / 'target.db'}")
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "no events to import" in result.stderr


def test_import_a_missing_file(tmp_path: Path) -> None:
    result = cli(
        "import", str(tmp_path / "nope.jsonl"), "--store", f"sqlite:///{tmp_path / 't.db'}"
    )
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "cannot read" in result.stderr
    assert not (tmp_path / "t.db").exists()


def test_export_to_an_unwritable_place(populated: Populated, tmp_path: Path) -> None:
    result = cli("export", "alpha", "-o", str(tmp_path / "no-dir" / "x.jsonl"), "--store", populated.url)  # fmt: skip
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "error: cannot write" in result.stderr
