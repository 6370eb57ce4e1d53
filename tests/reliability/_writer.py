"""A writer process for the two-writers tests, driven by JSON lines on stdin.

Usage: ``python _writer.py MODE URL NODE_ID [OPTIONS_JSON]``. Modes:

* ``runtime``: ``Runtime.open(URL)`` with ``node_id``, so leases apply;
* ``runtime-nolease``: a store whose leases are switched off, given to
  ``Runtime.open``: two such processes write one session with optimistic
  concurrency only;
* ``store``: the bare store (``open_store``), no runtime.

``OPTIONS_JSON`` (runtime modes): ``executor_log`` (a file: the runtime gets an
executor that appends one JSON line per call, ``{"pid", "sid", "run",
"inputs"}``, before doing the work: the side effect whose repetition the
tests count), ``gate`` (a file the executor waits for before it returns),
``lease_ttl`` (30), ``idle_timeout``. The node id ``-`` means the default one.

Every append the store refuses with :class:`ConcurrencyConflict` is counted
(the session actor catches it, refolds and decides once more). Commands, each
answered with one JSON line:

* ``{"cmd": "accept", "sid": s, "n": k, "threads": t}``: accept ``k`` prompts
  from ``t`` threads; answers the acknowledged ids and the errors.
* ``{"cmd": "spread", "sids": [...], "n": k, "threads": t}``: accept ``k`` prompts
  from ``t`` threads, round robin over the sessions; answers ``acked`` ([sid,
  id]) and ``refused`` ([sid, id, error type]).
* ``{"cmd": "race", "sid": s, "n": k}`` (store mode): append ``k`` events, each
  read-version-then-append, retrying on conflict; answers the versions won.
* ``{"cmd": "quit"}``.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any

from meerkat_runtime import (
    ConcurrencyConflict,
    EchoExecutor,
    MeerkatRuntimeError,
    RunRequest,
    RunResult,
    Runtime,
)
from meerkat_runtime.events.ids import uuid7
from meerkat_runtime.runtime import event_codec
from meerkat_runtime.store import EventCodec, EventStore, NewEvent, open_store


def reply(**fields: Any) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def counting(store: EventStore, counter: dict[str, int]) -> None:
    real = store.append
    lock = threading.Lock()

    def append(*args: Any, **kwargs: Any) -> Any:
        try:
            return real(*args, **kwargs)
        except ConcurrencyConflict:
            with lock:
                counter["conflicts"] += 1
            raise

    real_submit = store.submit_append

    def submit_append(*args: Any, on_done: Any, **kwargs: Any) -> Any:
        # The pipelined append of accepts reports its conflict to a callback.
        def done(error: BaseException | None) -> None:
            if isinstance(error, ConcurrencyConflict):
                with lock:
                    counter["conflicts"] += 1
            on_done(error)

        return real_submit(*args, on_done=done, **kwargs)

    store.append = append  # type: ignore[method-assign]
    store.submit_append = submit_append  # type: ignore[method-assign]


def accept_many(
    rt: Runtime, node_id: str, sid: str, n: int, threads: int
) -> tuple[list[str], list[list[str]]]:
    """Accept ``n`` prompts into ``sid`` from ``threads`` threads: (acked ids, errors)."""
    acked: list[str] = []
    errors: list[list[str]] = []
    lock = threading.Lock()

    def host(k: int, count: int) -> None:
        for i in range(count):
            iid = str(uuid7())
            doc = {"input_type": "prompt", "content": f"{node_id}-{k}-{i}", "header": {"id": iid}}
            try:
                out = rt.session(sid).accept(doc)
            except MeerkatRuntimeError as exc:
                with lock:
                    errors.append([iid, type(exc).__name__, str(exc)])
                continue
            with lock:
                if out.kind == "accepted":
                    acked.append(iid)
                else:
                    errors.append([iid, out.kind, str(out.reason)])

    ts = [threading.Thread(target=host, args=(k, n // threads)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return acked, errors


class LoggingExecutor:
    """Echoes, after appending one line per call to a file (O_APPEND: whole lines)."""

    def __init__(self, path: str, gate: str | None) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.gate = gate

    def run(self, request: RunRequest) -> RunResult:
        line = {
            "pid": os.getpid(),
            "sid": request.session_id,
            "run": str(request.run_id),
            "inputs": [str(i) for i in request.contributing_input_ids],
        }
        os.write(self.fd, (json.dumps(line) + "\n").encode())
        while self.gate is not None and not os.path.exists(self.gate):
            time.sleep(0.01)
        return EchoExecutor().run(request)


def spread(
    rt: Runtime, node_id: str, sids: list[str], n: int, threads: int
) -> tuple[list[list[str]], list[list[str]]]:
    """Accept ``n`` prompts round robin over ``sids`` from ``threads`` threads."""
    acked: list[list[str]] = []
    refused: list[list[str]] = []
    lock = threading.Lock()

    def host(k: int, count: int) -> None:
        for i in range(count):
            sid = sids[(k + i * threads) % len(sids)]
            iid = str(uuid7())
            doc = {"input_type": "prompt", "content": f"{node_id}-{k}-{i}", "header": {"id": iid}}
            try:
                out = rt.session(sid).accept(doc)
            except MeerkatRuntimeError as exc:
                with lock:
                    refused.append([sid, iid, type(exc).__name__])
                continue
            with lock:
                if out.kind == "accepted":
                    acked.append([sid, iid])
                else:
                    refused.append([sid, iid, out.kind])

    ts = [threading.Thread(target=host, args=(k, n // threads)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return acked, refused


def main(mode: str, url: str, node_id: str, raw_options: str = "{}") -> None:
    opts = json.loads(raw_options)
    counter = {"conflicts": 0}
    if mode == "store":
        # The bare race tests the store's optimistic concurrency alone, with payloads
        # that are no runtime event: a codec without the runtime's read-back check.
        codec = EventCodec()
        codec.register("runtime.projection_emitted", 1)
    else:
        codec = event_codec()
    store = open_store(url, codec=codec)
    rt: Runtime | None = None
    if mode == "runtime-nolease":
        store.supports_leases = False
    counting(store, counter)
    if mode in ("runtime", "runtime-nolease"):
        options: dict[str, Any] = {}
        if store.supports_leases:
            options.update(
                node_id=None if node_id == "-" else node_id, lease_ttl=opts.get("lease_ttl", 30.0)
            )
        if opts.get("idle_timeout"):
            options["idle_timeout"] = opts["idle_timeout"]
        if opts.get("executor_log"):
            options["executor"] = LoggingExecutor(opts["executor_log"], opts.get("gate"))
        rt = Runtime.open(store, **options)
    reply(ready=True, pid=os.getpid(), incarnation=store.incarnation)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "quit":
            break
        if cmd["cmd"] == "accept":
            assert rt is not None
            acked, errors = accept_many(rt, node_id, cmd["sid"], cmd["n"], cmd.get("threads", 1))
            reply(acked=acked, errors=errors, conflicts=counter["conflicts"])
        elif cmd["cmd"] == "spread":
            assert rt is not None
            pairs, refused = spread(rt, node_id, cmd["sids"], cmd["n"], cmd.get("threads", 1))
            reply(acked=pairs, refused=refused)
        elif cmd["cmd"] == "race":
            won: list[int] = []
            for i in range(cmd["n"]):
                while True:
                    version = store.session_version(cmd["sid"])
                    event = NewEvent("runtime.projection_emitted", {"writer": node_id, "i": i})
                    try:
                        (rec,) = store.append(cmd["sid"], version, [event])
                    except ConcurrencyConflict:
                        continue
                    won.append(rec.version)
                    break
            reply(won=won, conflicts=counter["conflicts"])
    if rt is not None:
        rt.close()
    store.close()


if __name__ == "__main__":
    main(*sys.argv[1:5])
