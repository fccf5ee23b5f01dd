"""The DA3 visual-geometry benchmark as a library: metrics, TSDF fusion and readers of the DA3-BENCH datasets.

Plain Python (numpy, scipy, open3d); no Prefect. The metrics follow upstream's ``depth_anything_3.bench``.
"""

from da3core.evaluation.depth import least_squares_scale, metric_depth_metrics, relative_depth_metrics
from da3core.evaluation.dtu_recon import dtu_evaluate, dtu_reconstruct
from da3core.evaluation.fusion import TriangleMesh, sample_surface, tsdf_fuse
from da3core.evaluation.pose import pose_auc, relative_pose_errors
from da3core.evaluation.recon_mode import FusionInputs, evaluate_reconstruction, fusion_inputs, reconstruct
from da3core.evaluation.reconstruction import crop_to_box, reconstruction_metrics, voxel_downsample

__all__ = [
    "FusionInputs",
    "TriangleMesh",
    "crop_to_box",
    "dtu_evaluate",
    "dtu_reconstruct",
    "evaluate_reconstruction",
    "fusion_inputs",
    "reconstruct",
    "least_squares_scale",
    "metric_depth_metrics",
    "pose_auc",
    "reconstruction_metrics",
    "relative_depth_metrics",
    "relative_pose_errors",
    "sample_surface",
    "tsdf_fuse",
    "voxel_downsample",
]
