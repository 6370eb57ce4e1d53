"""Security basics: no pickle, parameterized SQL, private files, masked passwords, encryption.

* No ``pickle`` (or a pickle-based module) is imported anywhere in
  ``meerkat_runtime``: the source is scanned, and a real workload on every
  backend runs in a fresh interpreter that must end without ``pickle`` in
  ``sys.modules``.
* SQL is parameterized: every f-string, ``%`` or ``str.format`` that builds SQL
  in the package interpolates identifiers only (quoted table/index names,
  placeholder lists, fixed column lists, fixed clauses); values are bound
  parameters. The scan follows local names back to what they were built from,
  so a new interpolation of a value fails this test.
* A SQLite database file the runtime creates has mode 0600, whatever the umask.
* A password never appears in an error or a log record (failing to connect,
  failing to authenticate, a driver error echoing the connection string).
* With ``cipher_key``, the events and snapshots tables hold no plaintext
  payload, and the database file holds no trace of the prompt's content.
"""

from __future__ import annotations

import ast
import logging
import os
import re
import sqlite3
import subprocess
import sys
import textwrap
import traceback
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from eventsourcing.cryptography import AESCipher

from meerkat_runtime import Completed, EchoExecutor, Runtime, StoreError
from meerkat_runtime.events.inputs import PromptInput
from meerkat_runtime.runtime import event_codec
from meerkat_runtime.store import NewEvent, open_store

from ..faulty_store import Fault, FaultInjector, fail_always
from ..waiting import WAIT
from ._support import prompt

PACKAGE = Path(__file__).resolve().parents[2] / "meerkat_runtime"
PICKLE_MODULES = {"pickle", "_pickle", "cPickle", "cloudpickle", "dill", "shelve"}
# SQL as the package writes it: upper-case keywords (English messages say "from", "into").
SQL_PATTERN = re.compile(
    r"\b(SELECT|INSERT INTO|UPDATE|DELETE FROM|CREATE (TABLE|INDEX|SCHEMA)|DROP|ALTER|"
    r"WHERE|VALUES|ORDER BY|LIMIT|ON CONFLICT|LOCK TABLE|LISTEN|NOTIFY)\b"
)
IDENTIFIER_CALLS = {"table", "index", "table_name", "_quote_identifier", "Identifier"}


def _sources() -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, ast.parse(path.read_text(), str(path))


# ---------------------------------------------------------------------- pickle


def test_no_pickle_import_in_the_source() -> None:
    found = []
    for path, tree in _sources():
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("__import__", "import_module")
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                names = [str(node.args[0].value)]
            found += [
                f"{path}:{getattr(node, 'lineno', 0)} {n}"
                for n in names
                if n.split(".")[0] in PICKLE_MODULES
            ]
    assert not found, found


_WORKLOAD = textwrap.dedent(
    """
    import sys, uuid
    from meerkat_runtime import EchoExecutor, Runtime
    from meerkat_runtime.events import wire
    from meerkat_runtime.events.inputs import Input

    for url in sys.argv[1:]:
        with Runtime.open(url, executor=EchoExecutor(), snapshot_interval=3) as rt:
            s = rt.session("pickle-check")
            outs = [s.accept({"input_type": "prompt", "content": f"p{n}"}) for n in range(5)]
            for out in outs:
                out.completion.wait(30)
            s.retire(); s.reset(); s.recover()
            rt.recover()
            rt.projections.wait_caught_up(30)
            assert rt.verify().ok
            list(s.events())
            wire.decode(Input, wire.encode(outs[0].state.persisted_input))
    with Runtime.open(sys.argv[1]) as rt:  # reopen: snapshot and tail fold
        rt.session("pickle-check").state()
    bad = sorted(m for m in sys.modules if m.split(".")[0] in PICKLES)
    print("PICKLE-MODULES", bad)
    """
).replace("PICKLES", repr(sorted(PICKLE_MODULES)))


def test_no_pickle_module_is_loaded_by_a_workload(tmp_path: Path) -> None:
    urls = [f"sqlite:///{tmp_path / 'w.db'}", "memory://pickle-check"]
    pg = os.environ.get("MEERKAT_TEST_POSTGRES_URL")
    if pg:
        parts = urlsplit(pg)
        urls.append(urlunsplit(parts._replace(query="schema=t_pickle_" + os.urandom(6).hex())))
    done = subprocess.run(
        [sys.executable, "-c", _WORKLOAD, *urls],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "PICKLE-MODULES []" in done.stdout, done.stdout
    if pg:
        _drop_schema(pg, urls[-1])


def _drop_schema(server: str, url: str) -> None:
    import psycopg
    from psycopg import sql

    schema = urlsplit(url).query.split("=", 1)[1]
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


# ---------------------------------------------------------------------- SQL


def _is_sql(text: str) -> bool:
    return SQL_PATTERN.search(text) is not None


def _literal_text(node: ast.JoinedStr) -> str:
    return "".join(str(v.value) for v in node.values if isinstance(v, ast.Constant))


class _Scope:
    """What the names of one function (or module) are bound to."""

    def __init__(self, node: ast.AST, parent: _Scope | None) -> None:
        self.bindings: dict[str, list[ast.expr]] = {}
        self.params: set[str] = set()
        self.parent = parent
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            self.params = {a.arg for a in [*node.args.args, *node.args.kwonlyargs]}
        for sub in ast.walk(node):
            if isinstance(sub, ast.Assign):
                for target in sub.targets:
                    self._bind(target, sub.value)
            elif isinstance(sub, (ast.AnnAssign, ast.AugAssign)) and sub.value is not None:
                self._bind(sub.target, sub.value)
            elif isinstance(sub, ast.For):
                self._bind(sub.target, sub.iter, element=True)
            elif (
                isinstance(sub, ast.Call)
                and isinstance(sub.func, ast.Attribute)
                and sub.func.attr in ("append", "extend")
                and isinstance(sub.func.value, ast.Name)
            ):
                for arg in sub.args:
                    wrapped = (
                        ast.List(elts=[arg], ctx=ast.Load()) if sub.func.attr == "append" else arg
                    )
                    self.bindings.setdefault(sub.func.value.id, []).append(wrapped)

    def _bind(self, target: ast.expr, value: ast.expr, element: bool = False) -> None:
        if isinstance(target, ast.Name):
            if element:  # a loop variable: bound to each element of the iterable
                value = ast.Subscript(value=value, slice=ast.Constant(0), ctx=ast.Load())
            self.bindings.setdefault(target.id, []).append(value)
        elif isinstance(target, ast.Tuple):
            for i, elt in enumerate(target.elts):
                self._bind(elt, ast.Subscript(value=value, slice=ast.Constant(i), ctx=ast.Load()))

    def lookup(self, name: str) -> list[ast.expr] | None:
        scope: _Scope | None = self
        while scope is not None:
            if name in scope.bindings:
                return scope.bindings[name]
            scope = scope.parent
        return None


def _safe(expr: ast.expr, scope: _Scope, depth: int = 0) -> bool:
    """True if ``expr`` can only produce identifiers, placeholders or fixed SQL text."""
    if depth > 20:
        return False

    def again(e: ast.expr) -> bool:
        return _safe(e, scope, depth + 1)

    if isinstance(expr, ast.Constant):
        return isinstance(expr.value, (str, int))
    if isinstance(expr, ast.JoinedStr):  # nested f-string: all of its parts safe
        return all(again(v.value) for v in expr.values if isinstance(v, ast.FormattedValue))
    if isinstance(expr, (ast.Tuple, ast.List)):
        return all(again(e) for e in expr.elts)
    if isinstance(expr, ast.IfExp):
        return again(expr.body) and again(expr.orelse)
    if isinstance(expr, ast.Subscript):
        # element i of a tuple (unpacking, a loop over a tuple literal): that element
        base, index = expr.value, expr.slice
        if isinstance(base, ast.IfExp):
            return again(ast.Subscript(value=base.body, slice=index, ctx=ast.Load())) and again(
                ast.Subscript(value=base.orelse, slice=index, ctx=ast.Load())
            )
        if isinstance(base, (ast.Tuple, ast.List)) and isinstance(index, ast.Constant):
            i = index.value
            return isinstance(i, int) and i < len(base.elts) and again(base.elts[i])
        return again(base)
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Mult):
        # "?" * n: a list of placeholders
        return isinstance(expr.left, ast.Constant) and expr.left.value == "?"
    if isinstance(expr, ast.Call):
        func = expr.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name in IDENTIFIER_CALLS:
            return True
        if name == "join" and isinstance(func, ast.Attribute):
            return again(func.value) and all(again(a) for a in expr.args)
        return False
    if isinstance(expr, ast.Name):
        bound = scope.lookup(expr.id)
        if bound is None:
            return False
        return all(again(b) for b in bound)
    return False


def _sql_violations(path: Path, tree: ast.Module) -> list[str]:
    out: list[str] = []
    module_scope = _Scope(
        ast.Module(body=[s for s in tree.body if isinstance(s, ast.Assign)], type_ignores=[]), None
    )

    def visit(node: ast.AST, scope: _Scope) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, _Scope(child, scope) if not isinstance(child, ast.Lambda) else scope)
                continue
            where = f"{path.relative_to(PACKAGE.parent)}:{getattr(child, 'lineno', '?')}"
            if isinstance(child, ast.JoinedStr) and _is_sql(_literal_text(child)):
                for part in child.values:
                    if isinstance(part, ast.FormattedValue) and not _safe(part.value, scope):
                        out.append(f"{where}: f-string puts {ast.unparse(part.value)!r} into SQL")
            elif (
                isinstance(child, ast.BinOp)
                and isinstance(child.op, ast.Mod)
                and isinstance(child.left, ast.Constant)
                and isinstance(child.left.value, str)
                and _is_sql(child.left.value)
            ):
                out.append(f"{where}: %-formatting builds SQL")
            elif (
                isinstance(child, ast.Call)
                and isinstance(child.func, ast.Attribute)
                and child.func.attr == "format"
            ):
                target = child.func.value
                if isinstance(target, ast.Constant) and _is_sql(str(target.value)):
                    out.append(f"{where}: str.format builds SQL")
                # psycopg composition: sql.SQL(<text>).format(<identifiers>)
                if isinstance(target, ast.Call) and getattr(target.func, "attr", "") == "SQL":
                    args = [*child.args, *(k.value for k in child.keywords)]
                    bad = [a for a in args if not _composable(a, scope)]
                    out.extend(f"{where}: sql.SQL.format gets {ast.unparse(a)!r}" for a in bad)
            visit(child, scope)

    visit(tree, module_scope)
    return out


def _composable(expr: ast.expr, scope: _Scope, depth: int = 0) -> bool:
    """psycopg ``Composable`` arguments built from identifiers and fixed SQL only."""
    if depth > 10:
        return False
    if isinstance(expr, ast.Call):
        name = getattr(expr.func, "attr", getattr(expr.func, "id", ""))
        if name == "Identifier":
            return True
        if name == "SQL":
            return all(isinstance(a, ast.Constant) for a in expr.args)
        if name == "format" and isinstance(expr.func, ast.Attribute):
            return _composable(expr.func.value, scope, depth + 1) and all(
                _composable(a, scope, depth + 1)
                for a in [*expr.args, *(k.value for k in expr.keywords)]
            )
        return False
    if isinstance(expr, ast.Subscript):  # element i of a tuple that was unpacked
        base, index = expr.value, expr.slice
        if isinstance(base, (ast.Tuple, ast.List)) and isinstance(index, ast.Constant):
            i = index.value
            return isinstance(i, int) and i < len(base.elts) and _composable(base.elts[i], scope)
        return False
    if isinstance(expr, ast.Name):
        bound = scope.lookup(expr.id)
        return bound is not None and all(_composable(b, scope, depth + 1) for b in bound)
    return False


def test_sql_interpolates_identifiers_only() -> None:
    violations = [v for path, tree in _sources() for v in _sql_violations(path, tree)]
    assert not violations, "\n".join(violations)
    built = sum(
        1
        for _, tree in _sources()
        for node in ast.walk(tree)
        if isinstance(node, ast.JoinedStr) and _is_sql(_literal_text(node))
    )
    assert built >= 20  # the scan did look at the package's SQL


def test_the_sql_scan_catches_a_value_interpolated_into_sql(tmp_path: Path) -> None:
    """The scanner is not vacuous: each way of putting a value into SQL is caught."""
    bad = textwrap.dedent(
        """
        def f(cur, name, rows):
            t = cur.table("x")
            where = ["1 = 1"]
            where.append(f"name = '{name}'")
            cur.execute(f"SELECT * FROM {t} WHERE {' AND '.join(where)}")
            cur.execute(f"DELETE FROM {t} WHERE id = {rows[0]}")
            cur.execute("SELECT * FROM x WHERE a = '%s'" % name)
            cur.execute("UPDATE x SET a = '{}'".format(name))
            sql.SQL("SELECT {} FROM t").format(sql.Literal(name))
        """
    )
    path = PACKAGE / "bad_example.py"
    found = _sql_violations(path, ast.parse(bad))
    assert len(found) == 5, found


# ---------------------------------------------------------------------- files


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_a_created_sqlite_file_is_private(tmp_path: Path, umask: int) -> None:
    db = tmp_path / "private.db"
    old = os.umask(umask)
    try:
        with Runtime.open(f"sqlite:///{db}", executor=EchoExecutor()) as rt:
            out = rt.session("s").accept(prompt("secret things"))
            assert out.completion is not None
            out.completion.wait(WAIT)
            for f in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
                if f.exists():
                    assert f.stat().st_mode & 0o777 == 0o600, (f, oct(f.stat().st_mode))
    finally:
        os.umask(old)
    assert db.stat().st_mode & 0o777 == 0o600


# ---------------------------------------------------------------------- passwords


def _all_text(exc: BaseException) -> str:
    """Everything a host could print about an error: message, repr, full chained traceback."""
    return "\n".join([str(exc), repr(exc), *traceback.format_exception(exc)])


@pytest.mark.parametrize(
    ("password", "in_url"),
    [("pw-secret", "pw-secret"), ("p@ss/w:rd-secret", "p%40ss%2Fw%3Ard-secret")],
)
def test_password_never_in_errors_or_logs_when_the_server_is_unreachable(
    caplog: pytest.LogCaptureFixture, password: str, in_url: str
) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"postgresql://u:{in_url}@127.0.0.1:1/x"
    with pytest.raises(StoreError) as info:
        Runtime.open(url, connect_timeout=1.0)
    text = _all_text(info.value)
    assert "127.0.0.1:1" in str(info.value) and "***" in str(info.value)
    for secret in {password, in_url}:
        assert secret not in text
        assert secret not in caplog.text


@pytest.mark.postgres
def test_password_never_in_errors_or_logs_when_authentication_fails(
    postgres_server_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    parts = urlsplit(postgres_server_url)
    wrong = "wrong-pw-secret"
    url = urlunsplit(
        parts._replace(netloc=f"{parts.username}:{wrong}@{parts.hostname}:{parts.port}")
    )
    with pytest.raises(StoreError) as info:
        Runtime.open(url)
    assert "password" in str(info.value).lower() or "authentication" in str(info.value).lower()
    assert wrong not in _all_text(info.value)
    assert wrong not in caplog.text


@pytest.mark.postgres
def test_password_scrubbed_from_store_errors_that_echo_the_dsn(
    postgres_server_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A driver error quoting the connection string reaches the host without the password."""
    caplog.set_level(logging.DEBUG)
    password = urlsplit(postgres_server_url).password
    assert password
    url = f"{postgres_server_url}?schema=t_scrub_{os.urandom(6).hex()}"
    store = open_store(url, codec=event_codec())
    try:
        assert password not in repr(store) and password not in store.url

        # A driver error that echoes the URL and the password back.
        echoing = Fault(message=f"connection to {postgres_server_url} lost (password={password})")

        # A real event (the store refuses one that would not read back before writing).
        with Runtime.open("memory://") as scratch:
            scratch.session("s").accept(prompt("to copy"))
            first = scratch.store.read_session("s")[0]
        faults = FaultInjector(store, fail_always(ops={"read", "commit"}, fault=echoing))
        with Runtime.open(store, recovery_timeout=0.2) as rt:
            with pytest.raises(StoreError) as read_error:
                rt.session("s").state()
            with pytest.raises(StoreError) as write_error:
                store.append("s", 0, [NewEvent(first.topic, first.data)])
            for exc in (read_error.value, write_error.value):
                assert password not in _all_text(exc)  # message and chained causes
                assert "***" in str(exc)
            faults.clear()
    finally:
        store.close()
        _drop_schema(postgres_server_url, url)
    assert password not in caplog.text


# ---------------------------------------------------------------------- encryption at rest


def test_encrypted_store_keeps_no_plaintext_payload(tmp_path: Path) -> None:
    db = tmp_path / "encrypted.db"
    key = AESCipher.create_key(32)
    content = "zebra-canary-9f1c2e7b payload text"
    idem = "canary-key-5d8a0c"
    with Runtime.open(
        f"sqlite:///{db}", executor=EchoExecutor(), cipher_key=key, snapshot_interval=2
    ) as rt:
        s = rt.session("enc")
        out = s.accept(prompt(content, idempotency_key=idem))
        assert out.completion is not None
        outcome = out.completion.wait(WAIT)
        assert isinstance(outcome, Completed) and outcome.output == {"text": content}
        raw = sqlite3.connect(db)
        try:
            events = [bytes(r[0]) for r in raw.execute("SELECT state FROM meerkat_events")]
            snapshots = [bytes(r[0]) for r in raw.execute("SELECT state FROM meerkat_snapshots")]
        finally:
            raw.close()
        assert events and snapshots
        for blob in events + snapshots:
            assert content.encode() not in blob and idem.encode() not in blob
            assert b'"input_type"' not in blob and b"prompt" not in blob
    # Nothing of the content anywhere in the file (read models included), and the
    # store reads back with the key, and refuses to without it.
    assert content.encode() not in db.read_bytes()
    with Runtime.open(f"sqlite:///{db}", cipher_key=key) as rt2:
        st = rt2.session("enc").input_state(out.input_id)
        assert st is not None and isinstance(st.persisted_input, PromptInput)
        assert st.persisted_input.content == content
    with pytest.raises(StoreError), Runtime.open(f"sqlite:///{db}", recovery_timeout=0.2) as rt3:
        rt3.session("enc").state()


# ---------------------------------------------------------------------- passwords with / @ : % #

# Each password has a distinctive part on both sides of its special character, so a
# message showing half of it (``***@ssw0rd``) is caught too.
SPECIAL_PASSWORDS = [
    ("top/secret-pw", "top/secret-pw"),
    ("p@ssw0rd-pw", "p@ssw0rd-pw"),
    ("colon:secret-pw", "colon:secret-pw"),
    ("hash#secret-pw", "hash#secret-pw"),
    ("pct%secret-pw", "pct%secret-pw"),
    ("p@ss/w:rd#x%-pw", "p%40ss%2Fw%3Ard%23x%25-pw"),  # percent-encoded in the URL
]


def _fragments(password: str, in_url: str) -> set[str]:
    """The password, its URL form, and each piece of it between special characters."""
    pieces = set(re.split(r"[/@:#%]", password)) | {password, in_url}
    return {p for p in pieces if len(p) >= 3}


@pytest.mark.parametrize(("password", "in_url"), SPECIAL_PASSWORDS)
def test_special_character_passwords_never_leak_from_the_api(
    caplog: pytest.LogCaptureFixture, password: str, in_url: str
) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"postgresql://u:{in_url}@127.0.0.1:1/x"
    with pytest.raises(StoreError) as info:
        Runtime.open(url, connect_timeout=1.0)
    text = _all_text(info.value)
    assert "postgresql://u:***@127.0.0.1:1/x" in str(info.value), str(info.value)
    for secret in _fragments(password, in_url):
        assert secret not in text, (secret, text)
        assert secret not in caplog.text


@pytest.mark.parametrize(("password", "in_url"), SPECIAL_PASSWORDS)
def test_special_character_passwords_never_leak_from_the_cli(password: str, in_url: str) -> None:
    """A real process: the error line masks the password, however it is written."""
    url = f"postgresql://u:{in_url}@127.0.0.1:1/x"
    done = subprocess.run(
        [str(Path(sys.executable).with_name("meerkat-runtime")), "sessions", "--store", url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "postgresql://u:***@127.0.0.1:1/x" in done.stderr, done.stderr
    for secret in _fragments(password, in_url):
        assert secret not in done.stderr + done.stdout, (secret, done.stderr)


def test_mask_url_parses_the_user_information() -> None:
    from meerkat_runtime.errors import mask_url

    cases = {
        "postgresql://u:top/secret@h:5432/db": "postgresql://u:***@h:5432/db",
        "postgresql://u:p@ssw0rd@h/db?schema=s": "postgresql://u:***@h/db?schema=s",
        "postgresql://u:a#b@h/db": "postgresql://u:***@h/db",
        "postgresql://u:p%40ss@h/db": "postgresql://u:***@h/db",
        "store 'postgresql://u:a:b@h/db': refused (password=xyz&a=1)": (
            "store 'postgresql://u:***@h/db': refused (password=***&a=1)"
        ),
        "postgresql://u@h/db": "postgresql://u@h/db",  # no password: nothing to mask
        "sqlite:///runtime.db": "sqlite:///runtime.db",
    }
    for text, masked in cases.items():
        assert mask_url(text) == masked, text


def test_the_url_format_hint_is_printed_as_written() -> None:
    """Scrubbing the store's password must not mask the documented URL format."""
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("meerkat-runtime")),
            "sessions",
            "--store",
            "mysql://app:my-s3cret@db/x",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    assert "my-s3cret" not in done.stderr
    assert "postgresql://user:pass@host:port/db" in done.stderr, done.stderr
    assert "user:***" not in done.stderr, done.stderr
