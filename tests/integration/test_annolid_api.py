"""Annolid's Python entry point: ``run_video_depth_anything`` with Annolid's parameter names and result dict, from
plain Python and inside another Prefect flow, and Annolid's ``video_depth_anything:`` settings as a defaults file."""

from __future__ import annotations

import json
import os
from base64 import b64decode
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
import zarr
from PIL import Image
from prefect import flow

from da3core.synthetic import make_capture, write_video
from flows.config import ConfigError
from flows.video_depth import main, run_video_depth_anything

pytestmark = pytest.mark.slow  # Prefect's temporary server and five video-depth runs: about a minute

FAST = {"weights": "random", "input_size": 28}


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """12 frames of 70x56 at 30 fps."""
    return write_video(
        make_capture(n_views=12, width=70, height=56, arc_deg=20.0, seed=4),
        tmp_path_factory.mktemp("videos") / "mice.mp4",
    )


def files_under(folder: Path) -> set[str]:
    """Every file in an output folder except the store and its lock (read by os.walk, not the pipeline)."""
    found = set()
    for root, _dirs, names in os.walk(folder):
        if "depth.zarr" in Path(root).relative_to(folder).parts:
            continue
        found |= {str(Path(root) / n) for n in names if not n.startswith("depth.zarr")}
    return found


def ndjson_depths(path: str) -> tuple[list[int], list[np.ndarray]]:
    """Frame indices and depths as Annolid's documentation decodes depth.ndjson."""
    records = [json.loads(line) for line in Path(path).read_text().splitlines()]
    depths = []
    for record in records:
        encoded, scale = record["otherData"]["depth_map"]["image_data"], record["otherData"]["depth_map"]["scale"]
        quant = np.array(Image.open(BytesIO(b64decode(encoded))), dtype=np.float32)
        depths.append(quant / 65535.0 * (scale["max"] - scale["min"]) + scale["min"])
    return [r["frame_index"] for r in records], depths


def test_annolid_call_from_plain_python_names_every_output(tmp_path, clip):
    out = tmp_path / "mice_depth"
    percents: list[int] = []
    result = run_video_depth_anything(
        input_video=str(clip.path),
        output_dir=str(out),
        encoder="vits",
        streaming=True,
        target_fps=15,
        max_res=1280,
        save_depth_video=True,
        save_depth_frames=True,
        save_point_clouds=False,
        progress_callback=percents.append,
        **FAST,
    )
    assert result.get("depth_ndjson") == [str(out / "depth.ndjson")]
    assert set(result) == {"output_dir", "depth_ndjson", "depth_visualization", "depth_frames", "depth_zarr"}
    listed = {p for key, paths in result.items() if key not in ("output_dir", "depth_zarr") for p in paths}
    assert listed == files_under(out)  # every file written is named, and every name is a file
    assert result["output_dir"] == [str(out)] and result["depth_zarr"] == [str(out / "depth.zarr")]

    frames, depths = ndjson_depths(result["depth_ndjson"][0])
    assert frames == list(range(0, 12, 2))  # 30 fps at target_fps=15: every 2nd original frame
    stored = zarr.open_group(result["depth_zarr"][0], mode="r")["depth"][...]
    for d, s in zip(depths, stored):
        np.testing.assert_allclose(d, s, atol=(s.max() - s.min()) / 65535 + 1e-6)
    assert len(result["depth_frames"]) == 6
    assert percents[0] == 0 and percents[-1] == 100 and percents == sorted(percents)

    again = run_video_depth_anything(
        input_video=str(clip.path),
        output_dir=str(out),
        encoder="vits",
        streaming=True,
        target_fps=15,
        save_depth_video=True,
        save_depth_frames=True,
        **FAST,
    )
    assert again == result  # a complete earlier run is reused and reported with the same outputs


def test_annolid_call_inside_another_flow(tmp_path, clip):
    @flow(name="annotate-session")
    def annotate(video: str, out: str) -> dict:
        return run_video_depth_anything(input_video=video, output_dir=out, max_len=4, save_npz=True, **FAST)

    state = annotate(str(clip.path), str(tmp_path / "out"), return_state=True)
    assert state.is_completed()
    result = state.result()
    assert set(result) == {"output_dir", "depth_ndjson", "npz", "depth_zarr"}
    with np.load(result["npz"][0]) as npz:
        assert npz["depths"].shape == (4, 56, 70)
    assert ndjson_depths(result["depth_ndjson"][0])[0] == [0, 1, 2, 3]


def test_annolid_settings_file_sets_defaults_under_the_call(tmp_path, clip):
    out = tmp_path / "from_settings"
    settings = tmp_path / "labelmerc"
    settings.write_text(
        "auto_save: true\n"  # Annolid's other settings in the same file are left alone
        "video_depth_anything:\n"
        "  encoder: vits\n  streaming: false\n  target_fps: 10\n  max_len: 3\n  save_depth_frames: true\n"
        "  save_point_clouds: false\n  show_preview: true\n  include_region_labels: false\n"
        f"  output_dir: {out}\n"
    )
    result = run_video_depth_anything(input_video=str(clip.path), defaults_file=str(settings), **FAST)
    assert result["output_dir"] == [str(out)] and set(result) == {
        "output_dir",
        "depth_ndjson",
        "depth_frames",
        "depth_zarr",
    }
    assert ndjson_depths(result["depth_ndjson"][0])[0] == [0, 3, 6]  # 30 fps at 10: every 3rd frame, max_len 3
    config = zarr.open_group(result["depth_zarr"][0], mode="r").attrs["config"]
    assert (config["streaming"], config["max_frames"], config["defaults_file"]) == (False, 3, str(settings))

    # The same file on the command line; an explicit override wins over the file.
    assert (
        main([f"video={clip.path}", f"defaults_file={settings}", "max_frames=2", "weights=random", "input_size=28"])
        == 0
    )
    assert ndjson_depths(str(out / "depth.ndjson"))[0] == [0, 3]


def test_unsupported_annolid_options_are_refused_in_one_line(tmp_path, clip):
    with pytest.raises(ConfigError, match="include_region_labels"):
        run_video_depth_anything(str(clip.path), str(tmp_path), include_region_labels=True, **FAST)
    with pytest.raises(ValueError, match="preview_callback is not supported"):
        run_video_depth_anything(str(clip.path), str(tmp_path), preview_callback=print, **FAST)
    bad = tmp_path / "bad.yaml"
    bad.write_text("video_depth_anything: [1, 2]\n")
    with pytest.raises(ConfigError, match="no video_depth_anything: mapping"):
        run_video_depth_anything(str(clip.path), defaults_file=str(bad), **FAST)
    assert {p.name for p in tmp_path.iterdir()} == {"bad.yaml"}  # refused before anything was written
