"""Push subscriptions: delivery latency and what subscribers cost the accept path.

    python benchmarks/subscription_bench.py [--backends memory,sqlite,postgres]
                                            [--seconds S] [--threads N] [--sessions M]

For each backend, in the same run:

* baseline: ``--threads`` threads accept prompts into ``--sessions`` sessions for
  ``--seconds`` (``projections=False``, so read models do not blur the figures);
* subscribed: the same load while ``--sessions`` session subscribers (one per
  session) and 4 whole-store subscribers follow on threads of their own: the
  accept rate as a ratio of the baseline's, and the delivery latency of every
  event: from the commit that made it durable (a store listener, called right
  after each durable commit, gives its max position and the time) to the moment
  a subscriber's iterator yielded it. p50/p99 over all deliveries;
* other instance: the load on one runtime, one whole-store subscriber on a second
  runtime opened on the same URL (as another process would be; its store does
  not hear the first one's commits): LISTEN/NOTIFY on PostgreSQL, the 0.2 s
  poller on SQLite (``memory://NAME`` stores opened twice poll too). Latency
  measured the same way (both runtimes share this process's clock).

Results are printed as a table and written to benchmarks/results/subscription_bench.json.
"""

from __future__ import annotations

import argparse
import bisect
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from _benchlib import (
    POSTGRES_HINT,
    database,
    log,
    machine_info,
    ms,
    percentile,
    postgres_url,
    prompt_input,
    run_load,
    split_backends,
    table,
    write_results,
)

from meerkat_runtime import Runtime
from meerkat_runtime.subscriptions import Subscription

BACKENDS = ("memory", "sqlite", "postgres")


@dataclass
class Result:
    backend: str
    baseline_accepts_per_s: float
    subscribed_accepts_per_s: float
    accept_rate_ratio: float
    deliveries: int
    latency_p50_ms: float
    latency_p99_ms: float
    other_instance_deliveries: int
    other_instance_p50_ms: float
    other_instance_p99_ms: float


class Commits:
    """When each position became durable, from the store's commit listener."""

    def __init__(self) -> None:
        self.positions: list[int] = []
        self.times: list[float] = []
        self._lock = threading.Lock()

    def __call__(self, position: int) -> None:
        now = time.perf_counter()
        with self._lock:
            self.positions.append(position)
            self.times.append(now)

    def committed_at(self, position: int) -> float | None:
        """The time of the first commit whose max position reached ``position``."""
        index = bisect.bisect_left(self.positions, position)
        return self.times[index] if index < len(self.times) else None


def follow(sub: Subscription, out: list[Any]) -> None:
    """Iterate ``sub`` on this thread, keeping (receive time, ``sub.position``) of each event:
    the log position for a whole-store subscription, the sequence for a session's."""
    for _ in sub:
        out.append((time.perf_counter(), sub.position))


def latencies(commits: Commits, received: list[list[Any]]) -> list[float]:
    out = []
    for got in received:
        for when, position in got:
            at = commits.committed_at(position)
            if at is not None:
                out.append(max(0.0, when - at))
    return sorted(out)


def accept_op(rt: Runtime, sessions: int) -> Callable[[int, int], None]:
    def op(thread: int, n: int) -> None:
        rt.session(f"s-{(thread * 7919 + n) % sessions}").accept(prompt_input())

    return op


def warm(rt: Runtime, sessions: int) -> None:
    for s in range(sessions):
        rt.session(f"s-{s}").accept(prompt_input())


def measure(backend: str, url: str, seconds: float, threads: int, sessions: int) -> Result:
    cap = 1_000_000
    with Runtime.open(url, projections=False) as rt:
        warm(rt, sessions)
        base = run_load(threads, accept_op(rt, sessions), seconds, cap)
    log(f"{backend}: baseline {base.rate:,.0f} accepts/s")

    with Runtime.open(url, projections=False) as rt:
        commits = Commits()
        rt.store.add_listener(commits)
        start = rt.store.max_position()
        received: list[list[Any]] = []
        followers = []
        # Session subscribers record sequences, mapped to log positions after the load.
        session_subs = [rt.session(f"s-{s}").subscribe(after=rt.store.session_version(f"s-{s}")) for s in range(sessions)]  # fmt: skip
        store_subs = [rt.subscribe(after=start) for _ in range(4)]
        session_got: list[list[Any]] = []
        for sub in session_subs:
            got: list[Any] = []
            session_got.append(got)
            followers.append(threading.Thread(target=follow, args=(sub, got), daemon=True))  # fmt: skip
        for sub in store_subs:
            got = []
            received.append(got)
            followers.append(threading.Thread(target=follow, args=(sub, got), daemon=True))  # fmt: skip
        for thread in followers:
            thread.start()
        loaded = run_load(threads, accept_op(rt, sessions), seconds, cap)
        head = rt.store.max_position()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(g and g[-1][1] >= head for g in received):
            time.sleep(0.01)
        # Sequence -> position, per session, for the session subscribers' deliveries.
        for s, got in enumerate(session_got):
            by_version = {r.version: r.position for r in rt.store.read_session(f"s-{s}")}
            received.append([(when, by_version[seq]) for when, seq in got])
        for sub in [*session_subs, *store_subs]:
            sub.close()
        for thread in followers:
            thread.join(10)
        subscribed = latencies(commits, received)
    log(f"{backend}: subscribed {loaded.rate:,.0f} accepts/s, {len(subscribed)} deliveries")

    with Runtime.open(url, projections=False) as writer, Runtime.open(url, projections=False) as reader:  # fmt: skip
        commits = Commits()
        writer.store.add_listener(commits)
        sub = reader.subscribe(after=reader.store.max_position())
        got = []
        thread = threading.Thread(target=follow, args=(sub, got), daemon=True)
        thread.start()
        run_load(threads, accept_op(writer, sessions), seconds, cap)
        head = writer.store.max_position()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (got and got[-1][1] >= head):
            time.sleep(0.01)
        sub.close()
        thread.join(10)
        other = latencies(commits, [got])
    log(f"{backend}: other instance, {len(other)} deliveries")

    return Result(
        backend=backend,
        baseline_accepts_per_s=round(base.rate, 1),
        subscribed_accepts_per_s=round(loaded.rate, 1),
        accept_rate_ratio=round(loaded.rate / base.rate, 3) if base.rate else 0.0,
        deliveries=len(subscribed),
        latency_p50_ms=ms(percentile(subscribed, 50)),
        latency_p99_ms=ms(percentile(subscribed, 99)),
        other_instance_deliveries=len(other),
        other_instance_p50_ms=ms(percentile(other, 50)),
        other_instance_p99_ms=ms(percentile(other, 99)),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--sessions", type=int, default=20)
    args = parser.parse_args()
    pg = postgres_url()
    results = []
    for backend in split_backends(args.backends, BACKENDS):
        if backend == "postgres" and pg is None:
            log(POSTGRES_HINT)
            continue
        with database(backend, pg) as url:
            results.append(measure(backend, url, args.seconds, args.threads, args.sessions))
    headers = ["backend", "accepts/s base", "with subs", "ratio", "deliveries", "p50 ms",
               "p99 ms", "other inst. p50 ms", "p99 ms"]  # fmt: skip
    rows = [[r.backend, r.baseline_accepts_per_s, r.subscribed_accepts_per_s, r.accept_rate_ratio,
             r.deliveries, r.latency_p50_ms, r.latency_p99_ms, r.other_instance_p50_ms,
             r.other_instance_p99_ms] for r in results]  # fmt: skip
    print(table(headers, rows))
    path = write_results(
        "subscription_bench",
        {"args": vars(args), "machine": machine_info(pg), "results": [asdict(r) for r in results]},
    )
    log(f"written to {path}")


if __name__ == "__main__":
    main()
