"""Child process of ``test_cross_process.py``: accepts prompts until SIGKILL.

Usage: ``python _writer_child.py STORE_URL``. Prints ``ready`` and then the input id of
every prompt once its accept has returned (acknowledged, hence durable), one per line.
"""

from __future__ import annotations

import sys
import threading

from meerkat_runtime import Runtime


def main() -> None:
    url = sys.argv[1]
    lease_ttl = 1.0 if url.startswith("postgresql") else 10.0
    rt = Runtime.open(url, projections=False, lease_ttl=lease_ttl)
    lock = threading.Lock()
    print("ready", flush=True)

    def load(worker: int) -> None:
        n = 0
        while True:
            n += 1
            outcome = rt.session(f"w{worker}-{n % 3}").accept(
                {"input_type": "prompt", "content": f"{worker}/{n}"}
            )
            with lock:
                print(outcome.input_id, flush=True)

    for w in range(3):
        threading.Thread(target=load, args=(w,), daemon=True).start()
    threading.Event().wait()  # until killed


if __name__ == "__main__":
    main()
