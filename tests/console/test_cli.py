"""``meerkat-runtime console`` and ``meerkat-runtime --version`` from the command line."""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

import meerkat_runtime
from meerkat_runtime.console._app import is_loopback

from ..cli._support import Populated, assert_clean_error, cli
from ..waiting import WAIT
from ._support import console_process


def test_version_prints_the_package_version() -> None:
    result = cli("--version")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"meerkat-runtime {meerkat_runtime.__version__}\n"


def test_version_from_the_installed_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "meerkat_runtime", "--version"],
        capture_output=True, text=True, timeout=WAIT, check=True,
    ).stdout  # fmt: skip
    assert out.strip() == f"meerkat-runtime {meerkat_runtime.__version__}"


def test_console_says_it_is_read_only_unauthenticated_and_local(console_store: Populated) -> None:
    startup: list[str] = []
    with console_process(console_store.url, startup=startup) as url:
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url + "sessions", timeout=WAIT) as response:
            assert response.status == 200
            assert "alpha" in response.read().decode()
    text = " ".join(startup)
    assert "read-only" in text
    assert "No authentication" in text
    assert "listening on 127.0.0.1: this machine only" in text


def test_console_refuses_a_port_in_use(console_store: Populated) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = cli("console", "--store", console_store.url, "--port", str(port))
    assert_clean_error(result, f"cannot listen on 127.0.0.1:{port}")


def test_console_refuses_a_missing_store(tmp_path: Path) -> None:
    result = cli("console", "--store", f"sqlite:///{tmp_path / 'nothing.db'}", "--port", "0")
    assert_clean_error(result, "does not exist")
    assert not (tmp_path / "nothing.db").exists()


def test_console_refuses_a_bad_host(console_store: Populated) -> None:
    result = cli("console", "--store", console_store.url, "--host", "no such host!", "--port", "0")
    assert_clean_error(result, "cannot listen on no such host!")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True), ("::1", True),
     ("[::1]", True), ("0.0.0.0", False), ("::", False), ("192.168.1.4", False),
     ("example.com", False)],
)  # fmt: skip
def test_only_loopback_addresses_count_as_this_machine(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
