"""Replace the scene store at URL with a synthetic one the way the flows do (lock, staged build, swap, marker).

``python replace_store.py [--kill-at POINT] URL N_VIEWS SEED``. The arrays are :func:`prediction` (N_VIEWS, SEED), so a
test knows exactly what a complete store must hold. ``--kill-at`` makes the process SIGKILL itself at one point
of the replacement (the fault hooks below wrap the os calls the store makes; nothing is simulated):

- ``staging``: after the third file written into the staged store;
- ``before-swap``: before the old store is renamed aside;
- ``between-renames``: after the old store was renamed aside, before the new one is renamed into place;
- ``deleting-old``: after the first file of the renamed-aside old store was deleted;
- ``before-marker``: just before the completion marker is written.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from da3core.prediction import Prediction
from da3core.store import SceneStore, store_lock
from da3core.store.scene_store import OLD_TAG, TMP_TAG

KILL_POINTS = ("staging", "before-swap", "between-renames", "deleting-old", "before-marker")


def prediction(n: int, seed: int) -> Prediction:
    """A small Prediction whose every array depends on (n, seed)."""
    rng = np.random.default_rng(seed)
    h, w = 6 + seed, 8 + seed  # other sizes for other seeds: a mix of two stores cannot pass for either
    return Prediction(
        depth=rng.random((n, h, w), np.float32) + 1,
        conf=rng.random((n, h, w), np.float32),
        sky=rng.random((n, h, w)) > 0.8,
        processed_images=rng.integers(0, 256, (n, h, w, 3), np.uint8),
        extrinsics=np.tile(np.eye(4, dtype=np.float32)[:3], (n, 1, 1)) + seed,
        intrinsics=np.tile(np.eye(3, dtype=np.float32), (n, 1, 1)) * (seed + 1),
        is_metric=0,
        ref_view_idx=0,
        source_names=[f"view{i}.png" for i in range(n)],
    )


def marker_hash(n: int, seed: int) -> str:
    """The config hash this script marks a store with."""
    return f"n{n}-seed{seed}"


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _wrap(
    module: Any,
    name: str,
    before: Callable[..., bool] = lambda *a, **k: False,
    after: Callable[..., bool] = lambda *a, **k: False,
) -> None:
    real = getattr(module, name)

    def hooked(*args: Any, **kwargs: Any) -> Any:
        if before(*args, **kwargs):
            _die()
        out = real(*args, **kwargs)
        if after(*args, **kwargs):
            _die()
        return out

    setattr(module, name, hooked)


def install_kill(point: str, final: str) -> None:
    """Arrange for this process to SIGKILL itself at ``point`` of replacing the store at ``final``."""
    staged_writes = []
    if point == "staging":
        _wrap(
            os,
            "replace",
            after=lambda src, dst, **_: TMP_TAG in str(dst) and (staged_writes.append(dst) or len(staged_writes) == 3),
        )
    elif point == "before-swap":
        _wrap(os, "rename", before=lambda src, dst, **_: str(src) == final)
    elif point == "between-renames":
        _wrap(os, "rename", after=lambda src, dst, **_: str(src) == final and OLD_TAG in str(dst))
    elif point == "deleting-old":
        renamed = []
        _wrap(os, "rename", after=lambda src, dst, **_: renamed.append(dst) and False)
        _wrap(os, "unlink", after=lambda *a, **k: len(renamed) == 2)  # the old copy goes after both renames
    elif point == "before-marker":
        _wrap(SceneStore, "mark_complete", before=lambda *a, **k: True)
    else:
        raise SystemExit(f"unknown kill point {point}; use one of {KILL_POINTS}")


def main(argv: list[str]) -> None:
    if argv[0] == "--kill-at":
        install_kill(argv[1], argv[2])
        argv = argv[2:]
    replace(SceneStore(argv[0]), int(argv[1]), int(argv[2]))


def replace(store: SceneStore, n: int, seed: int) -> None:
    """What the flows do: hold the lock, discard leftovers, build beside, swap in, mark last."""
    with store_lock(store) as lock:
        store.discard_leftovers()
        with store.replacement() as staged:
            staged.reset({"seed": seed})
            staged.write_prediction(prediction(n, seed))
            lock.check()
        store.mark_complete(marker_hash(n, seed))


if __name__ == "__main__":
    main(sys.argv[1:])
