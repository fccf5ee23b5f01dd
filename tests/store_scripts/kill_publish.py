"""Run the reconstruct flow and SIGKILL this process while it publishes its exports.

``python kill_publish.py N FLOW_ARGS...`` runs ``python -m flows.reconstruct FLOW_ARGS`` in this process and kills it
right after the N-th file was moved from the run's export staging folder to its final name: the new store is in
place (unmarked), some exports are new and the others still the earlier result's. The hook wraps ``os.replace``.
"""

from __future__ import annotations

import os
import signal
import sys

from flows.reconstruct import EXPORT_STAGING, main


def arm(after: int) -> None:
    """Make the ``after``-th move out of an export staging folder kill this process once it is done."""
    original, moved = os.replace, []

    def replace(src: str | os.PathLike, dst: str | os.PathLike, **kwargs: object) -> None:
        original(src, dst, **kwargs)  # type: ignore[arg-type]
        if EXPORT_STAGING in str(src) and EXPORT_STAGING not in str(dst):
            moved.append(dst)
            if len(moved) == after:
                os.kill(os.getpid(), signal.SIGKILL)

    os.replace = replace  # type: ignore[assignment]


if __name__ == "__main__":
    arm(int(sys.argv[1]))
    sys.exit(main(sys.argv[2:]))
