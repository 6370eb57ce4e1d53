"""A runtime process for the silent-intent kill -9 test: ``python _silent_child.py URL``.

Sets silent intents on ``s-silent`` and accepts a silent peer request there (an
executor is bound, so a run would start at once were it not silent); sets them on
``s-reset`` and resets it. Then prints ``ACK <input id>`` (flushed, everything
durable) and sleeps until killed.
"""

from __future__ import annotations

import sys
import threading

from meerkat_runtime import EchoExecutor, Runtime

SILENT = ["mob.peer_added", "probe.intent"]


def main() -> None:
    rt = Runtime.open(sys.argv[1], executor=EchoExecutor())
    s = rt.create_session("s-silent")
    s.set_silent_intents(SILENT)
    out = s.accept(
        {
            "input_type": "peer",
            "header": {"source": {"type": "peer", "peer_id": "peer-b"}},
            "convention": {
                "convention_type": "request",
                "request_id": "req-1",
                "intent": "mob.peer_added",
            },
            "content": "peer b joined",
        }
    )
    assert out.kind == "accepted", out
    r = rt.create_session("s-reset")
    r.set_silent_intents(SILENT)
    r.reset()
    print("ACK", out.input_id, flush=True)
    threading.Event().wait()  # until killed


if __name__ == "__main__":
    main()
