"""Helpers of the CLI tests: run a command in process, check its error output, build a store.

``populate`` writes a store through the public API only (``Runtime.open``):
sessions with inputs of all six kinds run to completion by ``EchoExecutor``,
a deduplicated and a rejected input, sessions retired, destroyed and stopped,
and, reopened with ``executor=None``, inputs left queued (one of them
ephemeral, which recovery abandons). It returns what the tests expect to see.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from typer.testing import CliRunner, Result

from meerkat_runtime import EchoExecutor, Runtime
from meerkat_runtime.cli import app

from ..waiting import WAIT

_runner = CliRunner()

# Wide enough that no table cell the tests look for is truncated.
_ENV = {"COLUMNS": "400", "MEERKAT_DEBUG": None, "NO_COLOR": "1"}


def cli(*args: str, input: str | bytes | None = None) -> Result:
    """Run ``meerkat-runtime ARGS`` in this process; an unexpected exception fails the test."""
    result = _runner.invoke(app, list(args), input=input, env=_ENV)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(
            f"meerkat-runtime {' '.join(args)} raised {result.exception!r}\n{result.output}"
        ) from result.exception
    return result


def cli_json(*args: str) -> Any:
    """Run a command with ``--json``; it must exit 0 and print one JSON document."""
    result = cli(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def assert_clean_error(result: Result, *fragments: str) -> str:
    """Exit 1, one ``error:`` line (holding ``fragments``) and a ``hint:`` line; no traceback."""
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, lines
    assert any(line.startswith("hint: ") and len(line) > len("hint: ") for line in lines), lines
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    return errors[0]


# ---------------------------------------------------------------- the populated store

PROMPT: dict[str, Any] = {
    "input_type": "prompt",
    "content": "hello",
    "header": {"idempotency_key": "k-hello"},
}
SIX_KINDS: list[dict[str, Any]] = [
    PROMPT,
    {
        "input_type": "peer",
        "content": "peer says hi",
        "convention": {"convention_type": "message"},
        "header": {"source": {"type": "peer", "peer_id": "peer-a"}},
    },
    {
        "input_type": "flow_step",
        "step_id": "step-1",
        "content": "flow step one",
        "header": {"source": {"type": "flow", "flow_id": "onboarding", "step_index": 1}},
    },
    {
        "input_type": "external_event",
        "event_type": "ci.status",
        "payload": {"state": "green"},
        "header": {"source": {"type": "external", "source_name": "ci"}},
    },
    {
        "input_type": "continuation",
        "reason": "detached_background_op_completed",
        "handling_mode": "steer",
        "header": {
            "source": {"type": "system"},
            "durability": "derived",
            "visibility": {"transcript_eligible": False, "operator_eligible": False},
        },
    },
    {
        "input_type": "operation",
        "operation_id": "op-1",
        "event": {"type": "progress", "id": "op-1", "message": "halfway", "percent": 50.0},
    },
]
KINDS = ["prompt", "peer", "flow_step", "external_event", "continuation", "operation"]


def prompt(text: str, **header: Any) -> dict[str, Any]:
    return {"input_type": "prompt", "content": text, "header": header}


@dataclass
class Populated:
    """A populated SQLite store and what the tests expect of it."""

    path: Path
    sessions: list[str]
    states: dict[str, str]
    """Each session's state as the log has it (no executor bound)."""
    queued: dict[str, list[str]] = field(default_factory=dict)
    """Input ids left queued, per session."""
    accepted: dict[str, list[str]] = field(default_factory=dict)
    """Input ids accepted, per session (deduplicated and rejected ones are not)."""
    ephemeral: str = ""
    """The queued ephemeral input (of session ``ephemeral-one``)."""

    @property
    def url(self) -> str:
        return f"sqlite:///{self.path}"

    def all_queued(self) -> set[str]:
        return {i for ids in self.queued.values() for i in ids}

    def copy_to(self, directory: Path) -> str:
        """Copy the database (and its WAL, if any) into ``directory``; return the copy's URL."""
        directory.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm"):
            src = self.path.with_name(self.path.name + suffix)
            if src.exists():
                shutil.copy2(src, directory / (self.path.name + suffix))
        return f"sqlite:///{directory / self.path.name}"


def populate(path: Path) -> Populated:
    url = f"sqlite:///{path}"
    accepted: dict[str, list[str]] = {}

    def accept(rt: Runtime, sid: str, doc: dict[str, Any], *, wait: bool = True) -> str:
        outcome = rt.session(sid).accept(doc)
        assert outcome.kind == "accepted", (sid, doc, outcome)
        accepted.setdefault(sid, []).append(str(outcome.input_id))
        if wait:
            assert outcome.completion is not None
            outcome.completion.wait(WAIT)
        return str(outcome.input_id)

    with Runtime.open(url, executor=EchoExecutor(), retry_backoff=0.01) as rt:
        for doc in SIX_KINDS:
            accept(rt, "alpha", doc)
        alpha = rt.session("alpha")
        assert alpha.accept(PROMPT).kind == "deduplicated"
        assert alpha.accept(prompt("not allowed", durability="derived")).kind == "rejected"
        for n in range(3):
            accept(rt, "beta", prompt(f"beta {n}"))
        for sid, operation in (
            ("retired-one", "retire"),
            ("destroyed-one", "destroy"),
            ("stopped-one", "stop"),
        ):
            accept(rt, sid, prompt(f"last words of {sid}"))
            getattr(rt.session(sid), operation)()
        rt.projections.wait_caught_up(WAIT)

    queued: dict[str, list[str]] = {}
    with Runtime.open(url) as rt:  # no executor: accepted inputs wait in their queues
        for n in range(3):
            queued.setdefault("queued-one", []).append(
                accept(
                    rt, "queued-one", prompt(f"waiting {n}", idempotency_key=f"w-{n}"), wait=False
                )
            )
        queued.setdefault("alpha", []).append(
            accept(rt, "alpha", prompt("one more for alpha"), wait=False)
        )
        ephemeral = accept(
            rt, "ephemeral-one", prompt("gone at restart", durability="ephemeral"), wait=False
        )
        queued["ephemeral-one"] = [ephemeral]
        rt.projections.wait_caught_up(WAIT)

    states = {
        "alpha": "idle",
        "beta": "idle",
        "retired-one": "retired",
        "destroyed-one": "destroyed",
        "stopped-one": "stopped",
        "queued-one": "idle",
        "ephemeral-one": "idle",
    }
    return Populated(
        path=path,
        sessions=list(states),
        states=states,
        queued=queued,
        accepted=accepted,
        ephemeral=ephemeral,
    )


def sql(url: str, statement: str, *params: Any) -> int:
    """Run one statement on a SQLite store's file behind the runtime's back; rows changed."""
    path = url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        changed = conn.execute(statement, params).rowcount
    conn.close()
    return changed


def event_count(url: str) -> int:
    path = url.removeprefix("sqlite:///")
    conn = sqlite3.connect(path)
    try:
        (n,) = conn.execute("SELECT COUNT(*) FROM meerkat_events").fetchone()
    finally:
        conn.close()
    return int(n)
