"""Where data lives: local paths and fsspec URLs (``s3://``...) alike, for reading inputs and writing results.

One home for the questions every layer asks: is a location remote (:func:`is_remote`), how to join onto it
(:func:`join_url`), can we write there (:func:`check_writable`, a probe object written and deleted), is there room
(:func:`check_free_space`), and how to read a remote input (:func:`localize` copies it into a local cache once;
:func:`list_children`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import fsspec

from da3core.errors import UserError

# Short connect timeouts and no retries for the probe, so an unreachable endpoint fails in seconds.
_S3_PROBE = {"config_kwargs": {"connect_timeout": 3, "read_timeout": 5, "retries": {"max_attempts": 1}}}


class StorageError(UserError, OSError):
    """A location that cannot be reached, read or written; the message names it and the setting to check."""


def is_remote(path: str) -> bool:
    """True for fsspec URLs other than local files (``s3://``, ``gs://``, ``memory://`` ...)."""
    return "://" in path and not path.startswith("file://")


def join_url(root: str, *parts: str) -> str:
    """Join path segments onto a local path or URL with forward slashes."""
    return "/".join([root.rstrip("/")] + [p.strip("/") for p in parts if p])


def check_writable(root: str, storage_options: dict[str, Any] | None = None, what: str = "storage.root") -> None:
    """Write and delete a probe object under ``root`` (creating a local folder, never a bucket); else StorageError.

    ``what`` names the setting the user should fix (``storage.root``, ``output_dir``, ``export_dir``).
    """
    options = dict(storage_options or {})
    if root.startswith("s3://"):
        options = {**_S3_PROBE, **options}
    probe = join_url(root, f".da3-write-probe-{uuid.uuid4().hex[:8]}")
    try:
        fs, path = fsspec.core.url_to_fs(probe, **options)
        if not is_remote(root):
            fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        fs.pipe_file(path, b"ok")
        fs.rm_file(path)
    except Exception as exc:  # botocore/aiohttp/OS errors vary by backend; all mean "cannot write here"
        reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise StorageError(
            f"cannot write to {what}={root}: {reason}; choose a writable {what} (for object storage "
            "check storage.options.client_kwargs.endpoint_url and the credentials)"
        ) from None


def check_free_space(root: str, needed_bytes: int, what: str = "storage.root") -> None:
    """StorageError when the local filesystem under ``root`` has less than ``needed_bytes`` free (remote: unknown)."""
    if is_remote(root):
        return
    existing = Path(root).expanduser().absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if free < needed_bytes:
        raise StorageError(
            f"not enough free space at {what}={root}: {free / 2**20:.1f} MiB free, this run needs at "
            f"least {needed_bytes / 2**20:.1f} MiB; free space there or choose another {what}"
        )


def cache_root() -> Path:
    """Where remote inputs are copied (``DA3_CACHE_DIR``, else ``~/.cache/da3pipe``)."""
    return Path(os.environ.get("DA3_CACHE_DIR", Path.home() / ".cache" / "da3pipe")) / "inputs"


def localize(url: str, storage_options: dict[str, Any] | None = None) -> Path:
    """A local copy of a remote file or folder (reused when its listing is unchanged); local paths pass through."""
    if not is_remote(url):
        return Path(url)
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    if not fs.exists(path):
        raise FileNotFoundError(f"input not found: {url}")
    listing = sorted(
        (p, info.get("size"), str(info.get("ETag", info.get("mtime", ""))))
        for p, info in fs.find(path, detail=True, withdirs=False).items()
    )
    key = hashlib.sha256(repr((url, listing)).encode()).hexdigest()[:16]
    target = cache_root() / key / Path(path.rstrip("/")).name
    done = target.parent / ".complete"
    if done.exists():
        return target
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    # Runs reading one input at once fetch it once: the others wait, then find it complete (a killed holder's lock
    # is freed by the kernel, and its partial copy is fetched again).
    with FileLock(target.parent / ".lock"):
        if not done.exists():
            if target.is_dir():
                shutil.rmtree(target)
            if fs.isdir(path):
                fs.get(path.rstrip("/") + "/", str(target), recursive=True)
            else:
                fs.get(path, str(target))
            done.touch()  # written last: a partial download is fetched again
    return target


def list_children(url: str, storage_options: dict[str, Any] | None = None) -> list[str]:
    """Immediate children of a local folder or remote prefix, as paths/URLs sorted by name."""
    if not is_remote(url):
        return [str(p) for p in sorted(Path(url).iterdir(), key=lambda p: p.name)]
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    protocol = url.split("://", 1)[0]
    return sorted(f"{protocol}://{p}" for p in fs.ls(path, detail=False) if p.rstrip("/") != path.rstrip("/"))
