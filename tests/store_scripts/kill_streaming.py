"""Run the reconstruct flow and SIGKILL this process while it writes chunk N of a streaming run.

``python kill_streaming.py after|before N FLOW_ARGS...`` runs ``python -m flows.reconstruct FLOW_ARGS`` in this process
(the thread runner runs the chunk tasks here too) and kills it when chunk N's completion marker is about to be
written (``before``: its arrays are in the cache, its marker is not) or has just been written (``after``: a chunk
boundary). The hook wraps the marker write the chunk cache makes; nothing else is changed.
"""

from __future__ import annotations

import os
import signal
import sys

from da3core.store import SceneStore
from flows.reconstruct import main


def arm(when: str, chunk: int) -> None:
    """Make the marker write of chunk ``chunk`` kill this process ``when`` ("before" or "after") it happens."""
    original = SceneStore.mark_complete
    target = f"/chunk_{chunk:04d}.zarr"

    def mark_complete(self: SceneStore, config_hash: str) -> None:
        if self.url.endswith(target) and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        original(self, config_hash)
        if self.url.endswith(target) and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)

    SceneStore.mark_complete = mark_complete


if __name__ == "__main__":
    arm(sys.argv[1], int(sys.argv[2]))
    sys.exit(main(sys.argv[3:]))
