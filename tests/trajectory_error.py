"""Absolute trajectory error through evo (an implementation independent of ours): Sim(3)-aligned APE RMSE."""

from __future__ import annotations

import numpy as np
from evo.core import metrics
from evo.core.trajectory import PosePath3D

from da3core.geometry import affine_inverse, as_homogeneous


def _path(w2c: np.ndarray) -> PosePath3D:
    return PosePath3D(poses_se3=list(as_homogeneous(affine_inverse(np.asarray(w2c, dtype=np.float64)[:, :3]))))


def ate_rmse(ref_w2c: np.ndarray, est_w2c: np.ndarray) -> tuple[float, float, float]:
    """(ATE RMSE, reference path length, scale evo applied to the estimate) for (N, 3|4, 4) w2c cameras."""
    ref, est = _path(ref_w2c), _path(est_w2c)
    _, _, scale = est.align(ref, correct_scale=True)
    ape = metrics.APE(metrics.PoseRelation.translation_part)
    ape.process_data((ref, est))
    return float(ape.get_statistic(metrics.StatisticsType.rmse)), float(ref.path_length), float(scale)
