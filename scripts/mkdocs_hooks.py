"""MkDocs hooks: CLI help rendered into the operator guide, docstring roles tidied.

A line ``<!-- cli-help: NAME -->`` in a page becomes a text block holding the
output of ``meerkat-runtime NAME --help``, so the options the guide lists are
always the ones the installed command accepts. An unknown NAME fails the build.

The package's docstrings name objects with Sphinx roles (``:class:`Session```);
mkdocstrings renders the name as code and leaves the role's prefix as text,
so the prefix is dropped from the rendered pages.
"""

from __future__ import annotations

import re
from typing import Any

import typer.main
from mkdocs.exceptions import PluginError
from typer.testing import CliRunner

from meerkat_runtime.cli import app

MARKER = re.compile(r"^<!-- cli-help: (?P<name>[a-z][a-z0-9-]*) -->$", re.MULTILINE)
_WIDTH = "90"
ROLE_PREFIX = re.compile(r":(?:class|meth|func|attr|exc|mod|data|obj):(?=<code>)")


def command_names() -> list[str]:
    """The public (not hidden) subcommands of ``meerkat-runtime``, in declaration order."""
    group = typer.main.get_command(app)
    commands: dict[str, Any] = getattr(group, "commands", {})
    return [name for name, cmd in commands.items() if not cmd.hidden]


def render_help(name: str) -> str:
    """``meerkat-runtime NAME --help`` as plain text (no colour, fixed width)."""
    if name not in command_names():
        raise PluginError(f"cli-help: no meerkat-runtime command named {name!r}")
    result = CliRunner().invoke(
        app, [name, "--help"], env={"COLUMNS": _WIDTH, "NO_COLOR": "1", "TERM": "dumb"}
    )
    if result.exit_code != 0:
        raise PluginError(f"cli-help: `meerkat-runtime {name} --help` exited {result.exit_code}")
    lines = [line.rstrip() for line in result.output.splitlines()]
    return "\n".join(lines).strip("\n")


def on_page_markdown(markdown: str, **_: Any) -> str:
    """Replace every ``cli-help`` marker with the command's help text."""
    return MARKER.sub(lambda m: f"```text\n{render_help(m['name'])}\n```", markdown)


def on_page_content(html: str, **_: Any) -> str:
    """Drop the Sphinx role prefixes (``:class:``) left before code in rendered docstrings."""
    return ROLE_PREFIX.sub("", html)
