"""docs/guides/telemetry.md lists exactly the instruments, spans and attributes that
``meerkat_runtime.telemetry`` defines (the one table the code creates them from)."""

from __future__ import annotations

import re
from pathlib import Path

from meerkat_runtime.telemetry import ATTRIBUTES, INSTRUMENTS, SPANS

PAGE = Path(__file__).resolve().parents[2] / "docs" / "guides" / "telemetry.md"
MKDOCS = Path(__file__).resolve().parents[2] / "mkdocs.yml"


def rows(section: str) -> list[str]:
    """The body rows of the first table under the ``## section`` heading."""
    text = PAGE.read_text(encoding="utf-8")
    match = re.search(rf"^## {section}\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, f"no section {section!r} in {PAGE}"
    lines = [line for line in match.group(1).splitlines() if line.startswith("|")]
    return lines[2:]  # past the header and its rule


def names(attributes: tuple[str, ...]) -> str:
    return ", ".join(f"`{a}`" for a in attributes) if attributes else "none"


def test_the_page_lists_every_instrument_as_defined() -> None:
    expected = [
        f"| `{s.name}` | {s.kind} | `{s.unit}` | {names(s.attributes)} | {s.description} |"
        for s in INSTRUMENTS
    ]
    assert rows("Metrics") == expected, "regenerate the table:\n" + "\n".join(expected)


def test_the_page_lists_every_span_as_defined() -> None:
    expected = [f"| `{s.name}` | {names(s.attributes)} | {s.description} |" for s in SPANS]
    assert rows("Spans") == expected, "regenerate the table:\n" + "\n".join(expected)


def test_the_page_lists_every_attribute() -> None:
    expected = [f"| `{name}` | {meaning} |" for name, meaning in ATTRIBUTES.items()]
    assert rows("Attributes") == expected, "regenerate the table:\n" + "\n".join(expected)
    used = {a for s in INSTRUMENTS for a in s.attributes} | {a for s in SPANS for a in s.attributes}
    assert used <= set(ATTRIBUTES)


def test_the_names_follow_the_conventions() -> None:
    for spec in INSTRUMENTS:
        assert spec.name.startswith("meerkat."), spec.name
        assert spec.unit, spec.name
        if spec.name.endswith(".duration"):
            assert spec.kind == "histogram" and spec.unit == "s", spec.name
    for span in SPANS:
        assert span.name.startswith("meerkat."), span.name
    assert "guides/telemetry.md" in MKDOCS.read_text(encoding="utf-8")
