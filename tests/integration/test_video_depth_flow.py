"""The video_depth flow end to end through Prefect: a local video (decord) and an s3:// video (moto) into a
zarr store and Annolid's outputs, read back by independent libraries; reruns, one-line errors, flat memory.
"""

from __future__ import annotations

import json
import warnings
from base64 import b64decode
from io import BytesIO

import numpy as np
import pytest
import zarr
from PIL import Image

from da3core.store import SceneStore
from da3core.synthetic import encode_frames, make_capture, pattern_frames, write_video
from flows.config import load_config
from flows.video_depth import main, video_depth

FAST = ["weights=random", "input_size=28"]
ALL_OUTPUTS = [
    "save_depth_video=true",
    "save_depth_frames=true",
    "save_point_clouds=true",
    "save_npz=true",
    "save_exr=true",
]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """40 frames of 70x56 at 30 fps: two 32-frame windows."""
    return write_video(
        make_capture(n_views=40, width=70, height=56, arc_deg=30.0, seed=3),
        tmp_path_factory.mktemp("videos") / "clip.mp4",
    )


def decord_frames(path, indices):
    """The frames straight from decord, independently of the pipeline's reader."""
    import decord

    return decord.VideoReader(str(path), ctx=decord.cpu(0)).get_batch(list(indices)).asnumpy()


def seed_reader(record: dict) -> np.ndarray:
    """Annolid's documented decoding of one depth.ndjson record."""
    dm = record["otherData"]["depth_map"]
    png = np.array(Image.open(BytesIO(b64decode(dm["image_data"]))), dtype=np.float32)
    return png / 65535.0 * (dm["scale"]["max"] - dm["scale"]["min"]) + dm["scale"]["min"]


def model():
    from da3core.video_depth import load_model
    from tasks.model_cache import random_vda_checkpoint

    return load_model(str(random_vda_checkpoint("vits", False, 0)), encoder="vits", metric=False)


def check_records(lines, depth, frames, name):
    records = [json.loads(line) for line in lines]
    assert [r["frame_index"] for r in records] == list(frames)
    for record, d in zip(records, depth):
        assert (record["video_name"], record["imageHeight"], record["imageWidth"]) == (name, *d.shape)
        np.testing.assert_allclose(seed_reader(record), d, atol=(d.max() - d.min()) / 65535 + 1e-6)


def test_local_video_windowed_all_outputs(tmp_path, clip):
    import av
    import OpenEXR
    import xarray as xr

    from da3core.video_depth import infer_windows

    video = tmp_path / "videos" / "clip.mp4"
    video.parent.mkdir()
    video.write_bytes(clip.path.read_bytes())
    result = video_depth(load_config("video_depth", [f"video={video}", *FAST, "streaming=false", *ALL_OUTPUTS]))
    out = tmp_path / "videos" / "clip"  # Annolid's default: next to the video
    assert result.status == "done" and result.output_dir == str(out) and result.store_url == str(out / "depth.zarr")

    g = zarr.open_group(result.store_url, mode="r")
    depth = g["depth"][...]
    assert depth.shape == (40, 56, 70) and depth.dtype == np.float32 and g["depth"].chunks == (1, 56, 70)
    np.testing.assert_array_equal(g["frame"][...], np.arange(40))
    np.testing.assert_allclose(g["timestamp"][...], clip.timestamps, atol=1e-6)
    expected = np.stack(list(infer_windows(model(), iter(decord_frames(video, range(40))), input_size=28)))
    np.testing.assert_allclose(depth, expected, rtol=1e-6, atol=1e-7)
    attrs = g.attrs.asdict()
    assert attrs["complete"]["config_hash"] == attrs["config_hash"] and attrs["depth_kind"] == "relative_disparity"
    assert attrs["model"]["weights"] == "random" and "untrained" in attrs["model"]["note"]
    assert attrs["depth_range"] == {"min": float(depth.min()), "max": float(depth.max())}
    assert attrs["inputs"]["files"][0]["sha256"] == __import__("hashlib").sha256(video.read_bytes()).hexdigest()
    assert {"decode", "inference", "write", "export_npz", "export_depth_video"} <= set(attrs["timings"])
    assert set(result.outputs) == {
        "output_dir",
        "depth_ndjson",
        "depth_visualization",
        "depth_frames",
        "npz",
        "exr",
        "point_cloud_csv",
    }
    assert attrs["outputs"]["depth_frames"] == attrs["outputs"]["point_cloud_csv"] == 40
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # consolidated metadata: no fallback warning
        ds = xr.open_zarr(result.store_url)
    assert list(ds["depth"].dims) == ["frame", "y", "x"] and "timestamp" in ds.coords
    assert (ds["depth"].attrs["units"], ds["timestamp"].attrs["units"]) == ("relative", "s")
    assert ds["depth"].attrs["long_name"].startswith("relative disparity")

    check_records((out / "depth.ndjson").read_text().splitlines(), depth, range(40), "clip.mp4")
    with av.open(str(out / "clip_vis.mp4")) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert float(stream.average_rate) == 30.0
    assert len(frames) == 40 and frames[0].shape == (56, 70, 3)
    pngs = sorted((out / "depth_frames").iterdir())
    assert len(pngs) == 40 and np.array(Image.open(pngs[0])).shape == (56, 70, 3)
    with OpenEXR.File(str(out / "clip_depths_exr" / "frame_00039.exr")) as exr:
        np.testing.assert_array_equal(exr.channels()["Z"].pixels, depth[39])
    with np.load(out / "clip_depths.npz") as npz:
        np.testing.assert_array_equal(npz["depths"], depth)
    table = np.loadtxt(out / "point_clouds" / "point_0007.csv", delimiter=",", skiprows=1)
    with np.errstate(divide="ignore"):
        z = np.where(depth[7] > 0, 1 / depth[7], np.nan).ravel()
    np.testing.assert_allclose(table[:, 2], z, rtol=1e-5)
    u = np.arange(56 * 70) % 70
    np.testing.assert_allclose(table[:, 0], (u - 35) / 470.4 * z, rtol=1e-4, atol=1e-6)
    info = json.loads((out / "point_clouds" / "point_cloud_info.json").read_text())
    assert info["z_kind"] == "inverse_relative_disparity" and info["intrinsics"]["fx"] == 470.4
    assert not [p for p in out.iterdir() if p.name.startswith(".") or p.name.startswith("depth.zarr.")], (
        "staging left behind"
    )


@pytest.mark.slow
def test_s3_video_streaming(tmp_path, clip, s3_options):
    import s3fs

    from da3core.video_depth import infer_streaming

    fs = s3fs.S3FileSystem(**s3_options)
    fs.put(str(clip.path), "da3-test/videos/clip.mp4")
    opts = [
        f"+storage.options.key={s3_options['key']}",
        f"+storage.options.secret={s3_options['secret']}",
        f"+storage.options.client_kwargs.endpoint_url={s3_options['client_kwargs']['endpoint_url']}",
    ]
    argv = ["video=s3://da3-test/videos/clip.mp4", *FAST, "target_fps=15", "max_frames=4", "save_npz=true", *opts]
    result = video_depth(load_config("video_depth", argv))
    assert result.status == "done" and result.output_dir == "s3://da3-test/videos/clip"
    store = SceneStore(result.store_url, s3_options)
    assert store.is_complete() and store.attrs()["config"]["streaming"] is True
    indices = [0, 2, 4, 6]
    np.testing.assert_array_equal(store.read_array("frame"), indices)
    np.testing.assert_allclose(store.read_array("timestamp"), np.array(indices) / 30.0, atol=1e-6)
    depth = store.read_array("depth")
    expected = np.stack(list(infer_streaming(model(), iter(decord_frames(clip.path, indices)), input_size=28)))
    np.testing.assert_allclose(depth, expected, rtol=1e-6, atol=1e-7)
    check_records(fs.cat("da3-test/videos/clip/depth.ndjson").decode().splitlines(), depth, indices, "clip.mp4")
    with fs.open("da3-test/videos/clip/clip_depths.npz", "rb") as f, np.load(f) as npz:
        np.testing.assert_array_equal(npz["depths"], depth)
    assert fs.ls("da3-test/videos/clip/depth.zarr")  # and nothing of the run's staging or lock beside it:
    assert not [p for p in fs.ls("da3-test/videos/clip") if ".tmp-" in p or p.endswith(".lock")]
    assert video_depth(load_config("video_depth", argv)).status == "skipped"


def test_reruns_replace_records_and_redo_half_written_stores(tmp_path, clip):
    argv = [f"video={clip.path}", f"output_dir={tmp_path / 'out'}", *FAST, "max_frames=3", "save_exr=true"]
    first = video_depth(load_config("video_depth", argv))
    ndjson = tmp_path / "out" / "depth.ndjson"
    assert first.status == "done" and video_depth(load_config("video_depth", argv)).status == "skipped"
    SceneStore(first.store_url).update_attrs(complete=None)  # as if the run died before its marker
    assert video_depth(load_config("video_depth", argv)).status == "done"
    assert [json.loads(x)["frame_index"] for x in ndjson.read_text().splitlines()] == [0, 1, 2]
    shorter = video_depth(load_config("video_depth", [*argv[:-2], "max_frames=2", "save_exr=true"]))
    assert shorter.status == "done"
    assert [json.loads(x)["frame_index"] for x in ndjson.read_text().splitlines()] == [0, 1]
    assert sorted(p.name for p in (tmp_path / "out" / "clip_depths_exr").iterdir()) == [
        f"frame_{i:05d}.exr" for i in range(2)
    ]


def test_metric_model_at_max_res_writes_metric_depth_and_point_clouds(tmp_path, clip):
    result = video_depth(
        load_config(
            "video_depth",
            [
                f"video={clip.path}",
                f"output_dir={tmp_path}",
                *FAST,
                "metric=true",
                "max_frames=2",
                "max_res=40",
                "save_point_clouds=true",
                "focal_length_x=100",
                "focal_length_y=80",
            ],
        )
    )
    store = SceneStore(result.store_url)
    attrs, depth = store.attrs(), store.read_array("depth")
    assert attrs["model"]["metric"] is True and attrs["depth_kind"] == "metric_depth"
    assert "metres" in attrs["conventions"]["depth"]
    assert depth.shape == (2, 32, 40)  # 70x56 capped at 40 on the long side: 40 x round(56 * 40 / 70) = 32
    record = json.loads((tmp_path / "depth.ndjson").read_text().splitlines()[0])
    assert (record["imageHeight"], record["imageWidth"]) == (32, 40)  # the processed size, as Annolid
    table = np.loadtxt(tmp_path / "point_clouds" / "point_0001.csv", delimiter=",", skiprows=1)
    np.testing.assert_allclose(table[:, 2], depth[1].ravel(), rtol=1e-5, atol=1e-6)
    v = np.arange(32 * 40) // 40
    np.testing.assert_allclose(table[:, 1], (v - 16) / 80.0 * depth[1].ravel(), rtol=1e-4, atol=1e-6)
    assert json.loads((tmp_path / "point_clouds" / "point_cloud_info.json").read_text())["z_kind"] == "metric_depth"


def _snapshot(folder):
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_bad_inputs_fail_with_one_line_and_keep_outputs(tmp_path, capsys, clip, monkeypatch):
    video = tmp_path / "clip.mp4"
    video.write_bytes(clip.path.read_bytes())
    good = [f"video={video}", *FAST, "max_frames=4", "save_npz=true"]
    assert main(good) == 0
    out = tmp_path / "clip"
    before = _snapshot(out)

    def error_line(argv):
        code = main(argv)
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert code == 2 and err and err[-1].startswith("error:"), (argv, err)
        return err[-1]

    assert "video not found" in error_line([f"video={tmp_path / 'nope.mp4'}", *FAST]) and "video=" in error_line(
        [f"video={tmp_path / 'nope.mp4'}", *FAST]
    )
    assert "available: vits, vitb, vitl" in error_line([f"video={video}", *FAST, "encoder=vitx"])
    assert "video" in error_line(FAST)  # no video given
    assert "checkpoint not found" in error_line([f"video={video}", "weights=/no/such.pth", "input_size=28"])
    video.write_bytes(clip.path.read_bytes()[:3000])  # truncated: unreadable
    assert "give a complete video file" in error_line(good)
    video.write_bytes(clip.path.read_bytes())
    (tmp_path / "empty.mp4").write_bytes(b"")  # zero-length video
    assert "empty (0 bytes)" in error_line([f"video={tmp_path / 'empty.mp4'}", *FAST])
    (tmp_path / "a_file").write_text("not a folder")  # an output dir that cannot be created
    assert "cannot write to output_dir" in error_line([*good, f"output_dir={tmp_path / 'a_file' / 'out'}"])

    import da3core.io.video as video_io

    real = video_io.iter_frames

    def dies_midway(*args, **kwargs):
        for k, item in enumerate(real(*args, **kwargs)):
            if k == 2:
                raise video_io.VideoError("cannot decode frames [2]... of clip.mp4: corrupt packet")
            yield item

    monkeypatch.setattr(video_io, "iter_frames", dies_midway)
    assert "corrupt packet" in error_line([*good, "force=true"])
    assert _snapshot(out) == before and SceneStore(str(out / "depth.zarr")).is_complete()
    monkeypatch.setattr(video_io, "iter_frames", real)
    assert video_depth(load_config("video_depth", good)).status == "skipped"


@pytest.mark.slow
def test_pipeline_memory_is_flat_in_video_length(tmp_path, monkeypatch):
    """Memory held by the pipeline around the model (decode, zarr, writers, second pass) must not grow with length.

    The model is replaced by a per-frame function so 240 frames take seconds; benchmarks/video_depth.py
    measures the real model's RSS over 100-3,000 frames. tracemalloc (which sees numpy buffers) is used
    rather than RSS because RSS on a shared machine drifts by tens of MiB for reasons outside the run.
    Holding the frames would add 180 x 315 KiB (RGB + depth) between frame 60 and frame 240.
    """
    import tracemalloc

    import tasks.video_depth as vd

    held = {}

    def fake_model(model, frames, run, device):
        for k, frame in enumerate(frames):
            if k in (60, 239):
                held[k] = tracemalloc.get_traced_memory()[0] / 2**20
            yield frame.mean(axis=2, dtype=np.float32) + 1

    monkeypatch.setattr(vd, "_depth_stream", fake_model)
    argv = [*FAST, "save_npz=true", "save_depth_video=true", "save_exr=true", "save_depth_frames=true"]
    video_depth(
        load_config(
            "video_depth", [f"video={encode_frames(pattern_frames(8, 192, 240), tmp_path / 'short.mp4').path}", *argv]
        )
    )  # warm-up
    video = encode_frames(pattern_frames(240, 192, 240), tmp_path / "long.mp4").path
    tracemalloc.start()
    try:
        video_depth(load_config("video_depth", [f"video={video}", *argv]))
        peak = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    print(f"traced memory at frame 60 {held[60]:.1f} MiB, at frame 240 {held[239]:.1f} MiB, peak {peak:.1f} MiB")
    assert held[239] - held[60] < 4, held
    assert peak < 20, peak  # whole run incl. the second pass; all 240 frames would be 74 MiB


def test_second_run_on_an_output_being_written_fails_naming_the_holder(tmp_path, clip, capsys):
    import subprocess
    import sys

    from paths import REPO_ROOT

    out = tmp_path / "out"
    holder = subprocess.Popen(
        [
            sys.executable,
            str(REPO_ROOT / "tests" / "store_scripts" / "hold_lock.py"),
            str(out / "depth.zarr"),
            "{}",
            "60",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**__import__("os").environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        argv = [f"video={clip.path}", f"output_dir={out}", *FAST, "max_frames=2"]
        assert main(argv) == 2
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert line.startswith(f"error: {out / 'depth.zarr'} is being written by") and f"pid {holder.pid} on " in line
        assert "lock_timeout" in line
        assert not (out / "depth.zarr").exists() and not (out / "depth.ndjson").exists()
        holder.communicate("release\n", timeout=30)
        assert video_depth(load_config("video_depth", argv)).status == "done"
    finally:
        holder.kill()
        holder.wait()
