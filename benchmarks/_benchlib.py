"""Helpers shared by the ``*_bench.py`` scripts (not a benchmark itself).

Each script imports this module from its own directory, so it works as
``python benchmarks/x_bench.py`` and through ``meerkat-runtime bench``.
Everything here is measurement plumbing: fresh databases, load threads,
percentiles, process statistics, machine facts, realistic payloads, tables.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from meerkat_runtime.errors import mask_url
from meerkat_runtime.store._eventsourcing import recorder_of

RESULTS_DIR = Path(__file__).parent / "results"

#: A prompt of realistic size for a chat host (about 300 bytes of text).
PROMPT = (
    "Summarise the attached incident report for the on-call channel, list the "
    "customer-visible impact, the suspected root cause and the next three actions, "
    "and flag anything that needs a decision from the service owner before 17:00 UTC. "
    "Keep it under 200 words."
)


def prompt_input(key: str | None = None, content: str = PROMPT) -> dict[str, Any]:
    """A wire-dict prompt input as a host sends it (the runtime fills id and timestamp)."""
    data: dict[str, Any] = {"input_type": "prompt", "content": content}
    if key is not None:
        data["header"] = {"idempotency_key": key}
    return data


# ---------------------------------------------------------------- databases


def postgres_url() -> str | None:
    return os.environ.get("MEERKAT_BENCH_POSTGRES_URL") or os.environ.get(
        "MEERKAT_TEST_POSTGRES_URL"
    )


POSTGRES_HINT = (
    "postgres skipped: set MEERKAT_BENCH_POSTGRES_URL or MEERKAT_TEST_POSTGRES_URL "
    '(eval "$(bash scripts/test-postgres.sh)")'
)


def bench_dir() -> str | None:
    """Where SQLite files go: MEERKAT_BENCH_DIR, else the system temp dir (must be a real disk)."""
    return os.environ.get("MEERKAT_BENCH_DIR") or None


def store_options(backend: str) -> dict[str, Any]:
    """Store options implied by a backend name (``sqlite-normal`` = synchronous NORMAL)."""
    return {"sqlite_synchronous": "normal"} if backend == "sqlite-normal" else {}


@contextmanager
def database(backend: str, pg_url: str | None = None) -> Iterator[str]:
    """Yield the URL of a fresh, empty store for ``backend``; delete it afterwards.

    ``memory``, ``sqlite``/``sqlite-normal`` (a file in a temporary directory)
    or ``postgres`` (a fresh schema ``bench_<random>`` in ``pg_url``).
    """
    if backend == "memory":
        yield f"memory://bench-{uuid.uuid4().hex}"
    elif backend.startswith("sqlite"):
        with tempfile.TemporaryDirectory(prefix="meerkat-bench-", dir=bench_dir()) as tmp:
            yield f"sqlite:///{tmp}/bench.db"
    elif backend == "postgres":
        if pg_url is None:
            raise ValueError("postgres needs a URL")
        schema = f"bench_{uuid.uuid4().hex[:16]}"
        sep = "&" if "?" in pg_url else "?"
        try:
            yield f"{pg_url}{sep}schema={schema}"
        finally:
            with psycopg.connect(pg_url, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
                )
    else:
        raise ValueError(f"unknown backend {backend!r}")


def raw_recorder(store: Any) -> Any:
    """eventsourcing's own recorder class on a store's database and events table.

    The store uses subclasses (PostgreSQL: atomic on any exception, fenced
    appends; SQLite: a multi-row insert); the baseline is the library's class on
    the same datastore and table.
    """
    if store.url.startswith("postgresql"):
        from eventsourcing.postgres import PostgresApplicationRecorder

        return PostgresApplicationRecorder(store.datastore, events_table_name="meerkat_events")
    if store.url.startswith("sqlite"):
        from eventsourcing.sqlite import SQLiteApplicationRecorder

        return SQLiteApplicationRecorder(store.datastore, events_table_name="meerkat_events")
    return recorder_of(store)


def encoded(store: Any, records: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, bytes]]:
    """The stored bytes of ``records`` exactly as ``store`` writes them."""
    return [
        (topic, store.serializer.encode_event(topic, data, store.incarnation)[0])
        for topic, data in records
    ]


def split_backends(text: str, known: Sequence[str]) -> list[str]:
    backends = [b.strip() for b in text.split(",") if b.strip()]
    unknown = set(backends) - set(known)
    if unknown:
        raise SystemExit(f"unknown backend(s) {', '.join(sorted(unknown))}; known: {known}")
    return backends


# ---------------------------------------------------------------- statistics


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (0 when empty)."""
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, int(len(sorted_values) * q / 100.0 + 0.5) - 1))
    return sorted_values[index]


def ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


class FullCollections:
    """Times the process's full (generation 2) garbage collections while ``recording``.

    A full collection stops every thread of the process for a time that grows with
    the number of live objects: the benchmarks report them beside their latencies.
    """

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self.recording = False
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2 or not self.recording:
            return
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started:
            self.pauses.append(time.perf_counter() - self._started)
            self._started = 0.0

    @property
    def count(self) -> int:
        return len(self.pauses)

    @property
    def longest_ms(self) -> float:
        return ms(max(self.pauses, default=0.0))

    @property
    def total_ms(self) -> float:
        return ms(sum(self.pauses))

    def __enter__(self) -> FullCollections:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


@dataclass
class Load:
    """What :func:`run_load` measured."""

    ops: int
    seconds: float
    latencies: list[float]  # sorted, seconds
    cpu_user: float  # process CPU seconds during the window
    cpu_system: float
    context_switches: int  # voluntary + involuntary, whole process
    full_gcs: FullCollections = field(default_factory=FullCollections)  # in the window

    @property
    def rate(self) -> float:
        return self.ops / self.seconds if self.seconds > 0 else 0.0

    @property
    def p50_ms(self) -> float:
        return ms(percentile(self.latencies, 50))

    @property
    def p99_ms(self) -> float:
        return ms(percentile(self.latencies, 99))

    def per_op_us(self, value: float) -> float:
        return round(value / self.ops * 1e6, 1) if self.ops else 0.0


def run_load(
    threads: int,
    op: Callable[[int, int], None],
    seconds: float,
    max_ops_per_thread: int,
    warmup: Callable[[int], None] | None = None,
    on_start: Callable[[], None] | None = None,
) -> Load:
    """Call ``op(thread, n)`` in a loop from ``threads`` threads for ``seconds``.

    ``warmup(thread)`` runs first in each thread, untimed. The window starts
    when every thread is warm and ends when the last one has finished its
    last call (each stops starting calls at the deadline or after
    ``max_ops_per_thread``); ``on_start()`` runs just before it opens.
    Latency is per call.
    """
    ready = threading.Barrier(threads + 1)
    go = threading.Event()
    deadline = [0.0]
    counts = [0] * threads
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            if warmup is not None:
                warmup(t)
        except BaseException as e:
            errors.append(e)
        ready.wait()
        go.wait()
        if errors:
            return
        lat = latencies[t]
        clock = time.perf_counter
        try:
            n = 0
            while n < max_ops_per_thread and clock() < deadline[0]:
                started = clock()
                op(t, n)
                lat.append(clock() - started)
                n += 1
            counts[t] = n
        except BaseException as e:
            errors.append(e)

    pool = [
        threading.Thread(target=work, args=(t,), daemon=True, name=f"bench-{t}")
        for t in range(threads)
    ]
    for thread in pool:
        thread.start()
    ready.wait()
    if errors:
        go.set()
        raise errors[0]
    if on_start is not None:
        on_start()
    with FullCollections() as collections:
        before = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        deadline[0] = started + seconds
        collections.recording = True
        go.set()
        for thread in pool:
            thread.join()
        elapsed = time.perf_counter() - started
        collections.recording = False
        after = resource.getrusage(resource.RUSAGE_SELF)
    if errors:
        raise errors[0]
    merged = sorted(x for lat in latencies for x in lat)
    return Load(
        ops=sum(counts),
        seconds=elapsed,
        latencies=merged,
        cpu_user=after.ru_utime - before.ru_utime,
        cpu_system=after.ru_stime - before.ru_stime,
        context_switches=(after.ru_nvcsw - before.ru_nvcsw) + (after.ru_nivcsw - before.ru_nivcsw),
        full_gcs=collections,
    )


# ---------------------------------------------------------------- process and machine


def proc_status() -> dict[str, int]:
    """VmRSS (KiB), VmSize (KiB) and Threads of this process, from /proc/self/status."""
    wanted = {"VmRSS": "rss_kib", "VmSize": "vm_kib", "Threads": "threads"}
    out: dict[str, int] = {}
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in wanted:
                    out[wanted[key]] = int(value.split()[0])
    except OSError:
        pass
    return out


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def postgres_version(pg_url: str | None) -> str | None:
    if not pg_url:
        return None
    try:
        with psycopg.connect(pg_url, connect_timeout=5) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            return str(row[0]) if row else None
    except psycopg.Error:
        return None


def source_revision() -> str | None:
    """``git describe --always --dirty`` of the checkout the benchmark runs from.

    MEERKAT_BENCH_REVISION overrides it, for runs from an exported tree
    (``git archive``) that has no ``.git``.
    """
    import subprocess

    if os.environ.get("MEERKAT_BENCH_REVISION"):
        return os.environ["MEERKAT_BENCH_REVISION"]
    try:
        out = subprocess.run(
            ["git", "-C", str(Path(__file__).resolve().parent), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def machine_info(pg_url: str | None = None) -> dict[str, Any]:
    load1, load5, load15 = os.getloadavg()
    return {
        "revision": source_revision(),
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgres": postgres_version(pg_url),
        "postgres_url": mask_url(pg_url) if pg_url else None,
        "platform": platform.platform(),
        "loadavg_at_start": [load1, load5, load15],
    }


def fsync_rate(directory: str | None = None, seconds: float = 1.0) -> dict[str, float]:
    """Durable writes per second on the disk of ``directory``: a tiny fsync loop.

    ``append_fsync``: append 4 KiB then ``fsync`` (file grows, metadata too);
    ``overwrite_fdatasync``: rewrite the same 4 KiB then ``fdatasync`` (what a
    WAL commit costs at best). The upper bound of commits/s of any store on
    this disk.
    """
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="meerkat-fsync-", dir=directory) as tmp:
        path = os.path.join(tmp, "probe")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            block = b"x" * 4096

            def append_fsync() -> None:
                os.write(fd, block)
                os.fsync(fd)

            def overwrite_fdatasync() -> None:
                os.pwrite(fd, block, 0)
                os.fdatasync(fd)

            steps: dict[str, Callable[[], None]] = {
                "append_fsync": append_fsync,
                "overwrite_fdatasync": overwrite_fdatasync,
            }
            for name, step in steps.items():
                n = 0
                started = time.perf_counter()
                while time.perf_counter() - started < seconds:
                    step()
                    n += 1
                out[name] = round(n / (time.perf_counter() - started), 1)
        finally:
            os.close(fd)
    return out


def postgres_commit_rate(pg_url: str, seconds: float = 1.0) -> float:
    """Single-connection durable commits/s of a one-row insert: PostgreSQL's per-writer bound.

    A regular (WAL-logged) table, so each commit waits for its WAL flush.
    """
    name = sql.Identifier(f"meerkat_bench_probe_{uuid.uuid4().hex[:12]}")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE TABLE {} (n bigint)").format(name))
        try:
            insert = sql.SQL("INSERT INTO {} VALUES (%s)").format(name)
            n = 0
            started = time.perf_counter()
            while time.perf_counter() - started < seconds:
                conn.execute(insert, (n,))
                n += 1
            return round(n / (time.perf_counter() - started), 1)
        finally:
            conn.execute(sql.SQL("DROP TABLE {}").format(name))


# ---------------------------------------------------------------- output


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned text table (first column left-aligned, the rest right-aligned)."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        parts = [c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(row)]
        lines.append("  ".join(parts).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


@dataclass
class Target:
    """A target of the brief and what was measured against it."""

    name: str
    wanted: str
    measured: str
    met: bool
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def row(self) -> list[Any]:
        return [self.name, self.wanted, self.measured, "met" if self.met else "MISSED", self.note]


def targets_table(targets: Sequence[Target]) -> str:
    return table(["target", "wanted", "measured", "status", "note"], [t.row() for t in targets])


def write_results(name: str, payload: dict[str, Any], path: Path | None = None) -> Path:
    """Write ``payload`` (plus the machine facts if absent) as JSON under benchmarks/results/."""
    out = path or RESULTS_DIR / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    body = {"benchmark": name, "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **payload}
    out.write_text(json.dumps(body, indent=2, default=str) + "\n")
    return out


def log(message: str) -> None:
    """Progress on stderr (the table goes to stdout)."""
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- realistic events


@dataclass
class CycleRecords:
    """The (topic, payload) groups the runtime appends for one input's life, one group per commit.

    Produced by the pure decider, so they are exactly what a session actor
    writes (``envelope_to_record`` of each decided envelope).
    """

    first_accept: list[tuple[str, dict[str, Any]]]  # topology.runtime_created + accepted + queued
    accept: list[tuple[str, dict[str, Any]]]  # input.accepted + input.queued
    start_run: list[tuple[str, dict[str, Any]]]  # run.started + state_changed + input.staged
    complete_run: list[tuple[str, dict[str, Any]]]  # applied + consumed + run.completed + ...


def cycle_records(session_id: str = "bench-session", attached: bool = True) -> CycleRecords:
    from meerkat_runtime.events.catalogue import envelope_to_record
    from meerkat_runtime.events.ids import uuid7
    from meerkat_runtime.events.session import (
        Accept,
        CompleteRun,
        DecisionContext,
        SessionState,
        StartRun,
        execute,
    )
    from meerkat_runtime.events.timefmt import utc_now
    from meerkat_runtime.runtime import coerce_input

    def ctx() -> DecisionContext:
        return DecisionContext(now=utc_now(), new_id=uuid7, attached=attached)

    def records(decision: Any) -> list[tuple[str, dict[str, Any]]]:
        return [envelope_to_record(env) for env in decision.events]

    st = SessionState(session_id=session_id)
    first, st = execute(st, Accept(coerce_input(prompt_input("k-0"))), ctx())
    run_id = uuid7()
    execute(st, StartRun(run_id=run_id), ctx())
    execute(st, CompleteRun(run_id=run_id, output={"text": "ok"}), ctx())
    accept, st = execute(st, Accept(coerce_input(prompt_input("k-1"))), ctx())
    run_id = uuid7()
    start, st = execute(st, StartRun(run_id=run_id), ctx())
    complete, st = execute(st, CompleteRun(run_id=run_id, output={"text": "ok"}), ctx())
    return CycleRecords(records(first), records(accept), records(start), records(complete))


def source_tree(baseline: str, tmp: Path) -> Path:
    """``baseline`` as a source tree: a directory as is, else a git revision of this
    checkout unpacked (``git archive``) into the existing directory ``tmp``."""
    path = Path(baseline)
    if path.is_dir():
        return path.resolve()
    root = Path(__file__).resolve().parents[1]
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", baseline], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
    return tmp
