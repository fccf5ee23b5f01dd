"""The evaluation flow through Prefect on the synthetic DA3-BENCH miniatures: perfect scores for the GT fed back,
exact values for a known perturbation of stored predictions, reuse of predictions, bad data reported per scene,
datasets and reports on S3, scenes on Dask workers, and report files read back by other libraries."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from live import kill_when
from paths import REPO_ROOT
from scipy.spatial.transform import Rotation

from da3core.evaluation.datasets import open_dataset
from da3core.geometry import affine_inverse, as_homogeneous
from da3core.store import SceneStore
from da3core.synthetic import write_miniature
from flows.evaluate import main

MODEL = ["model=da3-small", "model.weights=random", "processing.process_res=56"]
# A similarity of the world (rotation, translation, scale 3): poses in any frame and scale score perfectly.
WORLD = as_homogeneous(
    np.concatenate(
        [Rotation.from_euler("xyz", [15, -40, 70], degrees=True).as_matrix(), [[0.3], [-0.8], [1.5]]], axis=1
    )
)


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bench")
    for name in ("hiroom", "7scenes", "eth3d"):
        write_miniature(name, root)
    return root


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _ground_truth(capsys, bench: Path, out: Path, *argv: str) -> tuple[int, str, str]:
    """An evaluation of the miniatures in ``bench`` with the ground truth as predictor, into ``out``."""
    return _run(capsys, *argv, f"bench_root={bench}", "predictor=ground_truth", f"output_dir={out}")


def _table(out: Path, dataset: str, mode: str) -> pd.DataFrame:
    """One dataset-and-mode CSV read by pandas, checked against its JSON twin."""
    frame = pd.read_csv(out / "metric_results" / f"{dataset}_{mode}.csv", index_col="scene")
    as_json = json.loads((out / "metric_results" / f"{dataset}_{mode}.json").read_text())
    assert set(as_json) == set(frame.index) and "mean" in as_json
    for scene, row in as_json.items():
        assert frame.loc[scene].to_dict() == pytest.approx(row, abs=0, rel=0)
    return frame


@pytest.mark.slow
def test_ground_truth_fed_back_scores_perfectly(bench, tmp_path, capsys):
    out = tmp_path / "gt"
    code, stdout, _ = _ground_truth(
        capsys, bench, out, "benchmark=[hiroom,eth3d]", "modes=[pose,rel_depth,metric_depth,recon_posed]"
    )
    assert code == 0, stdout
    for dataset in ("hiroom", "eth3d"):
        assert (_table(out, dataset, "pose")[["auc03", "auc05", "auc15", "auc30"]] == 1.0).all().all()
        for mode in ("rel_depth", "metric_depth"):
            depth = _table(out, dataset, mode)
            assert (depth["abs_rel"] == 0).all()
            assert (depth[["delta_1_03", "delta_1_25"]] == 1).all().all()
        # The fused GT lies on the GT surface (precision); a few views see only part of the room, so recall stays low.
        recon = _table(out, dataset, "recon_posed")
        assert (recon["precision"] > 0.95).all() and (recon["acc"] < 0.05).all()
    assert "POSE ESTIMATION" in stdout and "HiRoom" in stdout and "ETH3D" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert not summary["failures"] and summary["info"]["predictor"].startswith("ground truth")
    report = (out / "report.html").read_text()
    assert report.count("<svg") >= 5 and "synthetic/room_01/cam_00" in report and "ETH3D" in report


def test_names_listed_twice_count_once_and_a_misspelt_scene_says_so(bench, tmp_path, capsys):
    out = tmp_path / "twice"
    scenes = "scene_names=[synthetic/room_00/cam_00,synthetic/room_99/cam_00]"
    code, stdout, _ = _ground_truth(capsys, bench, out, "benchmark=[hiroom,hiroom]", "modes=[pose,pose]", scenes)
    assert code == 0, stdout
    assert stdout.count("POSE ESTIMATION") == 1
    assert list(_table(out, "hiroom", "pose").index) == ["synthetic/room_00/cam_00", "mean"]
    assert "scene_names/synthetic/room_99/cam_00: no scene 'synthetic/room_99/cam_00' in hiroom" in stdout


def _perturb_stores(bench: Path, out: Path) -> dict[str, float]:
    """Replace each stored prediction by the GT with depth 5% too far and cameras in another world frame and scale;
    return each store's inference timestamp."""
    dataset, stamps = open_dataset("hiroom", str(bench / "hiroom")), {}
    for name in dataset.scenes():
        scene = dataset.load(name)
        store = SceneStore(str(out / "predictions" / "hiroom" / name.replace("/", "-") / "unposed" / "scene.zarr"))
        depth = np.stack([1.05 * scene.gt_depth(i) for i in range(len(scene))]).astype(np.float32)
        moved = as_homogeneous(scene.extrinsics) @ affine_inverse(WORLD)
        moved[:, :3, 3] *= 3.0
        store.write_array("depth", depth, ["frame", "y", "x"])
        store.write_array("extrinsics", moved[:, :3].astype(np.float32), ["frame", "ext_row", "ext_col"])
        stamps[name] = store.attrs()["stages"]["inference"]["finished_at"]
    return stamps


@pytest.mark.slow
def test_stored_predictions_are_reused_and_a_known_perturbation_scores_as_it_must(bench, tmp_path, capsys):
    out = tmp_path / "model"
    argv = [
        "benchmark=[hiroom]",
        f"bench_root={bench}",
        "modes=[pose,rel_depth,metric_depth]",
        f"output_dir={out}",
        *MODEL,
    ]
    code, stdout, _ = _run(capsys, *argv)
    assert code == 0, stdout
    first = json.loads((out / "summary.json").read_text())
    assert [s["predictions"]["unposed"]["status"] for s in first["scenes"]] == ["done", "done"]
    stamps = _perturb_stores(bench, out)
    code, stdout, _ = _run(capsys, *argv)  # evaluation-only rerun: scores what the stores hold, no inference
    assert code == 0, stdout
    again = json.loads((out / "summary.json").read_text())
    assert [s["predictions"]["unposed"]["status"] for s in again["scenes"]] == ["skipped", "skipped"]
    assert _perturb_stores(bench, out) == stamps
    # Every valid pixel 5% too far: AbsRel 0.05, no ratio under 1.03, all under 1.25; the per-frame least-squares
    # scale of rel_depth removes the error; the poses are the GT in another frame and scale.
    metric, rel, pose = (_table(out, "hiroom", m) for m in ("metric_depth", "rel_depth", "pose"))
    assert np.allclose(metric["abs_rel"], 0.05, atol=1e-6) and (metric["delta_1_03"] == 0).all()
    assert (metric["delta_1_25"] == 1).all()
    assert np.allclose(rel["abs_rel"], 0, atol=1e-6) and (rel["delta_1_03"] == 1).all()
    assert np.allclose(pose[["auc03", "auc30"]], 1.0)


@pytest.mark.slow
def test_bad_data_is_reported_per_scene_and_the_others_go_on(bench, tmp_path, capsys):
    root = tmp_path / "bench"
    shutil.copytree(bench / "eth3d", root / "eth3d")
    without_gt = root / "eth3d" / "electro" / "ground_truth_depth"
    shutil.rmtree(without_gt)
    (root / "hiroom").mkdir(parents=True)  # a wrong layout: no scene list, no data/
    out = tmp_path / "out"
    code, stdout, stderr = _run(
        capsys,
        "benchmark=[eth3d,hiroom,7scenes]",
        f"bench_root={root}",
        "predictor=ground_truth",
        "modes=[pose,metric_depth]",
        f"output_dir={out}",
    )
    assert code == 1 and "error: 3 failures" in stderr
    failures = json.loads((out / "summary.json").read_text())["failures"]
    assert len(failures) == 3 and all("\n" not in line for line in failures)
    assert any(line.startswith("7scenes: FAILED") and str(root / "7scenes") in line for line in failures)
    assert any(line.startswith("hiroom: FAILED") and str(root / "hiroom") in line for line in failures)
    assert any(line.startswith("eth3d/electro [metric_depth]: FAILED") and str(without_gt) in line for line in failures)
    assert set(_table(out, "eth3d", "pose").index) == {"courtyard", "electro", "mean"}  # its poses still score
    assert set(_table(out, "eth3d", "metric_depth").index) == {"courtyard", "mean"}
    assert "FAILURES (3)" in stdout and "report.html" in stdout

    code, _, stderr = _run(
        capsys,
        "benchmark=[7scenes]",
        f"bench_root={root}",
        "predictor=ground_truth",
        "modes=[pose]",
        f"output_dir={tmp_path / 'nothing'}",
    )
    assert code == 2 and "nothing could be evaluated" in stderr


def test_nothing_scored_leaves_the_earlier_reports(bench, tmp_path, capsys):
    """A mistyped bench_root scores nothing: exit 2, one line, and the last real report there is not replaced."""
    out = tmp_path / "out"
    args = ["benchmark=[hiroom]", "predictor=ground_truth", "modes=[pose]", f"output_dir={out}"]
    assert _run(capsys, *args, f"bench_root={bench}")[0] == 0
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert out / "report.html" in before
    code, stdout, stderr = _run(capsys, *args, f"bench_root={tmp_path / 'bnch'}")
    assert code == 2 and {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before
    assert stderr.strip().splitlines() == [
        "error: nothing could be evaluated (1 failures, listed above; no report written); "
        "check bench_root, datasets and modes"
    ]
    assert "report:" not in stdout and str(tmp_path / "bnch") in stdout


def test_config_errors_are_one_line(tmp_path, capsys):
    code, _, stderr = _run(capsys, "benchmark=[kitti]", f"bench_root={tmp_path}", f"output_dir={tmp_path}")
    assert code == 2 and stderr.strip().splitlines() == [
        "error: config error at benchmark: unknown dataset 'kitti'; "
        "choose from [eth3d,7scenes,scannetpp,hiroom,dtu,dtu64]"
    ]


@pytest.mark.slow
def test_dataset_and_reports_on_s3(bench, s3_options, capsys):
    import s3fs

    fs = s3fs.S3FileSystem(**s3_options)
    fs.put(str(bench / "7scenes"), "da3-test/eval-bench/7scenes", recursive=True)
    options = [
        f"+storage.options.key={s3_options['key']}",
        f"+storage.options.secret={s3_options['secret']}",
        f"+storage.options.client_kwargs.endpoint_url={s3_options['client_kwargs']['endpoint_url']}",
    ]
    out = "s3://da3-test/eval-out"
    code, stdout, _ = _run(
        capsys,
        "benchmark=[7scenes]",
        "bench_root=s3://da3-test/eval-bench",
        "modes=[pose]",
        f"output_dir={out}",
        *options,
        *MODEL,
    )
    assert code == 0, stdout
    with fs.open(f"{out}/metric_results/7scenes_pose.csv") as f:
        table = pd.read_csv(f, index_col="scene")
    assert set(table.index) == {"chess", "stairs", "mean"} and table["auc30"].between(0, 1).all()
    assert fs.exists(f"{out}/predictions/7scenes/chess/unposed/scene.zarr")
    assert b"<svg" in fs.cat(f"{out}/report.html")


@pytest.mark.slow
def test_dask_runner_spreads_scenes_over_workers(bench, tmp_path, capsys):
    out = tmp_path / "dask"
    code, stdout, _ = _run(
        capsys,
        "benchmark=[hiroom]",
        f"bench_root={bench}",
        "modes=[pose]",
        f"output_dir={out}",
        "runner=dask",
        "dask_workers=2",
        *MODEL,
    )
    assert code == 0, stdout
    scenes = json.loads((out / "summary.json").read_text())["scenes"]
    pids = {SceneStore(s["predictions"]["unposed"]["store"]).attrs()["worker"]["pid"] for s in scenes}
    assert len(pids) == 2 and os.getpid() not in pids


def _finished(out: Path) -> dict[str, float]:
    """Inference timestamp of every complete prediction store under ``out``."""
    done = {}
    for path in out.glob("predictions/*/*/unposed/scene.zarr"):
        store = SceneStore(str(path))
        if store.is_complete():
            done[str(path)] = store.attrs()["stages"]["inference"]["finished_at"]
    return done


@pytest.mark.slow
def test_a_killed_evaluation_resumes_without_recomputing_finished_scenes(bench, tmp_path):
    out = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-m",
        "flows.evaluate",
        "benchmark=[hiroom,eth3d]",
        f"bench_root={bench}",
        "modes=[pose]",
        f"output_dir={out}",
        *MODEL,
    ]
    kill_when(cmd, lambda: _finished(out))
    before = _finished(out)
    assert 1 <= len(before) < 4, before
    assert not (out / "summary.json").exists()
    subprocess.run(cmd, cwd=REPO_ROOT, check=True, capture_output=True, timeout=600)
    after = _finished(out)
    assert len(after) == 4 and all(after[path] == stamp for path, stamp in before.items()), "finished scenes redone"
    scenes = json.loads((out / "summary.json").read_text())["scenes"]
    statuses = sorted(s["predictions"]["unposed"]["status"] for s in scenes)
    assert statuses == sorted(["skipped"] * len(before) + ["done"] * (4 - len(before)))
