"""The project documents itself: the operator guide covers every command, and
nothing a user installs or reads points at documents outside the project.

The documentation build itself (``make docs``: ``mkdocs build --strict``) runs
in CI after the tests; these checks keep the sources honest without it.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import orjson
import pytest

import meerkat_runtime
from meerkat_runtime import wire

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
OPERATOR_GUIDE = DOCS / "guides" / "operator.md"
WIRE_FORMAT = DOCS / "reference" / "wire-format.md"
# A JSON example the wire-format page vouches for: a marker naming the type, then the block.
WIRE_EXAMPLE = re.compile(r"<!-- wire: (?P<type>\w+) -->\n```json\n(?P<json>.*?)\n```", re.DOTALL)

# Names of documents that live outside this repository (the port's source
# material); a user of the package has none of them.
FOREIGN_POINTERS = (
    "../shared",
    "shared/spec",
    "shared/guides",
    "RUNTIME_SPEC",
    "API.md",
    "LIBRARIES.md",
)


def _hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "mkdocs_hooks", ROOT / "scripts" / "mkdocs_hooks.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _shipped_text_files() -> list[Path]:
    files = [
        p
        for p in (ROOT / "meerkat_runtime").rglob("*")
        if p.is_file() and p.suffix in {".py", ".md", ".txt"}
    ]
    return [*files, ROOT / "README.md", ROOT / "setup.cfg"]


def test_every_cli_command_has_a_section_in_the_operator_guide() -> None:
    guide = OPERATOR_GUIDE.read_text(encoding="utf-8")
    names = _hooks().command_names()
    assert "ledger" in names and "_demo-child" not in names  # the listing sees the real app
    missing = [n for n in names if not re.search(rf"^##+ `{re.escape(n)}`", guide, re.MULTILINE)]
    assert not missing, f"commands without a section in {OPERATOR_GUIDE.name}: {missing}"
    no_help = [n for n in names if f"<!-- cli-help: {n} -->" not in guide]
    assert not no_help, f"commands whose help is not rendered in {OPERATOR_GUIDE.name}: {no_help}"


def test_cli_help_is_rendered_from_the_installed_command() -> None:
    hooks = _hooks()
    page = hooks.on_page_markdown("## `ledger`\n\n<!-- cli-help: ledger -->\n")
    assert "Usage: meerkat-runtime ledger [OPTIONS]" in page
    assert "--queued-longer-than" in page
    assert "<!-- cli-help" not in page


def test_cli_help_marker_for_an_unknown_command_fails_the_build() -> None:
    from mkdocs.exceptions import PluginError

    with pytest.raises(PluginError, match="no meerkat-runtime command named 'nope'"):
        _hooks().on_page_markdown("<!-- cli-help: nope -->\n")


def test_package_and_readme_do_not_point_outside_the_project() -> None:
    hits = [
        f"{path.relative_to(ROOT)}:{lineno}: {line.strip()}"
        for path in _shipped_text_files()
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if any(pointer in line for pointer in FOREIGN_POINTERS)
    ]
    assert not hits, "pointers to documents users do not have:\n" + "\n".join(hits)


def test_readme_links_into_the_docs_and_every_link_resolves() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = [t.split("#", 1)[0] for t in re.findall(r"\]\(([^)\s]+)\)", readme)]
    local = [t for t in targets if t and not re.match(r"[a-z]+://", t)]
    assert any(t.startswith("docs/") for t in local), "README does not link into docs/"
    broken = [t for t in local if not (ROOT / t).exists()]
    assert not broken, f"README links to missing files: {broken}"


def _wire_examples() -> list[tuple[str, str]]:
    text = WIRE_FORMAT.read_text(encoding="utf-8")
    return [(m["type"], m["json"]) for m in WIRE_EXAMPLE.finditer(text)]


def test_wire_format_page_has_checked_examples_of_every_documented_type() -> None:
    types = {t for t, _ in _wire_examples()}
    expected = {"Input", "RuntimeEventEnvelope", "RunPrimitive", "CompletionOutcome"}
    assert expected | {"RejectReason", "InputTerminalOutcome", "InputState"} <= types


@pytest.mark.parametrize(("type_name", "example"), _wire_examples())
def test_wire_format_example_round_trips_through_the_codec(type_name: str, example: str) -> None:
    cls = getattr(meerkat_runtime, type_name)
    value = wire.decode(cls, example)
    assert orjson.loads(wire.encode(value, as_type=cls)) == orjson.loads(example)


def test_rendered_docstrings_lose_their_sphinx_role_prefixes() -> None:
    html = (
        "See :class:<code>Session</code> and :meth:<code>Runtime.open</code>; a:b:<code>x</code>."
    )
    assert _hooks().on_page_content(html) == (
        "See <code>Session</code> and <code>Runtime.open</code>; a:b:<code>x</code>."
    )
