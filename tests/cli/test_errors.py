"""Errors are one ``error:`` line and a ``hint:`` line, exit code 1, never a traceback.

And store passwords never reach the screen; a missing SQLite file is not
created by looking at it; text from the store is printed, not read as markup.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from meerkat_runtime import Runtime

from ._support import Populated, assert_clean_error, cli, cli_json, prompt

# Every command that reads a store, with the arguments it needs besides --store.
STORE_COMMANDS: dict[str, list[str]] = {
    "sessions": ["sessions"],
    "inspect": ["inspect", "alpha"],
    "events": ["events", "alpha"],
    "ledger": ["ledger"],
    "views": ["views"],
    "verify": ["verify"],
    "recover": ["recover"],
    "rebuild-projections": ["rebuild-projections"],
    "export": ["export", "alpha"],
    "health": ["health"],
}


@pytest.mark.parametrize("command", list(STORE_COMMANDS))
def test_unknown_store_scheme(command: str) -> None:
    result = cli(*STORE_COMMANDS[command], "--store", "mongodb://db.example/x")
    error = assert_clean_error(result, "unsupported store URL", "mongodb://db.example/x")
    assert "sqlite:///" in error
    assert "hint: use sqlite:///path.db" in result.stderr


@pytest.mark.parametrize("command", list(STORE_COMMANDS))
def test_nonexistent_sqlite_file_is_not_created(command: str, tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    result = cli(*STORE_COMMANDS[command], "--store", f"sqlite:///{missing}")
    assert_clean_error(result, "no store at", str(missing), "does not exist")
    assert not missing.exists()
    assert list(tmp_path.iterdir()) == []


def test_import_into_a_missing_directory(populated: Populated, tmp_path: Path) -> None:
    dump = tmp_path / "alpha.jsonl"
    dump.write_text(cli("export", "alpha", "--store", populated.url).stdout)
    result = cli("import", str(dump), "--store", f"sqlite:///{tmp_path / 'no-dir' / 'x.db'}")
    assert_clean_error(result, "does not exist")
    assert not (tmp_path / "no-dir").exists()


UNREACHABLE = "postgresql://u:secret@127.0.0.1:1/db"


@pytest.mark.parametrize("command", [*STORE_COMMANDS, "import"])
def test_unreachable_postgresql_never_shows_the_password(command: str, tmp_path: Path) -> None:
    if command == "import":
        dump = tmp_path / "one.jsonl"
        dump.write_text(
            '{"id":"01a2135f-6174-72ad-9b8c-e5f740a5be8b","timestamp":"2026-01-01T00:00:00Z",'
            '"runtime_id":"s","event":{"category":"topology","data":{"code":"runtime_created",'
            '"runtime_id":"s"}}}\n'
        )
        args = ["import", str(dump)]
    else:
        args = STORE_COMMANDS[command]
    result = cli(*args, "--store", UNREACHABLE)
    error = assert_clean_error(result, "postgresql://u:***@127.0.0.1:1/db")
    assert "secret" not in result.output
    assert "check that the server is running" in error
    assert "hint: check the --store URL" in result.stderr


@pytest.mark.parametrize("command", ["inspect", "events", "export"])
def test_unknown_session(command: str, populated: Populated) -> None:
    result = cli(command, "nobody", "--store", populated.url)
    assert_clean_error(result, "unknown session 'nobody'")
    assert "hint: list sessions with `meerkat-runtime sessions`" in result.stderr
    assert result.stdout == ""


def test_invalid_state_filters(populated: Populated) -> None:
    result = cli("ledger", "--state", "queud", "--store", populated.url)
    assert_clean_error(result, "unknown input lifecycle state 'queud'")
    assert "queued" in result.stderr.splitlines()[-1]
    result = cli("views", "--state", "sleeping", "--store", populated.url)
    assert_clean_error(result, "unknown session state 'sleeping'")
    assert "attached" in result.stderr.splitlines()[-1]


def test_bad_option_values_are_usage_errors(populated: Populated) -> None:
    result = cli("events", "alpha", "--limit", "0", "--store", populated.url)
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    result = cli("nonsense-command")
    assert result.exit_code == 2
    assert "Traceback" not in result.output


# ---------------------------------------------------------------- text that looks like markup


@pytest.fixture
def odd_ids(tmp_path: Path) -> tuple[str, list[str]]:
    """A store whose session ids and content look like rich markup."""
    url = f"sqlite:///{tmp_path / 'odd.db'}"
    ids = ["a[/b]", "[red]x", "[bold]"]
    with Runtime.open(url) as rt:
        for sid in ids:
            assert rt.session(sid).accept(prompt("[/x] not markup")).kind == "accepted"
    return url, ids


def test_session_ids_that_look_like_markup(odd_ids: tuple[str, list[str]]) -> None:
    url, ids = odd_ids
    for args in (["sessions"], ["views"], ["ledger"], ["verify"], ["health"], ["recover"]):
        result = cli(*args, "--store", url)
        assert result.exit_code == 0, (args, result.output)
    table = cli("sessions", "--store", url).stdout
    for sid in ids:
        assert f" {sid} " in table
    assert [r["session_id"] for r in cli_json("sessions", "--store", url)] == ids
    for sid in ids:
        for args in (["inspect", sid], ["events", sid]):
            result = cli(*args, "--store", url)
            assert result.exit_code == 0, (args, result.output)
            assert sid in result.stdout
        assert cli("export", sid, "--store", url).exit_code == 0


def test_an_unknown_session_id_that_looks_like_markup(odd_ids: tuple[str, list[str]]) -> None:
    url, _ = odd_ids
    result = cli("inspect", "[/zz]", "--store", url)
    assert_clean_error(result, "unknown session '[/zz]'")
