"""Shared fixtures: synthetic scenes written as every input kind, and a quiet, serverless Prefect."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Prefect reads its settings at import: give the suite its own home, no analytics, and a startup
# timeout that survives a busy 2-core CI machine.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="da3-prefect-"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_TELEMETRY_ENABLE_RESOURCE_METRICS", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Prefect logs "Stopping temporary server" at exit, after pytest closed its capture streams.
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.pop("PREFECT_API_URL", None)

import pytest

from da3core.synthetic import (
    SyntheticCapture,
    make_capture,
    make_sequence,
    write_colmap,
    write_image_folder,
    write_video,
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Parity tests are slow too (they start the reference in its own venv); `gpu` tests skip cleanly without CUDA."""
    import torch

    skip = None if torch.cuda.is_available() else pytest.mark.skip(reason="needs CUDA (run on a GPU machine)")
    for item in items:
        if "parity" in item.keywords:
            item.add_marker(pytest.mark.slow)
        if skip is not None and "gpu" in item.keywords:
            item.add_marker(skip)


_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@pytest.fixture(autouse=True)
def _thread_settings_stay_put():
    """Dask's nanny exports OMP_NUM_THREADS=1 into this process; later subprocesses (flows, the oracle) would then
    compute on one thread and differ from in-process runs in the last bits. Each test gets the environment back."""
    before = {name: os.environ.get(name) for name in _THREAD_VARS}
    yield
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def capture() -> SyntheticCapture:
    """Eight 160x120 views of the seed-0 room."""
    return make_capture(n_views=8, width=160, height=120, seed=0)


@pytest.fixture(scope="session")
def image_folder(capture: SyntheticCapture, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The capture as a folder of PNGs."""
    folder = tmp_path_factory.mktemp("images")
    write_image_folder(capture, folder)
    return folder


@pytest.fixture(scope="session")
def colmap_dataset(capture: SyntheticCapture, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The capture as a COLMAP dataset: images/ and a binary model in sparse/0/."""
    root = tmp_path_factory.mktemp("colmap")
    write_colmap(capture, root)
    return root


@pytest.fixture(scope="session")
def video_capture() -> SyntheticCapture:
    """Sixty 160x120 frames sweeping 40 degrees, for video tests."""
    return make_capture(n_views=60, width=160, height=120, arc_deg=40.0, seed=1)


@pytest.fixture(scope="session")
def video_file(video_capture: SyntheticCapture, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The video capture encoded as a 30 fps H.264 mp4."""
    return write_video(video_capture, tmp_path_factory.mktemp("video") / "sweep.mp4", fps=30.0).path


@pytest.fixture(scope="session")
def loop_sequence() -> SyntheticCapture:
    """600 32x24 frames once round the room, back to the first pose (streaming tests)."""
    return make_sequence("loop", n_frames=600)


@pytest.fixture(scope="session")
def open_sequence() -> SyntheticCapture:
    """600 32x24 frames along an S-curve that never comes back (streaming tests)."""
    return make_sequence("open", n_frames=600)


@pytest.fixture(scope="session")
def bench_root(tmp_path_factory: pytest.TempPathFactory):
    """``bench_root(name)`` -> the folder of the DA3-BENCH miniature ``name``, written once per session on first use."""
    from da3core.synthetic import write_miniature

    root, written = tmp_path_factory.mktemp("benchmark_dataset"), {}

    def get(name: str) -> Path:
        if name not in written:
            written[name] = write_miniature(name, root)
        return written[name]

    return get
