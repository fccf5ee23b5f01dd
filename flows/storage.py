"""Fail fast on storage that cannot be written, before any work starts."""

from __future__ import annotations

import uuid
from typing import Any

import fsspec

from da3core.io.remote import is_remote
from da3core.store import StoreError

# Short connect timeouts and no retries for the probe, so an unreachable endpoint fails in seconds.
_S3_PROBE = {"config_kwargs": {"connect_timeout": 3, "read_timeout": 5, "retries": {"max_attempts": 1}}}


def check_storage(root: str, storage_options: dict[str, Any], key: str = "storage.root") -> None:
    """Write and delete a probe object under ``root``; raise StoreError naming config ``key`` otherwise."""
    options = dict(storage_options)
    if root.startswith("s3://"):
        options = {**_S3_PROBE, **options}
    probe = f"{root.rstrip('/')}/.da3-write-probe-{uuid.uuid4().hex[:8]}"
    try:
        fs, path = fsspec.core.url_to_fs(probe, **options)
        if not is_remote(root):
            fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        fs.pipe_file(path, b"ok")
        fs.rm_file(path)
    except Exception as exc:  # botocore/aiohttp/OS errors vary by backend; all mean "cannot write here"
        reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise StoreError(f"cannot write to {key}={root}: {reason}. Check the path, the endpoint "
                         "(storage.options.client_kwargs.endpoint_url) and the credentials") from exc
