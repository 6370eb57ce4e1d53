"""The public-API import check, run by scripts/check-wheel.sh inside a fresh virtualenv
holding only the built wheel (no extras, no source checkout on the path).

It imports every public name, runs one input through a SQLite runtime, and checks
that what the core does not install fails with an error naming the extra to install.
Exits non-zero, with the reason, on the first failure.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import tempfile
from pathlib import Path

PUBLIC_MODULES = (
    "meerkat_runtime",
    "meerkat_runtime.actors",
    "meerkat_runtime.aio",
    "meerkat_runtime.cli",
    "meerkat_runtime.errors",
    "meerkat_runtime.events",
    "meerkat_runtime.events.wire",
    "meerkat_runtime.projections",
    "meerkat_runtime.runtime",
    "meerkat_runtime.store",
    "meerkat_runtime.subscriptions",
    "meerkat_runtime.telemetry",
    "meerkat_runtime.terminal_status",
)


def check(condition: bool, message: str) -> None:
    if not condition:
        sys.exit(f"check_public_api: FAILED: {message}")


def main() -> None:
    import meerkat_runtime

    origin = Path(meerkat_runtime.__file__).resolve()
    check("site-packages" in origin.parts, f"meerkat_runtime imported from {origin}, not the wheel")
    for name in PUBLIC_MODULES:
        module = importlib.import_module(name)
        for attr in getattr(module, "__all__", ()):
            check(hasattr(module, attr), f"{name}.__all__ names {attr!r}, which it lacks")
    print(
        f"imported {len(meerkat_runtime.__all__)} public names, version {meerkat_runtime.__version__}"
    )

    from meerkat_runtime import Completed, EchoExecutor, Runtime, StoreError

    with (
        tempfile.TemporaryDirectory() as tmp,
        Runtime.open(f"sqlite:///{tmp}/check.db", executor=EchoExecutor()) as rt,
    ):
        outcome = rt.session("s-1").accept({"input_type": "prompt", "content": "hi"})
        check(outcome.kind == "accepted", f"accept answered {outcome.kind}")
        assert outcome.completion is not None
        result = outcome.completion.wait(30)
        check(isinstance(result, Completed), f"the input ended {result}")
    print("ran one input through a SQLite runtime")

    if importlib.util.find_spec("psycopg") is None:
        try:
            Runtime.open("postgresql://user:secret@127.0.0.1:1/db")
        except StoreError as e:
            check("meerkat-runtime[postgres]" in str(e), f"no extra named in: {e}")
            check("secret" not in str(e), f"password shown in: {e}")
        else:
            check(False, "a postgresql:// store opened without psycopg")
        print("without psycopg, a postgresql:// store names the postgres extra")
    if importlib.util.find_spec("starlette") is None:
        try:
            importlib.import_module("meerkat_runtime.console")
        except ImportError as e:
            check("meerkat-runtime[console]" in str(e), f"no extra named in: {e}")
        else:
            check(False, "meerkat_runtime.console imported without starlette")
        print("without starlette, meerkat_runtime.console names the console extra")
    if importlib.util.find_spec("opentelemetry") is None:
        from meerkat_runtime.telemetry import telemetry_for

        check(telemetry_for() is None, "telemetry on without opentelemetry installed")
        print("without opentelemetry, telemetry is off")
    print("public API check: ok")


if __name__ == "__main__":
    main()
