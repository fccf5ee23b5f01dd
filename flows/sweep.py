"""Hydra multirun for the flow commands: ``python -m flows.reconstruct -m model=da3-small,da3-base scene=a,b``.

Sweeps use Hydra's own override grammar (``a,b``, ``range(1,4)``, ``choice(...)``, ``glob(...)``) and its
basic sweeper's order (the cartesian product, last key varying fastest). Jobs run one after another in this
process, each composed once like a single run. Swept keys other than the input (``scene``, ``dataset``,
``video``) would make jobs overwrite each other's outputs, so such jobs write under
``<storage.root>/<key=value,...>/`` (reconstruct and batch; video_depth jobs share their output folder unless
``output_dir`` is swept too).
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

from da3core.io.storage import join_url
from flows.config import ConfigError, load_config
from flows.errors import guarded

INPUT_KEYS = ("scene", "dataset", "video")  # swept inputs already write to their own folders


def sweep_jobs(overrides: list[str]) -> tuple[list[list[str]], set[str]]:
    """Every job's overrides for a multirun command line (one job when nothing is swept), and the swept keys."""
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as exc:
        raise ConfigError(f"config error: {str(exc).splitlines()[0]}") from exc
    choices, swept = [], set()
    for override in parsed:
        if override.is_sweep_override():
            key = override.get_key_element()
            choices.append([f"{key}={value}" for value in override.sweep_string_iterator()])
            swept.add(key.lstrip("+~"))
        else:
            choices.append([str(override.input_line)])
    return [list(job) for job in itertools.product(*choices)], swept


def job_folder(job: list[str], swept: set[str]) -> str:
    """The sub-folder that keeps a job's outputs apart: its swept non-input overrides, '' when there are none."""
    parts = [o for o in job if o.split("=", 1)[0].lstrip("+~") in swept - set(INPUT_KEYS)]
    return ",".join(parts).replace("/", "_")


def multirun(config_name: str, overrides: list[str], run: Callable[[Any], None]) -> int:
    """Run every job of the sweep (each guarded: one line per failure, the others still run); worst exit code wins."""
    jobs, swept = sweep_jobs(overrides)
    codes = []
    for number, job in enumerate(jobs):
        print(f"[multirun {number + 1}/{len(jobs)}] {' '.join(job)}", file=sys.stderr)

        def one(job: list[str] = job) -> None:
            cfg = load_config(config_name, job)
            folder = job_folder(job, swept)
            if folder and hasattr(cfg, "storage") and hasattr(cfg.storage, "root") and not cfg.output_dir:
                cfg.storage.root = join_url(cfg.storage.root, folder)
            run(cfg)

        codes.append(guarded(one))
    return max(codes)
