"""One benchmark scene scored in one mode, as upstream's ``depth_anything_3.bench`` evaluator does it.

Modes (:data:`da3core.choices.EVAL_MODES`): ``pose`` (AUC over all view pairs), ``recon_unposed`` / ``recon_posed``
(fusion with predicted / GT cameras, then the dataset's reconstruction metrics), ``rel_depth`` / ``metric_depth``
(AbsRel and δ per frame, after a least-squares scale per frame / as predicted, averaged over the frames). The
prediction comes from one of two inferences: ``unposed`` (images only) or ``posed`` (images with the GT cameras,
the prediction aligned to them), as upstream runs them; ``recon_posed`` needs the posed one.
"""

from __future__ import annotations

import random
from dataclasses import replace

import cv2
import numpy as np

from da3core.choices import EVAL_MODES
from da3core.evaluation.datasets.base import BenchDataset, BenchScene
from da3core.evaluation.depth import metric_depth_metrics, relative_depth_metrics
from da3core.evaluation.pose import relative_pose_errors

UPSTREAM_SAMPLE_SEED = 42  # upstream's eval.max_frames sampling: random.seed(42), shuffle, keep the first N, sorted
RECON_MODES = ("recon_unposed", "recon_posed")
DEPTH_MODES = ("rel_depth", "metric_depth")
CURVE_MAX_DEG = 30


def inference_kind(mode: str) -> str:
    """Which inference a mode scores: ``posed`` (GT cameras given to the model) for recon_posed, else ``unposed``."""
    return "posed" if mode == "recon_posed" else "unposed"


def has_gt_depth(dataset: type[BenchDataset]) -> bool:
    """Whether the dataset ships per-frame GT depth maps (DTU and DTU-64 do not)."""
    return dataset.gt_depth is not BenchDataset.gt_depth


def unsupported_reason(dataset: type[BenchDataset], mode: str, ground_truth_predictor: bool = False) -> str | None:
    """Why ``mode`` cannot be scored on ``dataset`` (None when it can); the GT predictor also needs GT depth maps."""
    if mode not in EVAL_MODES:
        raise ValueError(f"unknown evaluation mode {mode!r}; choose from {', '.join(EVAL_MODES)}")
    if mode in RECON_MODES and dataset.fusion is None and dataset.name != "dtu":
        return f"{dataset.name} is pose-only (no reconstruction ground truth)"
    if mode in DEPTH_MODES and not has_gt_depth(dataset):
        return f"{dataset.name} has no GT depth maps"
    if mode in RECON_MODES and ground_truth_predictor and not has_gt_depth(dataset):
        return f"{dataset.name} has no GT depth maps to feed back as the prediction"
    return None


def sample_frames(scene: BenchScene, max_frames: int) -> BenchScene:
    """At most ``max_frames`` frames, picked as upstream's ``_sample_frames`` does (seed 42, order kept); <= 0: all."""
    if max_frames <= 0 or len(scene) <= max_frames:
        return scene
    indices = list(range(len(scene)))
    random.Random(UPSTREAM_SAMPLE_SEED).shuffle(indices)  # the same sequence as random.seed(42); random.shuffle
    keep = sorted(indices[:max_frames])
    n = len(scene)
    aux = {
        key: (
            [value[i] for i in keep]
            if isinstance(value, list) and len(value) == n
            else value[keep]
            if isinstance(value, np.ndarray) and len(value) == n
            else value
        )
        for key, value in scene.aux.items()
    }
    return replace(
        scene,
        image_files=[scene.image_files[i] for i in keep],
        intrinsics=scene.intrinsics[keep],
        extrinsics=scene.extrinsics[keep],
        aux=aux,
    )


def ground_truth_depth(scene: BenchScene) -> np.ndarray:
    """(N, H, W) GT depth of every frame, the stand-in prediction of ``predictor=ground_truth``."""
    return np.stack([scene.gt_depth(i) for i in range(len(scene))])


def pose_accuracy_curve(pred_extrinsics: np.ndarray, gt_extrinsics: np.ndarray) -> list[float]:
    """Fraction of view pairs whose max(rotation, translation-direction) error is below t degrees, t = 0..30."""
    rot_err, trans_err = relative_pose_errors(pred_extrinsics, gt_extrinsics)
    worst = np.maximum(rot_err, trans_err)
    return [float(np.mean(worst < t)) for t in range(CURVE_MAX_DEG + 1)]


def _depth_metrics(scene: BenchScene, depth: np.ndarray, relative: bool) -> dict[str, float]:
    """Per-frame metrics at the GT resolution (prediction resized by nearest neighbour), averaged over the frames."""
    per_frame = []
    for i in range(len(scene)):
        gt = scene.gt_depth(i)
        pred = cv2.resize(np.asarray(depth[i], np.float32), gt.shape[::-1], interpolation=cv2.INTER_NEAREST)
        mask = scene.valid_mask(i)
        try:
            per_frame.append(
                (relative_depth_metrics if relative else metric_depth_metrics)(
                    pred, gt, mask if mask is not None and mask.shape == gt.shape else None
                )
            )
        except ValueError:  # no pixel with GT and prediction in this frame
            continue
    if not per_frame:
        raise ValueError(f"{scene.dataset}/{scene.name}: no frame has a pixel with both GT and predicted depth")
    metrics = {key: float(np.mean([m[key] for m in per_frame])) for key in per_frame[0]}
    metrics["frames"] = float(len(per_frame))
    return metrics


def score_scene(
    scene: BenchScene, mode: str, depth: np.ndarray | None, intrinsics: np.ndarray, extrinsics: np.ndarray
) -> dict[str, float]:
    """The metrics of ``mode`` for a prediction of ``scene`` ((N, H, W) depth, None for pose; N×3×3 intrinsics,
    N×3×4 w2c)."""
    from da3core.evaluation.pose import pose_auc

    if mode == "pose":
        return pose_auc(extrinsics, scene.extrinsics)
    if depth is None:
        raise ValueError(f"{mode} needs predicted depth")
    if mode in RECON_MODES:
        posed = mode == "recon_posed"
        if scene.dataset == "dtu":
            from da3core.evaluation.dtu_recon import dtu_evaluate, dtu_reconstruct

            return dtu_evaluate(scene, dtu_reconstruct(scene, depth, intrinsics, extrinsics, posed))
        from da3core.evaluation.recon_mode import evaluate_reconstruction, reconstruct

        return evaluate_reconstruction(scene, reconstruct(scene, depth, intrinsics, extrinsics, posed))
    if mode in DEPTH_MODES:
        return _depth_metrics(scene, depth, relative=mode == "rel_depth")
    raise ValueError(f"unknown evaluation mode {mode!r}; choose from {', '.join(EVAL_MODES)}")
