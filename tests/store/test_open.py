"""open_store: URLs, options, and the errors a user sees when opening goes wrong."""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import stat
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from meerkat_runtime.errors import StoreError
from meerkat_runtime.store import NewEvent, open_store

from .conftest import make_codec

EVENT = NewEvent("test.happened", {"n": 1})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_unknown_scheme_names_the_masked_url() -> None:
    with pytest.raises(StoreError) as error:
        open_store("mysql://app:s3cr3t-pw@db.example/events", codec=make_codec())
    message = str(error.value)
    assert "mysql://app:***@db.example/events" in message
    assert "s3cr3t-pw" not in message
    assert "sqlite:///" in message and "postgresql://" in message  # says what to use
    with pytest.raises(StoreError, match="unsupported store URL"):
        open_store("runtime.db", codec=make_codec())


def test_unknown_and_invalid_options() -> None:
    with pytest.raises(StoreError, match="'group_comit'"):
        open_store("memory://", codec=make_codec(), group_comit=False)
    bad: list[dict[str, Any]] = [
        {"group_commit": "yes"},
        {"compress": 1},
        {"snapshot_interval": -1},
        {"max_batch_events": 0},
        {"max_batch_wait": -0.1},
        {"pool_size": 1.5},
        {"sqlite_synchronous": "off"},
        {"cipher_key": 1234},
    ]
    for options in bad:
        with pytest.raises(StoreError, match=repr(next(iter(options)))):
            open_store("memory://", codec=make_codec(), **options)
    with pytest.raises(StoreError):
        open_store("memory://", codec=make_codec(), incarnation="")
    with pytest.raises(StoreError, match="codec"):
        open_store("memory://", codec=None)  # type: ignore[arg-type]


def test_invalid_cipher_key_is_refused_without_echoing_it() -> None:
    with pytest.raises(StoreError) as error:
        open_store("memory://", codec=make_codec(), cipher_key="dG9vIHNob3J0")  # "too short"
    assert "dG9vIHNob3J0" not in str(error.value)
    assert "16, 24 or 32" in str(error.value)


def test_memory_stores_private_or_shared_by_name() -> None:
    with open_store("memory://", codec=make_codec()) as a:
        a.append("s", 0, [EVENT])
    with open_store("memory://", codec=make_codec()) as b:
        assert b.session_ids() == []
    with open_store("memory://shared-by-name-test", codec=make_codec()) as c:
        c.append("s", 0, [EVENT])
    with open_store("memory://shared-by-name-test", codec=make_codec()) as d:
        assert d.session_ids() == ["s"]


# -- SQLite ----------------------------------------------------------------------------------


def test_sqlite_missing_directory_is_refused_and_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such"
    with pytest.raises(StoreError) as error:
        open_store(f"sqlite:///{missing}/events.db", codec=make_codec())
    assert "does not exist" in str(error.value)
    assert str(missing) in str(error.value)
    assert not (tmp_path / "no").exists()


def test_sqlite_file_is_created_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    old_umask = os.umask(0)  # the store must not rely on the caller's umask
    try:
        with open_store(f"sqlite:///{path}", codec=make_codec()) as store:
            store.append("s", 0, [EVENT])
            for name in ("events.db", "events.db-wal", "events.db-shm"):
                if (tmp_path / name).exists():
                    assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_sqlite_relative_and_absolute_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with open_store("sqlite:///relative.db", codec=make_codec()) as store:
        store.append("s", 0, [EVENT])
        assert store.url == "sqlite:///relative.db"
    assert (tmp_path / "relative.db").exists()
    with open_store(f"sqlite:///{tmp_path / 'relative.db'}", codec=make_codec()) as store:
        assert store.session_ids() == ["s"]
    assert f"sqlite:///{tmp_path}".startswith("sqlite:////")
    for bad in ("sqlite://", "sqlite:///", "sqlite:///:memory:"):
        with pytest.raises(StoreError):
            open_store(bad, codec=make_codec())


def test_sqlite_refuses_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("just some notes, certainly not SQLite " * 100)
    with pytest.raises(StoreError, match="cannot open SQLite store"):
        open_store(f"sqlite:///{path}", codec=make_codec())
    with pytest.raises(StoreError, match="is a directory"):
        open_store(f"sqlite:///{tmp_path}", codec=make_codec())


@pytest.mark.parametrize(("option", "expected"), [("full", 2), ("normal", 1)])
def test_sqlite_synchronous_option(tmp_path: Path, option: str, expected: int) -> None:
    with (
        open_store(
            f"sqlite:///{tmp_path / 'e.db'}", codec=make_codec(), sqlite_synchronous=option
        ) as store,
        store.transaction() as cursor,
    ):
        cursor.execute("PRAGMA synchronous")
        assert cursor.fetchone()[0] == expected
        cursor.execute("PRAGMA journal_mode")
        assert cursor.fetchone()[0] == "wal"
    with (
        open_store(f"sqlite:///{tmp_path / 'e.db'}", codec=make_codec()) as store,
        store.transaction() as cursor,
    ):
        cursor.execute("PRAGMA synchronous")
        assert cursor.fetchone()[0] == 2  # the default is FULL


def test_sqlite_schema_from_the_future(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    with open_store(f"sqlite:///{path}", codec=make_codec()) as store:
        store.append("s", 0, [EVENT])
    with sqlite3.connect(path) as conn:
        assert conn.execute(
            "SELECT version FROM meerkat_schema WHERE component = 'store'"
        ).fetchone() == (1,)
        conn.execute("UPDATE meerkat_schema SET version = 7 WHERE component = 'store'")
    with pytest.raises(StoreError) as error:
        open_store(f"sqlite:///{path}", codec=make_codec())
    assert str(error.value) == (
        f"store sqlite:///{path} was written by a newer meerkat-runtime (schema 7, this one "
        f"reads up to 1); upgrade meerkat-runtime to open it"
    )


# -- PostgreSQL ------------------------------------------------------------------------------


def _with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username}:{password}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def test_postgres_unreachable_server(caplog: pytest.LogCaptureFixture) -> None:
    url = f"postgresql://meerkat:Unreachable-Pw-9@127.0.0.1:{_free_port()}/meerkat_test"
    with caplog.at_level(logging.DEBUG), pytest.raises(StoreError) as error:
        open_store(url, codec=make_codec(), connect_timeout=2)
    message = str(error.value)
    assert message.startswith(
        f"cannot connect to PostgreSQL store postgresql://meerkat:***@127.0.0.1:{urlsplit(url).port}/meerkat_test"
    )
    assert "check that the server is running" in message
    assert "Unreachable-Pw-9" not in message
    assert "Unreachable-Pw-9" not in caplog.text


def test_postgres_bad_credentials(postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:
    url = _with_password(postgres_url, "Wrong-Pw-42")
    with caplog.at_level(logging.DEBUG), pytest.raises(StoreError) as error:
        open_store(url, codec=make_codec())
    message = str(error.value)
    assert "postgresql://meerkat:***@" in message
    assert "password authentication failed" in message
    assert "Wrong-Pw-42" not in message
    assert "Wrong-Pw-42" not in caplog.text
    for chained in (error.value.__cause__, error.value.__context__):
        assert "Wrong-Pw-42" not in repr(chained)


def test_postgres_url_errors() -> None:
    for bad in (
        "postgresql://127.0.0.1/db",  # no user
        "postgresql://u:p@127.0.0.1:5432/",  # no database
        "postgresql://u:p@127.0.0.1:99999/db",  # bad port
        "postgresql://u:p@127.0.0.1/db?sslmode=require",  # unknown parameter
        "postgresql://u:p@127.0.0.1/db?schema=bad-name;drop",  # not an identifier
    ):
        with pytest.raises(StoreError) as error:
            open_store(bad, codec=make_codec())
        assert ":p@" not in str(error.value)


def test_postgres_schema_parameter_isolates_stores(postgres_url: str) -> None:
    other_url = postgres_url.replace("schema=", "schema=other_")
    try:
        with (
            open_store(postgres_url, codec=make_codec()) as a,
            open_store(other_url, codec=make_codec()) as b,
        ):
            a.append("s", 0, [EVENT])
            assert b.session_ids() == []
            assert a.url.endswith("?schema=" + a.schema)  # type: ignore[attr-defined]
            assert "meerkat-test-password" not in a.url
    finally:
        schema = urlsplit(other_url).query.split("=", 1)[1]
        with psycopg.connect(postgres_url.split("?", 1)[0], autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def test_postgres_schema_from_the_future(postgres_url: str) -> None:
    with open_store(postgres_url, codec=make_codec()) as store:
        store.append("s", 0, [EVENT])
        table = store.table_name("meerkat_schema")
    with psycopg.connect(postgres_url.split("?", 1)[0], autocommit=True) as conn:
        conn.execute(f"UPDATE {table} SET version = 3 WHERE component = 'store'")
    with pytest.raises(StoreError) as error:
        open_store(postgres_url, codec=make_codec())
    message = str(error.value)
    assert "was written by a newer meerkat-runtime (schema 3, this one reads up to 1)" in message
    assert "postgresql://meerkat:***@" in message


def test_postgres_store_without_the_append_function_gets_it_on_open(postgres_url: str) -> None:
    """A store written before appends became one server-side function (an older release)
    has no such function: the next writable open adds it, and appends go on; a
    read-only open adds nothing and refuses to append."""
    from meerkat_runtime.store._postgres import APPEND_FUNCTION

    with open_store(postgres_url, codec=make_codec()) as store:
        store.append("s", 0, [EVENT])
        schema = store.table_name("meerkat_events").split(".")[0].strip('"')
    drop = sql.SQL("DROP FUNCTION {}.{}").format(
        sql.Identifier(schema), sql.Identifier(APPEND_FUNCTION)
    )
    with psycopg.connect(postgres_url.split("?", 1)[0], autocommit=True) as conn:
        conn.execute(drop)
    with (
        open_store(postgres_url, codec=make_codec(), read_only=True) as store,
        pytest.raises(StoreError),
    ):
        store.append("s", 1, [EVENT])
    with open_store(postgres_url, codec=make_codec()) as store:
        store.append("s", 1, [EVENT])
        assert [e.version for e in store.read_session("s")] == [1, 2]


def test_postgres_concurrent_opens_of_a_fresh_schema(postgres_url: str) -> None:
    import threading

    errors: list[BaseException] = []
    stores = []

    def open_one() -> None:
        try:
            stores.append(open_store(postgres_url, codec=make_codec()))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for store in stores:
        store.close()
    assert errors == []
    assert len(stores) == 4


# ---------------------------------------------------------------- another application's database


def _other_app_db(path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO users (name) VALUES ('ada')")
    conn.commit()
    conn.close()
    return path


def _sqlite_state(path: Path) -> tuple[list[str], str, bytes]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = sorted(r[0] for r in conn.execute("SELECT name FROM sqlite_master"))
        (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
    finally:
        conn.close()
    return tables, mode, path.read_bytes()


def test_sqlite_refuses_to_add_tables_to_another_applications_database(tmp_path: Path) -> None:
    db = _other_app_db(tmp_path / "otherapp.db")
    before = _sqlite_state(db)
    for options in ({}, {"create_schema": "never"}, {"read_only": True}):
        with pytest.raises(StoreError, match="not a meerkat-runtime store") as error:
            open_store(f"sqlite:///{db}", codec=make_codec(), **options)
        assert _sqlite_state(db) == before, options  # no table, no WAL switch, no byte
    assert "create_schema='force'" in str(error.value) or options
    with pytest.raises(StoreError, match="create_schema='force'"):
        open_store(f"sqlite:///{db}", codec=make_codec())
    with open_store(f"sqlite:///{db}", codec=make_codec(), create_schema="force") as store:
        store.append("s-1", 0, [EVENT])
    assert "users" in _sqlite_state(db)[0] and "meerkat_schema" in _sqlite_state(db)[0]
    with open_store(f"sqlite:///{db}", codec=make_codec()) as store:  # a store now: opens
        assert store.session_version("s-1") == 1


def test_sqlite_creates_its_tables_in_an_empty_file_only_in_one_transaction(
    tmp_path: Path,
) -> None:
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    with open_store(f"sqlite:///{empty}", codec=make_codec()) as store:
        store.append("s-1", 0, [EVENT])
    with pytest.raises(StoreError, match="create_schema"):
        open_store(f"sqlite:///{tmp_path / 'x.db'}", codec=make_codec(), create_schema="bad")
    assert not (tmp_path / "x.db").exists()
    with pytest.raises(StoreError, match="no store at"):
        open_store(f"sqlite:///{tmp_path / 'y.db'}", codec=make_codec(), create_schema="never")
    assert not (tmp_path / "y.db").exists()


def test_sqlite_read_only_store_writes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "runtime.db"
    with open_store(f"sqlite:///{db}", codec=make_codec()) as store:
        store.append("s-1", 0, [EVENT])
    before = db.read_bytes()
    cases: list[tuple[str, dict[str, Any]]] = [
        (f"sqlite:///{db}?mode=ro", {}),
        (f"sqlite:///{db}", {"read_only": True}),
    ]
    for url, options in cases:
        with open_store(url, codec=make_codec(), **options) as store:
            assert store.read_only
            assert [e.version for e in store.read_session("s-1")] == [1]
            with pytest.raises(StoreError, match="read-only"):
                store.append("s-1", 1, [EVENT])
            with pytest.raises(StoreError, match="read-only"):
                store.save_snapshot("s-1", 1, {"x": 1})
            with (
                pytest.raises(Exception, match=r"readonly|read-only"),
                store.transaction() as cur,
            ):
                cur.execute("CREATE TABLE sneaky (x INTEGER)")
    assert db.read_bytes() == before
    assert not (tmp_path / "runtime.db?mode=ro").exists()  # no part of the file name
    with pytest.raises(StoreError, match="no store at"):
        open_store(f"sqlite:///{tmp_path / 'none.db'}?mode=ro", codec=make_codec())
    assert not list(tmp_path.glob("none.db*"))
    with pytest.raises(StoreError, match="unknown parameter"):
        open_store(f"sqlite:///{db}?cache=shared", codec=make_codec())


def test_postgres_refuses_a_schema_holding_other_tables(postgres_url: str) -> None:
    schema = postgres_url.rsplit("schema=", 1)[1]
    server = postgres_url.rsplit("?", 1)[0] if "?schema=" in postgres_url else postgres_url
    server = server.replace(f"&schema={schema}", "")
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("CREATE TABLE {}.users (id int)").format(sql.Identifier(schema)))

    def tables() -> list[str]:
        with psycopg.connect(server, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                (schema,),
            ).fetchall()
        return sorted(r[0] for r in rows)

    for options in ({}, {"read_only": True}, {"create_schema": "never"}):
        with pytest.raises(StoreError, match="not a meerkat-runtime store"):
            open_store(postgres_url, codec=make_codec(), **options)
        assert tables() == ["users"], options
    with open_store(postgres_url, codec=make_codec(), create_schema="force") as store:
        store.append("s-1", 0, [EVENT])
    with open_store(postgres_url, codec=make_codec(), read_only=True) as store:
        assert store.session_version("s-1") == 1
        with pytest.raises(StoreError, match="read-only"):
            store.append("s-1", 1, [EVENT])
        with (
            pytest.raises(Exception, match="read-only transaction"),
            store.transaction() as cur,
        ):
            cur.execute(sql.SQL("CREATE TABLE {}.sneaky (x int)").format(sql.Identifier(schema)))
    assert "sneaky" not in tables()


def test_postgres_url_takes_libpq_parameters(postgres_url: str) -> None:
    with open_store(
        postgres_url + "&sslmode=disable&application_name=mr-test", codec=make_codec()
    ) as store:
        store.append("s-1", 0, [EVENT])
        with store.transaction() as cur:
            cur.execute("SELECT current_setting('application_name') AS name")
            row = cur.fetchone()
            assert (row["name"] if isinstance(row, dict) else row[0]) == "mr-test"
    with pytest.raises(StoreError, match="'sslmod'"):
        open_store(postgres_url + "&sslmod=disable", codec=make_codec())
    with pytest.raises(StoreError, match="'password' not allowed"):
        open_store(postgres_url + "&password=x", codec=make_codec())


def test_a_failed_sqlite_open_leaves_no_table_behind(tmp_path: Path) -> None:
    """Creation is one transaction: when a later statement fails (here a view holds the
    events table's name, so its index cannot be made), not even ``meerkat_schema`` is left."""
    db = tmp_path / "clash.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE VIEW meerkat_events AS SELECT 1 AS x")
    conn.commit()
    conn.close()
    for _ in range(2):
        with pytest.raises(StoreError):
            open_store(f"sqlite:///{db}", codec=make_codec())
        conn = sqlite3.connect(db)
        names = sorted(r[0] for r in conn.execute("SELECT name FROM sqlite_master"))
        conn.close()
        assert names == ["meerkat_events"], names


def test_a_failed_postgres_open_leaves_no_version_table(postgres_url: str) -> None:
    """The version table is written last: an open that fails before (a view holds the
    events table's name) leaves no ``meerkat_schema`` claiming a store is there."""
    schema = postgres_url.rsplit("schema=", 1)[1]
    server = postgres_url.replace(f"?schema={schema}", "").replace(f"&schema={schema}", "")
    ident = sql.Identifier(schema)
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(ident))
        conn.execute(sql.SQL("CREATE VIEW {}.meerkat_events AS SELECT 1 AS x").format(ident))
    with pytest.raises(StoreError):
        open_store(postgres_url, codec=make_codec())
    with psycopg.connect(server, autocommit=True) as conn:
        found = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
            (schema,),
        ).fetchall()
    assert "meerkat_schema" not in {r[0] for r in found}, found
