"""The ``meerkat-runtime`` command line (operator guide: docs/guides/operator.md).

Every command takes ``--store URL`` (default: ``$MEERKAT_STORE``, else the
embedded SQLite file; the variable keeps a password out of ``ps``) and
``--json``. Read commands (``sessions``, ``inspect``, ``events``, ``export``,
``ledger``, ``interaction-status``, ``views``, ``verify``, ``health``,
``cluster``) open the store read-only: they never create or change anything,
work on a read-only file or a backup copy, and say "not a meerkat-runtime
store" where there is none.
Those that read the ledger or views bring them up to date in memory (seeded
from the stored read models) without writing them back. Writing commands
(``recover``, ``rebuild-projections``) refuse a database that holds no store;
``import`` creates one only in an empty database.

Output: tables on a terminal; with output to a pipe or file, tables take the
width they need, so ids are never truncated. Errors are one ``error:`` line
plus a ``hint:`` line on stderr, never a traceback (exit 1; usage errors exit
2). Warnings logged while a command runs are printed after its output as
``warning:`` lines, and left out when the command fails (set
``MEERKAT_DEBUG=1`` to see them and tracebacks).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, NoReturn, TypeVar
from urllib.parse import parse_qsl, quote, unquote

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer._click import exceptions as click  # the click that typer bundles
from typer.core import TyperGroup

from meerkat_runtime.cluster import Membership, live_holder, session_lease
from meerkat_runtime.errors import (
    InvalidInput,
    LeaseUnavailable,
    MeerkatRuntimeError,
    SessionNotFound,
    SessionOwnedElsewhere,
    UndecodableEvent,
    mask_url,
    split_userinfo,
)
from meerkat_runtime.events import wire
from meerkat_runtime.events.catalogue import (
    EVENT_TOPICS,
    decode_recorded,
)
from meerkat_runtime.events.ids import validate_session_id
from meerkat_runtime.events.input_state import InputLifecycleState
from meerkat_runtime.events.operations import OperationStatus
from meerkat_runtime.events.runtime_event import RuntimeEvent, RuntimeEventEnvelope
from meerkat_runtime.events.runtime_state import RuntimeState
from meerkat_runtime.events.session import SessionState, evolve
from meerkat_runtime.events.timefmt import format_timestamp, utc_now
from meerkat_runtime.health import HealthLimits, check_health
from meerkat_runtime.runtime import DEFAULT_STORE_URL, Runtime, Session, event_codec
from meerkat_runtime.store import EventStore, SessionJournal, open_store
from meerkat_runtime.subscriptions import CommitFeed
from meerkat_runtime.terminal_status import (
    InteractionQuery,
    RunQuery,
    RunTerminalStatus,
    read_input_states,
)

STORE_ENV = "MEERKAT_STORE"
"""Environment variable read for ``--store`` when the option is not given."""


class _Group(TyperGroup):
    """Usage errors as one ``error:`` line and a ``hint:`` line (exit 2), not a boxed panel."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            code = super().main(
                args=args,
                prog_name=prog_name,
                complete_var=complete_var,
                standalone_mode=False,
                windows_expand_args=windows_expand_args,
                **extra,
            )
        except click.NoArgsIsHelpError:
            code = 2  # the help is printed already
        except click.UsageError as exc:
            ctx = exc.ctx
            command = ctx.command_path if ctx is not None else "meerkat-runtime"
            usage = ctx.get_usage().strip() if ctx is not None else ""
            _print_error("error", exc.format_message(), f"{usage}; see `{command} --help`")
            code = 2
        except click.ClickException as exc:
            _print_error("error", exc.format_message(), "see `meerkat-runtime --help`")
            code = exc.exit_code
        except typer.Abort:
            _print_error("error", "aborted", "the command was interrupted")
            code = 1
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    name="meerkat-runtime",
    help="Operate an event-sourced meerkat runtime: run the demo, inspect, verify and recover stores.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=_Group,
)
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])

StoreOpt = typer.Option(
    DEFAULT_STORE_URL,
    "--store",
    envvar=STORE_ENV,
    show_envvar=True,
    help="Store URL (sqlite:///path.db, sqlite:///path.db?mode=ro, postgresql://..., memory://).",
)
JsonOpt = typer.Option(False, "--json", help="Machine-readable JSON output.")


class CliError(Exception):
    def __init__(self, message: str, hint: str = "", code: int = 1) -> None:
        super().__init__(message)
        self.hint = hint
        self.code = code


def _fail(message: str, hint: str = "", code: int = 1) -> NoReturn:
    raise CliError(message, hint, code)


def _hint_for(exc: Exception) -> str:
    """The error's own operator hint (see ``MeerkatRuntimeError.hint``), else how to see more."""
    hint = exc.hint if isinstance(exc, MeerkatRuntimeError) else ""
    return hint or "set MEERKAT_DEBUG=1 to see the log and the traceback"


def command(fn: F) -> F:
    """Run a command body with readable one-line errors (exit 1) instead of tracebacks.

    Log records of WARNING and above are held while the command runs and printed
    after its output (not before an error line, and not at all if it fails).
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _secrets[:] = _store_secrets(kwargs.get("store"))
        with _held_warnings(live=getattr(fn, "_live_warnings", False)) as held:
            try:
                result = fn(*args, **kwargs)
            except typer.Exit as exc:  # a deliberate exit code, not a crash
                if exc.exit_code == 0:
                    _print_warnings(held)
                raise
            except typer.Abort:
                raise
            except CliError as exc:
                _print_error("error", str(exc), exc.hint)
                raise typer.Exit(exc.code) from None
            except (MeerkatRuntimeError, TimeoutError, ValueError, TypeError) as exc:
                _print_error("error", str(exc), _hint_for(exc))
                raise typer.Exit(1) from None
            except Exception as exc:
                if os.environ.get("MEERKAT_DEBUG"):
                    raise
                _print_error(
                    "internal error",
                    f"{type(exc).__name__}: {exc}",
                    "set MEERKAT_DEBUG=1 to see the traceback",
                )
                raise typer.Exit(2) from None
            _print_warnings(held)
            return result

    return wrapper  # type: ignore[return-value]


_secrets: list[str] = []
"""The secrets of the store URL of the running command: scrubbed from everything printed."""


def _store_secrets(url: Any) -> list[str]:
    """The password of ``url`` as written, decoded and re-encoded, and secret parameters."""
    if not isinstance(url, str) or "://" not in url:
        return []
    found: list[str] = []
    parts = split_userinfo(url.split("://", 1)[1])
    if parts is not None and parts[1]:
        raw = parts[1]
        found += [raw, unquote(raw), quote(unquote(raw), safe="")]
    for key, value in parse_qsl(url.partition("?")[2], keep_blank_values=True):
        if any(w in key.lower() for w in ("password", "secret", "key")) and value:
            found += [value, quote(value, safe="")]
    return sorted({f for f in found if f}, key=len, reverse=True)


def _scrub(text: str) -> str:
    for secret in _secrets:
        text = text.replace(secret, "***")
    return text


class _Held(logging.Handler):
    def __init__(self, live: bool) -> None:
        super().__init__(logging.WARNING)
        self.live = live
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if self.live:  # a server: its warnings matter while it runs
            _print_warning(record)
        else:
            self.records.append(record)


def live_warnings(fn: F) -> F:
    """Mark a long-running command (a server): its warnings print as they happen."""
    fn._live_warnings = True  # type: ignore[attr-defined]
    return fn


@contextlib.contextmanager
def _held_warnings(live: bool = False) -> Iterator[_Held]:
    """Hold the log records of WARNING and above emitted while the command runs.

    A command marked :func:`live_warnings` (a server) prints them as they come. With
    ``MEERKAT_DEBUG`` set, Python's usual handling (printed at once) is kept.
    """
    held = _Held(live)
    root = logging.getLogger()
    if os.environ.get("MEERKAT_DEBUG"):
        yield held
        return
    root.addHandler(held)
    try:
        yield held
    finally:
        root.removeHandler(held)


def _print_warning(record: logging.LogRecord) -> None:
    text = " ".join(_scrub(mask_url(record.getMessage())).split())
    err_console.print(f"[yellow]warning:[/yellow] {escape(text)}", highlight=False)


def _print_warnings(held: _Held) -> None:
    seen: set[str] = set()
    for record in held.records:
        text = " ".join(_scrub(mask_url(record.getMessage())).split())
        if text not in seen:
            seen.add(text)
            err_console.print(f"[yellow]warning:[/yellow] {escape(text)}", highlight=False)


def _print_error(label: str, message: str, hint: str) -> None:
    """One ``error:`` line (store password scrubbed, whitespace folded, never wrapped) and a
    hint line. The store's own secrets are scrubbed rather than every URL masked, so a
    message quoting the URL format (``postgresql://user:pass@host:port/db``) reads as written."""
    text = " ".join(_scrub(message).split())
    err_console.print(f"[red]{label}:[/red] {escape(text)}", highlight=False, soft_wrap=True)
    if hint:
        hint = " ".join(_scrub(hint).split())
        err_console.print(f"[dim]hint:[/dim] {escape(hint)}", highlight=False, soft_wrap=True)


def _clip(text: str, width: int) -> str:
    """``text`` cut to ``width`` on a terminal; whole in piped output (it may hold ids)."""
    if console.is_terminal and len(text) > width:
        return text[: width - 1] + "…"
    return text


def _print_table(table: Table) -> None:
    """Print a table; to a pipe or file at the width it needs, so no id is ever truncated."""
    if console.is_terminal:
        console.print(table)
        return
    needed = Measurement.get(console, console.options.update(width=1_000_000), table).maximum
    # A console of its own: print(width=) cannot go beyond the console's width.
    Console(file=sys.stdout, width=max(console.width, needed), soft_wrap=True).print(table)


def _print_version(value: bool) -> None:
    if value:
        from meerkat_runtime import __version__

        sys.stdout.write(f"meerkat-runtime {__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_print_version,
        is_eager=True,
        help="Print the version and exit.",
    ),
) -> None:
    """Operate an event-sourced meerkat runtime."""


# ---------------------------------------------------------------- helpers


def _open_store(url: str) -> EventStore:
    """The store, read-only: looking creates and changes nothing."""
    return open_store(url, codec=event_codec(), read_only=True)


def _cli_node_id(command: str) -> str:
    """The node id of a writing command: its own, never ``$MEERKAT_NODE_ID``.

    A service's node id would let the command take that service's sessions at
    once (a restarted node takes its leases back): only ``--force`` may.
    """
    return f"cli-{command}-{socket.gethostname()}-{os.getpid()}"


def _open_runtime(url: str, wait: float | None = 60.0) -> Runtime:
    """A runtime on the store opened read-only, its read models (kept in memory, seeded
    from the stored ones) caught up with the log; ``wait=None`` does not wait."""
    rt = Runtime.open(url, read_only=True)
    try:
        if wait is not None:
            rt.projections.wait_caught_up(wait)
    except BaseException:
        rt.close()
        raise
    return rt


def _open_for_writing(url: str, command: str, force: bool = False) -> Runtime:
    """A runtime for a writing command: on an existing store only, never creating one.

    It is a node of its own (see :func:`_cli_node_id`) while it runs; ``force`` takes
    sessions and projections from live processes (``--force``).
    """
    return Runtime.open(
        url, create_schema="never", node_id=_cli_node_id(command), force_takeover=force
    )


def _fold(
    store: EventStore, session_id: str, upto: int | None = None
) -> tuple[SessionState, list[RuntimeEventEnvelope]]:
    if upto is not None:
        version = store.session_version(session_id)
        if 0 < version < upto:
            _fail(
                f"session {session_id!r} has {version} events; there is no sequence {upto}",
                f"pass --at between 1 and {version}",
            )
    state, envelopes = SessionJournal(store).replay(session_id, upto=upto)
    if not envelopes:
        _fail(f"unknown session {session_id!r}", "list sessions with `meerkat-runtime sessions`")
    return state, envelopes


def _print_json(value: Any) -> None:
    sys.stdout.write(
        orjson.dumps(
            value,
            default=_default,
            option=orjson.OPT_INDENT_2
            | orjson.OPT_PASSTHROUGH_DATACLASS
            | orjson.OPT_PASSTHROUGH_DATETIME,
        ).decode()
        + "\n"
    )


def _fields(obj: Any, *skip: str) -> dict[str, Any]:
    """A dataclass's fields as a dict (shallow; slotted dataclasses have no ``__dict__``)."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.name not in skip}


def _default(value: Any) -> Any:
    """Spec objects (nested dataclasses included) in their wire form; other dataclasses by field;
    times as the wire writes them."""
    if isinstance(value, datetime):
        return format_timestamp(value)
    try:
        return wire.to_json_value(value)
    except Exception:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return _fields(value)
        return str(value)


def _add_row(table: Table, *cells: str) -> None:
    """Add a row of data (not markup: a session id or content may contain ``[...]``)."""
    table.add_row(*(escape(c) for c in cells))


def _ts(value: Any) -> str:
    return format_timestamp(value) if value is not None else "-"


# ---------------------------------------------------------------- demo


@app.command()
@command
def demo(
    store: str | None = typer.Option(
        None, "--store", help="Store URL (default: a fresh SQLite file)."
    ),
    sessions: int = typer.Option(200, min=1, help="Sessions to drive."),
    inputs: int = typer.Option(
        3000, min=10, help="Inputs to send (all six kinds, with duplicates)."
    ),
    threads: int = typer.Option(8, min=1, help="Host threads sending inputs."),
    seed: int = typer.Option(7, help="Workload seed."),
    keep: bool = typer.Option(
        False, "--keep", help="Keep the fresh SQLite file (removed at the end by default)."
    ),
    json_out: bool = JsonOpt,
) -> None:
    """The main job: a realistic workload with a kill -9 and recovery midway, then verify.

    Without --store it runs on a fresh SQLite file in a temporary directory, removed
    when the demo ends unless --keep is given (its path is then printed).
    """
    if store is not None:
        _demo(store, sessions, inputs, threads, seed, json_out, None)
        return
    scratch = Path(tempfile.mkdtemp(prefix="meerkat-demo-"))
    try:
        _demo(f"sqlite:///{scratch / 'demo.db'}", sessions, inputs, threads, seed, json_out,
              scratch if keep else None)  # fmt: skip
    finally:
        if not keep:
            shutil.rmtree(scratch, ignore_errors=True)


def _demo(
    store: str,
    sessions: int,
    inputs: int,
    threads: int,
    seed: int,
    json_out: bool,
    kept: Path | None,
) -> None:
    from meerkat_runtime.demo import DemoConfig, run_demo

    try:
        config = DemoConfig(
            store=store, sessions=sessions, inputs=inputs, threads=threads, seed=seed
        )
    except ValueError as exc:
        _fail(str(exc), "omit --store to use a fresh SQLite file")
    if not json_out:
        console.print(f"[bold]meerkat-runtime demo[/bold] on {escape(mask_url(store))}")
        console.print(
            f"{sessions} sessions, {inputs} inputs of all six kinds, {threads} host threads; "
            "the process running the runtime is killed with SIGKILL partway, then reopened."
        )
    columns = (
        TextColumn("{task.description:<16}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(
        *columns, console=err_console if json_out else console, transient=json_out
    ) as bar:
        task = bar.add_task("starting", total=1)

        def progress(phase: str, done: int, total: int) -> None:
            bar.update(task, description=phase, completed=done, total=total)

        result = run_demo(config, progress)
    survived = result.acked_found_after_recovery == result.acked_before_kill
    ok = result.verify_ok and survived and result.stuck == 0
    if json_out:
        _print_json(
            {**result.__dict__, "store": mask_url(store), "kept": kept is not None, "ok": ok}
        )
    else:
        _demo_tables(result, survived)
        if kept is not None:
            console.print(f"store kept at {escape(str(kept / 'demo.db'))}")
    if not ok:
        raise typer.Exit(1)


def _demo_tables(r: Any, survived: bool) -> None:
    t = Table(title="inputs by state (ledger)")
    t.add_column("state")
    t.add_column("inputs", justify="right")
    for state, n in sorted(r.inputs_by_state.items()):
        t.add_row(state, str(n))
    _print_table(t)
    t = Table(title="sessions by state (views)")
    t.add_column("state")
    t.add_column("sessions", justify="right")
    for state, n in sorted(r.sessions_by_state.items()):
        t.add_row(state, str(n))
    _print_table(t)
    t = Table(title="summary")
    t.add_column("measure")
    t.add_column("value", justify="right")
    rate = r.events / r.drained_seconds if r.drained_seconds else 0.0
    rows = [
        ("inputs accepted / deduplicated / rejected", f"{r.accepted} / {r.deduplicated} / {r.rejected}"),
        ("runs completed / failed (retried)", f"{r.runs_completed} / {r.runs_failed}"),
        ("lifecycle operations", ", ".join(f"{k} {v}" for k, v in sorted(r.lifecycle.items())) or "-"),
        ("killed (SIGKILL) after", f"{r.killed_at_seconds:.2f} s"),
        ("acknowledged before the kill", str(r.acked_before_kill)),
        ("of those found after recovery", f"{r.acked_found_after_recovery} {'(all)' if survived else '(MISSING!)'}"),
        ("recovery (eager, all sessions)", f"{r.recovery_seconds:.2f} s, {r.recovered_sessions} sessions, "
         f"{r.recovery_requeued} re-queued, {r.recovery_abandoned} abandoned"),
        ("events in the log", str(r.events)),
        ("throughput (incl. process start and the kill)", f"{rate:,.0f} events/s over {r.drained_seconds:.1f} s"),
        ("inputs stuck in a queue after draining", str(r.stuck) if not r.stuck else f"[red]{r.stuck}[/red]"),
        ("queued peer progress updates", f"{r.waiting_progress_updates} (wake mode none: they join the next run)"),
        ("verify (fold vs ledger and views)", "[green]ok[/green]" if r.verify_ok else "[red]MISMATCH[/red]"),
    ]  # fmt: skip
    for k, v in rows:
        t.add_row(k, v)
    _print_table(t)
    for line in r.verify_mismatches:
        console.print(f"[red]mismatch:[/red] {escape(line)}")


@app.command("_demo-child", hidden=True)
@command
def _demo_child(
    store: str = typer.Option(...),
    sessions: int = typer.Option(...),
    inputs: int = typer.Option(...),
    seed: int = typer.Option(...),
    threads: int = typer.Option(...),
    limit: int = typer.Option(...),
) -> None:
    from meerkat_runtime.demo import DemoConfig, child_main

    child_main(
        DemoConfig(store=store, sessions=sessions, inputs=inputs, seed=seed, threads=threads), limit
    )


# ---------------------------------------------------------------- inspection


@app.command()
@command
def sessions(store: str = StoreOpt, json_out: bool = JsonOpt) -> None:
    """List sessions with their state (from the views read model).

    ``state`` is the session's phase, as ``inspect`` shows it: ``idle`` for a session
    whose events last recorded ``attached`` (idle with an executor bound; whether that
    runtime still runs is not in the log), which ``attached`` then says.
    """
    with _open_runtime(store) as rt:
        rows = [_session_row(r) for r in _all(rt.views.list)]
    if json_out:
        _print_json(rows)
        return
    t = Table(title=f"{len(rows)} sessions")
    for col in ("session", "state", "attached", "queued", "staged", "run", "events", "updated"):
        t.add_column(col)
    for r in rows:
        _add_row(t, r["session_id"], r["state"], "yes" if r["attached"] else "no", str(r["queued"]),
                 str(r["staged"]), str(r["current_run_id"] or "-"), str(r["last_sequence"]),
                 _ts(r["updated_at"]))  # fmt: skip
    _print_table(t)


def _session_row(view: Any) -> dict[str, Any]:
    row = _fields(view)
    row["attached"] = view.state == RuntimeState.ATTACHED.value
    if row["attached"]:
        row["state"] = RuntimeState.IDLE.value
    return row


def _last_recorded_attached(envelopes: list[RuntimeEventEnvelope]) -> bool:
    """Whether the session's last recorded state change was to ``attached``."""
    for env in reversed(envelopes):
        data = wire.to_json_value(env.event, as_type=RuntimeEvent)
        if data.get("category") == "runtime_state_change":
            return bool(data.get("data", {}).get("to") == RuntimeState.ATTACHED.value)
    return False


def _check_state(value: str | None, states: type[StrEnum], what: str) -> None:
    """Refuse a --state filter that no row can have (a typo would list nothing)."""
    names = [s.value for s in states]
    if value is not None and value not in names:
        _fail(f"unknown {what} state {value!r}", f"use one of: {', '.join(names)}")


def _all(lister: Callable[..., list[Any]], **filters: Any) -> Iterator[Any]:
    after = None
    while True:
        page = lister(limit=1000, after=after, **filters)
        yield from page
        if len(page) < 1000:
            return
        after = page[-1].position


@app.command()
@command
def inspect(
    session: str = typer.Argument(..., help="Session id."),
    recent: int = typer.Option(10, min=0, help="How many recent events to show."),
    at: int | None = typer.Option(
        None,
        "--at",
        min=1,
        help="Fold the log only up to this sequence (the session as it was then).",
    ),
    store: str = StoreOpt,
    json_out: bool = JsonOpt,
) -> None:
    """A session's state, queues, staged inputs, current run and recent events (read-only fold).

    ``silent_intents`` are the session's silent peer-request intents; ``waiting_for_wake``
    the queued inputs admitted without a wake that start no run of their own.

    ``state`` is the session's phase, as ``sessions`` shows it; ``attached`` says whether
    its last recorded state change bound an executor (observed as ``attached``).
    ``--at SEQ`` shows the session as it was after its event ``SEQ`` (no snapshot used).
    """
    with _open_store(store) as es:
        state, envelopes = _fold(es, session, upto=at)
    run = state.run
    silent = sorted(state.silent_intents)
    waiting = [str(i) for i in state.queue if i in state.unwoken]
    info = {
        "session_id": session,
        "at": envelopes[-1].sequence,
        "state": state.phase.value,
        "attached": _last_recorded_attached(envelopes),
        "version": state.version,
        "queue": [str(i) for i in state.queue],
        "steer_queue": [str(i) for i in state.steer_queue],
        "silent_intents": silent,
        "waiting_for_wake": waiting,
        "current_run": None if run is None else {"run_id": str(run.run_id), "inputs": [str(i) for i in run.input_ids]},
        "counts": _counts(state),
        "recent_events": [wire.to_json_value(e) | {"sequence": e.sequence} for e in envelopes[-recent:]] if recent else [],
    }  # fmt: skip
    if json_out:
        _print_json(info)
        return
    console.print(
        f"[bold]{escape(session)}[/bold]  state [bold]{info['state']}[/bold]  version {state.version}"
    )
    console.print(
        f"queue: {len(state.queue)}  steer queue: {len(state.steer_queue)}  inputs: {info['counts']}"
    )
    if state.silent_intents or state.unwoken:
        console.print(
            f"silent intents: {', '.join(silent) or '-'}  waiting for a wake: {len(waiting)}"
        )
    if run is not None:
        console.print(f"current run {run.run_id} with {len(run.input_ids)} staged inputs")
    t = Table(title="recent events")
    for col in ("seq", "time", "event", "detail"):
        t.add_column(col)
    for env in envelopes[-recent:] if recent else []:
        data = wire.to_json_value(env.event, as_type=RuntimeEvent)["data"]
        detail = ", ".join(
            f"{k}={v}"
            for k, v in data.items()
            if k not in ("code", "input", "policy", "primitive", "runtime_semantics")
        )
        _add_row(t, str(env.sequence), _ts(env.timestamp), env.event.event_code, _clip(detail, 90))  # fmt: skip
    _print_table(t)


def _counts(state: SessionState) -> dict[str, int]:
    out: dict[str, int] = {}
    for st in state.inputs.values():
        out[st.current_state.value] = out.get(st.current_state.value, 0) + 1
    return out


@app.command()
@command
def events(
    session: str | None = typer.Argument(
        None, help="Session id (with --follow it may be left out: every session)."
    ),
    after: int = typer.Option(
        0, min=0, help="Show events with sequence > AFTER (log position without SESSION)."
    ),
    limit: int = typer.Option(50, min=1, help="Page size."),
    event_type: list[str] = typer.Option(
        [], "--type", help="Only these event codes (e.g. input.accepted)."
    ),
    follow: bool = typer.Option(
        False,
        "--follow",
        "-f",
        help="Keep printing events as they commit (one line each) until Ctrl-C or SIGTERM.",
    ),
    store: str = StoreOpt,
    json_out: bool = typer.Option(False, "--json", help="Output JSON (with -f: one line each)."),
) -> None:
    """A session's events, paged, optionally filtered by event code; or, with ``--follow``,
    a session's or the whole store's events as they commit (like ``tail -f``)."""
    unknown = sorted(set(event_type) - set(EVENT_TOPICS))
    if unknown:
        _fail(
            f"unknown event type(s) {', '.join(map(repr, unknown))} for --type",
            f"use event codes such as {', '.join(sorted(EVENT_TOPICS)[:6])}, ... "
            f"(all: {', '.join(sorted(EVENT_TOPICS))})",
        )
    if follow:
        if session is not None:
            session = validate_session_id(session)
        with _open_store(store) as es:
            _follow_events(es, session, after, frozenset(event_type), json_out)
        return
    if session is None:
        _fail("give a SESSION", "or --follow to tail every session's events as they commit")
    with _open_store(store) as es:
        if es.session_version(session) == 0:
            _fail(f"unknown session {session!r}", "list sessions with `meerkat-runtime sessions`")
        shown: list[RuntimeEventEnvelope] = []
        journal = SessionJournal(es)
        for rec in journal.records(session, after=after):
            if len(shown) >= limit:
                break
            if not event_type or rec.topic in event_type:
                shown.append(decode_recorded(rec))
    if json_out:
        _print_json([wire.to_json_value(e) | {"sequence": e.sequence} for e in shown])
        return
    t = Table(title=escape(f"{session}: {len(shown)} events after {after}"))
    for col in ("seq", "time", "event", "data"):
        t.add_column(col)
    for env in shown:
        data = wire.to_json_value(env.event, as_type=RuntimeEvent)["data"]
        _add_row(
            t,
            str(env.sequence),
            _ts(env.timestamp),
            env.event.event_code,
            _clip(orjson.dumps(data).decode(), 100),
        )
    _print_table(t)
    if shown and len(shown) == limit:
        console.print(f"[dim]next page: --after {shown[-1].sequence}[/dim]")


def _follow_events(
    store: EventStore, session: str | None, after: int, codes: frozenset[str], json_out: bool
) -> None:
    """Print events after ``after`` as they commit, one line each, until Ctrl-C or SIGTERM."""
    feed = CommitFeed(store)
    sub = feed.subscribe(after, session_id=session)
    # SIGTERM ends it like Ctrl-C. Raised, not sub.close() in the handler: the handler runs
    # on this thread, which may hold the feed's (non-reentrant) lock at that moment.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        while True:
            try:
                envelope = next(sub)
            except StopIteration:
                return
            except UndecodableEvent as exc:  # the subscription has moved past it
                _print_error("warning", str(exc), exc.hint)
                continue
            if codes and envelope.event.event_code not in codes:
                continue
            sys.stdout.write(
                _follow_line(
                    envelope, sub.session_id or "", sub.position, session is None, json_out
                )
                + "\n"
            )
            sys.stdout.flush()
    except KeyboardInterrupt:
        pass  # Ctrl-C: the normal way to stop following
    finally:
        signal.signal(signal.SIGTERM, previous)
        sub.close()
        feed.close()


def _interrupt(*_: object) -> NoReturn:
    raise KeyboardInterrupt


def _follow_line(
    envelope: RuntimeEventEnvelope, session: str, position: int, whole: bool, json_out: bool
) -> str:
    if json_out:
        doc = wire.to_json_value(envelope) | {"sequence": envelope.sequence, "session_id": session}
        if whole:
            doc["position"] = position
        return orjson.dumps(doc).decode()
    data = orjson.dumps(wire.to_json_value(envelope.event, as_type=RuntimeEvent)["data"]).decode()
    cells = [str(position), session] if whole else []
    cells += [str(envelope.sequence), _ts(envelope.timestamp), envelope.event.event_code, data]
    return "  ".join(cells)


@app.command()
@command
def operations(
    session: str = typer.Argument(..., help="Session id."),
    status: list[str] = typer.Option(
        [], "--status", help="Only operations in this status (repeatable), e.g. running."
    ),
    store: str = StoreOpt,
    json_out: bool = JsonOpt,
) -> None:
    """A session's operations (read-only fold): status, progress, result or error.

    Running ones and the newest 256 terminal ones, in the order they started, with
    the completion feed's watermark (docs: concepts/operations.md).
    """
    for value in status:
        _check_state(value, OperationStatus, "operation")
    with _open_store(store) as es:
        state, _ = _fold(es, session)
    registry = state.operations
    shown = [r for r in registry.records() if not status or r.status.value in status]
    if json_out:
        _print_json(
            {
                "session_id": session,
                "watermark": registry.watermark,
                "dropped_through": registry.dropped_through,
                "operations": [r.to_json() for r in shown],
            }
        )
        return
    t = Table(
        title=escape(f"{session}: {len(shown)} operations (feed watermark {registry.watermark})")
    )
    for col in ("operation", "kind", "status", "progress", "started", "ended", "detail"):
        t.add_column(col)
    for r in shown:
        pct = "" if r.progress_percent is None else f" {r.progress_percent:g}%"
        progress = f"{r.progress_count}{pct}" if r.progress_count else "-"
        if r.status is OperationStatus.COMPLETED:
            detail = orjson.dumps(r.result).decode()
        else:
            detail = r.error or r.reason or r.progress_message or ""
        _add_row(
            t,
            r.operation_id,
            r.kind,
            r.status.value,
            progress,
            _ts(r.started_at),
            _ts(r.completed_at),
            _clip(detail, 60),
        )
    _print_table(t)


@app.command()
@command
def ledger(
    session: str | None = typer.Option(None, "--session", help="Only this session."),
    state: str | None = typer.Option(None, "--state", help="Only inputs in this lifecycle state."),
    input_id: str | None = typer.Option(
        None,
        "--input",
        help="Only this input id (one row per session holding it: ids are unique per session).",
    ),
    queued_longer_than: float | None = typer.Option(
        None, "--queued-longer-than", min=0, help="Only inputs queued for more than N seconds."
    ),
    limit: int = typer.Option(100, min=1),
    after: int | None = typer.Option(None, help="Page after this position."),
    store: str = StoreOpt,
    json_out: bool = JsonOpt,
) -> None:
    """The input ledger: every input with its lifecycle state."""
    _check_state(state, InputLifecycleState, "input lifecycle")
    since_before = None
    if queued_longer_than is not None:
        if state not in (None, "queued"):
            _fail(f"--queued-longer-than lists queued inputs; it cannot go with --state {state}")
        state = "queued"
        since_before = utc_now() - timedelta(seconds=queued_longer_than)
    with _open_runtime(store) as rt:
        rows = rt.ledger.list(
            session_id=session,
            state=state,
            limit=limit,
            after=after,
            state_since_before=since_before,
            input_id=input_id,
        )
    if json_out:
        _print_json([_fields(r, "input_state") for r in rows])
        return
    t = Table(title=f"ledger: {len(rows)} inputs")
    for col in ("position", "input", "session", "kind", "state", "since", "run", "transitions"):
        t.add_column(col)
    for r in rows:
        _add_row(t, str(r.position), str(r.input_id), r.session_id, r.kind or "-", r.state, _ts(r.state_since),
                    str(r.run_id or "-"), str(len(r.history)))  # fmt: skip
    _print_table(t)


@app.command("interaction-status")
@command
def interaction_status(
    session: str = typer.Argument(..., help="Session id."),
    input_id: str | None = typer.Option(None, "--input", help="The input (interaction) id."),
    key: str | None = typer.Option(
        None, "--key", help="The idempotency key the input was accepted with (exact match)."
    ),
    run_id: str | None = typer.Option(None, "--run", help="A run id: the run's status instead."),
    store: str = StoreOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Did an interaction (or a run) finish, and how? Read from the session's log, as
    ``session.interaction_status`` / ``run_status`` answer when the session is not live.

    Give exactly one of ``--input``, ``--key`` and ``--run``. Exit 1 when the session
    never accepted such an input (a run nobody names is ``no_durable_witness``).
    """
    if sum(x is not None for x in (input_id, key, run_id)) != 1:
        _fail("give exactly one of --input, --key and --run", "see --help", code=2)
    validate_session_id(session)
    with _open_store(store) as es:
        try:
            inputs = read_input_states(es, session)
        except SessionNotFound:
            _fail(f"unknown session {session!r}", "list sessions with `meerkat-runtime sessions`")
    if run_id is not None:
        run = RunQuery(run_id).durable(inputs)
        if json_out:
            _print_json({"session_id": session, **_fields(run)})
            return
        outcome = "" if run.outcome is None else f"  outcome [bold]{run.outcome}[/bold]"
        reason = "" if run.abandon_reason is None else f" ({run.abandon_reason})"
        console.print(f"run {run.run_id}: [bold]{run.status}[/bold]{outcome}{escape(reason)}")
        t = Table(title=f"{len(run.witnesses)} inputs name it as their last run")
        for col in ("input", "phase", "terminal", "attempts", "updated"):
            t.add_column(col)
        for w in run.witnesses:
            _add_row(t, str(w.input_id), w.phase.value, _outcome_text(w.terminal),
                     str(w.attempt_count), _ts(w.updated_at))  # fmt: skip
        _print_table(t)
        if run.status is RunTerminalStatus.NO_DURABLE_WITNESS:
            console.print(
                "[dim]no input names this run: unknown, or retried (its inputs were "
                "re-staged into a later run); not a failure[/dim]"
            )
        return
    report = InteractionQuery(input_id, key).durable(inputs)
    if report is None:
        what = (
            f"input {input_id}" if input_id is not None else f"input with idempotency key {key!r}"
        )
        _fail(
            f"session {session!r} has no {what}",
            "list its inputs with `meerkat-runtime ledger --session`",
        )
    if json_out:
        _print_json({"session_id": session, **_fields(report)})
        return
    t = Table(title=escape(f"{session}: input {report.input_id}"), show_header=False)
    for col in ("field", "value"):
        t.add_column(col)
    rows = (
        ("phase", report.phase.value),
        ("terminal", _outcome_text(report.terminal)),
        ("resolving run", str(report.resolving_run_id or "-")),
        ("attempts", str(report.attempt_count)),
        ("idempotency key", report.idempotency_key or "-"),
        ("updated at", _ts(report.updated_at)),
        ("source", report.source.value),
    )
    for name, value in rows:
        _add_row(t, name, value)
    _print_table(t)


def _outcome_text(outcome: Any) -> str:
    if outcome is None:
        return "-"
    data: dict[str, Any] = wire.to_json_value(outcome)
    tag = str(data.pop("outcome_type"))
    return tag + (f" {orjson.dumps(data).decode()}" if data else "")


@app.command()
@command
def views(
    state: str | None = typer.Option(None, "--state", help="Only sessions in this state."),
    limit: int = typer.Option(100, min=1),
    after: int | None = typer.Option(None, help="Page after this position."),
    store: str = StoreOpt,
    json_out: bool = JsonOpt,
) -> None:
    """The runtime state views: one row per session."""
    _check_state(state, RuntimeState, "session")
    with _open_runtime(store) as rt:
        rows = rt.views.list(state=state, limit=limit, after=after)
    if json_out:
        _print_json([_fields(r) for r in rows])
        return
    t = Table(title=f"views: {len(rows)} sessions")
    for col in ("position", "session", "state", "queued", "staged", "run", "counts", "seq"):
        t.add_column(col)
    for r in rows:
        _add_row(t, str(r.position), r.session_id, r.state, str(r.queued), str(r.staged),
                    str(r.current_run_id or "-"), orjson.dumps(r.counts).decode(), str(r.last_sequence))  # fmt: skip
    _print_table(t)


# ---------------------------------------------------------------- operations


@app.command()
@command
def verify(store: str = StoreOpt, json_out: bool = JsonOpt) -> None:
    """Refold every session and compare with the ledger and views; exit 1 on any mismatch."""
    with _open_runtime(store) as rt:
        report = rt.verify()
    if json_out:
        diffs = [_fields(d) for d in report.diffs]
        _print_json({"ok": report.ok, **report.__dict__, "diffs": diffs})
    else:
        verdict = (
            "[green]ok[/green]" if report.ok else f"[red]{len(report.mismatches)} mismatches[/red]"
        )
        console.print(
            f"verify: {verdict} ({report.sessions} sessions, {report.inputs} inputs, {report.events} events)"
        )
        compared = ", ".join(
            f"{name} at position {pos} (lag {report.lag.get(name, 0)})"
            for name, pos in report.positions.items()
        )
        if compared:
            console.print(f"  compared: {compared}", highlight=False)
        for line in report.mismatches:
            console.print(f"  [red]-[/red] {escape(line)}", highlight=False)
        for line in report.notes:
            console.print(f"  [dim]note: {escape(line)}[/dim]", highlight=False)
    if not report.ok:
        raise typer.Exit(1)


ForceOpt = typer.Option(
    False,
    "--force",
    help="Also take sessions (or projections) a live process owns: that process is fenced "
    "off, and a run it has in flight may run again.",
)


def _owned_error(what: str, owners: dict[str, str]) -> NoReturn:
    shown = ", ".join(f"{k} (node {v})" for k, v in list(owners.items())[:5])
    more = f" and {len(owners) - 5} more" if len(owners) > 5 else ""
    _fail(
        f"{len(owners)} {what} owned by a live runtime process, left alone: {shown}{more}",
        "stop that process first, or pass --force to take them over from it",
    )


@app.command()
@command
def recover(store: str = StoreOpt, force: bool = ForceOpt, json_out: bool = JsonOpt) -> None:
    """Apply the recovery rules to every session (no executor: nothing runs).

    Sessions owned by a live runtime process are that process's to recover: they are
    left alone (exit 1) unless --force.
    """
    with _open_for_writing(store, "recover", force) as rt:
        ids = [s for s in rt.sessions()]
        by_session, owned = rt.recover_owned()
    reports = list(by_session.values())
    if json_out:
        _print_json([{"session_id": sid, **_fields(r)} for sid, r in by_session.items()])
    else:
        console.print(
            f"recovered {len(reports)} of {len(ids)} sessions: "
            f"{sum(r.inputs_recovered for r in reports)} inputs recovered, "
            f"{sum(r.inputs_requeued for r in reports)} re-queued, "
            f"{sum(r.inputs_abandoned for r in reports)} abandoned"
        )
        for r in reports:
            for line in r.details:
                console.print(f"  {escape(line)}", highlight=False)
    if owned:
        _owned_error("session(s)", {e.session_id: e.owner for e in owned})


# ---------------------------------------------------------------- lifecycle operations

YesOpt = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation.")


def _session_operation(
    store: str, session: str, command: str, force: bool, op: Callable[[Session], Any]
) -> tuple[Any, str]:
    """Run ``op`` on one session as a node of its own; returns its result and the new state.

    A session another live process owns is left alone (exit 1) unless ``force``; an
    unknown session id is an error and writes nothing.
    """
    validate_session_id(session)
    with _open_for_writing(store, command, force) as rt:
        handle = rt.session(session)
        try:
            result = op(handle)
        except SessionOwnedElsewhere as exc:
            _owned_error("session(s)", {exc.session_id: exc.owner})
        return result, handle.state().value


def _print_report(session: str, verb: str, report: Any, state: str, json_out: bool) -> None:
    if json_out:
        _print_json({"session_id": session, "operation": verb, **_fields(report), "state": state})
        return
    counts = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in _fields(report).items())
    console.print(f"{verb} {escape(session)} (now {state}); {counts}", highlight=False)


@app.command()
@command
def retire(
    session: str = typer.Argument(..., help="Session id."),
    store: str = StoreOpt,
    force: bool = ForceOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Retire a session: it takes no new input.

    Queued work drains when a process with an executor serves the session; this
    command binds none, so it abandons what it cannot drain.

    A session owned by a live runtime process is that process's (exit 1) unless --force.
    """
    report, state = _session_operation(store, session, "retire", force, lambda s: s.retire())
    _print_report(session, "retired", report, state, json_out)


@app.command()
@command
def reset(
    session: str = typer.Argument(..., help="Session id."),
    store: str = StoreOpt,
    force: bool = ForceOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Reset a session to idle, abandoning every input not yet terminal.

    A session owned by a live runtime process is that process's (exit 1) unless --force.
    """
    report, state = _session_operation(store, session, "reset", force, lambda s: s.reset())
    _print_report(session, "reset", report, state, json_out)


@app.command()
@command
def stop(
    session: str = typer.Argument(..., help="Session id."),
    store: str = StoreOpt,
    force: bool = ForceOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Stop a session, abandoning every input not yet terminal.

    It accepts nothing until a host recovers it (``Session.recover()``).

    A session owned by a live runtime process is that process's (exit 1) unless --force.
    """
    report, state = _session_operation(store, session, "stop", force, lambda s: s.stop())
    _print_report(session, "stopped", report, state, json_out)


@app.command()
@command
def destroy(
    session: str = typer.Argument(..., help="Session id."),
    yes: bool = YesOpt,
    store: str = StoreOpt,
    force: bool = ForceOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Destroy a session for good (asks first unless --yes).

    Every input not yet terminal is abandoned and the id accepts nothing ever again.

    A session owned by a live runtime process is that process's (exit 1) unless --force.
    """
    if not yes:
        if not sys.stdin.isatty():
            _fail(
                f"destroying session {session!r} cannot be undone; refusing without --yes",
                "pass --yes to confirm (no terminal to ask on)",
            )
        typer.confirm(f"Destroy session {session!r} for good?", abort=True, err=True)
    report, state = _session_operation(store, session, "destroy", force, lambda s: s.destroy())
    _print_report(session, "destroyed", report, state, json_out)


@app.command("cancel-run")
@command
def cancel_run(
    session: str = typer.Argument(..., help="Session id."),
    run: str | None = typer.Option(
        None, "--run", help="Only this run id (default: the run in flight)."
    ),
    reason: str = typer.Option("cancelled", help="The reason given to the run's cancel token."),
    store: str = StoreOpt,
    force: bool = ForceOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Cancel a session's run in flight, abandoning its staged inputs.

    Exit 1 when the log holds no such run. A run left in flight by a process that died
    is cancelled instead of recovered, so its inputs are not run again. A run in a live
    runtime process is that process's (exit 1) unless --force, which fences the process
    off and cancels the run (what its executor still does is discarded).
    """
    if run is not None:
        try:
            run = str(uuid.UUID(run))
        except ValueError:
            _fail(
                f"--run {run!r} is not a run id (a UUID)",
                "see the run ids with `meerkat-runtime inspect SESSION`",
            )
    validate_session_id(session)
    with _open_store(store) as es:  # first look: loading a session may recover it
        logged, _ = _fold(es, session)
    in_flight = None if logged.run is None else str(logged.run.run_id)
    if in_flight is None or run not in (None, in_flight):
        what = f"run {run}" if run is not None else "run"
        _fail(
            f"session {session!r} has no {what} in flight (now {logged.phase.value})",
            "see its current run with `meerkat-runtime inspect SESSION`",
        )
    done, state = _session_operation(
        store, session, "cancel-run", force, lambda s: s.cancel_run(reason, in_flight)
    )
    if json_out:
        _print_json(
            {
                "session_id": session,
                "operation": "cancel-run",
                "cancelled": done,
                "run_id": in_flight,
                "state": state,
            }
        )
    elif done:
        console.print(
            f"cancelled run {in_flight} of {escape(session)} (now {state})", highlight=False
        )
    if not done:
        _fail(
            f"session {session!r} has no run {in_flight} in flight any more (now {state})",
            "it ended before the cancel reached it; see `meerkat-runtime inspect SESSION`",
        )


@app.command("rebuild-projections")
@command
def rebuild_projections(
    name: str | None = typer.Argument(None, help="ledger or views (default: both)."),
    store: str = StoreOpt,
    force: bool = ForceOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Drop read models and replay them from the log.

    Refused while a live runtime process runs them (it would go on writing the read
    models being rebuilt) unless --force, which takes them over from it.
    """
    t0 = time.perf_counter()
    node_id = _cli_node_id("rebuild")
    with _open_for_writing(store, "rebuild", force) as rt:
        # no catching up first: a failed projection is why we are here
        if rt.membership is not None:
            wanted = [name] if name is not None else [s.name for s in rt.projections.status()]
            owners = {
                x.name.removeprefix("projection:"): x.owner
                for x in rt.store.shared().list_leases("projection:")
                if x.name.removeprefix("projection:") in wanted
                and x.owner != node_id
                and live_holder(x)
            }
            if owners and not force:
                _owned_error("projection(s)", owners)
            for n in owners:
                rt.membership.acquire(f"projection:{n}")
        rt.projections.rebuild(name)
        rt.projections.wait_caught_up(600)
        status = rt.projections.status()
    elapsed = time.perf_counter() - t0
    if json_out:
        _print_json(
            {"rebuilt": name or "all", "seconds": elapsed, "status": [_fields(s) for s in status]}
        )
        return
    console.print(
        f"rebuilt {name or 'ledger and views'} in {elapsed:.2f}s, at position {status[0].position if status else 0}"
    )


@app.command()
@command
def export(
    session: str = typer.Argument(..., help="Session id."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="File to write, mode 0600 (default: stdout)."
    ),
    store: str = StoreOpt,
    json_out: bool = typer.Option(
        False,
        "--json",
        help="One JSON document: the events as an array (to stdout), or a summary with -o.",
    ),
) -> None:
    """A session's events as JSON lines in the wire format (what `import` reads).

    The events hold what the store holds (inputs in clear, even from an encrypted store),
    so ``-o FILE`` is written readable by its owner only (mode 0600, like the database),
    replacing any file there in one step: never a half-written file.
    """
    with _open_store(store) as es:
        records = list(SessionJournal(es).records(session))
        if not records:
            _fail(f"unknown session {session!r}", "list sessions with `meerkat-runtime sessions`")
        lines = [orjson.dumps(r.data) + b"\n" for r in records]
    if output is None:
        if json_out:
            _print_json([r.data for r in records])
        else:
            sys.stdout.buffer.write(b"".join(lines))
        return
    try:
        _write_private(output, b"".join(lines))
    except OSError as exc:
        _fail(
            f"cannot write {output}: {exc.strerror}",
            "-o takes a file path in an existing, writable directory",
        )
    if json_out:
        _print_json({"session_id": session, "events": len(lines), "output": str(output)})
    else:
        err_console.print(escape(f"exported {len(lines)} events of {session} to {output}"))


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600 whatever the umask: into a new file beside
    it (created 0600, synced), then renamed over ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)  # mkstemp makes it 0600 already; say so
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@app.command("import")
@command
def import_(
    file: Path = typer.Argument(..., help="JSON lines file from `export` (- for stdin)."),
    store: str = StoreOpt,
    force: bool = ForceOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Import exported sessions into a store: all lines are checked first; nothing is written on error.

    Each session is written under its lease: refused if a live runtime process owns
    one of them, unless --force.
    """
    raw = sys.stdin.buffer.read() if str(file) == "-" else _read(file)
    by_session: dict[str, list[tuple[int, RuntimeEventEnvelope]]] = {}
    for n, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            env = wire.decode(RuntimeEventEnvelope, line)
            validate_session_id(env.runtime_id, "runtime_id")
        except InvalidInput as exc:
            _fail(
                f"{file}:{n}: {exc}", "each line must be one event envelope as written by `export`"
            )
        by_session.setdefault(env.runtime_id, []).append((n, env))
    if not by_session:
        _fail(f"{file}: no events to import")
    for sid, numbered in by_session.items():
        state = SessionState(session_id=sid)
        for n, env in numbered:
            try:
                evolve(state, env)
            except Exception as exc:
                _fail(
                    f"{file}:{n}: session {sid!r} does not fold: {exc}",
                    "the file was edited or is incomplete",
                )
    with open_store(store, codec=event_codec()) as es:
        membership = None
        if es.supports_leases:
            membership = Membership(es, _cli_node_id("import"), 30.0, lambda _: None, force=force)
        try:
            owned: dict[str, str] = {}
            if membership is not None:
                for sid in by_session:
                    try:
                        membership.acquire(session_lease(sid))
                    except LeaseUnavailable as exc:
                        owned[sid] = exc.owner or "unknown"
            if owned:
                _owned_error("session(s)", owned)
            for sid, numbered in by_session.items():
                if es.session_version(sid) != 0:
                    _fail(
                        f"{file}:{numbered[0][0]}: session {sid!r} already exists in {mask_url(store)}",
                        "import into another store",
                    )
            for sid, numbered in by_session.items():
                fence = membership.fence(session_lease(sid)) if membership is not None else None
                SessionJournal(es).append(sid, 0, [e for _, e in numbered], fence=fence)
        finally:
            if membership is not None:
                membership.close()
    summary = {sid: len(numbered) for sid, numbered in by_session.items()}
    if json_out:
        _print_json({"imported": summary})
    else:
        console.print(
            escape(
                f"imported {sum(summary.values())} events into {len(summary)} session(s): {', '.join(summary)}"
            )
        )


def _read(file: Path) -> bytes:
    try:
        return file.read_bytes()
    except OSError as exc:
        _fail(f"cannot read {file}: {exc.strerror}")


HEALTH_CATCH_UP = 10.0
"""Seconds ``health`` lets the read models catch up before it reads them."""


@app.command()
@command
def health(
    max_queue_age: float = typer.Option(
        300.0,
        min=0,
        help="Unhealthy when an input that asked for a wake has been queued longer (s).",
    ),
    max_run_age: float = typer.Option(
        600.0, min=0, help="Unhealthy when a session has been running longer (s)."
    ),
    max_lag: int = typer.Option(1000, min=0, help="Unhealthy when a projection lags more events."),
    store: str = StoreOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Liveness signals: oldest queued input, stuck runs, projection lag and skipped events."""
    now = utc_now()
    with _open_runtime(store, wait=None) as rt:
        # a failed or lagging projection is one of the signals reported below
        with contextlib.suppress(TimeoutError, MeerkatRuntimeError):
            rt.projections.wait_caught_up(HEALTH_CATCH_UP)
        report = check_health(rt, HealthLimits(max_queue_age, max_run_age, max_lag), now)
    queued, oldest_age, status = report.queued_inputs, report.oldest_queued_age, report.projections
    problems = report.problems
    signals = {
        "healthy": not problems,
        "queued_inputs": queued,
        "oldest_queued_age_seconds": round(oldest_age, 3),
        "stuck_runs": report.stuck_runs,
        "projections": [{"name": s.name, "status": s.status, "position": s.position, "lag": s.lag, "error": s.error} for s in status],
        "skipped_events": len(report.skipped),
        "problems": problems,
    }  # fmt: skip
    if json_out:
        _print_json(signals)
    else:
        console.print(
            f"health: {'[green]healthy[/green]' if not problems else '[red]unhealthy[/red]'}"
        )
        console.print(f"  queued inputs: {queued}, oldest waiting {oldest_age:.1f}s")
        console.print(
            f"  sessions running longer than {max_run_age:.0f}s: {len(report.stuck_runs)}"
        )
        for s in status:
            console.print(f"  projection {s.name}: {s.status}, position {s.position}, lag {s.lag}")
        console.print(f"  skipped projection events: {len(report.skipped)}")
        for p in problems:
            console.print(f"  [red]-[/red] {escape(p)}", highlight=False)
    if problems:
        raise typer.Exit(1)


@app.command()
@command
@live_warnings
def project(
    store: str = StoreOpt,
    every: float = typer.Option(
        5.0, "--every", min=0.1, help="Print each projection's position and lag this often (s)."
    ),
    json_out: bool = typer.Option(
        False, "--json", help="Print each report as one JSON line instead of a text line."
    ),
) -> None:
    """Keep the read models (ledger, views) up to date, apart from the accepting processes.

    Runs until interrupted (Ctrl-C or SIGTERM), then stops its projections cleanly. Open
    the accepting runtimes with ``Runtime.open(..., projections=False)``: their accepts no
    longer pay for the read models, and this process follows the log instead. On a shared
    store (a SQLite file, PostgreSQL) each projection is owned by one process at a time,
    so several ``project`` processes give failover, not double work. Its node id is
    ``$MEERKAT_NODE_ID`` or host name plus process id, as for any runtime process.
    """
    if store.startswith("memory:"):
        _fail(
            "a memory:// store lives in one process: nothing else can project it",
            "use a SQLite file or PostgreSQL, or keep projections=True in the host",
        )
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with Runtime.open(store, create_schema="never", projections=True) as rt:
            try:
                while not stop.wait(every):
                    _report_projections(rt, json_out)
            except KeyboardInterrupt:
                pass
            _report_projections(rt, json_out)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _report_projections(rt: Runtime, json_out: bool) -> None:
    status = rt.projections.status()
    if json_out:
        rows = [{"name": s.name, "status": s.status, "position": s.position, "lag": s.lag, "error": s.error} for s in status]  # fmt: skip
        sys.stdout.write(orjson.dumps({"projections": rows}).decode() + "\n")
        sys.stdout.flush()
        return
    line = ", ".join(f"{s.name} {s.status} at {s.position} (lag {s.lag})" for s in status)
    console.print(escape(f"projections: {line or 'none owned here'}"), highlight=False)


# ---------------------------------------------------------------- console


@app.command("console")
@command
@live_warnings
def console_command(
    store: str = StoreOpt,
    host: str = typer.Option(
        "127.0.0.1",
        "--host",
        help="Address to listen on. The console has no authentication: keep the default "
        "(this machine only) unless the network around it is trusted.",
    ),
    port: int = typer.Option(8765, "--port", min=0, max=65535, help="Port (0: any free port)."),
    json_out: bool = typer.Option(
        False,
        "--json",
        help="When listening, print one JSON line (url, store, loopback) instead of the banner.",
    ),
) -> None:
    """Serve the read-only operator web console (no authentication; binds 127.0.0.1 by default)."""
    try:
        from meerkat_runtime.console import _app as console_app
    except ImportError as exc:
        _fail(str(exc).split(" (")[0], "pip install 'meerkat-runtime[console]'")
    try:
        sock = console_app.bind(host, port)
    except OSError as exc:
        _fail(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            "choose another --port (0 picks a free one) or --host",
        )
    with contextlib.closing(sock), _open_runtime(store) as rt:

        def ready(url: str) -> None:
            if json_out:
                loopback = console_app.is_loopback(host)
                sys.stdout.write(
                    orjson.dumps(
                        {"url": url, "store": mask_url(store), "loopback": loopback}
                    ).decode()
                    + "\n"
                )
                sys.stdout.flush()
                if not loopback:
                    err_console.print(
                        f"[red]warning:[/red] listening on {escape(host)}: reachable from the "
                        "network, without authentication.",
                        highlight=False,
                        soft_wrap=True,
                    )
                return
            console.print(
                f"[bold]meerkat-runtime console[/bold] at {escape(url)} "
                f"(store {escape(mask_url(store))})",
                highlight=False,
                soft_wrap=True,
            )
            console.print(
                "read-only: it never writes to the store. No authentication: anyone who can "
                "reach this address can read the store.",
                highlight=False,
                soft_wrap=True,
            )
            if console_app.is_loopback(host):
                console.print(
                    f"listening on {escape(host)}: this machine only (--host changes it). "
                    "Press Ctrl-C to stop.",
                    highlight=False,
                    soft_wrap=True,
                )
            else:
                err_console.print(
                    f"[red]warning:[/red] listening on {escape(host)}: reachable from the "
                    "network, without authentication. Press Ctrl-C to stop.",
                    highlight=False,
                    soft_wrap=True,
                )

        console_app.serve(rt, sock, on_ready=ready)


# ---------------------------------------------------------------- cluster

NODE_TTL_DEFAULT = 10.0
"""Lease TTL assumed for a node whose heartbeat does not record its own (Runtime's default)."""


@app.command()
@command
def cluster(store: str = StoreOpt, json_out: bool = JsonOpt) -> None:
    """Nodes sharing the store: heartbeats, session leases and projection owners.

    For a SQLite file or a PostgreSQL store shared by several runtime processes.
    """
    # The store alone, not a Runtime: looking must not make this process a node.
    with _open_store(store) as es:
        if not es.supports_leases:
            _fail(
                f"no cluster: {mask_url(store)} is not a shared store",
                "several runtime processes share a sqlite:/// file or a postgresql:// "
                "store; memory:// has one process",
            )
        now = es.shared().clock()  # the clock expiries are in (the database server's on PostgreSQL)
        node_rows = es.shared().list_nodes()
        leases = es.shared().list_leases()
    held: dict[str, int] = {}
    for lease in leases:
        if lease.live:
            held[lease.owner] = held.get(lease.owner, 0) + 1
    nodes: list[dict[str, Any]] = []
    for info in node_rows:
        age = max(0.0, (now - info.heartbeat_at).total_seconds())
        recorded = info.info.get("lease_ttl")
        ttl = float(recorded) if isinstance(recorded, (int, float)) else NODE_TTL_DEFAULT
        nodes.append({"node_id": info.node_id, "alive": age < ttl, "heartbeat_age_seconds": round(age, 3),
                      "lease_ttl": ttl, "leases_held": held.get(info.node_id, 0),
                      "started_at": info.started_at, "heartbeat_at": info.heartbeat_at,
                      "incarnation": info.incarnation, "info": info.info})  # fmt: skip

    def lease_row(key: str, prefix: str, lease: Any) -> dict[str, Any]:
        return {key: lease.name.removeprefix(prefix), "owner": lease.owner, "token": lease.token,
                "expires_at": lease.expires_at, "live": lease.live}  # fmt: skip

    sessions = [lease_row("session_id", "session:", x) for x in leases if x.name.startswith("session:")]  # fmt: skip
    projections = [lease_row("name", "projection:", x) for x in leases if x.name.startswith("projection:")]  # fmt: skip
    if json_out:
        _print_json({"now": now, "nodes": nodes, "sessions": sessions, "projections": projections})
        return
    t = Table(title=f"nodes: {sum(n['alive'] for n in nodes)} alive of {len(nodes)}")
    for col in ("node", "alive", "heartbeat age", "lease ttl", "leases held", "started"):
        t.add_column(col)
    for n in nodes:
        _add_row(t, n["node_id"], "yes" if n["alive"] else "no", f"{n['heartbeat_age_seconds']:.1f}s",
                 f"{n['lease_ttl']:g}s", str(n["leases_held"]), _ts(n["started_at"]))  # fmt: skip
    _print_table(t)
    live = sum(x["live"] for x in sessions)
    t = Table(title=f"session leases: {live} live of {len(sessions)}")
    for col in ("session", "owner", "token", "expires", "live"):
        t.add_column(col)
    for x in sessions:
        _add_row(t, x["session_id"], x["owner"], str(x["token"]), _ts(x["expires_at"]),
                 "yes" if x["live"] else "no (free)")  # fmt: skip
    _print_table(t)
    t = Table(title="projection owners")
    for col in ("projection", "owner", "token", "expires", "live"):
        t.add_column(col)
    for x in projections:
        _add_row(t, x["name"], x["owner"] if x["live"] else "-", str(x["token"]),
                 _ts(x["expires_at"]), "yes" if x["live"] else "no (free)")  # fmt: skip
    _print_table(t)


@app.command()
@command
def bench(
    names: list[str] | None = typer.Argument(None, help="Benchmarks to run (default: all)."),
    extra: list[str] = typer.Option(
        [], "--arg", help="Extra argument passed to each benchmark script."
    ),
    json_out: bool = typer.Option(
        False,
        "--json",
        help="One JSON document with every benchmark's results (their tables go to stderr).",
    ),
) -> None:
    """Run the benchmark scripts in benchmarks/ (each prints a table and writes JSON)."""
    root = Path(__file__).resolve().parent.parent / "benchmarks"
    if not root.is_dir():
        _fail(f"no benchmarks directory at {root}", "run from a source checkout of meerkat-runtime")
    available = {p.stem.removesuffix("_bench"): p for p in sorted(root.glob("*_bench.py"))}
    chosen = names or list(available)
    for name in chosen:
        if name not in available:
            _fail(f"unknown benchmark {name!r}", f"available: {', '.join(available)}")
    if json_out:
        _bench_json(chosen, available, extra)
        return
    for name in chosen:
        console.rule(f"benchmark: {name}")
        code = subprocess.call([sys.executable, str(available[name]), *extra])
        if code != 0:
            _fail(f"benchmark {name} failed with exit code {code}")


def _bench_json(chosen: list[str], available: dict[str, Path], extra: list[str]) -> None:
    """Run each benchmark writing its JSON to a scratch file, its table to stderr; print all."""
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="meerkat-bench-") as scratch:
        for name in chosen:
            out = Path(scratch) / f"{name}.json"
            code = subprocess.call(
                [sys.executable, str(available[name]), *extra, "--json", str(out)],
                stdout=sys.stderr,
            )
            if code != 0:
                _fail(f"benchmark {name} failed with exit code {code}")
            try:
                result = orjson.loads(out.read_bytes())
            except (OSError, orjson.JSONDecodeError) as exc:
                _fail(f"benchmark {name} wrote no readable JSON: {exc}")
            results.append({"name": name, "result": result})
    _print_json(results)


def main() -> None:
    """Console script entry point."""
    app()


if __name__ == "__main__":
    main()
