"""Integration fixtures: a moto S3 server on loopback."""

from __future__ import annotations

import pytest

from s3server import moto_s3


@pytest.fixture(scope="session")
def s3_options():
    """s3fs storage options for a moto server with bucket ``da3-test`` (alive for the whole session)."""
    with moto_s3() as options:
        yield options
