"""Waiting in tests: one generous bound and one condition poll for every test package.

Tests wait on conditions, never on the wall clock: ``WAIT`` is only how long a
wait may take before the test fails, so it is generous (child processes and a
loaded CI machine) and is never part of an assertion.
"""

from __future__ import annotations

import time
from collections.abc import Callable

WAIT = 60.0
"""Upper bound for anything a test waits on (never a timing assertion)."""


def wait_until(
    predicate: Callable[[], object], timeout: float = WAIT, what: str = "", interval: float = 0.005
) -> None:
    """Poll ``predicate`` until it is true; fail the test, naming ``what``, after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)
