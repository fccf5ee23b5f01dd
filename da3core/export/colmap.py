"""``colmap``: a binary COLMAP model in ``sparse/0/`` at the original image resolution, through pycolmap.

One PINHOLE camera per view with the processed intrinsics mapped back to the source image (the exact inverse of
the preprocessing: rows scaled by ``W0/w`` and ``H0/h``, and for a view centre-cropped to stack with views of
another shape, the principal point shifted by the crop; resize preprocessing only), the predicted w2c pose, and
one 3-D point per selected pixel with a single observation at that pixel mapped to the source image. Principal
points and observations are then shifted by +0.5 px into COLMAP's pixel convention
(:func:`da3core.geometry.intrinsics_to_colmap`), which upstream omits: a COLMAP model read as input (which
subtracts the 0.5) is written back with the cameras it came with. (Upstream also ignores the crop.)
Pixels are selected as upstream does (``conf >= percentile(conf, conf_thresh_percentile)``, no floor or cap;
all valid non-sky pixels without confidence), then at most ``num_max_points`` by seeded downsampling.
Image names are ``prediction.source_names`` (default ``frame_0000.jpg`` ...), sizes ``prediction.source_sizes``
(default: the processed size). Place the images beside ``sparse/`` in ``images/`` for gsplat/nerfstudio.
"""

from __future__ import annotations

import numpy as np

from da3core.export.points import PointSet, select_points, valid_mask
from da3core.export.target import ExportTarget
from da3core.geometry import COLMAP_PIXEL_OFFSET, intrinsics_to_colmap
from da3core.prediction import Prediction, present

MODEL_DIR = "sparse/0"


def source_sizes(prediction: Prediction) -> np.ndarray:
    """(N, 2) int original (H, W) per view (the processed size when unknown)."""
    if prediction.source_sizes is not None:
        return np.asarray(prediction.source_sizes, dtype=int)
    return np.tile(prediction.depth.shape[1:], (len(prediction), 1))


def source_names(prediction: Prediction, ext: str = "jpg") -> list[str]:
    """File name per view: ``prediction.source_names`` or ``frame_0000.<ext>`` ..."""
    return list(prediction.source_names or [f"frame_{i:04d}.{ext}" for i in range(len(prediction))])


def source_mapping(prediction: Prediction) -> tuple[np.ndarray, np.ndarray]:
    """(scale, offset), each (N, 2) (x, y): processed pixel p of view i is source pixel ``p * scale[i] + offset[i]``.

    The preprocessing's own record when the prediction carries it (a view centre-cropped to stack with views of
    other shapes has an offset); otherwise a plain resize from the source size.
    """
    if prediction.source_scale is not None and prediction.source_offset is not None:
        return np.asarray(prediction.source_scale, np.float64), np.asarray(prediction.source_offset, np.float64)
    h, w = prediction.depth.shape[1:]
    sizes = source_sizes(prediction)
    return np.stack([sizes[:, 1] / w, sizes[:, 0] / h], axis=-1), np.zeros((len(sizes), 2))


def scaled_intrinsics(prediction: Prediction) -> np.ndarray:
    """(N, 3, 3) float64 intrinsics in pixels of each source image (this project's pixel convention)."""
    scale, offset = source_mapping(prediction)
    K = (
        present(prediction.intrinsics, "intrinsics").astype(np.float64)
        * np.pad(scale, ((0, 0), (0, 1)), constant_values=1)[:, :, None]
    )
    K[:, :2, 2] += offset
    return K


def check_colmap_options(process_res_method: str = "upper_bound_resize", **_: object) -> None:
    """Refuse preprocessing whose pixels cannot be mapped back to the source images (crops)."""
    if not isinstance(process_res_method, str) or not process_res_method.endswith("resize"):
        raise ValueError(
            f"colmap export maps pixels back to the source images only for resize preprocessing; "
            f"got process_res_method={process_res_method!r} "
            "(use upper_bound_resize or lower_bound_resize)"
        )


def write_colmap(
    prediction: Prediction,
    target: ExportTarget,
    conf_thresh_percentile: float = 40.0,
    num_max_points: int | None = 1_000_000,
    process_res_method: str = "upper_bound_resize",
    seed: int = 0,
) -> list[str]:
    """Write ``sparse/0/{cameras,images,points3D,rigs,frames}.bin``; returns their locations."""
    check_colmap_options(process_res_method)
    mask = valid_mask(prediction, conf_thresh_percentile, conf_floor=None, ensure_thresh_percentile=None)
    return write_colmap_model(prediction, select_points(prediction, mask).downsample(num_max_points, seed), target)


def write_colmap_model(prediction: Prediction, cloud: PointSet, target: ExportTarget) -> list[str]:
    """Write the model: every view of ``prediction`` as a camera and image, each point of ``cloud`` observed once."""
    import pycolmap

    sizes, names = source_sizes(prediction), source_names(prediction)
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:  # COLMAP finds an image by its name: two views of one name would share it
        raise ValueError(f"COLMAP image names must be unique, but {twice[:3]} name several views; set source_names")
    K = intrinsics_to_colmap(scaled_intrinsics(prediction))
    if not np.isfinite(K).all() or not np.isfinite(present(prediction.extrinsics, "extrinsics")).all():
        raise ValueError("the prediction's cameras hold NaN or infinite values; a COLMAP model cannot describe them")
    extrinsics = present(prediction.extrinsics, "extrinsics")
    scale, offset = source_mapping(prediction)
    rec = pycolmap.Reconstruction()
    slot = np.zeros(len(cloud), dtype=np.int64)  # index of each point's observation in its image
    by_view = np.argsort(cloud.view, kind="stable")  # one sort, not a scan of every point per view
    bounds = np.searchsorted(cloud.view[by_view], np.arange(len(prediction) + 1))
    for i in range(len(prediction)):
        camera = pycolmap.Camera.create_from_model_name(
            i + 1, "PINHOLE", float(K[i, 0, 0]), int(sizes[i, 1]), int(sizes[i, 0])
        )
        camera.params = [K[i, 0, 0], K[i, 1, 1], K[i, 0, 2], K[i, 1, 2]]
        rec.add_camera_with_trivial_rig(camera)
        in_view = by_view[bounds[i] : bounds[i + 1]]
        slot[in_view] = np.arange(len(in_view))
        keypoints = cloud.pixel[in_view] * scale[i] + offset[i] + COLMAP_PIXEL_OFFSET
        image = pycolmap.Image(name=names[i], keypoints=keypoints.astype(np.float64), camera_id=i + 1, image_id=i + 1)
        ext = extrinsics[i].astype(np.float64)
        rec.add_image_with_trivial_frame(image, pycolmap.Rigid3d(pycolmap.Rotation3d(ext[:3, :3]), ext[:3, 3]))
    xyz, rgb = cloud.xyz.astype(np.float64), cloud.rgb
    for p in range(len(cloud)):
        track = pycolmap.Track()
        track.add_element(int(cloud.view[p]) + 1, int(slot[p]))
        rec.add_point3D(xyz[p], track, rgb[p])
    with target.staged_dir(MODEL_DIR) as local:
        rec.write_binary(str(local))
        files = sorted(path.name for path in local.iterdir())
    return [target.url(f"{MODEL_DIR}/{name}") for name in files]
