"""Score a model on the DA3 benchmark: ``python -m flows.evaluate benchmark=[eth3d,hiroom] model=da3-giant
modes=[pose,recon_unposed]``.

Every scene of every dataset runs as one task (threads, or Dask workers with ``runner=dask``): its frames are
laid out as reconstruct-flow input and predicted through the reconstruct tasks into one store per scene and
inference kind (``predictions/<dataset>/<scene>/{unposed,posed}/scene.zarr``), so a rerun skips complete stores and
a killed run resumes; then each mode is scored by its own task. A dataset, scene or mode that fails is reported
in one line and the others go on. Results: ``metric_results/<dataset>_<mode>.{json,csv}`` (upstream's JSON),
``summary.txt`` (printed), ``summary.json`` and ``report.html`` under ``output_dir``.
"""

# Annotations stay objects (no `from __future__ import annotations`): a served or deployed run validates the
# flow's typed parameter from them in a fresh process, where a string annotation was left unresolved.

import sys
from dataclasses import dataclass
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from da3core.evaluation.benchmark import inference_kind, sample_frames, unsupported_reason
from da3core.evaluation.datasets import DATASETS, BenchmarkDataError, BenchScene, open_dataset
from da3core.evaluation.summary import BenchmarkResults, SceneOutcome, summary_text
from da3core.io.storage import check_writable, is_remote, join_url
from da3core.store import SceneStore
from flows.config import EvaluateConfig, reconstruct_config, validate_evaluate
from flows.errors import EXIT_USER_ERROR, run_cli
from flows.reconstruct import reconstruct_scene
from flows.runners import task_runner
from flows.schema import Predictor, Weights
from tasks.evaluation import score, stage_input, write_reports


@dataclass
class ScenePlan:
    """One benchmark scene to evaluate and the modes that apply to its dataset."""

    dataset: str
    root: str
    scene: str
    modes: list[str]


def dataset_root(cfg: EvaluateConfig, name: str) -> str:
    """Where dataset ``name`` lives: its own catalog entry, else ``<bench_root>/<name>`` (bench_root may be a name)."""
    if name in cfg.datasets:
        return cfg.datasets[name]
    root = cfg.datasets.get(cfg.bench_root, cfg.bench_root)
    return join_url(root if is_remote(root) else str(Path(root).expanduser()), name)


def output_location(cfg: EvaluateConfig) -> str:
    """``output_dir``, else ``<storage.root>/evaluation/<preset>`` (``-random`` for random weights, or ground_truth)."""
    if cfg.output_dir:
        return cfg.output_dir
    label = (
        "ground_truth"
        if cfg.predictor is Predictor.ground_truth
        else cfg.model.preset + ("-random" if cfg.model.weights is Weights.random else "")
    )
    return join_url(cfg.storage.root, "evaluation", label)


def predictor_label(cfg: EvaluateConfig) -> str:
    """What made the predictions, for the reports."""
    if cfg.predictor is Predictor.ground_truth:
        return "ground truth fed back (predictor=ground_truth)"
    weights = (
        f"random weights, seed {cfg.model.seed}"
        if cfg.model.weights is Weights.random
        else (cfg.model.path or "pretrained weights from the hub")
    )
    return f"{cfg.model.preset}: {weights}"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def plan_benchmark(cfg: EvaluateConfig, results: BenchmarkResults) -> list[ScenePlan]:
    """Open every dataset and list its scenes; a dataset that cannot be read and a mode that does not apply are
    recorded in ``results`` and left out."""
    logger = get_run_logger()
    plans, listed = [], set()
    for name in dict.fromkeys(cfg.benchmark):  # a dataset listed twice is evaluated once
        for mode in results.modes:
            reason = unsupported_reason(DATASETS[name], mode, cfg.predictor is Predictor.ground_truth)
            if reason:
                results.not_applicable[f"{name}/{mode}"] = reason
        modes = [m for m in results.modes if f"{name}/{m}" not in results.not_applicable]
        if not modes:
            continue
        root = dataset_root(cfg, name)
        try:
            scenes = open_dataset(name, root, dict(cfg.storage.options)).scenes()
        except BenchmarkDataError as exc:
            results.dataset_failures[name] = _one_line(exc)
            logger.error("%s: %s", name, results.dataset_failures[name])
            continue
        listed |= set(scenes)
        if cfg.scene_names:
            scenes = [s for s in scenes if s in cfg.scene_names]
        plans += [ScenePlan(name, root, scene, modes) for scene in scenes]
        logger.info("%s (%s): %d scenes, modes %s", name, root, len(scenes), ", ".join(modes))
    for missing in [n for n in dict.fromkeys(cfg.scene_names) if n not in listed]:  # a misspelt name says so
        results.not_applicable[f"scene_names/{missing}"] = f"no scene {missing!r} in {', '.join(cfg.benchmark)}"
        logger.warning("scene_names: no scene %r in %s", missing, ", ".join(cfg.benchmark))
    return plans


def _predict(cfg: EvaluateConfig, bench: BenchScene, kind: str, out: str, outcome: SceneOutcome) -> SceneStore:
    """Predict ``bench`` through the reconstruct tasks (a complete store for the same config and frames is reused)."""
    key = bench.name.replace("/", "-")
    name = f"{bench.dataset}-{key}-{kind}"
    source = stage_input(name, bench, kind)
    rcfg = reconstruct_config(cfg, join_url(out, "predictions", bench.dataset, key, kind), posed=kind == "posed")
    result = reconstruct_scene(rcfg, name, source)
    store = SceneStore(result.store_url, dict(cfg.storage.options))
    timings = store.attrs().get("timings", {})
    outcome.predictions[kind] = {
        "status": result.status,
        "store": result.store_url,
        "seconds": result.seconds,
        "inference_s": timings.get("decode", 0.0) + timings.get("inference", 0.0),
    }
    return store


@task(name="evaluate-scene", task_run_name="evaluate-{plan.dataset}-{plan.scene}", cache_policy=NO_CACHE)
def evaluate_scene(cfg: EvaluateConfig, plan: ScenePlan, out: str) -> SceneOutcome:
    """Predict one scene (per inference kind its modes need) and score every mode; failures stay in the outcome."""
    logger = get_run_logger()
    outcome = SceneOutcome(plan.dataset, plan.scene)
    try:
        bench = sample_frames(
            open_dataset(plan.dataset, plan.root, dict(cfg.storage.options)).load(plan.scene), cfg.max_frames
        )
    except BenchmarkDataError as exc:
        outcome.failures["scene"] = _one_line(exc)
        logger.error("%s/%s: %s", plan.dataset, plan.scene, outcome.failures["scene"])
        return outcome
    outcome.views = len(bench)
    stores: dict[str, SceneStore | None] = {}
    for kind in dict.fromkeys(inference_kind(m) for m in plan.modes):
        try:
            stores[kind] = None if cfg.predictor is Predictor.ground_truth else _predict(cfg, bench, kind, out, outcome)
        except Exception as exc:  # this inference's modes fail; the scene's other inference and modes go on
            for mode in (m for m in plan.modes if inference_kind(m) == kind):
                outcome.failures[mode] = f"{kind} inference failed: {_one_line(exc)}"
            logger.error("%s/%s %s inference failed: %s", plan.dataset, plan.scene, kind, _one_line(exc))
    for mode in plan.modes:
        if inference_kind(mode) not in stores:
            continue
        try:
            metrics, curve, seconds = score(f"{plan.dataset}-{plan.scene}", bench, mode, stores[inference_kind(mode)])
        except Exception as exc:  # a scene without this mode's GT, a degenerate prediction: report, go on
            outcome.failures[mode] = _one_line(exc)
            logger.error("%s/%s %s: %s", plan.dataset, plan.scene, mode, outcome.failures[mode])
            continue
        outcome.metrics[mode], outcome.eval_seconds[mode] = metrics, seconds
        if curve is not None:
            outcome.curves[mode] = curve
    return outcome


@flow(name="evaluate-scenes", log_prints=True)
def run_scenes(cfg: EvaluateConfig, plans: list[ScenePlan], out: str) -> list[SceneOutcome]:
    """Submit every scene to this flow's task runner and collect the outcomes in order."""
    futures = [evaluate_scene.submit(cfg, plan, out) for plan in plans]
    outcomes = []
    for plan, future in zip(plans, futures):
        try:
            outcomes.append(future.result())
        except Exception as exc:  # e.g. a Dask worker lost: the scene fails, the others are kept
            outcomes.append(SceneOutcome(plan.dataset, plan.scene, failures={"scene": _one_line(exc)}))
    return outcomes


@flow(name="evaluate", log_prints=True)
def evaluate(cfg: EvaluateConfig) -> BenchmarkResults:
    """Evaluate ``cfg.model`` (or the GT itself) on ``cfg.benchmark`` in ``cfg.modes``; writes the reports when
    something was scored."""
    validate_evaluate(cfg)  # a deployment's parameters arrive typed but unchecked
    out = output_location(cfg)
    results = BenchmarkResults(
        modes=list(dict.fromkeys(m.value for m in cfg.modes)),  # a mode listed twice is scored once
        info={
            "label": out.rstrip("/").rsplit("/", 1)[-1],
            "predictor": predictor_label(cfg),
            "output": out,
            "max_frames": cfg.max_frames,
            "process_res": cfg.processing.process_res,
            "ref_view_strategy": cfg.ref_view_strategy.value,
        },
    )
    plans = plan_benchmark(cfg, results)
    if plans:
        # The scenes run in a subflow that owns the task runner, so a served or deployed run honours runner=dask
        # and concurrency exactly like the command line.
        results.outcomes = run_scenes.with_options(task_runner=task_runner(cfg))(cfg, plans, out)
    if not results.tables():
        # An empty report would replace the last real one there (a mistyped bench_root, say): keep that one.
        get_run_logger().warning("nothing could be scored: no report written, an earlier one in %s is kept", out)
        return results
    written = write_reports(results, out, dict(cfg.storage.options))
    get_run_logger().info(
        "evaluation of %d scenes written: %s",
        len(results.outcomes),
        next(f for f in written if f.endswith("report.html")),
    )
    return results


def main(argv: list[str]) -> int:
    """Command-line entry: compose once, check the output location, run, print the summary; exit 1 when something
    failed, 2 when nothing could be scored (bad datasets, every scene failed)."""
    outcome = {"code": 0}

    def run(cfg: EvaluateConfig) -> None:
        out = output_location(cfg)
        check_writable(out, dict(cfg.storage.options), "output_dir")
        results = evaluate(cfg)
        print(summary_text(results))
        failures = results.failure_lines()
        if not results.tables():
            print(
                f"error: nothing could be evaluated ({len(failures)} failures, listed above; no report written); "
                "check bench_root, datasets and modes",
                file=sys.stderr,
            )
            outcome["code"] = EXIT_USER_ERROR
            return
        print(f"report: {join_url(out, 'report.html')}")
        if failures:
            print(f"error: {len(failures)} failures (listed above and in the report)", file=sys.stderr)
            outcome["code"] = 1

    code = run_cli("evaluate", argv, run)
    return outcome["code"] if code == 0 else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
