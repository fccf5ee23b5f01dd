"""The Gradio app (``da3 gradio``, extra ``app``): upload images or a video, reconstruct, view the GLB and depth.

Every run goes through the same ``reconstruct`` flow as the command line, into ``<workspace_dir>/<run id>/``,
with the model pinned to the app's startup options and kept resident (tasks.model_cache).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from da3core.errors import user_message
from flows.backend.auth import ExposureError, check_exposure
from flows.backend.jobs import pinned_model_overrides, quote_path, warm_model
from flows.backend.pages import untrained_banner
from flows.config import RefViewStrategy, load_config
from flows.progress import progress_to
from flows.runtime import prefect_runtime

RESOLUTIONS = {"low_res": "upper_bound_resize", "high_res": "lower_bound_resize"}  # upstream's two choices
REF_VIEWS = [s.value for s in RefViewStrategy]
SAMPLES = Path(__file__).resolve().parent.parent / "samples"


class ReconstructionApp:
    """The app's state (pinned model, workspace, gallery) and the function its button runs."""

    def __init__(
        self,
        model_dir: str | None,
        preset: str | None,
        weights: str,
        workspace_dir: str,
        gallery_dir: str | None,
        device: str = "auto",
    ) -> None:
        from da3core.model.presets import has_gaussian_head

        self.pinned = pinned_model_overrides(model_dir, preset, weights, device)
        self.weights = weights
        self.preset = load_config("reconstruct", self.pinned).model.preset
        self.has_gs = has_gaussian_head(self.preset)
        self.workspace = Path(workspace_dir).expanduser().resolve()
        self.gallery = Path(gallery_dir).expanduser().resolve() if gallery_dir else None

    def overrides(
        self,
        source: Path,
        out: Path,
        resolution: str,
        process_res: int,
        ref_view: str,
        infer_gs: bool,
        conf_percentile: float,
        max_points_k: float,
        show_cameras: bool,
        fps: float,
    ) -> list[str]:
        """The reconstruct-flow overrides for one run of the UI's options."""
        gs = infer_gs and self.has_gs
        return [
            f"scene={quote_path(source)}",
            f"output_dir={quote_path(out)}",
            f"storage.root={quote_path(out.parent)}",
            "export=glb+gs_video" if gs else "export=glb",
            f"processing.method={RESOLUTIONS[resolution]}",
            f"processing.process_res={int(process_res)}",
            f"ref_view_strategy={ref_view}",
            f"infer_gs={gs}",
            f"input.fps={float(fps)}",
            f"+exporters.glb.conf_thresh_percentile={float(conf_percentile)}",
            f"+exporters.glb.num_max_points={int(max_points_k * 1000)}",
            f"+exporters.glb.show_cameras={bool(show_cameras)}",
            *self.pinned,
        ]

    def run(
        self,
        images: list[str] | None,
        video: str | None,
        fps: float = 1.0,
        resolution: str = "low_res",
        process_res: int = 504,
        ref_view: str = "saddle_balanced",
        infer_gs: bool = False,
        conf_percentile: float = 10.0,
        max_points_k: float = 1000.0,
        show_cameras: bool = True,
        save_to_gallery: bool = False,
        gallery_name: str = "",
        progress: Any = None,
    ) -> tuple[str, list[str], str | None, str]:
        """Reconstruct the uploaded images (or video); returns (GLB path, depth images, GS video or None, summary)."""
        import gradio as gr

        from flows.reconstruct import reconstruct

        if not images and not video:
            raise gr.Error("upload images or a video first")
        # Gradio serves any file under the workspace to whoever names its path: the run id is what keeps a run's
        # inputs and results to the user who ran it, so it is unguessable (128 random bits).
        run_dir = self.workspace / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex}"
        if images:
            source = run_dir / "input" / "images"
            source.mkdir(parents=True)
            for i, path in enumerate(images):  # upload order is the view order
                shutil.copy(path, source / f"{i:04d}_{Path(path).name}")
        elif video is not None:
            source = run_dir / "input" / Path(video).name
            source.parent.mkdir(parents=True)
            shutil.copy(video, source)
        out = run_dir / "out"
        overrides = self.overrides(
            source, out, resolution, process_res, ref_view, infer_gs, conf_percentile, max_points_k, show_cameras, fps
        )
        try:
            with progress_to(lambda f, m: progress(f, desc=m) if progress is not None else None):
                result = reconstruct(load_config("reconstruct", overrides))
        except Exception as exc:  # shown in the UI as one line; the traceback is in Prefect's log
            raise gr.Error(user_message(exc)) from exc
        depth = sorted(str(p) for p in (out / "depth_vis").glob("*.jpg"))
        videos = sorted(str(p) for p in (out / "gs_video").glob("*.mp4"))
        summary = f"{result.name}: {len(depth)} views in {result.seconds:.1f}s with {self.preset} → `{out}`"
        if save_to_gallery:
            summary += f"; saved to the gallery as `{self.save(out, gallery_name or run_dir.name)}`"
        return str(out / "scene.glb"), depth, videos[0] if videos else None, summary

    def save(self, out: Path, name: str) -> str:
        """Copy a run's GLB, thumbnail, depth images, videos and store into ``<gallery>/<name>/``."""
        import gradio as gr

        if self.gallery is None:
            raise gr.Error("no gallery folder configured (start the app with a gallery dir)")
        target = (self.gallery / name).resolve()
        if not target.is_relative_to(self.gallery) or target == self.gallery:
            raise gr.Error(f"gallery name {name!r} must be a folder name inside the gallery")
        target.parent.mkdir(parents=True, exist_ok=True)
        # Built beside and swapped in whole: saving again under a name replaces that scene, never merges into it
        # (a merged scene.zarr would mix two stores' arrays). Hidden names, so the gallery never lists them.
        staging = target.parent / f".{target.name}.saving-{uuid.uuid4().hex[:12]}"
        staging.mkdir()
        try:
            for item in ("scene.glb", "scene.jpg", "depth_vis", "gs_video", "scene.zarr"):  # the store: which weights
                src = out / item
                if src.is_dir():
                    shutil.copytree(src, staging / item)
                elif src.is_file():
                    shutil.copy(src, staging / item)
            aside = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:12]}"
            if target.exists():
                os.rename(target, aside)
            os.rename(staging, target)
            shutil.rmtree(aside, ignore_errors=True)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target.relative_to(self.gallery).as_posix()


def build_demo(app: ReconstructionApp, cache_examples: bool = False, cache_gs_tag: str = "") -> Any:
    """The Blocks UI wired to ``app.run``; sample scenes become examples (3DGS for names containing cache_gs_tag)."""
    import gradio as gr

    def run(
        images,
        video,
        fps,
        resolution,
        process_res,
        ref_view,
        infer_gs,
        conf,
        max_k,
        cameras,
        save,
        name,
        progress=gr.Progress(),  # noqa: B008 - Gradio injects its progress tracker through this default
    ):
        return app.run(
            images, video, fps, resolution, process_res, ref_view, infer_gs, conf, max_k, cameras, save, name, progress
        )

    with gr.Blocks(title="Depth Anything 3", analytics_enabled=False) as demo:
        gr.Markdown(f"# Depth Anything 3\nModel **{app.preset}**. Upload images or a video, then Reconstruct.")
        if app.weights == "random":
            gr.HTML(untrained_banner(app.weights))
        with gr.Row():
            with gr.Column(scale=1):
                images = gr.File(label="Images", file_count="multiple", file_types=["image"], type="filepath")
                video = gr.Video(label="or a video")
                fps = gr.Slider(0.5, 30, value=10, step=0.5, label="Video sampling FPS")
                resolution = gr.Radio(
                    list(RESOLUTIONS),
                    value="low_res",
                    label="Processing",
                    info="low_res: upper_bound_resize, high_res: lower_bound_resize",
                )
                process_res = gr.Slider(56, 1008, value=504, step=14, label="Processing resolution")
                ref_view = gr.Dropdown(REF_VIEWS, value="saddle_balanced", label="Reference view strategy")
                infer_gs = gr.Checkbox(
                    False,
                    label="Infer 3D Gaussians (novel-view video)",
                    interactive=app.has_gs,
                    info=None if app.has_gs else f"{app.preset} has no Gaussian head",
                )
                conf = gr.Slider(0, 100, value=10, step=1, label="Filter percentage (confidence percentile)")
                max_k = gr.Slider(1, 5000, value=1000, step=1, label="Max points (K points)")
                cameras = gr.Checkbox(True, label="Show cameras")
                save = gr.Checkbox(False, label="Save to gallery", interactive=app.gallery is not None)
                name = gr.Textbox(label="Gallery name", placeholder="defaults to the run id")
                button = gr.Button("Reconstruct", variant="primary")
            with gr.Column(scale=2):
                with gr.Tab("Point Cloud & Cameras"):
                    model3d = gr.Model3D(label="scene.glb", clear_color=(0.1, 0.1, 0.1, 1.0))
                with gr.Tab("Depth"):
                    depth = gr.Gallery(label="image | depth", columns=2)
                with gr.Tab("3DGS Rendered Novel Views"):
                    gs_video = gr.Video(label="Gaussian fly-through")
                summary = gr.Markdown()
        inputs = [images, video, fps, resolution, process_res, ref_view, infer_gs, conf, max_k, cameras, save, name]
        outputs = [model3d, depth, gs_video, summary]
        button.click(run, inputs, outputs, concurrency_limit=1)  # one run at a time: one resident model
        examples = [
            [
                sorted(str(p) for p in (folder / "images").glob("*.jpg")),
                None,
                10,
                "low_res",
                504,
                "saddle_balanced",
                bool(cache_gs_tag) and cache_gs_tag in folder.name and app.has_gs,
                10,
                1000,
                True,
                False,
                "",
            ]
            for folder in sorted(SAMPLES.glob("*"))
            if (folder / "images").is_dir()
        ]
        if examples:
            gr.Examples(examples, inputs, outputs, fn=run, cache_examples=cache_examples, label="Sample scenes")
    return demo


def launch(
    model_dir: str | None,
    preset: str | None,
    weights: str,
    workspace_dir: str,
    gallery_dir: str | None,
    host: str = "127.0.0.1",
    port: int = 7860,
    share: bool = False,
    debug: bool = False,
    cache_examples: bool = False,
    cache_gs_tag: str = "",
    device: str = "auto",
    block: bool = True,
    token: str | None = None,
) -> Any:
    """Warm the model and serve the app (127.0.0.1 unless told otherwise); ``block=False`` returns the Blocks, whose
    runs then report to the caller's Prefect API (:func:`flows.runtime.prefect_runtime`). With ``token``, a login
    page asks for it (any user name); off loopback or with ``share`` it is required."""
    check_exposure(host, token, "gradio app")
    if share and not token:
        raise ExposureError(
            "refusing to publish a public gradio.live link without a token: pass --token (the login page then "
            "asks for it) or drop --share"
        )
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    with prefect_runtime() if block else contextlib.nullcontext():
        app = ReconstructionApp(model_dir, preset, weights, workspace_dir, gallery_dir, device)
        warm_model(app.pinned)
        app.workspace.mkdir(parents=True, exist_ok=True)
        demo = build_demo(app, cache_examples, cache_gs_tag)
        allowed = [str(app.workspace)] + ([str(app.gallery)] if app.gallery else [])
        demo.queue(max_size=20).launch(
            server_name=host,
            server_port=port,
            share=share,
            debug=debug,
            show_error=True,
            ssr_mode=False,
            allowed_paths=allowed,
            prevent_thread_lock=not block,
            quiet=not debug,
            auth=(lambda _user, password: secrets.compare_digest(password.encode(), token.encode())) if token else None,
            auth_message="Any user name; the password is the token given to `da3 gradio --token`.",
        )
    return demo
