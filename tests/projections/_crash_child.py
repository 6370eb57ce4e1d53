"""Child process of ``test_crash.py``: a runtime with projections under load, until SIGKILL.

Usage: ``python _crash_child.py STORE_URL SEED``. Opens a runtime without an
executor (its ledger and views follow the log) plus a counting projection on
the same store, and accepts inputs from several threads into many sessions
(mixed kinds, duplicates, supersession keys, coalescing progress, and now and
then a retire/recycle/reset), forever. Prints ``ready`` once a worker has had
five inputs accepted (durable: a refusal or a duplicate does not count). With ``MEERKAT_TEST_APPLY_SLEEP`` set (seconds), the counting
projection sleeps inside ``apply`` after writing, so a kill often lands
between the handler and the commit; with ``MEERKAT_TEST_APPLY_LOG`` set (a
file), it appends the first and last position of every page it begins.
"""

from __future__ import annotations

import os
import random
import sys
import threading
from pathlib import Path

# Run as a script: the project root on the path, so the test helpers import as the
# package they are (tests.projections), relative imports included.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from meerkat_runtime import (
    Runtime,
    RuntimeControlPlaneError,
    RuntimeStateTransitionError,
)
from meerkat_runtime.projections import ProjectionSet
from tests.projections._support import (
    CountingProjection,
    external_event,
    operation,
    peer_progress,
    prompt,
)


def main() -> None:
    url, seed = sys.argv[1], int(sys.argv[2])
    sleep = float(os.environ.get("MEERKAT_TEST_APPLY_SLEEP", "0"))
    # A short lease (PostgreSQL): once this process is killed, the parent takes the
    # projections over after a second instead of the default ten.
    rt = Runtime.open(url, lease_ttl=1.0) if url.startswith("postgresql") else Runtime.open(url)
    counting = ProjectionSet(
        rt.store,
        [CountingProjection(sleep=sleep, log_path=os.environ.get("MEERKAT_TEST_APPLY_LOG"))],
        poll_interval=0.02,
        page_size=random.Random(seed).choice([3, 10, 50]),
    )
    ready = threading.Event()

    def load(worker: int) -> None:
        rnd = random.Random(seed * 100 + worker)
        n = accepted = 0
        while True:
            s = rt.session(f"crash-{worker}-{rnd.randrange(6)}")
            n += 1
            r = rnd.random()
            try:
                if r < 0.03:
                    rnd.choice([s.retire, s.recycle, s.reset])()
                    continue
                if r < 0.15:
                    out = s.accept(external_event({"n": n}, supersession_key="ci"))
                elif r < 0.25:
                    out = s.accept(peer_progress(supersession_key="progress"))
                elif r < 0.3:
                    out = s.accept(operation(f"op-{seed}-{worker}-{n}"))
                elif r < 0.4:
                    out = s.accept(prompt("dup", idempotency_key=f"idem-{rnd.randrange(5)}"))
                else:
                    out = s.accept(prompt(f"p{n}"))
            except (RuntimeStateTransitionError, RuntimeControlPlaneError):
                continue
            # Ready once this worker has had inputs accepted (durable when accept
            # returns): a refusal or a duplicate writes nothing, and a kill right after
            # "ready" must still find something of this run in the log.
            if out.kind == "accepted":
                accepted += 1
                if accepted == 5:
                    ready.set()

    for w in range(4):
        threading.Thread(target=load, args=(w,), daemon=True).start()
    # Not ready in time (a machine far too loaded, or every worker failed: their
    # exceptions are on stderr): say so, and the parent fails with stderr in view.
    print("ready" if ready.wait(120) else "not ready after 120 s", flush=True)
    threading.Event().wait()  # until killed
    counting.close()  # not reached


if __name__ == "__main__":
    main()
