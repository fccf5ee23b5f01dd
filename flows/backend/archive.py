"""Tar archives between the backend and its clients: packing a file or folder, and extracting without escapes.

Archives are uncompressed (images and videos are compressed already, and a plain tar cannot be a
decompression bomb: its extracted size is bounded by the upload limit).
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path, PurePosixPath
from typing import BinaryIO


class ArchiveError(ValueError):
    """An archive that is malformed or tries to write outside its destination."""


def pack(path: str | Path, out: BinaryIO, arcname: str | None = None) -> None:
    """Write ``path`` (a file or a folder, recursively) into ``out`` as a tar under ``arcname`` (default: its name)."""
    path = Path(path)
    with tarfile.open(fileobj=out, mode="w|") as tar:
        # Symlinks inside the input are followed (dereference) so the receiver never has to accept links.
        tar.dereference = True
        tar.add(path, arcname=arcname or path.name, recursive=True)


def pack_contents(folder: str | Path, out: BinaryIO) -> None:
    """Write the entries of ``folder`` (not the folder itself) into ``out`` as a tar, sorted for stable order."""
    folder = Path(folder)
    with tarfile.open(fileobj=out, mode="w|") as tar:
        tar.dereference = True
        for child in sorted(folder.iterdir()):
            tar.add(child, arcname=child.name, recursive=True)


def _check_member(member: tarfile.TarInfo) -> None:
    """Refuse absolute names, ``..`` components, links and special files."""
    name = member.name
    parts = PurePosixPath(name).parts
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts or "\\" in name:
        raise ArchiveError(f"archive entry {name!r} points outside the destination")
    if not (member.isfile() or member.isdir()):
        raise ArchiveError(f"archive entry {name!r} is a link or special file; only files and folders are accepted")


def safe_extract(archive: str | Path | BinaryIO, dest: str | Path) -> list[str]:
    """Extract a tar into ``dest`` after checking every entry; returns the top-level names it held."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    try:
        tar = tarfile.open(archive, mode="r:") if isinstance(archive, (str, os.PathLike)) else \
            tarfile.open(fileobj=archive, mode="r:")
    except tarfile.TarError as exc:
        raise ArchiveError(f"not an uncompressed tar archive: {exc}") from exc
    try:
        with tar:
            members = tar.getmembers()
            for member in members:
                _check_member(member)
                if not (root / member.name).resolve().is_relative_to(root):
                    raise ArchiveError(f"archive entry {member.name!r} points outside the destination")
            # The "data" filter re-checks the same rules inside tarfile (belt and braces), drops odd permissions.
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, EOFError) as exc:  # truncated or corrupt after a valid header
        raise ArchiveError(f"corrupt tar archive: {exc}") from exc
    return sorted({PurePosixPath(m.name).parts[0] for m in members if PurePosixPath(m.name).parts})
