"""Events the conformance suites append."""

from __future__ import annotations

from typing import Any

from meerkat_runtime.store import NewEvent


def happened(n: int, **extra: Any) -> NewEvent:
    return NewEvent("test.happened", {"n": n, **extra})


def other(n: int) -> NewEvent:
    return NewEvent("test.other", {"n": n})
