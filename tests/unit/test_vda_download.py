"""The Video Depth Anything weight downloader: listing, and failing fast with guidance when offline."""

from __future__ import annotations

import socket
import time

import pytest

from da3core.video_depth import CHECKPOINTS
from da3core.video_depth.download_weights import main


def test_list_names_repo_file_size_and_licence(capsys):
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    for info in CHECKPOINTS.values():
        line = next(row for row in out.splitlines() if row.startswith(info.name + " "))
        assert info.repo_id in line and info.filename in line and info.licence in line
    assert "~114 MB" in out and "~1527 MB" in out  # 28.4M and 381.8M fp32 parameters


def test_offline_download_fails_fast_with_guidance(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    assert main(["--model", "metric_video_depth_anything_vitb", "--checkpoint-dir", str(tmp_path)]) == 2
    assert time.perf_counter() - start < 2.0
    err = capsys.readouterr().err
    assert (
        "https://huggingface.co/depth-anything/Metric-Video-Depth-Anything-Base/resolve/main/"
        "metric_video_depth_anything_vitb.pth" in err
    )
    assert str(tmp_path / "metric_video_depth_anything_vitb.pth") in err
    assert not list(tmp_path.iterdir())


def test_unreachable_hub_fails_fast_even_if_connecting_hangs(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: time.sleep(30))
    start = time.perf_counter()
    assert main(["--model", "video_depth_anything_vits", "--checkpoint-dir", str(tmp_path)]) == 2
    assert time.perf_counter() - start < 2.0
    assert "unreachable" in capsys.readouterr().err


def test_existing_file_is_not_downloaded_again(tmp_path, capsys):
    (tmp_path / "video_depth_anything_vits.pth").write_bytes(b"x")
    assert main(["--model", "video_depth_anything_vits", "--checkpoint-dir", str(tmp_path)]) == 0
    assert "already exists" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--model", "no_such_model"])


def test_failed_download_is_one_weights_error_with_guidance(tmp_path, monkeypatch):
    """The hub answers the probe but the download itself fails (a 5xx, a dropped connection)."""
    import huggingface_hub

    from da3core import weights

    def refuse(*args, **kwargs):
        raise OSError("503 Service Unavailable")

    monkeypatch.setattr(weights, "hub_reachable", lambda: True)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    with pytest.raises(weights.WeightsError, match="503 Service Unavailable. Download it on a connected machine"):
        weights.hub_file("depth-anything/DA3-SMALL", "model.safetensors", local_dir=tmp_path)
