"""Stage progress of a running flow, for callers that display it (the backend's job records, the Gradio app).

The caller sets a callback in a context variable around the flow call; the flow reports stages into it.
A context variable (not a global) keeps concurrent flows in one process from seeing each other's callbacks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar

ProgressCallback = Callable[[float, str], None]
_CALLBACK: ContextVar[ProgressCallback | None] = ContextVar("da3_progress", default=None)


def report(fraction: float, message: str) -> None:
    """Tell the current caller (if any) that the flow reached ``fraction`` (0..1) of its work."""
    callback = _CALLBACK.get()
    if callback is not None:
        callback(fraction, message)


@contextlib.contextmanager
def progress_to(callback: ProgressCallback) -> Iterator[None]:
    """Route ``report`` calls made in this context (and the flows it runs) to ``callback``."""
    token = _CALLBACK.set(callback)
    try:
        yield
    finally:
        _CALLBACK.reset(token)
