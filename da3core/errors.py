"""The root of the user-error hierarchy: mistakes a user can fix, each reported as one line naming problem and fix.

Every layer raises its own subclass (``InputError``, ``VideoError``, ``StorageError``, ``WeightsError``,
``DeviceError``, ``StreamingInputError`` in the library; ``ConfigError`` and the CLI's and backend's refusals above
it). Entry points (:mod:`flows.errors`) print one ``error:`` line and exit 2 for these, and Prefect's run logs carry
them without a traceback; anything else is a bug: exit 1.
"""

from __future__ import annotations

import errno


class UserError(Exception):
    """A mistake the user can fix (input, config, weights, device, storage); the message says what and how."""


class DeviceError(UserError, RuntimeError):
    """A requested compute device that this machine does not have."""


# OS errors a user fixes (free space, a writable location, permissions), with the words the report uses.
_USER_ERRNOS = {
    errno.ENOSPC: ("no space left on the device", "free space there or write elsewhere"),
    errno.EDQUOT: ("disk quota exceeded", "free space there or write elsewhere"),
    errno.EROFS: ("read-only file system", "choose a writable location"),
    errno.EACCES: ("permission denied", "check the permissions or choose another location"),
    errno.EPERM: ("operation not permitted", "check the permissions or choose another location"),
}
# A storage server (S3 endpoint, NFS host) that stopped answering: the OS error names no file, the wrapping error
# (botocore's EndpointConnectionError, ...) names the endpoint, so the report quotes that one's first line.
_UNREACHABLE = ("storage endpoint unreachable", "check that the server runs and the endpoint is right, then run again")
_USER_ERRNOS.update(
    {
        code: _UNREACHABLE
        for code in (errno.ECONNREFUSED, errno.ECONNRESET, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ETIMEDOUT)
    }
)


def _os_cause(error: BaseException) -> OSError | None:
    """The first OSError with a user errno in ``error``'s cause/context chain (libraries wrap them)."""
    seen: set[int] = set()
    exc: BaseException | None = error
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _USER_ERRNOS:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


# botocore's errors for object storage reached without credentials (named, not imported: botocore is optional).
_NO_CREDENTIALS = ("NoCredentialsError", "PartialCredentialsError")
_CREDENTIALS_FIX = (
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or an AWS profile), or pass storage.options.key and "
    "storage.options.secret"
)


def _credentials_cause(error: BaseException) -> BaseException | None:
    """botocore's missing-credentials error in ``error``'s cause/context chain (s3fs and Prefect wrap it)."""
    seen: set[int] = set()
    exc: BaseException | None = error
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if type(exc).__name__ in _NO_CREDENTIALS and type(exc).__module__.startswith("botocore"):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def is_user_error(exc: BaseException) -> bool:
    """Whether ``exc`` is the user's to fix: a :class:`UserError`, a missing file, a full/read-only/forbidden disk,
    an unreachable storage server, or object storage without credentials."""
    return (
        isinstance(exc, (UserError, FileNotFoundError))
        or _os_cause(exc) is not None
        or _credentials_cause(exc) is not None
    )


def user_message(exc: BaseException) -> str:
    """One line for ``exc``: a user error's message (an OS error's reason, place and fix), else type and first line."""
    os_error = None if isinstance(exc, UserError) else _os_cause(exc)
    if os_error is not None and os_error.errno is not None:
        reason, fix = _USER_ERRNOS[os_error.errno]
        where = os_error.filename or ("the output location" if (reason, fix) != _UNREACHABLE else _first_line(exc))
        return f"{reason}: {where}; {fix}"
    credentials = None if isinstance(exc, UserError) else _credentials_cause(exc)
    if credentials is not None:
        return f"no credentials for object storage ({_first_line(credentials)}); {_CREDENTIALS_FIX}"
    text = _first_line(exc)
    if isinstance(exc, (UserError, FileNotFoundError)):
        return text or exc.__class__.__name__
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else ""
