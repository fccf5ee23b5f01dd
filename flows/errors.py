"""User errors at the entry points: one ``error:`` line and exit 2, no traceback; anything else is a bug (exit 1).

The hierarchy is the library's (:class:`da3core.errors.UserError` and its subclasses, which ``ConfigError`` and the
CLI's and backend's refusals join). Prefect logs a failed task or flow run with its traceback, on the terminal and
in the run's log on the API; for a user error that traceback says nothing the message does not, so
:class:`UserErrorLogFilter` drops it from Prefect's run loggers: the run still ends Failed, its state message and log
line carry the one-line reason. Filtering the log records (not catching the errors and returning Failed states)
keeps every path alike: tasks, flows, subflows, and the re-raise of a task's error in its flow.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

from da3core.errors import UserError, is_user_error, user_message
from flows.runtime import prefect_runtime

USER_ERRORS = (UserError, FileNotFoundError, PermissionError)  # classes; is_user_error also knows full/read-only disks
EXIT_USER_ERROR = 2
EXIT_BUG = 1
EXIT_INTERRUPTED = 130  # the shell's code for a process ended by SIGINT (128 + 2)
INTERRUPTED = "interrupted; run the command again to finish (an earlier complete result is kept as it was)"
PREFECT_RUN_LOGGERS = ("prefect.task_runs", "prefect.flow_runs")

__all__ = [
    "EXIT_BUG",
    "EXIT_INTERRUPTED",
    "EXIT_USER_ERROR",
    "INTERRUPTED",
    "USER_ERRORS",
    "UserErrorLogFilter",
    "guarded",
    "is_user_error",
    "run_cli",
    "run_flows",
    "user_message",
]


class UserErrorLogFilter(logging.Filter):
    """Log records of a user error keep their one-line message and lose the traceback (the report is the message)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and is_user_error(exc):
            record.exc_info, record.exc_text = None, None
        return True


def quiet_user_errors() -> None:
    """Install :class:`UserErrorLogFilter` on Prefect's run loggers (once per process; every flow module calls it)."""
    for name in PREFECT_RUN_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, UserErrorLogFilter) for f in logger.filters):
            logger.addFilter(UserErrorLogFilter())


quiet_user_errors()


def run_cli(config_name: str, argv: list[str], run: Callable[[Any], None]) -> int:
    """Compose ``conf/<config_name>`` from ``argv`` once and ``run`` it, unless ``--help``/``--cfg`` was asked for."""
    from flows.config import load_config, print_config

    usage = (
        f"usage: python -m flows.{config_name} [key=value ...]   (Hydra overrides; --cfg [job] prints the "
        "config; -m a=x,y runs one job per combination)"
    )
    flags, overrides = split_flags(argv)
    if "help" in flags:
        print(usage)
        return 0
    if "unknown" in flags:
        print(f"error: unknown option {flags['unknown']}; {usage.removeprefix('usage: ')}", file=sys.stderr)
        return EXIT_USER_ERROR
    if "multirun" in flags:
        from flows.sweep import multirun

        code = 0

        def sweep() -> None:
            nonlocal code
            with prefect_runtime():  # one API for all the jobs; each job's run_flows reports a PREFECT_API_URL fault
                code = multirun(config_name, overrides, lambda cfg: run_flows(run, cfg))

        return guarded(sweep) or code
    if "cfg" in flags:
        return guarded(lambda: print_config(config_name, [*flags["cfg"], *overrides]))
    return guarded(lambda: run_flows(run, load_config(config_name, overrides)))


def split_flags(argv: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Hydra's command-line flags, wherever they stand (``scene=x --cfg job`` as ``--cfg job scene=x``), and the
    overrides: ``help``, ``multirun``, ``cfg`` (its ``job``/``all``/``hydra`` word, if any), ``unknown``."""
    flags: dict[str, Any] = {}
    overrides: list[str] = []
    previous = ""
    for word in argv:
        if word in ("-h", "--help"):
            flags["help"] = True
        elif word in ("-m", "--multirun"):
            flags["multirun"] = True
        elif word in ("-c", "--cfg"):
            flags["cfg"] = []
        elif previous in ("-c", "--cfg") and word in ("job", "all", "hydra"):
            flags["cfg"] = [word]
        elif word.startswith("-") and "=" not in word:
            flags.setdefault("unknown", word)
        else:
            overrides.append(word)
        previous = word
    return flags, overrides


def run_flows(run: Callable[[Any], None], cfg: Any) -> None:
    """``run(cfg)``, whose flow runs report to this process's Prefect API (:mod:`flows.runtime`): every command
    line entry goes through here."""
    with prefect_runtime():
        run(cfg)


def guarded(run: Callable[[], Any]) -> int:
    """Run ``run``; a user error prints one line and exits 2, anything else prints one line and exits 1. Ctrl-C
    prints one line and ends the process with 130 (SystemExit: a sweep must not go on to its next job)."""
    try:
        run()
    except KeyboardInterrupt:
        # Prefect has already marked the runs Crashed and the stores keep their last complete result; the
        # traceback would only show where the process happened to be.
        print(f"error: {INTERRUPTED}", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None
    except Exception as exc:  # noqa: BLE001 - every failure ends as one line; Prefect's log has a bug's traceback
        print(f"error: {user_message(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR if is_user_error(exc) else EXIT_BUG
    return 0
