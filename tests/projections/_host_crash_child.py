"""Child process of ``test_host_crash.py``: a host runtime with its own read model, until SIGKILL.

Usage: ``python _host_crash_child.py STORE_URL SEED``. Opens ``Runtime.open(url,
projections=[PositionCounter(...)])`` (the host API) and accepts prompts into a
few sessions from several threads, forever. Prints ``ready`` once the first
inputs are durable. ``MEERKAT_TEST_APPLY_SLEEP`` (seconds): the handler sleeps after
writing, so a kill often lands between it and the commit; ``MEERKAT_TEST_APPLY_LOG``
(a file): the first and last position of every page it begins.
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

from meerkat_runtime import Runtime
from tests.projections._host_support import PositionCounter


def main() -> None:
    url, seed = sys.argv[1], int(sys.argv[2])
    counter = PositionCounter(
        sleep=float(os.environ.get("MEERKAT_TEST_APPLY_SLEEP", "0")),
        log_path=os.environ.get("MEERKAT_TEST_APPLY_LOG"),
    )
    # A short lease (PostgreSQL): once this process is killed, the parent takes the
    # projections over after a second instead of the default ten.
    lease_ttl = 1.0 if url.startswith("postgresql") else 10.0
    rt = Runtime.open(url, projections=[counter], lease_ttl=lease_ttl)
    ready = threading.Event()

    def load(worker: int) -> None:
        rnd = random.Random(seed * 100 + worker)
        n = 0
        while True:
            n += 1
            rt.session(f"host-{worker}-{rnd.randrange(4)}").accept(
                {"input_type": "prompt", "content": f"p{n}"}
            )
            if n == 5:
                ready.set()

    for w in range(3):
        threading.Thread(target=load, args=(w,), daemon=True).start()
    ready.wait(60)
    print("ready", flush=True)
    threading.Event().wait()  # until killed


if __name__ == "__main__":
    main()
