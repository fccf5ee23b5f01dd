"""Command-line error handling shared by the flow entry points: one line on stderr, non-zero exit."""

from __future__ import annotations

import sys
from typing import Callable

from da3core.io.inputs import InputError
from da3core.io.video import VideoError
from da3core.weights import WeightsError
from da3core.store import StoreError
from flows.config import ConfigError, load_config, resolved

USER_ERRORS = (ConfigError, InputError, VideoError, StoreError, WeightsError, FileNotFoundError, PermissionError)
EXIT_USER_ERROR = 2


def run_cli(run: Callable[[], None], argv: list[str], config_name: str) -> int:
    """Run ``run`` unless ``--help``/``--cfg`` was asked for; expected failures print one line, exit 2."""
    if argv[:1] in (["-h"], ["--help"]):
        print(f"usage: python -m flows.{config_name} [key=value ...]   (Hydra overrides; --cfg prints the config)")
        return 0
    if argv[:1] == ["--cfg"]:
        from omegaconf import OmegaConf

        print(OmegaConf.to_yaml(resolved(load_config(config_name, argv[1:]))))
        return 0
    try:
        run()
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception as exc:  # an unexpected failure: keep the traceback Prefect logged, end with one line
        print(f"error: {exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", file=sys.stderr)
        return 1
    return 0
