"""Hold a scene lock in a separate process until told otherwise: the second writer of the lock tests.

``python hold_lock.py URL STORAGE_OPTIONS_JSON TTL_SECONDS``: prints ``held`` once it holds the lock, then reads
lines from stdin: ``check`` prints ``ok`` or ``lost: <reason>``; ``release`` (or end of input) releases and exits.
"""

from __future__ import annotations

import json
import sys

from da3core.store import SceneStore, StoreLockedError, store_lock


def main(argv: list[str]) -> None:
    store = SceneStore(argv[0], json.loads(argv[1]))
    with store_lock(store, ttl=float(argv[2])) as lock:
        print("held", flush=True)
        for line in sys.stdin:
            if line.strip() == "release":
                break
            try:
                lock.check()
                print("ok", flush=True)
            except StoreLockedError as exc:
                print(f"lost: {exc}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
