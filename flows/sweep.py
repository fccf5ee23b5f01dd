"""Hydra multirun for the flow commands: ``python -m flows.reconstruct -m model=da3-small,da3-base scene=a,b``.

Sweeps use Hydra's own override grammar (``a,b``, ``range(1,4)``, ``choice(...)``, ``glob(...)``) and its
basic sweeper's order (the cartesian product, last key varying fastest). Jobs run one after another in this
process, each composed once like a single run. Swept keys other than the input (``scene``, ``dataset``,
``video``) would make jobs overwrite each other's outputs, so such jobs write under
``<storage.root>/<key=value,...>/``, or ``<output_dir>/<key=value,...>/`` when ``output_dir`` is given (video_depth:
under the folder next to the video). A sweep over inputs with one fixed ``output_dir`` is refused: its jobs would
replace each other's results.
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


def _refuse_one_folder(config_name: str, job: list[str], swept: set[str]) -> None:
    """Refuse a sweep over inputs that all name one fixed ``output_dir``: each job would replace the last one's."""
    if load_config(config_name, job).output_dir:
        inputs = ", ".join(sorted(swept & set(INPUT_KEYS)))
        raise ConfigError(
            f"config error at output_dir: it is one folder for every {inputs} of the sweep, so each job would "
            "replace the last one's result; leave output_dir out (each input gets its own folder) or sweep it too"
        )


def multirun(config_name: str, overrides: list[str], run: Callable[[Any], None]) -> int:
    """Run every job of the sweep (each guarded: one line per failure, the others still run); worst exit code wins."""
    jobs, swept = sweep_jobs(overrides)
    if len(jobs) > 1 and "output_dir" not in swept and swept & set(INPUT_KEYS):
        fixed = guarded(lambda: _refuse_one_folder(config_name, jobs[0], swept))
        if fixed:
            return fixed
    codes = []
    for number, job in enumerate(jobs):
        print(f"[multirun {number + 1}/{len(jobs)}] {' '.join(job)}", file=sys.stderr)

        def one(job: list[str] = job) -> None:
            cfg = load_config(config_name, job)
            folder = job_folder(job, swept)
            if folder and cfg.output_dir and "output_dir" not in swept:
                cfg.output_dir = join_url(cfg.output_dir, folder)
            elif folder and hasattr(cfg, "storage") and hasattr(cfg.storage, "root") and not cfg.output_dir:
                cfg.storage.root = join_url(cfg.storage.root, folder)
            elif folder and config_name == "video_depth" and not cfg.output_dir:
                from da3core.video_depth.outputs import default_output_dir

                cfg.output_dir = join_url(default_output_dir(cfg.video), folder)
            run(cfg)

        codes.append(guarded(one))
    return max(codes)
