"""Tar headers that lie: each is refused by ``safe_extract`` with one line, before more than the cap is written.

The archives are built byte by byte (tarfile writes none of these), as an attacker would.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from flows.backend.archive import MAX_DEPTH, ArchiveError, safe_extract


def _header(name: bytes, size_field: bytes, kind: bytes = b"0") -> bytes:
    """A 512-byte ustar header with a raw 12-byte size field."""
    header = bytearray(512)
    header[: len(name)] = name
    header[100:108], header[108:116], header[116:124] = b"0000644\0", b"0000000\0", b"0000000\0"
    header[124:136], header[136:148], header[156:157] = size_field, b"00000000000\0", kind
    header[257:265] = b"ustar\x0000"
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header)


def _octal(size: int) -> bytes:
    return b"%011o\0" % size


def _base256(size: int) -> bytes:
    """GNU base-256 size field; negative values are representable, which is the point."""
    return bytes([0xFF if size < 0 else 0x80]) + (size % (1 << 88)).to_bytes(11, "big")


def _overlap_bomb(file_size: int, copies: int) -> bytes:
    """``copies`` members of ``file_size`` bytes that share one stretch of data: after each, a member with a
    negative size sends the reader back to the next header. Header sizes sum to ``file_size`` plus nothing."""
    end = file_size + 512
    data = bytearray(end + 1024 * copies + 4096)
    for i in range(copies):
        data[1024 * i : 1024 * i + 512] = _header(b"s/f%04d.bin" % i, _octal(file_size))
        if i < copies - 1:
            data[end + 1024 * i : end + 1024 * i + 512] = _header(b"s/n%04d.bin" % i, _base256(512 - end))
    return bytes(data)


def _pax(records: dict[str, bytes], name: bytes = b"s/a.png", payload: bytes = b"x") -> bytes:
    body = b""
    for key, value in records.items():
        line = b" %s=%s\n" % (key.encode(), value)
        total = len(line) + len(str(len(line)))
        total += len(str(total)) - len(str(len(line)))  # the length field counts its own digits
        body += str(total).encode() + line
    pad = lambda b: b + b"\0" * (-len(b) % 512)  # noqa: E731
    return (
        _header(b"././@PaxHeader", _octal(len(body)), b"x")
        + pad(body)
        + _header(name, _octal(len(payload)))
        + pad(payload)
        + b"\0" * 1024
    )


def _disk_bytes(folder: Path) -> int:
    return int(subprocess.run(["du", "-sb", str(folder)], capture_output=True, text=True).stdout.split()[0])


def test_overlapping_members_cannot_write_past_the_size_cap(tmp_path):
    """Six 1 MiB members on the same 1 MiB of data: extracted they would be 6 MiB under a 2 MiB cap."""
    with pytest.raises(ArchiveError, match="corrupt header"):
        safe_extract(io.BytesIO(_overlap_bomb(1 << 20, 6)), tmp_path / "out", max_bytes=2 << 20, max_files=100)
    assert _disk_bytes(tmp_path / "out") < 1 << 20


def test_a_member_looping_back_to_itself_is_refused(tmp_path):
    image = b"\x89PNG" + b"\0" * 100
    padded = image + b"\0" * (-len(image) % 512)
    looped = _header(b"s/a.png", _octal(len(image))) + padded + _header(b"s/b.png", _base256(-(len(padded) + 1024)))
    with pytest.raises(ArchiveError, match="corrupt header"):
        safe_extract(io.BytesIO(looped + b"\0" * 1024), tmp_path / "out", max_files=1000)


@pytest.mark.parametrize(
    ("records", "name", "fragment"),
    [
        ({"path": b"s/a\0b.png"}, b"s/a.png", "NUL"),
        ({}, b"s/sc\xffene.png", "not valid UTF-8"),
        ({"mtime": b"nan"}, b"s/a.png", "modification time"),
        ({"mtime": b"1e300"}, b"s/a.png", "modification time"),
        ({"path": b"s/" + b"d/" * MAX_DEPTH + b"a.png"}, b"s/a.png", "folders deep"),
        ({"GNU.sparse.major": b"1", "GNU.sparse.minor": b"0", "GNU.sparse.map": b"x"}, b"s/a.png", "tar"),
    ],
    ids=["nul", "not-utf8", "mtime-nan", "mtime-huge", "deep", "bad-sparse"],
)
def test_headers_tarfile_cannot_extract_are_one_line_refusals(tmp_path, records, name, fragment):
    with pytest.raises(ArchiveError, match=fragment) as refused:
        safe_extract(io.BytesIO(_pax(records, name)), tmp_path / "out")
    assert "\n" not in str(refused.value)
    assert not any((tmp_path / "out").rglob("*.png"))


def test_a_well_formed_pax_archive_still_extracts(tmp_path):
    """The builder above is right: the same archive with ordinary records extracts."""
    archive = _pax({"mtime": b"1700000000.5", "path": b"s/\xc3\xa9t\xc3\xa9.png"})
    assert safe_extract(io.BytesIO(archive), tmp_path / "out") == ["s"]
    assert (tmp_path / "out" / "s" / "été.png").read_bytes() == b"x"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        assert tar.getnames() == ["s/été.png"]
