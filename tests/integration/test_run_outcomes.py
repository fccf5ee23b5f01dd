"""What runs leave in Prefect, read back through its client: skipped scenes and videos end ``Cached`` (flow and task
runs), and every run publishes an artifact naming its outputs and key figures. Also Hydra multirun sweeps over
models and scenes, each job in its own folder."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, TaskRunFilter, TaskRunFilterName

from da3core.store import SceneStore
from da3core.synthetic import make_capture, write_image_folder, write_video
from flows import batch as batch_module
from flows import reconstruct as reconstruct_module
from flows.batch import batch
from flows.config import load_config
from flows.reconstruct import reconstruct
from flows.video_depth import video_depth

pytestmark = pytest.mark.slow  # several flow runs and Prefect's temporary server

FAST = ["model=da3-small", "model.weights=random", "processing.process_res=56", "export=mini_npz"]


def artifacts_of(flow_run_id) -> list:
    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )


def final_task_runs(names: list[str], count: int, timeout: float = 30.0) -> list:
    """The task runs named ``names`` once ``count`` of them are recorded in a final state: Prefect records task-run
    states from the events the run sends, a moment after the run has returned."""
    from prefect.events.worker import EventsWorker

    EventsWorker.drain_all(timeout=timeout, at_exit=False)
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            tasks = client.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(any_=names)))
            if (len(tasks) == count and all(t.state.is_final() for t in tasks)) or time.monotonic() > deadline:
                return tasks
            time.sleep(0.2)


def test_skipped_scene_ends_cached_and_each_run_publishes_its_outputs(tmp_path):
    write_image_folder(make_capture(3, 64, 48, seed=7), tmp_path / "porchcached")
    cfg = load_config("reconstruct", [f"scene={tmp_path / 'porchcached'}", f"storage.root={tmp_path / 'out'}", *FAST])
    first, second = reconstruct(cfg, return_state=True), reconstruct(cfg, return_state=True)
    assert (first.name, second.name) == ("Completed", "Cached") and second.is_completed()
    assert second.result().status == "skipped" and first.result().status == "done"
    with get_client(sync_client=True) as client:  # the server's record, not only the local state object
        assert client.read_flow_run(second.state_details.flow_run_id).state.name == "Cached"

    for state in (first, second):
        (artifact,) = artifacts_of(state.state_details.flow_run_id)
        assert artifact.type == "markdown" and artifact.key == "scene-porchcached"
        result = state.result()
        assert f"`{result.store_url}`" in artifact.data and "| views | 3 |" in artifact.data
        assert "da3-small (random weights)" in artifact.data
    npz = str(tmp_path / "out" / "porchcached" / "exports" / "mini_npz" / "results.npz")
    assert Path(npz).is_file() and f"`{npz}`" in artifacts_of(first.state_details.flow_run_id)[0].data


def test_batch_scene_tasks_end_cached_on_rerun_and_the_batch_publishes_a_table(tmp_path):
    for i, name in enumerate(("deckcached", "yardcached")):
        write_image_folder(make_capture(3, 64, 48, seed=10 + i), tmp_path / "data" / name)
    cfg = load_config(
        "batch", [f"dataset={tmp_path / 'data'}", f"storage.root={tmp_path / 'out'}", "concurrency=2", *FAST]
    )
    runs = [batch(cfg, return_state=True) for _ in range(2)]
    by_start = sorted(final_task_runs(["scene-deckcached", "scene-yardcached"], 4), key=lambda t: t.start_time)
    assert [t.state.name for t in by_start] == ["Completed", "Completed", "Cached", "Cached"]
    assert [r.status for r in runs[1].result().results] == ["skipped", "skipped"]

    (table,) = artifacts_of(runs[0].state_details.flow_run_id)
    assert table.type == "table"
    rows = {row["scene"]: row for row in json.loads(table.data)}
    assert set(rows) == {"deckcached", "yardcached"}
    assert rows["deckcached"]["status"] == "done"
    assert rows["deckcached"]["store"] == str(tmp_path / "out" / "deckcached" / "scene.zarr")


def test_multirun_sweeps_models_and_scenes_into_separate_folders(tmp_path, capsys):
    for i, name in enumerate(("alpha", "beta")):
        write_image_folder(make_capture(3, 64, 48, seed=20 + i), tmp_path / name)
    scenes = f"{tmp_path / 'alpha'},{tmp_path / 'beta'}"
    code = reconstruct_module.main(
        [
            "-m",
            "model=da3-small,da3-base",
            f"scene={scenes}",
            f"storage.root={tmp_path / 'out'}",
            "model.weights=random",
            "processing.process_res=56",
            "export=mini_npz",
        ]
    )
    assert code == 0
    err = capsys.readouterr().err
    assert "[multirun 1/4] model=da3-small" in err and "[multirun 4/4] model=da3-base" in err
    for preset in ("da3-small", "da3-base"):
        for name in ("alpha", "beta"):
            store = SceneStore(str(tmp_path / "out" / f"model={preset}" / name / "scene.zarr"))
            assert store.is_complete() and store.attrs()["model"]["preset"] == preset
            assert store.attrs()["inputs"]["files"][0]["path"].startswith(str(tmp_path / name))


def test_multirun_reports_a_failing_job_and_runs_the_rest(tmp_path, capsys):
    write_image_folder(make_capture(3, 64, 48, seed=30), tmp_path / "gamma")
    code = reconstruct_module.main(
        ["-m", f"scene={tmp_path / 'missing'},{tmp_path / 'gamma'}", f"storage.root={tmp_path / 'out'}", *FAST]
    )
    assert code == 2  # a user error in one job: exit 2, after the other job ran
    assert SceneStore(str(tmp_path / "out" / "gamma" / "scene.zarr")).is_complete()
    assert not (tmp_path / "out" / "missing").exists()
    assert sum(line.startswith("error:") for line in capsys.readouterr().err.splitlines()) == 1


def test_multirun_with_one_output_dir_keeps_jobs_apart_or_refuses(tmp_path, capsys):
    """Swept settings nest under a given output_dir; swept inputs into one fixed output_dir are refused before any
    job runs (each would replace the last one's result)."""
    for name in ("delta", "epsilon"):
        write_image_folder(make_capture(2, 64, 48, seed=40), tmp_path / name)
    out = tmp_path / "out"
    argv = [f"output_dir={out}", "model=da3-small", "model.weights=random", "export=mini_npz"]
    code = reconstruct_module.main(["-m", f"scene={tmp_path / 'delta'}", "processing.process_res=28,56", *argv])
    assert code == 0
    for res in (28, 56):
        store = SceneStore(str(out / f"processing.process_res={res}" / "scene.zarr"))
        assert store.is_complete() and store.attrs()["config"]["processing"]["process_res"] == res
    capsys.readouterr()
    scenes = f"scene={tmp_path / 'delta'},{tmp_path / 'epsilon'}"
    assert reconstruct_module.main(["-m", scenes, "processing.process_res=28", *argv]) == 2
    err = capsys.readouterr().err
    assert "[multirun" not in err and "error: config error at output_dir: it is one folder for every scene" in err
    assert sorted(p.name for p in out.iterdir()) == ["processing.process_res=28", "processing.process_res=56"]


def test_batch_refuses_one_output_dir_for_all_its_scenes(tmp_path, capsys):
    write_image_folder(make_capture(2, 64, 48, seed=41), tmp_path / "data" / "zeta")
    assert batch_module.main([f"dataset={tmp_path / 'data'}", f"output_dir={tmp_path / 'one'}", *FAST]) == 2
    assert "set storage.root=" in capsys.readouterr().err and not (tmp_path / "one").exists()


def test_skipped_video_ends_cached_and_its_artifact_lists_annolid_outputs(tmp_path):
    video = write_video(make_capture(6, 70, 56, seed=40), tmp_path / "clipcached.mp4").path
    cfg = load_config("video_depth", [f"video={video}", "weights=random", "input_size=28", "save_npz=true"])
    first, second = video_depth(cfg, return_state=True), video_depth(cfg, return_state=True)
    assert (first.name, second.name) == ("Completed", "Cached")
    assert second.result().outputs == first.result().outputs  # the reused run names the same files
    (artifact,) = artifacts_of(first.state_details.flow_run_id)
    assert artifact.key == "video-depth-clipcached-mp4" and "| frames | 6 |" in artifact.data
    assert f"`{tmp_path / 'clipcached' / 'depth.ndjson'}`" in artifact.data
    assert f"`{tmp_path / 'clipcached' / 'clipcached_depths.npz'}`" in artifact.data
