"""The CLI's promises under misuse (issue 13, items 5, 7, 8, 10, 13).

* Read commands never create or change anything: on another application's
  database they say "not a meerkat-runtime store" and leave it as it was; they
  work on a read-only open (``?mode=ro``) and on a backup copy whose read
  models lag the log, which they bring up to date in memory only.
* ``MEERKAT_STORE`` gives the store URL (real processes).
* Bad thresholds, event types, states and arguments are clear errors.
* Usage errors are one ``error:`` line and a ``hint:`` line (exit 2), never a
  boxed panel; logged warnings never come before an error line; ``--json`` on
  every command; ids are never truncated in piped output; ``demo`` removes its
  temporary database unless ``--keep``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from meerkat_runtime import EchoExecutor, InvalidInput, Runtime

from ..waiting import WAIT
from ._support import Populated, assert_clean_error, cli, cli_json, prompt

SCRIPT = Path(sys.executable).with_name("meerkat-runtime")

# Every command that only reads, with the arguments it needs besides --store.
READ_COMMANDS: dict[str, list[str]] = {
    "sessions": ["sessions"],
    "inspect": ["inspect", "alpha"],
    "events": ["events", "alpha"],
    "ledger": ["ledger"],
    "interaction-status": ["interaction-status", "alpha", "--key", "k-hello"],
    "views": ["views"],
    "verify": ["verify"],
    "export": ["export", "alpha"],
    "health": ["health"],
    "cluster": ["cluster"],
}
WRITE_COMMANDS: dict[str, list[str]] = {
    "recover": ["recover"],
    "rebuild-projections": ["rebuild-projections"],
}


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real console script in its own process (no terminal: output is piped)."""
    base = {k: v for k, v in os.environ.items() if k not in ("MEERKAT_DEBUG", "MEERKAT_STORE")}
    return subprocess.run(
        [str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=base | (env or {}),
        check=False,
    )


def one_line_error(stderr: str) -> tuple[str, str]:
    """stderr is exactly an ``error:`` line and a ``hint:`` line: no panel, no log, no traceback."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 2, lines
    assert lines[0].startswith("error: ") and lines[1].startswith("hint: "), lines
    assert not any(ch in stderr for ch in "╭╮╰╯│"), stderr
    return lines[0], lines[1]


def _file_state(path: Path) -> tuple[list[str], str]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = sorted(r[0] for r in conn.execute("SELECT name FROM sqlite_master"))
        return tables, hashlib.sha256(path.read_bytes()).hexdigest()
    finally:
        conn.close()


# ---------------------------------------------------------------- item 5: looking never writes


@pytest.fixture
def other_app(tmp_path: Path) -> Path:
    path = tmp_path / "otherapp.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    conn.execute("INSERT INTO invoices (total) VALUES (12.5)")
    conn.commit()
    conn.close()
    return path


@pytest.mark.parametrize("command", list(READ_COMMANDS) + list(WRITE_COMMANDS))
def test_another_applications_database_is_refused_and_left_alone(
    command: str, other_app: Path
) -> None:
    before = _file_state(other_app)
    args = {**READ_COMMANDS, **WRITE_COMMANDS}[command]
    result = cli(*args, "--store", f"sqlite:///{other_app}")
    assert_clean_error(result, "not a meerkat-runtime store")
    assert _file_state(other_app) == before
    assert not other_app.with_name("otherapp.db-wal").exists()


def test_runtime_open_asks_before_adding_tables_to_another_database(other_app: Path) -> None:
    from meerkat_runtime import StoreError

    before = _file_state(other_app)
    with pytest.raises(StoreError, match="create_schema='force'"):
        Runtime.open(f"sqlite:///{other_app}")
    assert _file_state(other_app) == before
    with Runtime.open(f"sqlite:///{other_app}", create_schema="force") as rt:
        assert rt.session("s").accept(prompt("hi")).kind == "accepted"
    tables = _file_state(other_app)[0]
    assert "invoices" in tables and "meerkat_schema" in tables


@pytest.fixture
def lagging_copy(populated: Populated, tmp_path: Path) -> tuple[str, str]:
    """A backup copy whose log is ahead of its stored read models (no projections ran
    after the last inputs), plus the session only the log knows."""
    url = populated.copy_to(tmp_path / "backup")
    with Runtime.open(url, projections=False, executor=EchoExecutor()) as rt:
        outcome = rt.session("after-backup").accept(prompt("written after the read models"))
        assert outcome.completion is not None
        outcome.completion.wait(WAIT)
    return url, "after-backup"


def test_read_commands_on_a_backup_copy_write_nothing_and_see_everything(
    lagging_copy: tuple[str, str],
) -> None:
    url, newest = lagging_copy
    path = Path(url.removeprefix("sqlite:///"))
    before = _file_state(path)
    rows = cli_json("sessions", "--store", url)
    assert newest in [r["session_id"] for r in rows]  # caught up, in memory
    ledger = cli_json("ledger", "--session", newest, "--store", url)
    assert [r["state"] for r in ledger] == ["consumed"]
    assert cli_json("verify", "--store", url)["ok"] is True
    assert cli_json("health", "--store", url)["healthy"] is True
    for args in READ_COMMANDS.values():
        if args[0] != "cluster":
            result = cli(*args, "--store", url)
            assert result.exit_code == 0, (args, result.output)
    assert _file_state(path) == before


def test_read_commands_take_a_read_only_url(lagging_copy: tuple[str, str]) -> None:
    url, newest = lagging_copy
    path = Path(url.removeprefix("sqlite:///"))
    before = _file_state(path)
    ro = f"{url}?mode=ro"
    assert newest in [r["session_id"] for r in cli_json("sessions", "--store", ro)]
    assert cli_json("inspect", newest, "--store", ro)["session_id"] == newest
    assert cli_json("verify", "--store", ro)["ok"] is True
    assert _file_state(path) == before
    assert not Path(f"{path}?mode=ro").exists()
    result = cli("recover", "--store", ro)
    assert_clean_error(result, "read-only")
    assert _file_state(path) == before


# ---------------------------------------------------------------- item 8: MEERKAT_STORE


def test_store_url_from_the_environment(populated: Populated) -> None:
    done = run("sessions", "--json", env={"MEERKAT_STORE": populated.url})
    assert done.returncode == 0, done.stderr
    assert [r["session_id"] for r in json.loads(done.stdout)] == populated.sessions
    # the password stays out of the command line and out of the output
    done = run("sessions", env={"MEERKAT_STORE": "postgresql://u:env-s3cret@127.0.0.1:1/db"})
    error, _ = one_line_error(done.stderr)
    assert done.returncode == 1 and "postgresql://u:***@127.0.0.1:1/db" in error
    assert "env-s3cret" not in done.stderr + done.stdout


# ---------------------------------------------------------------- item 10: clear errors


@pytest.mark.parametrize(
    "args",
    [
        ["health", "--max-queue-age", "-1"],
        ["health", "--max-run-age", "-5"],
        ["health", "--max-lag", "-1"],
        ["ledger", "--queued-longer-than", "-1"],
    ],
)
def test_negative_thresholds_are_usage_errors(args: list[str], populated: Populated) -> None:
    result = cli(*args, "--store", populated.url)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 2 and lines[0].startswith("error: ") and args[1] in lines[0], lines
    assert lines[1].startswith("hint: ")


def test_unknown_event_type_is_an_error(populated: Populated) -> None:
    result = cli("events", "alpha", "--type", "input.acepted", "--store", populated.url)
    assert_clean_error(result, "unknown event type", "input.acepted")
    assert "input.accepted" in result.stderr  # the hint lists the codes
    good = cli_json("events", "alpha", "--type", "input.accepted", "--store", populated.url)
    assert good and all(e["event"]["category"] == "input_lifecycle" for e in good)


def test_api_refuses_bad_arguments_at_the_call(tmp_path: Path, populated: Populated) -> None:
    url = f"sqlite:///{tmp_path / 'api.db'}"
    with pytest.raises(TypeError, match="executor"):
        Runtime.open(url, executor=5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="executor"):
        Runtime.open(url, executor=object())  # type: ignore[arg-type]
    with Runtime.open(populated.url, read_only=True) as rt:
        rt.projections.wait_caught_up(WAIT)
        with pytest.raises(InvalidInput, match="state") as error:
            rt.ledger.list(state="bogus")
        assert "queued" in str(error.value)  # names the valid states
        with pytest.raises(InvalidInput, match="state"):
            rt.ledger.count(state="bogus")
        with pytest.raises(InvalidInput, match="state"):
            rt.views.list(state="bogus")
        assert rt.ledger.list(state="queued")  # a real state still lists
        with pytest.raises(InvalidInput, match="after"):
            rt.session("alpha").events(after="x")  # type: ignore[arg-type]
        with pytest.raises(InvalidInput, match="after"):
            rt.session("alpha").events(after=-1)


# ---------------------------------------------------------------- item 13: output promises


@pytest.mark.parametrize(
    "args",
    [
        ["ledger", "--bogus"],
        ["ledger", "--limit", "many"],
        ["inspect"],
        ["no-such-command"],
    ],
)
def test_usage_errors_are_one_line_and_a_hint(args: list[str]) -> None:
    done = run(*args)
    assert done.returncode == 2, done.stderr
    _, hint = one_line_error(done.stderr)
    assert "--help" in hint and "Usage" in hint, hint


def test_logged_warnings_never_come_before_an_error_line(
    populated: Populated, tmp_path: Path
) -> None:
    """A hand-edited event the views cannot apply: the projection logs while it retries.
    Whether the command then fails or goes on, no log line precedes or replaces the
    error line, and on success warnings come as ``warning:`` lines."""
    url = populated.copy_to(tmp_path / "edited")
    path = url.removeprefix("sqlite:///")
    conn = sqlite3.connect(path)
    (rowid, state) = conn.execute(
        "SELECT rowid, state FROM meerkat_events WHERE originator_id = 'beta' "
        "AND topic = 'runtime.state_changed' ORDER BY rowid DESC LIMIT 1"
    ).fetchone()
    edited = bytes(state).replace(b'"to":"attached"', b'"to":"sideways"')
    assert edited != bytes(state)
    conn.execute("UPDATE meerkat_events SET state = ? WHERE rowid = ?", (edited, rowid))
    conn.execute("DELETE FROM meerkat_projection_offsets")  # replay it from the start
    conn.commit()
    conn.close()
    done = run("sessions", "--store", url)
    if done.returncode == 0:
        assert all(
            line.startswith("warning: ") for line in done.stderr.splitlines() if line.strip()
        ), done.stderr
    else:
        assert done.returncode == 1
        one_line_error(done.stderr)


def test_every_command_takes_json() -> None:
    result = cli("--help")
    commands = [
        line.split()[1]
        for line in result.stdout.splitlines()
        # A command's row starts with its name; a wrapped summary line starts with spaces.
        if line.startswith("│ ")
        and not line.startswith("│  ")
        and len(line.split()) > 2
        and line.split()[1][0].isalpha()
    ]
    assert "export" in commands and "bench" in commands, commands
    for command in commands:
        assert "--json" in cli(command, "--help").stdout, command


def test_export_json(populated: Populated, tmp_path: Path) -> None:
    events = cli_json("export", "alpha", "--store", populated.url)
    lines = cli("export", "alpha", "--store", populated.url).stdout.splitlines()
    assert events == [json.loads(line) for line in lines]
    out = tmp_path / "alpha.jsonl"
    summary = cli_json("export", "alpha", "-o", str(out), "--store", populated.url)
    assert summary == {"session_id": "alpha", "events": len(lines), "output": str(out)}


def test_bench_json() -> None:
    done = run("bench", "codec", "--arg=--iterations=50", "--arg=--repeat=1", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout)  # the benchmark's table went to stderr
    assert [r["name"] for r in results] == ["codec"] and results[0]["result"]


def test_ids_are_never_truncated_in_piped_output(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'long.db'}"
    long_id = "tenant-" + "x" * 90 + "-session"
    with Runtime.open(url) as rt:
        outcome = rt.session(long_id).accept(prompt("hello"))
        input_id = str(outcome.input_id)
        rt.projections.wait_caught_up(WAIT)
    for args in (["sessions"], ["views"], ["ledger"], ["inspect", long_id]):
        done = run(*args, "--store", url, env={"COLUMNS": "40"})
        assert done.returncode == 0, done.stderr
        assert long_id in done.stdout, (args, done.stdout)
    done = run("ledger", "--store", url, env={"COLUMNS": "40"})
    assert input_id in done.stdout


def test_demo_removes_its_temporary_database_unless_kept(tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    small = ["demo", "--sessions", "3", "--inputs", "20", "--threads", "2", "--json"]
    done = run(*small, env={"TMPDIR": str(scratch)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["kept"] is False
    assert not list(scratch.glob("meerkat-demo-*")), list(scratch.iterdir())
    done = run(*small, "--keep", env={"TMPDIR": str(scratch)})
    assert done.returncode == 0, done.stderr[-2000:]
    summary: dict[str, Any] = orjson.loads(done.stdout)
    assert summary["kept"] is True
    (kept,) = scratch.glob("meerkat-demo-*/demo.db")
    assert summary["store"] == f"sqlite:///{kept}"


def test_event_data_is_not_cut_in_piped_output(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'data.db'}"
    text = "a long prompt " + "y" * 200 + " end-of-prompt"
    with Runtime.open(url) as rt:
        rt.session("s").accept(prompt(text))
    done = run("events", "s", "--store", url, env={"COLUMNS": "40"})
    assert done.returncode == 0, done.stderr
    assert "end-of-prompt" in done.stdout, done.stdout


def test_console_json_prints_where_it_listens(populated: Populated) -> None:
    """The long-running ``console`` keeps the promise too: ``--json`` makes its banner
    one JSON line (stdout), so a script can read the URL."""
    env = {k: v for k, v in os.environ.items() if k != "MEERKAT_STORE"} | {"PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [str(SCRIPT), "console", "--store", populated.url, "--port", "0", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        assert ready["url"].startswith("http://127.0.0.1:") and ready["loopback"] is True
        assert ready["store"] == populated.url
    finally:
        proc.terminate()
        proc.wait(WAIT)


def test_a_server_command_prints_warnings_as_they_happen(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Commands that finish hold warnings until their output is done; a server (``console``)
    cannot wait for an end, so its warnings are printed at once."""
    import logging

    from meerkat_runtime import cli as cli_module

    seen: list[str] = []

    @cli_module.command
    @cli_module.live_warnings
    def serve() -> None:
        logging.getLogger("meerkat_runtime.test").warning("projection %s is retrying", "x")
        seen.append(capsys.readouterr().err)

    @cli_module.command
    def finish() -> None:
        logging.getLogger("meerkat_runtime.test").warning("held until the end")
        seen.append(capsys.readouterr().err)

    serve()
    finish()
    assert "warning: projection x is retrying" in seen[0]
    assert seen[1] == "" and "warning: held until the end" in capsys.readouterr().err
