"""The Annolid-compatible VDA writers on synthetic depth, read back by independent libraries
(the seed's reader snippet, OpenCV, OpenEXR, PyAV, PIL, numpy)."""

from __future__ import annotations

import json
from base64 import b64decode
from io import BytesIO

import cv2
import numpy as np
import pytest
from PIL import Image

from da3core.export.target import ExportTarget
from da3core.video_depth.outputs import (
    OutputOptions,
    StreamingOutputs,
    default_output_dir,
    depth_record,
    remove_outputs,
    write_depth_frames,
    write_depth_video,
    write_npz,
)

H, W = 24, 30
ALL = OutputOptions(
    save_depth_video=True,
    save_depth_frames=True,
    save_point_clouds=True,
    save_npz=True,
    save_exr=True,
    focal_length_x=50.0,
    focal_length_y=40.0,
)


def synthetic_depths(n: int, seed: int = 0) -> np.ndarray:
    """Smooth positive fields with a different range per frame."""
    rng = np.random.default_rng(seed)
    v, u = np.mgrid[0:H, 0:W]
    return np.stack(
        [
            (0.5 + i + np.sin(u / 5 + i) * np.cos(v / 7) + rng.uniform(0, 0.01, (H, W))).astype(np.float32)
            for i in range(n)
        ]
    )


def frames_rgb(n: int) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (n, H, W, 3), dtype=np.uint8)


def seed_reader(record: dict) -> np.ndarray:
    """The decoding snippet from the Annolid README / simulation/lifting.py, verbatim in substance."""
    dm = record["otherData"]["depth_map"]
    png = np.array(Image.open(BytesIO(b64decode(dm["image_data"]))), dtype=np.float32)
    return png / 65535.0 * (dm["scale"]["max"] - dm["scale"]["min"]) + dm["scale"]["min"]


def stream(folder, depths, rgb, frame_indices, options=ALL, is_metric=False, name="mice.mp4"):
    with StreamingOutputs(ExportTarget(folder), name, options, is_metric) as out:
        for i, rgb_i, d in zip(frame_indices, rgb, depths):
            out.add(i, rgb_i, d)
    out.publish()  # the flow publishes once its store is in place
    return out


def test_record_schema_and_seed_reader_roundtrip():
    depth = synthetic_depths(1)[0] * 3.7
    rec = json.loads(json.dumps(depth_record(depth, 42, "mice.mp4")))
    assert list(rec) == [
        "version",
        "flags",
        "shapes",
        "imagePath",
        "imageHeight",
        "imageWidth",
        "otherData",
        "frame_index",
        "video_name",
    ]
    assert (rec["version"], rec["flags"], rec["shapes"], rec["imagePath"]) == ("Depth-Anything", {}, [], "")
    assert (rec["imageHeight"], rec["imageWidth"], rec["frame_index"], rec["video_name"]) == (H, W, 42, "mice.mp4")
    dm = rec["otherData"]["depth_map"]
    assert dm["dtype"] == "uint16" and dm["scale"] == {"min": float(depth.min()), "max": float(depth.max())}
    step = (depth.max() - depth.min()) / 65535
    np.testing.assert_allclose(seed_reader(rec), depth, atol=step * 0.51 + 1e-6)
    png = cv2.imdecode(np.frombuffer(b64decode(dm["image_data"]), np.uint8), cv2.IMREAD_UNCHANGED)
    assert png.dtype == np.uint16 and png.shape == (H, W) and png.min() == 0 and png.max() == 65535


def test_constant_depth_gets_a_nonzero_range():
    rec = depth_record(np.full((4, 5), 2.5, np.float32), 0, "v.mp4")
    scale = rec["otherData"]["depth_map"]["scale"]
    assert scale["max"] - scale["min"] == pytest.approx(1e-6, rel=1e-3)
    np.testing.assert_allclose(seed_reader(rec), 2.5, atol=1e-6)


def test_streaming_outputs_read_back(tmp_path):
    import OpenEXR

    depths, rgb = synthetic_depths(5), frames_rgb(5)
    out = stream(tmp_path, depths, rgb, [0, 3, 6, 9, 12])
    lines = (tmp_path / "depth.ndjson").read_text().splitlines()
    assert [json.loads(ln)["frame_index"] for ln in lines] == [0, 3, 6, 9, 12]
    for line, depth in zip(lines, depths):
        np.testing.assert_allclose(seed_reader(json.loads(line)), depth, atol=(depth.max() - depth.min()) / 65535)
    for i, depth in enumerate(depths):
        with OpenEXR.File(str(tmp_path / "mice_depths_exr" / f"frame_{i:05d}.exr")) as exr:
            z = exr.channels()["Z"].pixels
        assert z.dtype == np.float32 and np.array_equal(z, depth)
    written = out.written()
    assert written["depth_ndjson"] == [str(tmp_path / "depth.ndjson")] and len(written["point_cloud_csv"]) == 5
    assert not list(tmp_path.rglob(".*")), "temporary files left behind"


@pytest.mark.parametrize("is_metric", [True, False])
def test_point_clouds_use_the_documented_intrinsics(tmp_path, is_metric):
    depths, rgb = synthetic_depths(2), frames_rgb(2)
    depths[1, 0, 0] = 0.0  # a zero disparity has no finite depth
    stream(tmp_path, depths, rgb, [0, 1], is_metric=is_metric)
    info = json.loads((tmp_path / "point_clouds" / "point_cloud_info.json").read_text())
    assert info["intrinsics"] == {
        "fx": 50.0,
        "fy": 40.0,
        "cx": W / 2,
        "cy": H / 2,
        "width": W,
        "height": H,
        "units": "pixels of the processed frame",
    }
    assert info["z_kind"] == ("metric_depth" if is_metric else "inverse_relative_disparity")
    for i in range(2):
        path = tmp_path / "point_clouds" / f"point_{i:04d}.csv"
        assert path.read_text().splitlines()[0] == "x,y,z,intensity,red,green,blue"
        table = np.loadtxt(path, delimiter=",", skiprows=1)
        assert table.shape == (H * W, 7)
        z_expected = depths[i] if is_metric else np.where(depths[i] > 0, 1 / np.maximum(depths[i], 1e-12), np.nan)
        v, u = np.divmod(np.arange(H * W), W)  # row-major pixel order
        np.testing.assert_allclose(table[:, 2], z_expected.ravel(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(table[:, 0], (u - W / 2) / 50.0 * z_expected.ravel(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(table[:, 1], (v - H / 2) / 40.0 * z_expected.ravel(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(table[:, 3], depths[i].ravel(), atol=1e-6)
        np.testing.assert_array_equal(table[:, 4:], rgb[i].reshape(-1, 3))
    assert np.isnan(table[0, 2]) == (not is_metric)


def test_rerun_replaces_records_and_prunes_stale_frames(tmp_path):
    stream(tmp_path, synthetic_depths(5), frames_rgb(5), range(5))
    (tmp_path / "point_clouds" / "my_notes.txt").write_text("the user's own")  # not a file the run wrote
    stream(tmp_path, synthetic_depths(3, seed=2), frames_rgb(3), [0, 2, 4])
    assert (tmp_path / "point_clouds" / "my_notes.txt").read_text() == "the user's own"
    (tmp_path / "point_clouds" / "my_notes.txt").unlink()
    records = [json.loads(ln) for ln in (tmp_path / "depth.ndjson").read_text().splitlines()]
    assert [r["frame_index"] for r in records] == [0, 2, 4]
    assert sorted(p.name for p in (tmp_path / "mice_depths_exr").iterdir()) == [f"frame_{i:05d}.exr" for i in range(3)]
    assert sorted(p.name for p in (tmp_path / "point_clouds").iterdir()) == [
        "point_0000.csv",
        "point_0001.csv",
        "point_0002.csv",
        "point_cloud_info.json",
    ]


def test_failure_mid_stream_keeps_the_previous_outputs(tmp_path):
    stream(tmp_path, synthetic_depths(3), frames_rgb(3), range(3))
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(RuntimeError, match="decoder died"):
        with StreamingOutputs(ExportTarget(tmp_path), "mice.mp4", ALL, False) as out:
            out.add(0, frames_rgb(1)[0], synthetic_depths(1, seed=5)[0])
            raise RuntimeError("decoder died")
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before
    with StreamingOutputs(ExportTarget(tmp_path), "mice.mp4", ALL, False) as out:  # done, but never published
        out.add(0, frames_rgb(1)[0], synthetic_depths(1, seed=5)[0])
    out.discard()
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_second_pass_outputs(tmp_path):
    import av

    depths = synthetic_depths(7)
    lo, hi = float(depths.min()), float(depths.max())
    target = ExportTarget(tmp_path)
    [video] = write_depth_video(target, "mice", iter(depths), lo, hi, fps=15.0)
    with av.open(video) as container:
        stream_ = container.streams.video[0]
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream_)]
        assert float(stream_.average_rate) == 15.0
    assert len(decoded) == 7 and decoded[0].shape == (H, W, 3)
    # Far (low) and near (high) ends of the global range map to inferno's dark and bright ends.
    lum = [f.astype(float).mean(axis=2) for f in decoded]
    assert lum[0][depths[0] < lo + 0.2].mean() < 40 and lum[6][depths[6] > hi - 0.3].mean() > 150

    pngs = write_depth_frames(target, iter(depths), lo, hi, grayscale=True)
    assert len(pngs) == 7
    gray = np.array(Image.open(pngs[3]))
    assert gray.dtype == np.uint8 and gray.shape == (H, W)
    np.testing.assert_array_equal(gray, ((depths[3] - lo) / (hi - lo) * 255).astype(np.uint8))
    assert np.array(Image.open(write_depth_frames(target, iter(depths[:2]), lo, hi)[0])).shape == (H, W, 3)
    assert sorted(p.name for p in (tmp_path / "depth_frames").iterdir()) == ["depth_00000.png", "depth_00001.png"]

    [npz] = write_npz(target, "mice", iter(depths), depths.shape)
    with np.load(npz) as data:
        assert list(data) == ["depths"] and data["depths"].dtype == np.float32
        np.testing.assert_array_equal(data["depths"], depths)
    with pytest.raises(ValueError, match="expected 9 frames"):
        write_npz(target, "mice", iter(depths), (9, H, W))
    with np.load(npz) as data:  # the failed write did not replace the good file
        assert data["depths"].shape == depths.shape


def test_default_output_dir_is_next_to_the_video():
    assert default_output_dir("videos/mice.mp4") == "videos/mice"
    assert default_output_dir("/data/a.b/mice.avi") == "/data/a.b/mice"
    assert default_output_dir("s3://bucket/videos/mice.mp4") == "s3://bucket/videos/mice"


def test_dropped_output_folders_keep_the_users_own_files(tmp_path):
    """A rerun that no longer writes point clouds removes the run's CSVs and info, not what the user put there."""
    stream(tmp_path, synthetic_depths(3), frames_rgb(3), range(3))
    (tmp_path / "point_clouds" / "my_notes.txt").write_text("the user's own")
    assert remove_outputs(ExportTarget(tmp_path), ["point_clouds/", "mice_depths_exr/"]) == [
        "mice_depths_exr/",
        "point_clouds/",
    ]
    assert [p.name for p in (tmp_path / "point_clouds").iterdir()] == ["my_notes.txt"]
    assert not (tmp_path / "mice_depths_exr").exists()  # emptied by the run's own files going: removed
