"""Every command in the README's bash blocks runs as written, with seeded random weights at a tiny resolution.

Placeholders in the README (``path/to/video.mp4``, ``s3://bucket/...``) are made real before a command runs:
synthetic scenes and videos are written at those paths, ``bucket`` lives on a moto server reached through the
standard AWS environment variables. A README command without a case here fails the suite, so the README cannot
grow a command nobody has run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from paths import REPO_ROOT
from s3server import moto_s3

from da3core.synthetic import make_capture, make_sequence, write_image_folder, write_video

pytestmark = pytest.mark.slow

FENCE = re.compile(r"```bash\n(.*?)```", re.S)
TAIL_COMMENT = re.compile(r"\s+#\s.*$")
TINY = ("model.weights=random", "processing.process_res=56")
VIDEO_TINY = ("input_size=56", "max_frames=6")


def readme_commands(text: str) -> list[str]:
    """The commands of every ```bash block: continuations joined, comments and blank lines dropped."""
    commands = []
    for block in FENCE.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            line = TAIL_COMMENT.sub("", line).strip()
            if line and not line.startswith("#"):
                commands.append(" ".join(line.split()))
    return commands


@dataclass
class Case:
    """How to make one README command runnable, what to append, and what it must leave behind."""

    prepare: Callable[[Path, dict], None] = lambda cwd, s3: None
    extra: tuple[str, ...] = TINY
    outputs: tuple[str, ...] = ()  # globs under the working directory, or s3:// globs
    stdout: str = ""
    env: dict[str, str] = field(default_factory=dict)
    check: Callable[[Path], None] = lambda cwd: None  # what the outputs must say


def _copy_samples(cwd: Path, s3: dict) -> None:
    shutil.copytree(REPO_ROOT / "samples", cwd / "samples")


def _video(rel: str) -> Callable[[Path, dict], None]:
    def write(cwd: Path, s3: dict) -> None:
        (cwd / rel).parent.mkdir(parents=True, exist_ok=True)
        write_video(make_capture(n_views=6, height=48, width=64, seed=3), cwd / rel, fps=6)

    return write


def _walk(cwd: Path, s3: dict) -> None:
    write_video(
        make_sequence("open", 90, height=48, width=64), cwd / "walk.mp4", fps=12
    )  # > chunk_size views at fps 10


def _scene_folders(cwd: Path, s3: dict) -> None:
    for i in range(2):
        write_image_folder(make_capture(n_views=2, height=48, width=64, seed=i), cwd / f"path/to/folder_of_scenes/s{i}")


def _s3_scene(cwd: Path, s3: dict) -> None:
    write_image_folder(make_capture(n_views=2, height=48, width=64, seed=5), cwd / "kitchen")
    s3["fs"].put(str(cwd / "kitchen"), "bucket/scenes/kitchen", recursive=True)


def _s3_scenes(cwd: Path, s3: dict) -> None:
    for i in range(2):
        write_image_folder(make_capture(n_views=2, height=48, width=64, seed=10 + i), cwd / f"d/s{i}")
        s3["fs"].put(str(cwd / f"d/s{i}"), f"bucket/scenes/s{i}", recursive=True)


def _s3_video_and_checkpoint(cwd: Path, s3: dict) -> None:
    from da3core.video_depth.loading import write_random_checkpoint

    _video("mice.mp4")(cwd, s3)
    s3["fs"].put(str(cwd / "mice.mp4"), "bucket/videos/mice.mp4")
    write_random_checkpoint(cwd / "checkpoints" / "video_depth_anything_vits.pth", encoder="vits")


def _miniatures(cwd: Path, s3: dict) -> None:
    from da3core.synthetic import write_miniature

    for name in ("hiroom", "eth3d"):
        write_miniature(name, cwd / "bench")


def _gt_scores_perfectly(cwd: Path) -> None:
    results = cwd / "out/evaluation/ground_truth/metric_results"
    assert json.loads((results / "hiroom_pose.json").read_text())["mean"]["auc30"] == 1.0
    assert json.loads((results / "eth3d_metric_depth.json").read_text())["mean"]["abs_rel"] == 0.0


def _every_view_stored(cwd: Path) -> None:
    from da3core.store import SceneStore

    store = SceneStore(str(cwd / "outputs/walk/scene.zarr"))
    n = store.attrs()["n_frames"]
    assert store.is_complete() and n > 60 and store.read_array("depth").shape[0] == n  # more than one chunk


CASES: dict[str, Case] = {
    "python -m flows.reconstruct scene=samples/room export=glb+gs_video model=da3-giant infer_gs=true": Case(
        _copy_samples,
        outputs=("outputs/room/scene.zarr/zarr.json", "outputs/room/scene.glb", "outputs/room/gs_video/*.mp4"),
    ),
    "python -m flows.reconstruct scene=path/to/video.mp4 input.fps=2 model=da3-base "
    "export=mini_npz+glb+depth_vis": Case(
        _video("path/to/video.mp4"),
        outputs=("outputs/video/exports/mini_npz/results.npz", "outputs/video/scene.glb", "outputs/video/depth_vis/*"),
    ),
    "python -m flows.reconstruct scene=s3://bucket/scenes/kitchen storage.root=s3://bucket/out "
    "storage.options.client_kwargs.endpoint_url=http://127.0.0.1:9000": Case(
        _s3_scene, outputs=("s3://bucket/out/kitchen/scene.zarr/zarr.json",)
    ),
    "python -m flows.batch dataset=path/to/folder_of_scenes concurrency=2": Case(
        _scene_folders, outputs=("outputs/s0/scene.zarr/zarr.json", "outputs/s1/scene.zarr/zarr.json")
    ),
    "python -m flows.batch dataset=s3://bucket/scenes runner=dask dask_workers=4": Case(
        _s3_scenes, outputs=("outputs/s0/scene.zarr/zarr.json", "outputs/s1/scene.zarr/zarr.json")
    ),
    "python -m flows.reconstruct --cfg": Case(extra=(), stdout="process_res"),
    "python -m flows.reconstruct scene=walk.mp4 input.fps=10 streaming.enabled=true streaming.chunk_size=60 "
    "streaming.overlap=30 streaming.loop_closure=true export=glb+colmap": Case(
        _walk,
        outputs=("outputs/walk/scene.zarr/zarr.json", "outputs/walk/scene.glb", "outputs/walk/**/images.bin"),
        check=_every_view_stored,
    ),
    "python -m flows.reconstruct -m model=da3-small,da3-base scene=samples/room": Case(
        _copy_samples,
        outputs=(
            "outputs/model=da3-small/room/scene.zarr/zarr.json",
            "outputs/model=da3-base/room/scene.zarr/zarr.json",
        ),
    ),
    "python -m flows.video_depth video=videos/mice.mp4 encoder=vits streaming=true target_fps=15 max_res=1280": Case(
        _video("videos/mice.mp4"), extra=("weights=random",) + VIDEO_TINY, outputs=("videos/mice/depth.ndjson",)
    ),
    "python -m flows.video_depth video=s3://bucket/videos/mice.mp4 weights=checkpoints/ save_npz=true "
    "save_depth_video=true": Case(
        _s3_video_and_checkpoint,
        extra=VIDEO_TINY,
        outputs=(
            "s3://bucket/videos/mice/depth.ndjson",
            "s3://bucket/videos/mice/mice_depths.npz",
            "s3://bucket/videos/mice/mice_vis.mp4",
        ),
    ),
    "python -m flows.video_depth video=clip.mp4 weights=random input_size=56": Case(
        _video("clip.mp4"), extra=("max_frames=6",), outputs=("clip/depth.ndjson",)
    ),
    "python -c \"from da3core.synthetic import write_miniature; [write_miniature(d, 'bench') for d in "
    "('hiroom', 'eth3d')]\"": Case(extra=(), outputs=("bench/hiroom/*", "bench/eth3d/*")),
    "python -m flows.evaluate benchmark=[hiroom,eth3d] bench_root=bench model=da3-small model.weights=random "
    "processing.process_res=56 modes=[pose,recon_unposed,recon_posed,rel_depth] storage.root=out": Case(
        _miniatures,
        extra=(),
        outputs=(
            "out/evaluation/da3-small-random/report.html",
            "out/evaluation/da3-small-random/metric_results/hiroom_pose.csv",
        ),
    ),
    "python -m flows.evaluate benchmark=[hiroom,eth3d] bench_root=bench predictor=ground_truth "
    "modes=[pose,rel_depth,metric_depth] storage.root=out": Case(
        _miniatures, extra=(), outputs=("out/evaluation/ground_truth/report.html",), check=_gt_scores_perfectly
    ),
}
# Commands this test does not run itself, and where they are run instead.
ELSEWHERE = {
    "./scripts/demo.sh": "setup_env.sh runs in .ci/run; its reconstruct line runs in test_demo_command",
    "./scripts/test.sh": ".ci/run runs it on a clean clone",
    './scripts/test.sh -m "not slow"': "the same script with a pytest filter; .ci/run runs the whole of it",
    ". .venv/bin/activate": "every case runs with this interpreter's bin directory first on PATH",
    ".venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy": "scripts/test.sh runs it",
    'python deployments/serve.py --name nightly --cron "0 3 * * *" -- dataset=/data/scenes storage.root=/data/out '
    "runner=dask": "test_deployment.py serves it (synthetic dataset, random weights) and triggers a run",
    "prefect work-pool create da3-process --type process": "test_deployment.py runs this sequence on a local server",
    "prefect deploy --all": "test_deployment.py",
    "prefect server start --analytics-off &": "test_deployment.py starts a server like this (stopped after the test)",
    "export PREFECT_API_URL=http://127.0.0.1:4200/api": "test_prefect_runtime.py: a configured API is used as is",
    'for f in photos/*.jpg; do da3 image "$f" --export-dir "out/$(basename "$f" .jpg)"; done': (
        "test_cli.py runs da3 image; test_prefect_runtime.py a run against a configured API"
    ),
    "da3 backend --preset da3-small &": (
        "test_prefect_runtime.py starts `da3 backend` (random weights) and stops it; benchmarks/startup.py times it"
    ),
    'for f in photos/*.jpg; do da3 image "$f" --export-dir "out/$(basename "$f" .jpg)" --use-backend; done': (
        "test_backend.py runs da3 image --use-backend against a running backend and compares with a local run"
    ),
    "prefect worker start --pool da3-process": "test_deployment.py",
    "prefect deployment run 'batch/nightly-batch'": "test_deployment.py (run_deployment on batch/nightly-batch)",
}


def test_every_readme_command_has_a_case():
    commands = readme_commands((REPO_ROOT / "README.md").read_text())
    unknown = [c for c in commands if c not in CASES and c not in ELSEWHERE]
    assert not unknown, f"README commands without a case in this test: {unknown}"
    assert set(CASES) | set(ELSEWHERE) == set(commands), "cases for commands the README no longer has"


@pytest.fixture(scope="module")
def bucket():
    """A moto server holding ``bucket``, reached the way a user's S3 is: AWS environment variables."""
    import s3fs

    with moto_s3("bucket") as options:
        env = {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_ENDPOINT_URL": options["client_kwargs"]["endpoint_url"],
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        yield {"fs": s3fs.S3FileSystem(**options), "env": env, "endpoint": env["AWS_ENDPOINT_URL"]}


def _run(command: str, cwd: Path, env: dict[str, str], timeout: int = 900) -> subprocess.CompletedProcess:
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return subprocess.run(
        ["bash", "-c", command],
        cwd=cwd,
        env={**os.environ, **env, "PATH": path, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize("command", list(CASES), ids=lambda c: re.sub(r"\W+", "_", c.removeprefix("python -m "))[:70])
def test_readme_command_runs(command: str, tmp_path: Path, bucket: dict):
    case = CASES[command]
    case.prepare(tmp_path, bucket)
    runnable = command.replace("http://127.0.0.1:9000", bucket["endpoint"])  # the README's port is the user's
    out = _run(" ".join([runnable, *case.extra]), tmp_path, {**bucket["env"], **case.env})
    assert out.returncode == 0, f"{command}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    assert "Traceback" not in out.stderr
    assert case.stdout in out.stdout
    for pattern in case.outputs:
        found = bucket["fs"].glob(pattern[5:]) if pattern.startswith("s3://") else list(tmp_path.glob(pattern))
        assert found, f"{command} wrote nothing at {pattern}"
    case.check(tmp_path)


def test_demo_command(tmp_path: Path):
    """scripts/demo.sh's own reconstruct line (after its install step) writes the sample scene's outputs."""
    line = next(
        ln
        for ln in (REPO_ROOT / "scripts/demo.sh").read_text().replace("\\\n", " ").splitlines()
        if ln.startswith("exec ")
    )
    command = line.removeprefix("exec ").replace('"$@"', "").replace(".venv/bin/python", sys.executable)
    out = _run(f"{command} processing.process_res=56 output_dir={tmp_path}/sample", REPO_ROOT, {})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "UNTRAINED" in out.stdout + out.stderr or "random" in out.stdout + out.stderr
    assert (tmp_path / "sample/scene.zarr/zarr.json").exists() and (tmp_path / "sample/scene.glb").exists()
