"""Helpers of the console tests: a demo-like store, a fingerprint of a store's database,
and a console server process.

``populate_console_store`` writes through the public API only: the CLI tests' store
(sessions of all six input kinds, retired, destroyed and stopped sessions, queued
inputs) plus sessions whose ids need escaping in HTML and in URLs, and one session
written with the projections off, so that the stored read models lag the log.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from meerkat_runtime import EchoExecutor, Runtime

from ..cli._support import Populated, populate, prompt
from ..waiting import WAIT

ODD_SESSIONS = ("<b>bold</b> & co", "tenant/42?x=1#frag")
"""Session ids that markup, a path separator, a query and a fragment would break."""
UNPROJECTED = "late-comer"
"""A session whose events the stored read models lag behind."""


def populate_console_store(path: Path) -> Populated:
    """The CLI tests' populated store plus the ``ODD_SESSIONS``, each with one input, and
    ``UNPROJECTED`` with one queued input the stored read models have not seen."""
    populated = populate(path)
    with Runtime.open(populated.url, executor=EchoExecutor(), retry_backoff=0.01) as rt:
        for sid in ODD_SESSIONS:
            outcome = rt.session(sid).accept(prompt(f"hello {sid}", idempotency_key=f"odd-{sid}"))
            assert outcome.completion is not None
            outcome.completion.wait(WAIT)
        rt.projections.wait_caught_up(WAIT)
    # Events the stored read models have not seen (written with projections off): a
    # console that wrote would bring them up to date in the database; a read-only one
    # catches up in memory only.
    with Runtime.open(populated.url, projections=False) as rt:
        outcome = rt.session(UNPROJECTED).accept(
            prompt("after the read models", idempotency_key="late")
        )
        assert outcome.kind == "accepted"
    populated.sessions.extend([*ODD_SESSIONS, UNPROJECTED])
    populated.states.update(dict.fromkeys([*ODD_SESSIONS, UNPROJECTED], "idle"))
    populated.queued[UNPROJECTED] = [str(outcome.input_id)]
    populated.accepted[UNPROJECTED] = [str(outcome.input_id)]
    return populated


def sqlite_fingerprint(path: Path) -> tuple[str, list[str]]:
    """The database file's SHA-256 and every table's content in order (read from a copy,
    so that looking cannot change it either)."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    copy = path.with_name(path.name + ".fingerprint")
    copy.write_bytes(path.read_bytes())
    wal = path.with_name(path.name + "-wal")
    if wal.exists() and wal.stat().st_size:
        copy.with_name(copy.name + "-wal").write_bytes(wal.read_bytes())
    conn = sqlite3.connect(copy)
    try:
        dump = list(conn.iterdump())
    finally:
        conn.close()
        for suffix in ("", "-wal", "-shm"):
            copy.with_name(copy.name + suffix).unlink(missing_ok=True)
    return digest, dump


def postgres_fingerprint(server_url: str, schema: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table in ``schema``, in a stable order."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    with psycopg.connect(server_url) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
                "ORDER BY table_name",
                (schema,),
            ).fetchall()
        ]
        for table in tables:
            rows = conn.execute(
                sql.SQL("SELECT * FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
            ).fetchall()
            out[table] = sorted(rows, key=repr)
    return out


_READY = re.compile(r"console at (http://\S+/)")


@contextmanager
def console_process(store_url: str, *extra: str, startup: list[str] | None = None) -> Iterator[str]:
    """``meerkat-runtime console --store URL --port 0`` in a child process; yields its URL
    (read from its startup message, whose lines are appended to ``startup``) and stops
    it (SIGTERM) afterwards."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "400", "NO_COLOR": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "meerkat_runtime", "console", "--store", store_url,
         "--port", "0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:
            seen.append(line)
            match = _READY.search(line)
            if match:
                break
        else:
            raise AssertionError(f"the console exited {proc.wait()}:\n{''.join(seen)}")
        if startup is not None:
            startup.extend(seen)
            startup.extend(proc.stdout.readline() for _ in range(2))
        yield match.group(1)
    finally:
        proc.terminate()
        try:
            proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
