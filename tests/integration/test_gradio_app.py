"""The Gradio app without a browser: its run function against a local flow run, and a launched app driven
by gradio_client on loopback.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import trimesh
import zarr

gr = pytest.importorskip("gradio", reason="the Gradio app needs the `app` extra")

from fastapi.testclient import TestClient  # noqa: E402
from s3server import free_port  # noqa: E402

from da3core.synthetic import make_capture, write_image_folder  # noqa: E402
from flows.backend.pages import UNTRAINED_BANNER  # noqa: E402
from flows.config import load_config  # noqa: E402
from flows.gallery import create_gallery_app, find_scenes  # noqa: E402
from flows.gradio_app import ReconstructionApp, build_demo, launch  # noqa: E402
from flows.reconstruct import reconstruct  # noqa: E402

MODEL = dict(model_dir=None, preset="da3-small", weights="random")


def _points(glb: Path) -> int:
    scene = trimesh.load(glb)
    return sum(len(g.vertices) for g in scene.geometry.values() if isinstance(g, trimesh.PointCloud))


def test_run_matches_the_flow_and_saves_to_gallery(tmp_path):
    folder = tmp_path / "views"
    write_image_folder(make_capture(3, 96, 72, seed=6), folder)
    images = sorted(str(p) for p in folder.glob("*.png"))
    app = ReconstructionApp(
        **MODEL, workspace_dir=str(tmp_path / "ws"), gallery_dir=str(tmp_path / "gallery"), device="cpu"
    )
    demo = build_demo(app)
    assert isinstance(demo, gr.Blocks)
    glb, depth, video, summary = app.run(
        images,
        None,
        resolution="high_res",
        process_res=56,
        ref_view="first",
        conf_percentile=30,
        max_points_k=0.5,
        show_cameras=False,
        save_to_gallery=True,
        gallery_name="room/run1",
    )
    assert video is None and "3 views" in summary and len(depth) == 3
    # Gradio serves any workspace file to whoever names its path: the run folder's name must not be guessable.
    (run_dir,) = (tmp_path / "ws").iterdir()
    assert Path(glb).is_relative_to(run_dir) and re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{32}", run_dir.name), run_dir
    points = _points(Path(glb))
    assert 0 < points <= 500
    # Independent truth: the same options as plain flow overrides (lower_bound_resize = "high_res").
    reconstruct(
        load_config(
            "reconstruct",
            [
                f"scene={folder}",
                f"output_dir={tmp_path / 'local'}",
                "export=glb",
                "processing.method=lower_bound_resize",
                "processing.process_res=56",
                "ref_view_strategy=first",
                "+exporters.glb.conf_thresh_percentile=30",
                "+exporters.glb.num_max_points=500",
                "+exporters.glb.show_cameras=false",
                "model=da3-small",
                "model.weights=random",
                "model.device=cpu",
            ],
        )
    )
    assert Path(glb).read_bytes() == (tmp_path / "local" / "scene.glb").read_bytes()
    assert [Path(p).read_bytes() for p in depth] == [
        p.read_bytes() for p in sorted((tmp_path / "local" / "depth_vis").glob("*.jpg"))
    ]
    assert find_scenes(tmp_path / "gallery") == ["room/run1"]
    # Saving again under the name replaces the scene whole: fewer views leave no depth image of the first save.
    app.run(images[:2], None, process_res=56, save_to_gallery=True, gallery_name="room/run1")
    saved = tmp_path / "gallery" / "room" / "run1"
    assert len(list((saved / "depth_vis").glob("*.jpg"))) == 2
    assert zarr.open_group(str(saved / "scene.zarr"), mode="r")["depth"].shape[0] == 2
    assert sorted(p.name for p in saved.parent.iterdir()) == ["run1"]  # no staging or set-aside folder left
    app.run(images, None, process_res=56, save_to_gallery=True, gallery_name="room/run1")
    page = TestClient(create_gallery_app(tmp_path / "gallery")).get("/scene/room/run1").text
    assert UNTRAINED_BANNER.split(",")[0] in page  # the copied store tells the gallery the weights were random
    with_cameras, _, _, _ = app.run(
        images,
        None,
        resolution="high_res",
        process_res=56,
        ref_view="first",
        conf_percentile=30,
        max_points_k=0.5,
        show_cameras=True,
    )
    assert Path(with_cameras).read_bytes() != Path(glb).read_bytes()  # the option reaches the exporter
    with pytest.raises(gr.Error, match="gallery name"):
        app.run(images, None, process_res=56, save_to_gallery=True, gallery_name="../outside")
    with pytest.raises(gr.Error, match="upload images or a video"):
        app.run(None, None)


def test_launched_app_on_loopback_with_gradio_client(tmp_path, video_file):
    from gradio_client import Client, handle_file

    port = free_port()
    demo = launch(**MODEL, workspace_dir=str(tmp_path / "ws"), gallery_dir=None, port=port, device="cpu", block=False)
    try:
        assert demo.server_name == "127.0.0.1" and demo.local_url.startswith(f"http://127.0.0.1:{port}")
        client = Client(demo.local_url, verbose=False)
        glb, depth, video, summary = client.predict(
            [],
            handle_file(str(video_file)),
            2.0,
            "low_res",
            56,
            "middle",
            False,
            40,
            1,
            True,
            False,
            "",
            api_name="/run",
        )
        assert Path(glb).read_bytes()[:4] == b"glTF" and 0 < _points(Path(glb)) <= 1000
        assert len(depth) == 4 and video is None and "sweep" in summary  # 2 s of 30 fps video at 2 fps
    finally:
        demo.close()


def test_a_token_puts_the_launched_app_behind_a_login(tmp_path):
    import httpx
    from gradio_client import Client

    port = free_port()
    demo = launch(
        **MODEL, workspace_dir=str(tmp_path / "ws"), gallery_dir=None, port=port, device="cpu", block=False, token="s3"
    )
    try:
        for route in ("config", "gradio_api/info", "gradio_api/file=" + str(tmp_path / "ws")):
            assert httpx.get(demo.local_url + route).status_code == 401, route
        with pytest.raises(ValueError, match="Could not login"):
            Client(demo.local_url, auth=("anyone", "wrong"), verbose=False)
        assert (
            "/run"
            in Client(demo.local_url, auth=("anyone", "s3"), verbose=False).view_api(
                return_format="dict", print_info=False
            )["named_endpoints"]
        )
    finally:
        demo.close()
