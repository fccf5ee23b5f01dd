"""The streaming reconstruct flow end to end through Prefect.

Against exact ground truth (the test predictor over 600-frame synthetic paths written as PNGs, ATE through evo):
noise-free trajectories, and loop closure against drift. Against the normal mode: one chunk gives the same arrays.
Against real processes: a run SIGKILLed at a chunk boundary or inside a chunk resumes without recomputing finished
chunks. The real model (seeded weights) on a video, one-line refusals, and chunks spread over two Dask workers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import psutil
import pycolmap
import pytest
import trimesh
import zarr
from live import kill_group
from paths import REPO_ROOT
from PIL import Image
from trajectory_error import ate_rmse

from da3core.store import SceneStore
from da3core.streaming.chunk_cache import ChunkCache
from da3core.synthetic import make_capture, make_sequence, write_image_folder, write_video
from flows.config import load_config
from flows.reconstruct import main, reconstruct

FAST = ["model=da3-small", "model.weights=random", "processing.process_res=56"]
STREAM = ["model=da3-small", "streaming.enabled=true", "streaming.chunk_size=60", "streaming.overlap=30"]
NOISE = [
    "streaming.synthetic.seed=3",
    "streaming.synthetic.drift=1e-3",
    "streaming.synthetic.pose_noise=2e-3",
    "streaming.synthetic.depth_noise=0.01",
]
POINTS = 20_000  # point budget of the exports here (the 600 frames have 460,800 pixels)
KILLER = REPO_ROOT / "tests" / "store_scripts" / "kill_streaming.py"


@pytest.fixture(scope="module")
def sequences(loop_sequence, open_sequence, tmp_path_factory) -> Path:
    """The two 600-frame paths as folders of PNGs (what the test predictor checks every decoded view against)."""
    root = tmp_path_factory.mktemp("sequences")
    write_image_folder(loop_sequence, root / "loop")
    write_image_folder(open_sequence, root / "open")
    return root


@pytest.fixture(scope="module")
def walk_video(tmp_path_factory) -> Path:
    """48 frames of 64x48 sweeping 90 degrees round the room, 30 fps."""
    capture = make_capture(n_views=48, width=64, height=48, arc_deg=90.0, seed=2)
    return write_video(capture, tmp_path_factory.mktemp("walk") / "walk.mp4", fps=30.0).path


def _group(result) -> zarr.Group:
    return zarr.open_group(result.store_url, mode="r")


@pytest.mark.slow
@pytest.mark.parametrize("path", ["loop", "open"])
def test_noise_free_chunks_give_the_true_trajectory_and_exports_cover_every_frame(
    path, sequences, loop_sequence, open_sequence, tmp_path
):
    seq = loop_sequence if path == "loop" else open_sequence
    result = reconstruct(
        load_config(
            "reconstruct",
            [
                f"scene={sequences / path}",
                f"storage.root={tmp_path}",
                *STREAM,
                "streaming.loop_closure=true",
                f"streaming.predictor=synthetic:{path}",
                "export=glb+colmap",
                f"+exporters.glb.num_max_points={POINTS}",
                f"+exporters.colmap.num_max_points={POINTS}",
            ],
        )
    )
    g = _group(result)
    assert g["depth"].shape == (600, 24, 32)
    np.testing.assert_array_equal(g["frame"][...], np.arange(600))
    np.testing.assert_array_equal(g["images"][...], seq.images)
    ate, length, scale = ate_rmse(seq.extrinsics, g["extrinsics"][...])
    assert ate <= 1e-4 * length, f"ATE {ate:.2e} over a {length:.1f} m path"
    np.testing.assert_allclose(g["depth"][...] * scale, seq.depth, rtol=1e-4)  # depth scaled with the cameras
    stage = g.attrs["stages"]["streaming"]
    assert len(stage["chunks"]) == 19 and not any(c["reused"] for c in stage["chunks"])
    assert stage["loops"] == ([[0, 18]] if path == "loop" else [])  # the loop's revisit, and nothing on the open path

    out = tmp_path / path
    model = pycolmap.Reconstruction(str(out / "sparse" / "0"))
    assert model.num_images() == 600 and 0 < model.num_points3D() <= POINTS
    for image in model.images.values():
        view = int(image.name.split("_")[1].split(".")[0])
        np.testing.assert_allclose(image.cam_from_world().matrix(), g["extrinsics"][view], atol=1e-4)
    glb = trimesh.load(out / "scene.glb")
    assert 0 < len(glb.geometry["points"].vertices) <= POINTS and "cameras" in glb.geometry
    assert len(list((out / "depth_vis").glob("*.jpg"))) == 600
    assert not (out / "scene.zarr.chunks").exists(), "the chunk cache is deleted once the result is in place"


@pytest.mark.slow
def test_loop_closure_at_least_halves_the_drift_through_the_flow(sequences, loop_sequence, tmp_path):
    ate = {}
    for closure in (False, True):
        result = reconstruct(
            load_config(
                "reconstruct",
                [
                    f"scene={sequences / 'loop'}",
                    f"storage.root={tmp_path / str(closure)}",
                    *STREAM,
                    *NOISE,
                    "streaming.predictor=synthetic:loop",
                    f"streaming.loop_closure={closure}",
                    "export=mini_npz",
                ],
            )
        )
        ate[closure], length, _ = ate_rmse(loop_sequence.extrinsics, _group(result)["extrinsics"][...])
        assert _group(result).attrs["stages"]["streaming"]["loops"] == ([[0, 18]] if closure else [])
    assert ate[False] > 1e-3 * length  # the noise really drifts the chain
    assert ate[True] <= 0.5 * ate[False], f"ATE {ate[False]:.3f} m without loop closure, {ate[True]:.3f} m with it"


@pytest.mark.slow
def test_a_chunk_longer_than_the_scene_gives_the_arrays_of_the_normal_mode(image_folder, tmp_path):
    normal = reconstruct(
        load_config(
            "reconstruct", [f"scene={image_folder}", f"storage.root={tmp_path / 'normal'}", *FAST, "export=mini_npz"]
        )
    )
    streamed = reconstruct(
        load_config(
            "reconstruct",
            [
                f"scene={image_folder}",
                f"storage.root={tmp_path / 'streamed'}",
                *FAST,
                "export=mini_npz",
                "streaming.enabled=true",
                "streaming.chunk_size=60",
                "streaming.overlap=4",
                "streaming.loop_closure=true",
            ],
        )
    )
    a, b = _group(normal), _group(streamed)
    names = {name for name, _ in a.arrays()}
    assert names == {name for name, _ in b.arrays()} >= {"images", "depth", "conf", "extrinsics", "intrinsics", "frame"}
    for name in names:
        np.testing.assert_array_equal(a[name][...], b[name][...], err_msg=name)
    for key in ("n_frames", "ref_view_idx", "source_names", "source_sizes", "is_metric"):
        assert a.attrs[key] == b.attrs[key], key
    npz = [np.load(Path(r.store_url).parent / "exports" / "mini_npz" / "results.npz") for r in (normal, streamed)]
    assert all(np.array_equal(npz[0][k], npz[1][k]) for k in npz[0].files)


def test_bad_streaming_settings_are_refused_with_one_line(image_folder, colmap_dataset, tmp_path, capsys):
    base = [f"storage.root={tmp_path}", *FAST, "streaming.enabled=true", "export=mini_npz"]
    mixed = tmp_path / "in" / "mixed"
    shutil.copytree(image_folder, mixed)
    Image.new("RGB", (200, 30)).save(mixed / "wide.png")
    cases = {
        "overlap >= chunk size": (
            [f"scene={image_folder}", "streaming.chunk_size=10", "streaming.overlap=10"],
            "streaming.overlap=10 must be between 1 and chunk_size - 1",
        ),
        "chunk size < 2": (
            [f"scene={image_folder}", "streaming.chunk_size=1", "streaming.overlap=1"],
            "streaming.chunk_size=1 is too small",
        ),
        "too short": (
            [f"scene={image_folder}", "streaming.chunk_size=60", "streaming.overlap=30"],
            "has 8 views, no more than streaming.overlap=30",
        ),
        "no cameras": ([f"scene={image_folder}", "model=da3mono-large"], "predicts no cameras"),
        "colmap input": ([f"scene={colmap_dataset}"], "reconstruct it without streaming"),
        "views of two sizes": (  # used to infer every chunk, then fail to stitch them
            [f"scene={mixed}", "streaming.chunk_size=3", "streaming.overlap=1"],
            "8 of 9 process to 56x42 but wide.png (and 0 more) to 56x14",
        ),
    }
    for name, (argv, expected) in cases.items():
        code = main([*base, *argv])
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert code == 2 and line.startswith("error:") and expected in line, f"{name}: {code} {line}"
    assert not any(SceneStore(str(p)).is_complete() for p in tmp_path.glob("*/scene.zarr"))
    assert not list(tmp_path.glob("*/scene.zarr.chunks/*"))


def test_the_real_model_on_a_video_writes_every_sampled_frame(walk_video, tmp_path):
    result = reconstruct(
        load_config(
            "reconstruct",
            [
                f"scene={walk_video}",
                f"storage.root={tmp_path}",
                *FAST,
                "input.fps=10",
                "streaming.enabled=true",
                "streaming.chunk_size=6",
                "streaming.overlap=2",
                "streaming.loop_closure=true",
                "streaming.loop_min_similarity=0",
                "export=glb+colmap",
            ],
        )
    )
    g = _group(result)
    sampled = np.arange(0, 48, 3)
    np.testing.assert_array_equal(g["frame"][...], sampled)
    np.testing.assert_allclose(g["timestamp"][...], sampled / 30.0)
    assert g["depth"].shape[0] == g["extrinsics"].shape[0] == len(sampled)
    assert np.isfinite(g["extrinsics"][...]).all() and (g["depth"][...] > 0).all()
    assert len(g.attrs["stages"]["streaming"]["chunks"]) == 4 and g.attrs["model"]["weights"] == "random"
    assert pycolmap.Reconstruction(str(tmp_path / "walk" / "sparse" / "0")).num_images() == len(sampled)


def _chunk_records(cache: Path) -> dict[str, dict | None]:
    """Each cached chunk's record, None for a chunk whose marker is missing (half-written)."""
    records = {}
    for path in sorted(cache.glob("*/chunk_*.zarr")):
        store = SceneStore(str(path))
        records[path.stem] = store.attrs()["chunk"] if store.is_complete() else None
    return records


@pytest.mark.slow
@pytest.mark.parametrize("when", ["after", "before"])
def test_a_killed_run_resumes_without_recomputing_finished_chunks(when, walk_video, tmp_path):
    """SIGKILL of a real flow process when chunk 2's marker has just been written (a chunk boundary) or is about to
    be (its arrays written): the rerun reads back exactly the chunks that were finished and recomputes the rest."""
    argv = [
        f"scene={walk_video}",
        f"storage.root={tmp_path}",
        *FAST,
        "input.fps=0",
        "streaming.enabled=true",
        "streaming.chunk_size=12",
        "streaming.overlap=4",
        "export=mini_npz",
    ]
    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, str(KILLER), when, "2", *argv],
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        )
    try:
        assert proc.wait(timeout=600) == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-2000:]
    finally:
        kill_group(proc.pid)  # a flow child left in the group, if any (normally none)
    before = _chunk_records(tmp_path / "walk" / "scene.zarr.chunks")
    finished = {"chunk_0000", "chunk_0001"} | ({"chunk_0002"} if when == "after" else set())
    assert {name for name, record in before.items() if record} == finished
    assert set(before) == {"chunk_0000", "chunk_0001", "chunk_0002"}  # "before": chunk 2 is there, unmarked
    assert not SceneStore(str(tmp_path / "walk" / "scene.zarr")).is_complete()

    result = reconstruct(load_config("reconstruct", argv))
    chunks = _group(result).attrs["stages"]["streaming"]["chunks"]
    assert [c["name"] for c in chunks if c["reused"]] == sorted(finished)
    for chunk in chunks:
        if chunk["reused"]:  # read back, not recomputed: the record of the killed run
            assert chunk["finished_at"] == before[chunk["name"]]["finished_at"]
            assert chunk["worker"]["pid"] == proc.pid
        else:
            assert chunk["worker"]["pid"] == os.getpid()
    np.testing.assert_array_equal(_group(result)["frame"][...], np.arange(48))
    assert not (tmp_path / "walk" / "scene.zarr.chunks").exists()


@pytest.mark.slow
def test_force_recomputes_the_chunks_a_previous_run_left(image_folder, tmp_path, monkeypatch):
    argv = [
        f"scene={image_folder}",
        f"storage.root={tmp_path}",
        *FAST,
        "streaming.enabled=true",
        "streaming.chunk_size=6",
        "streaming.overlap=2",
        "export=mini_npz",
    ]
    with monkeypatch.context() as patch:  # the cache stays as a killed run leaves it: every chunk finished
        patch.setattr(ChunkCache, "discard", lambda self: None)
        reconstruct(load_config("reconstruct", argv))
    assert len(_chunk_records(tmp_path / image_folder.name / "scene.zarr.chunks")) == 2
    result = reconstruct(load_config("reconstruct", [*argv, "force=true"]))
    assert not any(c["reused"] for c in _group(result).attrs["stages"]["streaming"]["chunks"])
    assert not (tmp_path / image_folder.name / "scene.zarr.chunks").exists()


@pytest.mark.slow
def test_a_re_export_removes_the_chunks_a_run_killed_after_its_swap_left(image_folder, tmp_path, monkeypatch):
    argv = [f"scene={image_folder}", f"storage.root={tmp_path}", *FAST, "streaming.enabled=true"]
    argv += ["streaming.chunk_size=6", "streaming.overlap=2"]
    with monkeypatch.context() as patch:  # as a run killed between its store swap and the cache deletion
        patch.setattr(ChunkCache, "discard", lambda self: None)
        reconstruct(load_config("reconstruct", [*argv, "export=mini_npz"]))
    assert (tmp_path / image_folder.name / "scene.zarr.chunks").exists()
    assert reconstruct(load_config("reconstruct", [*argv, "export=npz"])).status == "exported"
    assert not (tmp_path / image_folder.name / "scene.zarr.chunks").exists()


def _watch_prefect_servers(stop: threading.Event, seen: dict[int, psutil.Process]) -> None:
    """Note every Prefect server of this test session that another process than this one starts, until ``stop``."""
    while not stop.wait(0.2):
        for proc in psutil.process_iter():
            try:
                if (
                    proc.ppid() != os.getpid()
                    and "prefect.server.api.server" in " ".join(proc.cmdline())
                    and proc.environ().get("PREFECT_HOME") == os.environ["PREFECT_HOME"]
                ):
                    seen[proc.pid] = proc
            except psutil.Error:  # gone meanwhile, or another user's
                continue


@pytest.mark.slow
def test_two_dask_workers_share_the_chunks(tmp_path):
    """Both workers infer chunks, the trajectory is exact, and the workers report to the flow's Prefect server:
    none starts a temporary server of its own (it timed out under load and outlived the worker)."""
    write_image_folder(make_sequence("open", 120), tmp_path / "in" / "walk")
    stop, servers = threading.Event(), {}
    watcher = threading.Thread(target=_watch_prefect_servers, args=(stop, servers))
    watcher.start()
    try:
        result = reconstruct(
            load_config(
                "reconstruct",
                [
                    f"scene={tmp_path / 'in' / 'walk'}",
                    f"storage.root={tmp_path / 'out'}",
                    "model=da3-small",
                    "streaming.enabled=true",
                    "streaming.chunk_size=20",
                    "streaming.overlap=10",
                    "streaming.predictor=synthetic:open",
                    "runner=dask",
                    "dask_workers=2",
                    "export=mini_npz",
                ],
            )
        )
    finally:
        stop.set()
        watcher.join()
    chunks = _group(result).attrs["stages"]["streaming"]["chunks"]
    pids = {c["worker"]["pid"] for c in chunks}
    assert len(chunks) == 11 and len(pids) == 2 and os.getpid() not in pids
    ate, length, _ = ate_rmse(make_sequence("open", 120).extrinsics, _group(result)["extrinsics"][...])
    assert ate <= 1e-4 * length
    for proc in servers.values():  # none, unless the workers started their own
        with contextlib.suppress(psutil.Error):
            proc.kill()
    assert not servers, f"{len(servers)} Prefect servers started by the workers"
