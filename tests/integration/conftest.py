"""Integration fixtures: Prefect's API served in this process, a moto S3 server on loopback, a small scene."""

from __future__ import annotations

from pathlib import Path

import pytest
from s3server import moto_s3

from da3core.synthetic import make_capture, write_image_folder


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


@pytest.fixture()
def room(tmp_path) -> Path:
    """Four small views in a folder named ``room`` (under ``tmp_path / "in"``, apart from any output)."""
    folder = tmp_path / "in" / "room"
    write_image_folder(make_capture(4, 64, 48, seed=5), folder)
    return folder
