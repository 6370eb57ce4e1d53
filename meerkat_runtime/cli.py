"""The ``meerkat-runtime`` command line (API.md "Command line")."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from meerkat_runtime.actors import EchoExecutor
from meerkat_runtime.runtime import Runtime

app = typer.Typer(
    name="meerkat-runtime",
    help="Operate an event-sourced meerkat runtime: run the demo, inspect and recover stores.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()


@app.callback()
def _root() -> None:
    """Operate an event-sourced meerkat runtime."""


@app.command()
def demo(
    store: str = typer.Option(None, help="Store URL (default: a fresh SQLite file)."),
    sessions: int = typer.Option(5, min=1, help="How many sessions to drive."),
) -> None:
    """Drive a few sessions through accept, run, retire and reset, then print their folded state."""
    url = store or f"sqlite:///{Path(tempfile.mkdtemp(prefix='meerkat-demo-')) / 'demo.db'}"
    console.print(f"store: [bold]{url}[/bold]")
    started = time.perf_counter()
    with Runtime.open(url, executor=EchoExecutor()) as rt:
        handles = []
        for n in range(sessions):
            s = rt.session(f"demo-{n}")
            for text in ("hello", "how are you?"):
                out = s.accept({"input_type": "prompt", "content": f"{text} ({n})"})
                handles.append(out.completion)
            s.accept(
                {"input_type": "prompt", "content": "again", "header": {"idempotency_key": f"k{n}"}}
            )
            s.accept(
                {"input_type": "prompt", "content": "again", "header": {"idempotency_key": f"k{n}"}}
            )
        for h in handles:
            if h is not None:
                h.wait(10)
        rt.session("demo-0").retire()
        table = Table(title="sessions")
        for col in ("session", "state", "inputs", "consumed", "events"):
            table.add_column(col)
        for sid in rt.sessions():
            s = rt.session(sid)
            events = list(s.events())
            consumed = sum(1 for e in events if e.event.event_code == "input.consumed")
            accepted = sum(1 for e in events if e.event.event_code == "input.accepted")
            table.add_row(sid, str(s.state()), str(accepted), str(consumed), str(len(events)))
        console.print(table)
    console.print(f"done in {time.perf_counter() - started:.2f}s")


def main() -> None:
    """Console script entry point."""
    app()
