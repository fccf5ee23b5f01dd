"""A real S3 endpoint for tests: moto's server on 127.0.0.1, reached through s3fs."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def free_port() -> int:
    """An unused TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def moto_s3(bucket: str = "da3-test") -> Iterator[dict[str, Any]]:
    """Start moto on loopback, create ``bucket``, yield s3fs storage options; stop on exit."""
    with moto_server(bucket) as (_, options):
        yield options


@contextmanager
def moto_server(bucket: str = "da3-test") -> Iterator[tuple[Any, dict[str, Any]]]:
    """:func:`moto_s3` that also yields the server, for tests that stop it while a run is using it."""
    import s3fs
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    options = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}"}}
    try:
        try:
            s3fs.S3FileSystem(**options).mkdir(bucket)
        except FileExistsError:  # moto keeps one in-memory backend per process: an earlier server made it
            pass
        yield server, options
    finally:
        server.stop()
