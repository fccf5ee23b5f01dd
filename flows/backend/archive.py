"""Tar archives between the backend and its clients: packing a file or folder, and extracting without escapes.

Archives are uncompressed (images and videos are compressed already). A plain tar's extracted size is then
bounded by its own size, except for sparse members (a few KiB of header describing GiB of holes): those are
refused, and the receiver may cap the total bytes and the member count as well.
"""

from __future__ import annotations

import math
import os
import tarfile
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from da3core.errors import UserError


class ArchiveError(UserError, ValueError):
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


_SPECIAL = {
    tarfile.SYMTYPE: "symbolic link",
    tarfile.LNKTYPE: "hard link",
    tarfile.CHRTYPE: "character device",
    tarfile.BLKTYPE: "block device",
    tarfile.FIFOTYPE: "fifo",
}


MAX_DEPTH = 64  # folders in one entry's name; deeper ones exhaust tarfile's recursion, and no scene needs them


def _check_member(member: tarfile.TarInfo, previous_offset: int) -> None:
    """Refuse absolute names, ``..`` components, names that are not text, sparse files, links, special files and
    headers that point back into the archive."""
    name = member.name
    parts = PurePosixPath(name).parts
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts or "\\" in name:
        raise ArchiveError(f"archive entry {name!r} points outside the destination")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # bytes tarfile could only decode as surrogates
        raise ArchiveError(f"archive entry {name!r} is not valid UTF-8; rename it") from None
    if "\x00" in name or len(parts) > MAX_DEPTH:
        raise ArchiveError(f"archive entry {name[:200]!r} holds a NUL or is nested over {MAX_DEPTH} folders deep")
    # A negative size (base-256 headers allow one) moves the reader back over data already counted: the same
    # bytes would be extracted again and again past the size cap.
    if member.size < 0 or member.offset_data <= previous_offset:
        raise ArchiveError(f"archive entry {name!r} has a corrupt header (negative size or overlapping data)")
    if not math.isfinite(member.mtime) or not 0 <= member.mtime < 2**33:
        raise ArchiveError(f"archive entry {name!r} has an invalid modification time")
    if member.issparse():
        raise ArchiveError(f"archive entry {name!r} is a sparse file; pack it without --sparse")
    if not (member.isreg() or member.isdir()):
        kind = _SPECIAL.get(member.type, "special file")
        raise ArchiveError(f"archive entry {name!r} is a {kind}; only files and folders are accepted")


def safe_extract(
    archive: str | Path | BinaryIO, dest: str | Path, max_bytes: int | None = None, max_files: int | None = None
) -> list[str]:
    """Extract a tar into ``dest`` after checking every entry; returns the top-level names it held.

    ``max_bytes`` caps the total size of the files and ``max_files`` the number of entries; both are checked
    on the headers, before anything is written.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    try:
        tar = (
            tarfile.open(archive, mode="r:")
            if isinstance(archive, (str, os.PathLike))
            else tarfile.open(fileobj=archive, mode="r:")
        )
    except (tarfile.TarError, ValueError) as exc:  # ValueError: a malformed pax or sparse header
        raise ArchiveError(f"not an uncompressed tar archive: {exc}") from exc
    members: list[tarfile.TarInfo] = []
    try:
        with tar:
            total, offset = 0, -1
            for member in tar:  # header by header: a refusal stops reading the rest
                _check_member(member, offset)
                offset = member.offset_data
                if not (root / member.name).resolve().is_relative_to(root):
                    raise ArchiveError(f"archive entry {member.name!r} points outside the destination")
                members.append(member)
                total += member.size if member.isreg() else 0
                if max_files is not None and len(members) > max_files:
                    raise ArchiveError(f"archive holds more than {max_files} entries, the most accepted here")
                if max_bytes is not None and total > max_bytes:
                    raise ArchiveError(f"archive expands to more than {max_bytes} bytes, the most accepted here")
            # The "data" filter re-checks the same rules inside tarfile (belt and braces), drops odd permissions.
            tar.extractall(dest, members=members, filter="data")
    except ArchiveError:
        raise
    except tarfile.FilterError as exc:
        raise ArchiveError(f"archive entry refused: {exc}") from exc
    except (tarfile.TarError, EOFError, ValueError) as exc:  # truncated or corrupt after a valid header
        raise ArchiveError(f"corrupt tar archive: {exc}") from exc
    except OSError as exc:  # e.g. a file and a folder of the same name, or a name too long for the filesystem
        raise ArchiveError(f"cannot extract the archive: {exc.strerror or exc}") from exc
    return sorted({PurePosixPath(m.name).parts[0] for m in members if PurePosixPath(m.name).parts})
