"""Remote inputs (``s3://`` and other fsspec URLs): list them and copy them into a local cache once."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import fsspec


def is_remote(path: str) -> bool:
    """True for fsspec URLs other than local files (``s3://``, ``gs://``, ``memory://`` ...)."""
    return "://" in path and not path.startswith("file://")


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
    listing = sorted((p, info.get("size"), str(info.get("ETag", info.get("mtime", ""))))
                     for p, info in fs.find(path, detail=True, withdirs=False).items())
    key = hashlib.sha256(repr((url, listing)).encode()).hexdigest()[:16]
    target = cache_root() / key / Path(path.rstrip("/")).name
    done = target.parent / ".complete"
    if not done.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
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
