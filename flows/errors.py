"""Command-line error handling shared by the flow entry points: one line on stderr, non-zero exit."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from da3core.io.inputs import InputError
from da3core.io.storage import StorageError
from da3core.io.video import VideoError
from da3core.weights import WeightsError
from flows.config import ConfigError, load_config, resolved
from flows.runtime import prefect_runtime

USER_ERRORS = (ConfigError, InputError, VideoError, StorageError, WeightsError, FileNotFoundError, PermissionError)
EXIT_USER_ERROR = 2


def run_cli(config_name: str, argv: list[str], run: Callable[[Any], None]) -> int:
    """Compose ``conf/<config_name>`` from ``argv`` once and ``run`` it, unless ``--help``/``--cfg`` was asked for."""
    if argv[:1] in (["-h"], ["--help"]):
        print(f"usage: python -m flows.{config_name} [key=value ...]   (Hydra overrides; --cfg prints the config)")
        return 0
    if argv[:1] == ["--cfg"]:
        from omegaconf import OmegaConf

        return guarded(lambda: print(OmegaConf.to_yaml(resolved(load_config(config_name, argv[1:])))))
    return guarded(lambda: run_flows(run, load_config(config_name, argv)))


def run_flows(run: Callable[[Any], None], cfg: Any) -> None:
    """``run(cfg)``, whose flow runs report to this process's Prefect API (:mod:`flows.runtime`): every command
    line entry goes through here."""
    with prefect_runtime():
        run(cfg)


def guarded(run: Callable[[], Any]) -> int:
    """Run ``run``; expected failures print one line and exit 2, unexpected ones print one line and exit 1."""
    try:
        run()
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception as exc:  # an unexpected failure: keep the traceback Prefect logged, end with one line
        print(f"error: {exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", file=sys.stderr)
        return 1
    return 0
