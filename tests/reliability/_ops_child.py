"""A runtime process that reports operation lifecycles; the parent kills it with SIGKILL.

Usage: ``python _ops_child.py STORE_URL``. Into session ``ops`` it accepts, for
operation ``op-N`` in turn: ``started``, two ``progress`` events and then (every
fourth operation excepted, left running) ``completed`` / ``failed`` /
``cancelled``. After each ``accept`` returned (the event is durable) it prints
``ACK op-N <event type>`` in one flushed write. Snapshots are taken every few
events, so the parent's reopen reads a snapshot and folds the tail.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from meerkat_runtime import Runtime


def say(*words: object) -> None:
    os.write(1, (" ".join(str(w) for w in words) + "\n").encode())


def event(op_id: str, kind: str, n: int) -> dict[str, Any]:
    body: dict[str, Any] = {"type": kind, "id": op_id}
    if kind == "started":
        body["kind"] = "tool"
    elif kind == "progress":
        body.update(message=f"step {n}", percent=float(n))
    elif kind == "completed":
        body["result"] = {"op": op_id}
    elif kind == "failed":
        body["error"] = f"{op_id} failed"
    return {"input_type": "operation", "operation_id": op_id, "event": body}


def main() -> None:
    url = sys.argv[1]
    with Runtime.open(url, snapshot_interval=7) as rt:
        s = rt.session("ops")
        say("OPEN")
        n = 0
        while True:
            op_id = f"op-{n}"
            kinds = ["started", "progress", "progress"]
            if n % 4 != 3:
                kinds.append(("completed", "failed", "cancelled")[n % 4])
            for k, kind in enumerate(kinds):
                s.accept(event(op_id, kind, k))
                say("ACK", op_id, kind)
            n += 1


if __name__ == "__main__":
    main()
