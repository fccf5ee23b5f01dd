"""The Prefect API that a process's flow runs report to, owned by that process.

With ``PREFECT_API_URL`` set (``prefect server start``, Prefect Cloud) flow runs report there and nothing is
started. Without it Prefect 3 would start a temporary API server in a subprocess for each process: seconds before
the first flow run and again at exit, and left running when the process is killed. :func:`prefect_runtime`
instead serves the API from a thread of this process for as long as the block lasts, on the same database
(``$PREFECT_HOME``, so a later ``prefect server start`` shows the runs): it ends with the process however the
process ends, and nothing of it can be left behind.
"""

from __future__ import annotations

import atexit
import gc
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from da3core.errors import UserError

if TYPE_CHECKING:
    from prefect.context import SettingsContext

_STARTUP_TIMEOUT_S = 120.0
_DRAIN_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 5.0
_LOCK = threading.Lock()
_users = 0  # blocks inside prefect_runtime() that use the in-process API
_api: _InProcessApi | None = None
_exit_hooked = False
_quiet = False  # Prefect's process-wide settings have heartbeats off (unless the user set them)


class PrefectApiError(UserError):
    """The configured Prefect API (PREFECT_API_URL) is malformed or does not answer."""


_API_OWN = "runs then use an API of their own"


def _check_api_url(url: str) -> None:
    """Refuse a configured API URL that no HTTP client can use, before any work (Prefect fails only on first use)."""
    if not re.match(r"https?://[^/\s]", url, flags=re.IGNORECASE):
        raise PrefectApiError(
            f"PREFECT_API_URL={url} is not an http(s) URL; unset it ({_API_OWN}) or point it at a running server's "
            "API (prefect server start serves http://127.0.0.1:4200/api)"
        )


def _api_unreachable(error: BaseException) -> bool:
    """Whether ``error`` (or what it wraps) is Prefect's client failing to reach its API."""
    seen: set[int] = set()
    exc: BaseException | None = error
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if "Failed to reach API at" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


@contextmanager
def prefect_runtime() -> Iterator[str]:
    """For flow runs started in this block: the configured Prefect API, else one served in-process until the last
    such block ends; Prefect's flow-run heartbeats off unless asked for, in this thread and in threads without
    settings of their own (a service's worker, Gradio's handlers).

    Heartbeats (``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``) only feed zombie-run automations, and stopping their
    thread holds the end of every flow run for up to a second. Yields the API URL.
    """
    from prefect.settings import temporary_settings

    url, owned = _acquire()
    try:
        if _has_own_settings():
            with temporary_settings(updates={"api.url": url}, set_defaults={"flows.heartbeat_frequency": None}):
                yield url
        else:  # Prefect's process-wide settings already say all of it (each copy of them takes 0.1 s)
            yield url
    except Exception as exc:
        if owned or not _api_unreachable(exc):
            raise
        # The user's server (or a typo in its URL), not storage or a bug: name the setting and the fix.
        raise PrefectApiError(
            f"cannot reach the Prefect API at PREFECT_API_URL={url}; start that server (prefect server start) "
            f"or unset PREFECT_API_URL ({_API_OWN})"
        ) from exc
    finally:
        if owned:
            _release()


def _acquire() -> tuple[str, bool]:
    """(API URL, whether it is the in-process API this block must release)."""
    global _api, _users, _exit_hooked
    from filelock import FileLock
    from prefect.settings import get_current_settings

    with _LOCK:
        if not _exit_hooked:
            # The objects alive when the first flow starts (modules and classes of torch, Prefect and the rest:
            # hundreds of thousands) stay until the process ends. Frozen, they are skipped by every later full
            # collection, which would otherwise scan them all (0.1-0.3 s each; Prefect's create_app runs one), and
            # so are the objects made after, by the collections of the interpreter's teardown (the OS frees the
            # memory anyway).
            gc.freeze()
            atexit.register(gc.freeze)
            _exit_hooked = True
        if _api is None:
            configured = get_current_settings().api.url
            if configured:
                _check_api_url(configured)
                if not _quiet:
                    _install_root()
                return configured, False
            # Processes starting together on a fresh $PREFECT_HOME would both create its database (one fails on
            # "already exists"): the starts take turns, the runs do not.
            home = get_current_settings().home
            home.mkdir(parents=True, exist_ok=True)
            with FileLock(home / ".da3-api-start.lock", timeout=_STARTUP_TIMEOUT_S):
                _api = _InProcessApi()
        _users += 1
        return _api.url, True


def _release() -> None:
    global _api, _users
    with _LOCK:
        _users -= 1
        if _users == 0 and _api is not None:
            _api.stop()
            _api = None


class _InProcessApi:
    """Prefect's API (ephemeral mode: no UI, only the services flow runs need) on a free loopback port, served by
    uvicorn in a daemon thread; published to this process (all threads) and its children as PREFECT_API_URL."""

    def __init__(self) -> None:
        import uvicorn
        from prefect.context import SettingsContext, get_settings_context
        from prefect.server.api.server import create_app

        # IPPROTO_TCP, not the default 0: asyncio turns Nagle's algorithm off only on connections whose socket
        # says TCP, and with it on each response after a connection's first waits out the client's delayed ACK
        # (44 ms per API call, about ten per flow run).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}/api"
        self.server = uvicorn.Server(
            uvicorn.Config(
                create_app(ephemeral=True, final=True),
                log_config=None,
                access_log=False,
                log_level="error",
                lifespan="on",
                timeout_graceful_shutdown=1,
            )
        )
        # Unlike `prefect server start`, it registers no block types: listing them imports every installed Prefect
        # collection (prefect-dask: dask.distributed, 0.2 s), and flow runs do not need them (the UI's blocks page
        # does, and `prefect server start` registers them there). One copy of Prefect's process-wide settings says
        # that, the URL and the heartbeats, for the server and every thread without settings of its own.
        updates: dict[Any, Any] = {
            "api.url": self.url,
            "server.register_blocks_on_start": False,
            "server.memoize_block_auto_registration": False,
        }
        self.previous_root = _install_root(updates)
        serving = get_settings_context()
        if _has_own_settings():  # this thread's own settings (a PREFECT_HOME of its own, say) are the server's
            serving = SettingsContext(profile=serving.profile, settings=serving.settings.copy_with_update(updates))
        self.thread = threading.Thread(
            target=self._serve, args=(serving, sock), name="prefect-api", daemon=True
        )  # a daemon: never holds up the exit
        self.thread.start()
        deadline = time.monotonic() + _STARTUP_TIMEOUT_S
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                _restore_root(self.previous_root)
                raise RuntimeError(
                    "the in-process Prefect API did not start; set PREFECT_API_URL to a running "
                    "Prefect server (prefect server start) instead"
                )
            time.sleep(0.01)
        self.previous_url = os.environ.get("PREFECT_API_URL")
        os.environ["PREFECT_API_URL"] = self.url  # for child processes (Dask workers, subprocesses)

    def _serve(self, settings: SettingsContext, sock: socket.socket) -> None:
        """Run the server in this thread with ``settings`` (a Prefect settings context; the lifespan reads them)."""
        with settings:
            self.server.run(sockets=[sock])

    def stop(self) -> None:
        """Send what Prefect's log and event workers hold, then stop the server through its lifespan (its services
        write their last batches) and withdraw the URL."""
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        for worker in (APILogWorker, EventsWorker):
            worker.drain_all(timeout=_DRAIN_TIMEOUT_S, at_exit=False)
        self.server.should_exit = True
        self.thread.join(_STOP_TIMEOUT_S)
        if self.previous_url is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = self.previous_url
        _restore_root(self.previous_root)


def _has_own_settings() -> bool:
    """Whether this thread is inside a Prefect settings context of its own (not the process-wide one)."""
    import prefect.context

    return prefect.context.get_settings_context() is not prefect.context.GLOBAL_SETTINGS_CONTEXT


def _install_root(updates: dict[Any, Any] | None = None) -> SettingsContext:
    """Prefect's process-wide settings with ``updates`` and heartbeats off unless the user set them (environment,
    profile); returns the ones they replace."""
    global _quiet
    import prefect.context

    root = prefect.context.GLOBAL_SETTINGS_CONTEXT
    settings = root.settings.copy_with_update(updates=updates, set_defaults={"flows.heartbeat_frequency": None})
    prefect.context.GLOBAL_SETTINGS_CONTEXT = prefect.context.SettingsContext(profile=root.profile, settings=settings)
    _quiet = True
    return root


def _restore_root(root: SettingsContext) -> None:
    """Prefect's process-wide settings back to ``root`` (whose heartbeats a later block turns off again)."""
    global _quiet
    import prefect.context

    prefect.context.GLOBAL_SETTINGS_CONTEXT = root
    _quiet = False
