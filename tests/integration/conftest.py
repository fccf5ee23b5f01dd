"""Integration fixtures: Prefect's API served in this process, a moto S3 server on loopback."""

from __future__ import annotations

import pytest
from s3server import moto_s3


@pytest.fixture(scope="session", autouse=True)
def prefect_api():
    """The flow runs of the tests in this process report to an API in a thread of it (as the command line's do):
    no temporary server process that a killed test session would leave behind. Yields its URL."""
    from flows.runtime import prefect_runtime

    with prefect_runtime() as url:
        yield url


@pytest.fixture(scope="session")
def s3_options():
    """s3fs storage options for a moto server with bucket ``da3-test`` (alive for the whole session)."""
    with moto_s3() as options:
        yield options
