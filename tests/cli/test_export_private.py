"""``export -o FILE`` writes a file only its owner can read (issue 13, item 9): the
events hold what the store holds, inputs in clear, like the database (mode 0600)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from ._support import Populated, assert_clean_error, cli


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A umask that would leave new files world-readable (0644)."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("open_umask")
def test_export_writes_the_file_owner_only(populated: Populated, tmp_path: Path) -> None:
    out = tmp_path / "beta.jsonl"
    result = cli("export", "beta", "-o", str(out), "--store", populated.url)
    assert result.exit_code == 0, result.output
    assert _mode(out) == 0o600
    expected = str(cli("export", "beta", "--store", populated.url).stdout)
    assert out.read_text() == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["beta.jsonl"]  # no temporary left


@pytest.mark.usefixtures("open_umask")
def test_export_over_a_readable_file_leaves_it_owner_only(
    populated: Populated, tmp_path: Path
) -> None:
    out = tmp_path / "old.jsonl"
    out.write_text("stale\n")
    out.chmod(0o644)
    result = cli("export", "alpha", "-o", str(out), "--store", populated.url)
    assert result.exit_code == 0, result.output
    assert _mode(out) == 0o600
    lines = out.read_bytes().splitlines()
    assert lines and all(orjson.loads(line)["runtime_id"] == "alpha" for line in lines)


def test_export_into_a_missing_directory_is_a_clean_error(
    populated: Populated, tmp_path: Path
) -> None:
    out = tmp_path / "missing" / "x.jsonl"
    result = cli("export", "beta", "-o", str(out), "--store", populated.url)
    assert_clean_error(result, f"cannot write {out}")
    assert not out.parent.exists()
