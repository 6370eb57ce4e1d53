"""The core needs none of the extras: without psycopg (the ``postgres`` extra) the
package imports and runs on SQLite, and a postgresql:// URL says which extra to
install; without starlette (``console``) the console says so. Each case runs in a
fresh interpreter where importing the missing package fails as if it were absent."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path


def run_without(modules: list[str], code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    blocker = textwrap.dedent(
        f"""
        import sys
        for name in {modules!r}:
            sys.modules[name] = None  # import name -> ImportError, as if not installed
        """
    )
    return subprocess.run(
        [sys.executable, "-c", blocker + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
        env={"PYTHONPATH": str(Path(__file__).resolve().parents[2]), "PATH": "/usr/bin:/bin"},
    )


def test_the_core_runs_on_sqlite_without_psycopg(tmp_path: Path) -> None:
    result = run_without(
        ["psycopg", "psycopg_pool"],
        """
        from meerkat_runtime import Completed, EchoExecutor, Runtime
        with Runtime.open("sqlite:///core.db", executor=EchoExecutor()) as rt:
            outcome = rt.session("s").accept({"input_type": "prompt", "content": "hi"})
            assert isinstance(outcome.completion.wait(30), Completed)
            rt.projections.wait_caught_up(30)
            assert rt.views.get("s") is not None
        assert "psycopg" not in [m for m in sys.modules if sys.modules[m] is not None]
        print("ok")
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_a_postgresql_url_without_psycopg_names_the_postgres_extra(tmp_path: Path) -> None:
    result = run_without(
        ["psycopg", "psycopg_pool"],
        """
        from meerkat_runtime import Runtime, StoreError
        try:
            Runtime.open("postgresql://user:s3cret@127.0.0.1:1/db")
        except StoreError as e:
            print(e)
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "pip install 'meerkat-runtime[postgres]'" in result.stdout
    assert "psycopg" in result.stdout and "s3cret" not in result.stdout


def test_the_console_without_starlette_names_the_console_extra(tmp_path: Path) -> None:
    result = run_without(
        ["starlette", "jinja2", "uvicorn"],
        """
        try:
            import meerkat_runtime.console
        except ImportError as e:
            print(e)
        from meerkat_runtime.cli import main
        sys.argv = ["meerkat-runtime", "console", "--store", "sqlite:///none.db"]
        main()
        """,
        tmp_path,
    )
    assert "pip install 'meerkat-runtime[console]'" in result.stdout
    assert result.returncode == 1
    assert "error: the web console needs the console extra" in result.stderr
    assert "hint: pip install 'meerkat-runtime[console]'" in result.stderr
