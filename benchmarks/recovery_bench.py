"""Recovery: refold rate of one session, with and without snapshots, and cold recovery.

    python benchmarks/recovery_bench.py [--backends sqlite] [--sizes 100,10000] [--full]
                                        [--sessions 10000] [--crashed 0.1] [--repeat 3]
                                        [--actor-path] [--snapshots] [--clean-close]

Logs are realistic: sequences of decisions of the pure decider
(``meerkat_runtime.events.session.execute``): per input, accept (accepted +
queued), start run (run.started + state_changed + staged) and completion
(applied + consumed + run.completed + state_changed), written to the store
directly in large appends, as another (dead) process would have left them.

Refold, per session size (``--sizes``; 100,000 only with ``--full``):

* with snapshots: the session also has the snapshot its actor would have
  written (every 100 events: at the last multiple of 100, tail < 100);
* without: an identical log with no snapshot (a full refold).

Measured: a fresh ``Runtime`` answering ``session.state()`` (the actor starts,
loads snapshot + tail, folds): events/s = session events / that time, and
the ratio to the baseline, ``store.read_session`` of the whole log (read +
decode). For the full refold the time is also split into read, envelope
decode (``envelope_from_record``) and ``evolve``.

Cold recovery: ``--sessions`` sessions of 2 completed inputs (19 events), and
with ``--full`` (or ``--crashed F``) a second store where a fraction of them
died mid-run (their recovery closes the run and re-queues the input: a write). Measured:
``rt.recover()`` on a freshly opened runtime (what ``recover="eager"``
runs) vs the baseline: ``store.read_session`` of every session. With
``--snapshots`` the same sessions are recovered once more from a store where each
also has the snapshot of its last state (section ``cold_recovery_snapshots``): what
a runtime leaves when its sessions' snapshots are current. While a session is live
this runtime snapshots it every ``max(snapshot_interval, live inputs)`` events, so
sessions of 19 events have none: the plain rows are what a crash leaves. A session
actor that stops (passivation, runtime close) snapshots its head; with
``--clean-close`` a runtime loads every session (``state()``), closes, and the
sessions are recovered from what that left (section ``cold_recovery_after_close``,
with the close's own time). With ``--actor-path`` (SQLite) the same recovery also runs on a copy of the store
through one session actor per session (the path before batch recovery).

Targets: refold >= 100,000 events/s with snapshots; cold recovery <= 1.5x
the raw read time. Prints tables; writes benchmarks/results/recovery_bench.json.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import _benchlib as bl
import orjson

from meerkat_runtime import Runtime
from meerkat_runtime.events.catalogue import envelope_from_record, envelope_to_record
from meerkat_runtime.events.ids import uuid7
from meerkat_runtime.events.session import (
    Accept,
    CompleteRun,
    DecisionContext,
    SessionState,
    StartRun,
    compact,
    evolve,
    execute,
    state_to_snapshot,
)
from meerkat_runtime.events.timefmt import utc_now
from meerkat_runtime.runtime import coerce_input, event_codec
from meerkat_runtime.store import EventStore, NewEvent, RecordedEvent, open_store

BACKENDS = ("sqlite", "sqlite-normal", "postgres", "memory")
SNAPSHOT_INTERVAL = 100  # the store default: what a live actor would have written
APPEND_CHUNK = 5000  # events per append while building logs

Records = list[tuple[str, dict[str, Any]]]


@dataclass
class Refold:
    backend: str
    events: int
    snapshot: bool
    snapshot_version: int
    snapshot_bytes: int
    state_seconds: float  # fresh runtime: session.state()
    read_seconds: float  # store.read_session, whole log (baseline)
    events_per_second: float
    vs_read: float
    state_cpu_seconds: float = 0.0  # process CPU of state() (all threads)
    read_cpu_seconds: float = 0.0
    vs_read_cpu: float = 0.0
    decode_seconds: float = 0.0  # envelope_from_record, whole log (no-snapshot rows)
    evolve_seconds: float = 0.0  # evolve, whole log (no-snapshot rows)


@dataclass
class ColdRecovery:
    backend: str
    sessions: int
    events: int
    crashed: int
    recover_seconds: float
    read_seconds: float
    vs_read: float
    recover_cpu_seconds: float
    read_cpu_seconds: float
    vs_read_cpu: float
    sessions_per_second: float
    reports: int
    events_written: int
    # --actor-path: the same recovery on a copy of the store, one session actor each
    actors_seconds: float | None = None
    actors_cpu_seconds: float | None = None
    # --clean-close: the runtime that had every session live, closed before the recovery
    close_seconds: float | None = None
    close_cpu_seconds: float | None = None
    snapshots: int | None = None  # sessions with a snapshot when the recovery starts


def ctx() -> DecisionContext:
    return DecisionContext(now=utc_now(), new_id=uuid7, attached=True)


def build_log(
    session_id: str, events: int, crash_at_end: bool = False
) -> tuple[list[Records], tuple[int, dict[str, Any]] | None]:
    """Decisions (one list of records per commit) of about ``events`` events, and the
    snapshot a live actor would have taken last (version, data)."""
    st = SessionState(session_id=session_id)
    decisions: list[Records] = []
    snapshot: tuple[int, dict[str, Any]] | None = None
    n = 0

    def step(command: Any) -> None:
        nonlocal snapshot
        before = st.version
        decision, _ = execute(st, command, ctx())
        decisions.append([envelope_to_record(env) for env in decision.events])
        crossed = st.version // SNAPSHOT_INTERVAL != before // SNAPSHOT_INTERVAL
        if crossed and events - st.version < 2 * SNAPSHOT_INTERVAL:
            snapshot = (st.version, {"state": state_to_snapshot(st), "writer": "builder"})

    while st.version < events:
        step(Accept(coerce_input(bl.prompt_input(f"k-{n}"))))
        run_id = uuid7()
        step(StartRun(run_id=run_id))
        if crash_at_end and st.version >= events:
            break  # the process died mid-run: staged input, run in flight
        step(CompleteRun(run_id=run_id, output={"text": f"answer {n}"}))
        n += 1
    return decisions, snapshot


def write_log(store: EventStore, session_id: str, decisions: list[Records]) -> Future[Any]:
    """Append a session's decisions in a few large appends; return the last append's future."""
    version = 0
    chunk: list[NewEvent] = []
    last: Future[Any] | None = None
    for records in decisions:
        chunk += [NewEvent(topic, data) for topic, data in records]
        if len(chunk) >= APPEND_CHUNK:
            store.append(session_id, version, chunk)
            version += len(chunk)
            chunk = []
    if chunk:
        last = store.append_async(session_id, version, chunk)
    if last is None:
        done: Future[Any] = Future()
        done.set_result(None)
        return done
    return last


def renamed(decisions: list[Records], old: str, new: str) -> list[Records]:
    """The same log for another session id (ids in the payloads included)."""
    raw = orjson.dumps(decisions).replace(f'"{old}"'.encode(), f'"{new}"'.encode())
    return [[(t, d) for t, d in records] for records in orjson.loads(raw)]


def fresh_state_time(
    url: str, session_id: str, backend: str, snapshots: bool = True
) -> tuple[float, float]:
    """(wall, process CPU) seconds of a fresh runtime's ``session.state()``.

    ``snapshots=False`` opens the runtime with snapshots off: it neither reads one
    nor saves one after loading, so every run is a full refold (a runtime with
    snapshots on saves one once it has folded the log, which the next run would
    load instead)."""
    options = bl.store_options(backend)
    if not snapshots:
        options["snapshot_interval"] = 0
    rt = Runtime.open(url, projections=False, **options)
    try:
        started, cpu = time.perf_counter(), time.process_time()
        rt.session(session_id).state()
        return time.perf_counter() - started, time.process_time() - cpu
    finally:
        rt.close()


def read_time(url: str, session_id: str, backend: str) -> tuple[float, float, list[RecordedEvent]]:
    """(wall, CPU) seconds of ``store.read_session`` of the whole log, and the records."""
    store = open_store(url, codec=event_codec(), **bl.store_options(backend))
    try:
        started, cpu = time.perf_counter(), time.process_time()
        records = store.read_session(session_id)
        return time.perf_counter() - started, time.process_time() - cpu, records
    finally:
        store.close()


def bench_refold(
    backend: str, url: str, sizes: list[int], repeat: int, pg_url: str | None
) -> list[Refold]:
    results: list[Refold] = []
    store = open_store(url, codec=event_codec(), **bl.store_options(backend))
    try:
        for size in sizes:
            started = time.perf_counter()
            decisions, snapshot = build_log(f"snap-{size}", size)
            write_log(store, f"snap-{size}", decisions).result()
            assert snapshot is not None
            store.save_snapshot(f"snap-{size}", snapshot[0], snapshot[1])
            renamed_log = renamed(decisions, f"snap-{size}", f"full-{size}")
            write_log(store, f"full-{size}", renamed_log).result()
            bl.log(
                f"  built 2 sessions of {size:,} events in {time.perf_counter() - started:.1f} s"
            )
    finally:
        store.close()
    # Warm-up (not recorded): the first load of a process compiles the codec's
    # decoders and imports lazily; no later fresh runtime pays that again.
    for sid, snap in ((f"snap-{sizes[0]}", True), (f"full-{sizes[0]}", False)):
        read_time(url, sid, backend)
        fresh_state_time(url, sid, backend, snap)
    for size in sizes:
        for snap in (True, False):
            sid = f"{'snap' if snap else 'full'}-{size}"
            runs = repeat if size <= 10_000 else 1
            state_times, read_times, state_cpus, read_cpus = [], [], [], []
            records: list[RecordedEvent] = []
            for _ in range(runs):  # interleaved with the baseline
                t, cpu, records = read_time(url, sid, backend)
                read_times.append(t)
                read_cpus.append(cpu)
                t, cpu = fresh_state_time(url, sid, backend, snap)
                state_times.append(t)
                state_cpus.append(cpu)
            t_state, t_read = bl.median(state_times), bl.median(read_times)
            c_state, c_read = bl.median(state_cpus), bl.median(read_cpus)
            r = Refold(
                backend=backend,
                events=len(records),
                snapshot=snap,
                snapshot_version=0,
                snapshot_bytes=0,
                state_seconds=round(t_state, 5),
                read_seconds=round(t_read, 5),
                events_per_second=round(len(records) / t_state, 1),
                vs_read=round(t_state / t_read, 2),
                state_cpu_seconds=round(c_state, 5),
                read_cpu_seconds=round(c_read, 5),
                vs_read_cpu=round(c_state / c_read, 2) if c_read > 0 else 0.0,
            )
            if snap:
                s = open_store(url, codec=event_codec(), **bl.store_options(backend))
                try:
                    loaded = s.load_snapshot(sid)
                    assert loaded is not None
                    r.snapshot_version = loaded.version
                    r.snapshot_bytes = len(orjson.dumps(loaded.data))
                finally:
                    s.close()
            else:
                started = time.perf_counter()
                envelopes = [envelope_from_record(rec.data, rec.version) for rec in records]
                r.decode_seconds = round(time.perf_counter() - started, 5)
                st = SessionState(session_id=sid)
                started = time.perf_counter()
                for env in envelopes:
                    evolve(st, env)
                r.evolve_seconds = round(time.perf_counter() - started, 5)
            bl.log(
                f"  {backend} {r.events:>7,} events, snapshot={snap!s:<5}: state() in "
                f"{r.state_seconds * 1000:.1f} ms = {r.events_per_second:,.0f} ev/s "
                f"(read_session {r.read_seconds * 1000:.1f} ms)"
            )
            results.append(r)
    return results


def head_snapshot(session_id: str, decisions: list[Records]) -> tuple[int, dict[str, Any]]:
    """The snapshot of the state ``decisions`` leave (compacted, as the journal saves it)."""
    st = SessionState(session_id=session_id)
    for records in decisions:
        for _topic, data in records:
            evolve(st, envelope_from_record(data, st.version + 1))
    compact(st)
    return st.version, {"state": state_to_snapshot(st), "writer": "builder"}


def build_many(
    url: str, backend: str, sessions: int, crashed: float, snapshots: bool = False
) -> int:
    """``sessions`` sessions of 2 completed inputs; ``crashed`` of them die mid-run after that.

    ``snapshots``: each session also gets the snapshot of its last state."""
    template, _ = build_log("tmpl-session", 19)
    crash_template, _ = build_log("tmpl-session", 22, crash_at_end=True)
    snaps = {
        id(t): head_snapshot("tmpl-session", t) for t in (template, crash_template) if snapshots
    }
    every = round(1 / crashed) if crashed > 0 else 0
    store = open_store(url, codec=event_codec(), **bl.store_options(backend))
    total = 0
    try:
        pending = []
        for n in range(sessions):
            sid = f"sess-{n:06d}"
            decisions = crash_template if every and n % every == 0 else template
            pending.append(write_log(store, sid, renamed(decisions, "tmpl-session", sid)))
            total += sum(len(r) for r in decisions)
            if snapshots:
                version, data = snaps[id(decisions)]
                raw = orjson.dumps(data).replace(b'"tmpl-session"', f'"{sid}"'.encode())
                store.save_snapshot(sid, version, orjson.loads(raw))
        for fut in pending:
            fut.result()
    finally:
        store.close()
    return total


def sqlite_copy(url: str) -> str:
    """A consistent copy of a SQLite store file (the backup API, WAL included)."""
    path = url.removeprefix("sqlite:///")
    copy = f"{path}.actors"
    src, dst = sqlite3.connect(path), sqlite3.connect(copy)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()
    return f"sqlite:///{copy}"


def recover_with_actors(url: str, backend: str) -> tuple[float, float]:
    """``rt.recover()`` as before batch recovery: every session through its actor."""
    rt = Runtime.open(url, projections=False, **bl.store_options(backend))
    try:
        started, cpu = time.perf_counter(), time.process_time()
        rt._recover_with_actors(rt.sessions())
        return time.perf_counter() - started, time.process_time() - cpu
    finally:
        rt.close()


def close_live(url: str, backend: str, sessions: int) -> tuple[float, float]:
    """A runtime with every session live (loaded by ``state()``), closed cleanly: the
    wall and CPU time of ``close()``, which stops (and since the snapshot at stop,
    snapshots) every session actor."""
    rt = Runtime.open(
        url, projections=False, max_live_sessions=sessions + 1, **bl.store_options(backend)
    )
    try:
        for sid in rt.store.session_ids():
            rt.session(sid).state()
    finally:
        started, cpu = time.perf_counter(), time.process_time()
        rt.close()
    return time.perf_counter() - started, time.process_time() - cpu


def count_snapshots(url: str, backend: str) -> int:
    store = open_store(url, codec=event_codec(), **bl.store_options(backend))
    try:
        return len(store.load_snapshots(store.session_ids()))
    finally:
        store.close()


def bench_cold(
    backend: str,
    pg_url: str | None,
    sessions: int,
    crashed: float,
    repeat: int,
    actor_path: bool = False,
    snapshots: bool = False,
    clean_close: bool = False,
) -> list[ColdRecovery]:
    out = []
    for fraction in (0.0, crashed) if crashed > 0 and not clean_close else (0.0,):
        with bl.database(backend, pg_url) as url:
            started = time.perf_counter()
            events = build_many(url, backend, sessions, fraction, snapshots)
            bl.log(
                f"  built {sessions:,} sessions ({events:,} events, {fraction:.0%} crashed "
                f"mid-run{', each with a snapshot of its head' if snapshots else ''}) "
                f"in {time.perf_counter() - started:.1f} s"
            )
            closed: tuple[float, float] | None = None
            if clean_close:
                closed = close_live(url, backend, sessions)
                bl.log(f"  closed a runtime with {sessions:,} live sessions in {closed[0]:.2f} s")
            # Baseline first, then recovery: recovery writes (crashed runs), so it runs once.
            read_times, read_cpus = [], []
            for _ in range(repeat):
                store = open_store(url, codec=event_codec(), **bl.store_options(backend))
                try:
                    started, cpu = time.perf_counter(), time.process_time()
                    for sid in store.session_ids():
                        store.read_session(sid)
                    read_times.append(time.perf_counter() - started)
                    read_cpus.append(time.process_time() - cpu)
                finally:
                    store.close()
            actors: tuple[float, float] | None = None
            if actor_path and backend.startswith("sqlite"):
                actors = recover_with_actors(sqlite_copy(url), backend)
            snapshot_count = count_snapshots(url, backend)
            rt = Runtime.open(url, projections=False, **bl.store_options(backend))
            try:
                before = rt.store.max_position()
                started, cpu = time.perf_counter(), time.process_time()
                reports = rt.recover()
                t_recover = time.perf_counter() - started
                c_recover = time.process_time() - cpu
                written = rt.store.max_position() - before
            finally:
                rt.close()
            t_read, c_read = bl.median(read_times), bl.median(read_cpus)
            r = ColdRecovery(
                backend=backend,
                sessions=sessions,
                events=events,
                crashed=sum(
                    1 for n in range(sessions) if fraction and n % round(1 / fraction) == 0
                ),
                recover_seconds=round(t_recover, 3),
                read_seconds=round(t_read, 3),
                vs_read=round(t_recover / t_read, 2),
                recover_cpu_seconds=round(c_recover, 3),
                read_cpu_seconds=round(c_read, 3),
                vs_read_cpu=round(c_recover / c_read, 2) if c_read > 0 else 0.0,
                sessions_per_second=round(sessions / t_recover, 1),
                reports=len(reports),
                events_written=written,
                actors_seconds=None if actors is None else round(actors[0], 3),
                actors_cpu_seconds=None if actors is None else round(actors[1], 3),
                close_seconds=None if closed is None else round(closed[0], 3),
                close_cpu_seconds=None if closed is None else round(closed[1], 3),
                snapshots=snapshot_count,
            )
            bl.log(
                f"  {backend} cold recovery of {sessions:,} sessions ({r.crashed} crashed"
                f"{', snapshots' if snapshots else ''}): "
                f"{t_recover:.2f} s vs read {t_read:.2f} s = {r.vs_read:.2f}x"
            )
            out.append(r)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--backends", default="sqlite")
    parser.add_argument("--sizes", default="100,10000", help="events per refolded session")
    parser.add_argument("--full", action="store_true", help="also a 100,000-event session")
    parser.add_argument("--sessions", type=int, default=10_000, help="sessions of cold recovery")
    parser.add_argument(
        "--crashed",
        type=float,
        default=None,
        help="also recover a store where this fraction died mid-run (default: 0.1 with --full)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (median)")
    parser.add_argument(
        "--actor-path",
        action="store_true",
        help="also time cold recovery through one actor per session (SQLite: on a copy)",
    )
    parser.add_argument(
        "--snapshots",
        action="store_true",
        help="also recover the sessions from a store where each has a snapshot of its head",
    )
    parser.add_argument(
        "--clean-close",
        action="store_true",
        help="also recover the sessions after a runtime that had them all live closed cleanly",
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    notes: list[str] = []
    if args.full:
        sizes.append(100_000)
    else:
        notes.append("100,000-event refold skipped (run with --full)")
    if args.crashed is None:
        args.crashed = 0.1 if args.full else 0.0
        if not args.full:
            notes.append("cold recovery with 10% crashed mid-run skipped (--full or --crashed 0.1)")
    backends = bl.split_backends(args.backends, BACKENDS)
    pg_url = bl.postgres_url()
    if "postgres" in backends and not pg_url:
        backends.remove("postgres")
        notes.append(bl.POSTGRES_HINT)

    started = time.perf_counter()
    machine = bl.machine_info(pg_url)
    refolds: list[Refold] = []
    colds: list[ColdRecovery] = []
    snapped: list[ColdRecovery] = []
    after_close: list[ColdRecovery] = []
    for backend in backends:
        bl.log(f"{backend}:")
        # Cold recovery first: it is what a process does at its start, and after the
        # refolds of long logs the same recovery cost 20% more CPU in one pair of runs
        # (3.43 s against 4.12 s for 10,000 sessions; the read baseline did not move).
        colds += bench_cold(
            backend, pg_url, args.sessions, args.crashed, args.repeat, args.actor_path
        )
        if args.snapshots:
            snapped += bench_cold(
                backend, pg_url, args.sessions, args.crashed, args.repeat, snapshots=True
            )
        if args.clean_close:
            after_close += bench_cold(
                backend, pg_url, args.sessions, 0.0, args.repeat, clean_close=True
            )
        with bl.database(backend, pg_url) as url:
            refolds += bench_refold(backend, url, sizes, args.repeat, pg_url)

    print()
    print(
        bl.table(
            [
                "backend",
                "events",
                "snapshot",
                "state() ms",
                "events/s",
                "events/CPU-s",
                "read_session ms",
                "vs read",
                "vs read (CPU)",
                "decode ms",
                "evolve ms",
                "snapshot KiB",
            ],
            [
                [
                    r.backend,
                    r.events,
                    f"@{r.snapshot_version:,}" if r.snapshot else "none",
                    r.state_seconds * 1000,
                    r.events_per_second,
                    round(r.events / r.state_cpu_seconds) if r.state_cpu_seconds else "-",
                    r.read_seconds * 1000,
                    f"{r.vs_read:.2f}x",
                    f"{r.vs_read_cpu:.2f}x",
                    r.decode_seconds * 1000 if not r.snapshot else "-",
                    r.evolve_seconds * 1000 if not r.snapshot else "-",
                    round(r.snapshot_bytes / 1024, 1) if r.snapshot else "-",
                ]
                for r in refolds
            ],
        )
    )
    snapped_ids = {id(c) for c in snapped}
    closed_ids = {id(c) for c in after_close}

    def label(c: ColdRecovery) -> str:
        if id(c) in snapped_ids:
            return f"{c.backend}+snapshots"
        return f"{c.backend}+clean close" if id(c) in closed_ids else c.backend

    print()
    print(
        bl.table(
            [
                "backend",
                "sessions",
                "events",
                "crashed",
                "recover s",
                "sessions/s",
                "read all s",
                "vs read",
                "vs read (CPU)",
                "events written",
                "snapshots",
                "close s (CPU)",
                "actors s",
                "actors vs read (CPU)",
            ],
            [
                [
                    label(c),
                    c.sessions,
                    c.events,
                    c.crashed,
                    c.recover_seconds,
                    c.sessions_per_second,
                    c.read_seconds,
                    f"{c.vs_read:.2f}x",
                    f"{c.vs_read_cpu:.2f}x",
                    c.events_written,
                    c.snapshots,
                    "-"
                    if c.close_seconds is None
                    else f"{c.close_seconds} ({c.close_cpu_seconds})",
                    "-" if c.actors_seconds is None else c.actors_seconds,
                    "-"
                    if c.actors_cpu_seconds is None or not c.read_cpu_seconds
                    else f"{c.actors_cpu_seconds / c.read_cpu_seconds:.2f}x",
                ]
                for c in colds + snapped + after_close
            ],
        )
    )
    targets: list[bl.Target] = []
    for r in refolds:
        if r.snapshot:
            targets.append(
                bl.Target(
                    f"{r.backend} refold {r.events:,} events with snapshot",
                    ">= 100,000 ev/s",
                    f"{r.events_per_second:,.0f} ev/s ({r.events_per_second / 1e5:.2f}x target; "
                    f"{r.events / r.state_cpu_seconds:,.0f} per CPU-second)",
                    r.events_per_second >= 100_000,
                )
            )
    for c in colds + snapped + after_close:
        how = ""
        if id(c) in snapped_ids:
            how = " (each with a snapshot of its head)"
        elif id(c) in closed_ids:
            how = " (after a clean close of a runtime with them live)"
        targets.append(
            bl.Target(
                f"{c.backend} cold recovery {c.sessions:,} sessions, {c.crashed} crashed{how}",
                "<= 1.5x read",
                f"{c.vs_read:.2f}x ({c.recover_seconds:.2f} s vs {c.read_seconds:.2f} s)",
                c.vs_read <= 1.5,
            )
        )
    print()
    print(bl.targets_table(targets))
    for note in notes:
        print(f"note: {note}")
    print(
        f"(total {time.perf_counter() - started:.0f} s; state() = a fresh Runtime's first "
        f"query, the actor loading snapshot + tail; read = store.read_session, read + decode; "
        f"recover = rt.recover() on a fresh runtime (passivated sessions in batches), "
        f"max_live_sessions 1,000, projections off; actors = the same, one actor per session "
        f"(--actor-path, SQLite); "
        f"'(CPU)', 'events/CPU-s' = the same with process CPU time instead of wall time, "
        f"less sensitive to a busy machine)"
    )
    out = bl.write_results(
        "recovery_bench",
        {
            "machine": machine,
            "args": {k: v for k, v in vars(args).items() if k != "json"},
            "notes": notes,
            "refold": [asdict(r) for r in refolds],
            "cold_recovery": [asdict(c) for c in colds],
            "cold_recovery_snapshots": [asdict(c) for c in snapped],
            "cold_recovery_after_close": [asdict(c) for c in after_close],
            "targets": [asdict(t) for t in targets],
        },
        args.json,
    )
    print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
