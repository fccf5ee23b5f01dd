"""Where an export writes: a local folder or an fsspec URL, with every file published atomically.

Writers get a local path to write into (:meth:`ExportTarget.staged`); only a completed file is moved
(local: ``os.replace`` from a hidden temp name in the same folder) or uploaded (remote: one ``put`` of
the finished file, which S3 makes visible only once complete) to its final name. A crash therefore
never leaves a half-written file under a final name.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import fsspec

from da3core.io.storage import check_writable, is_remote


class ExportTarget:
    """One export directory (local path or ``s3://bucket/prefix``) that formats write files into."""

    def __init__(self, root: str | os.PathLike, storage_options: dict[str, Any] | None = None):
        self.root = str(root).rstrip("/")
        self.remote = is_remote(self.root)
        self.storage_options = dict(storage_options or {})
        if self.remote:
            self.fs, self._fs_root = fsspec.core.url_to_fs(self.root, **(storage_options or {}))
        else:
            self._local_root = Path(self.root.removeprefix("file://"))

    def url(self, relpath: str) -> str:
        """The final location of ``relpath`` (a local path or a URL), as returned to callers."""
        return f"{self.root}/{relpath}" if self.remote else str(self._local_root / relpath)

    def check_writable(self) -> None:
        """Create the root (locally) and prove a file can be written there; raise StorageError otherwise."""
        check_writable(self.root, self.storage_options, what="export_dir")

    @contextmanager
    def staged(self, relpath: str) -> Iterator[Path]:
        """Yield a local path to write ``relpath`` into; publish it under its final name on success."""
        final = Path(relpath)
        if self.remote:
            with tempfile.TemporaryDirectory(prefix="da3-export-") as tmp:
                local = Path(tmp) / final.name
                yield local
                self._upload(local, relpath)
            return
        dest = self._local_root / final
        dest.parent.mkdir(parents=True, exist_ok=True)
        # Same folder (so os.replace is atomic) and same suffix (libraries pick the format from it).
        local = dest.with_name(f".{final.stem}.tmp-{uuid.uuid4().hex[:8]}{final.suffix}")
        try:
            yield local
            os.replace(local, dest)
        finally:
            local.unlink(missing_ok=True)

    @contextmanager
    def staged_dir(self, reldir: str) -> Iterator[Path]:
        """Yield an empty local folder; on success publish each file written in it under ``reldir``."""
        parent = None
        if not self.remote:
            parent = self._local_root / reldir
            parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".da3-export-", dir=parent) as tmp:
            yield Path(tmp)
            for path in sorted(p for p in Path(tmp).rglob("*") if p.is_file()):
                rel = f"{reldir}/{path.relative_to(tmp).as_posix()}"
                if self.remote:
                    self._upload(path, rel)
                else:
                    (self._local_root / rel).parent.mkdir(parents=True, exist_ok=True)
                    os.replace(path, self._local_root / rel)

    def write_bytes(self, relpath: str, data: bytes) -> str:
        """Write ``data`` to ``relpath`` atomically; returns its final location."""
        with self.staged(relpath) as local:
            local.write_bytes(data)
        return self.url(relpath)

    def _upload(self, local: Path, relpath: str) -> None:
        self.fs.put_file(str(local), f"{self._fs_root}/{relpath}")
