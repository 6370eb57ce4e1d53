"""A few commands on PostgreSQL, and export from SQLite then import into PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from meerkat_runtime import EchoExecutor, Runtime
from meerkat_runtime.events import wire

from ..waiting import WAIT
from ._support import Populated, assert_clean_error, cli, cli_json, prompt


def wire_events(url: str, sid: str) -> list[object]:
    with Runtime.open(url) as rt:
        return [wire.to_json_value(e) for e in rt.session(sid).events()]


def test_sessions_inspect_and_verify_on_postgresql(postgres_url: str) -> None:
    with Runtime.open(postgres_url, executor=EchoExecutor()) as rt:
        for n in range(2):
            outcome = rt.session("pg-done").accept(prompt(f"hello {n}"))
            assert outcome.completion is not None
            outcome.completion.wait(WAIT)
    with Runtime.open(postgres_url) as rt:
        waiting = str(rt.session("pg-waiting").accept(prompt("later")).input_id)

    rows = cli_json("sessions", "--store", postgres_url)
    assert [(r["session_id"], r["queued"]) for r in rows] == [("pg-done", 0), ("pg-waiting", 1)]
    assert cli("sessions", "--store", postgres_url).exit_code == 0
    info = cli_json("inspect", "pg-waiting", "--store", postgres_url)
    assert (info["state"], info["queue"]) == ("idle", [waiting])
    queued = cli_json("ledger", "--state", "queued", "--store", postgres_url)
    assert [r["input_id"] for r in queued] == [waiting]

    result = cli("verify", "--store", postgres_url)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("verify: ok (2 sessions, 3 inputs")
    assert cli_json("health", "--store", postgres_url)["healthy"] is True


def test_export_from_sqlite_import_into_postgresql(
    populated: Populated, postgres_url: str, tmp_path: Path
) -> None:
    dump = tmp_path / "all.jsonl"
    dump.write_text(
        "".join(cli("export", sid, "--store", populated.url).stdout for sid in populated.sessions)
    )
    result = cli("import", str(dump), "--store", postgres_url, "--json")
    assert result.exit_code == 0, result.output
    for sid in populated.sessions:
        assert wire_events(postgres_url, sid) == wire_events(populated.url, sid), sid
    report = cli_json("verify", "--store", postgres_url)
    assert report["ok"] is True, report["mismatches"]
    assert report["sessions"] == len(populated.sessions)
    queued = cli_json("ledger", "--state", "queued", "--store", postgres_url)
    assert {r["input_id"] for r in queued} == populated.all_queued()

    # a second import of the same file is refused and changes nothing
    again = cli("import", str(dump), "--store", postgres_url)
    assert_clean_error(again, f"{dump}:1:", "already exists", "postgresql://")
    assert cli_json("verify", "--store", postgres_url)["events"] == report["events"]
    # and the password is never shown
    password = urlsplit(postgres_url).password
    assert password
    assert password not in again.output


def test_wrong_password_is_masked(postgres_server_url: str) -> None:
    parts = urlsplit(postgres_server_url)
    netloc = f"{parts.username}:not-the-password-xyz@{parts.hostname}:{parts.port}"
    url = urlunsplit(parts._replace(netloc=netloc))
    result = cli("sessions", "--store", url)
    assert_clean_error(result, "cannot connect to PostgreSQL store", ":***@")
    assert "not-the-password-xyz" not in result.output
