"""``DepthAnything3``: load a checkpoint, run inference on images, get a :class:`Prediction` (and exports).

Precision: ``auto`` runs the backbone in bf16 autocast on CUDA and in fp32 on CPU/MPS (on CPU bf16
is faster on recent x86 but changes outputs more than fp16; choose it with ``set_precision("bf16")``).
Camera encoder/decoder, heads and geometry always run in fp32.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from da3core.choices import PRECISIONS, REF_VIEW_STRATEGIES
from da3core.model.model_dir import KEY_PREFIX, WEIGHTS_FILE, read_config, resolve_model_dir
from da3core.model.model_dir import write_random_model_dir as _write_random
from da3core.model.net import DepthAnything3Net, NestedDepthAnything3Net
from da3core.model.presets import get_preset
from da3core.pose_align import align_prediction_to_input
from da3core.prediction import Prediction
from da3core.preprocess import PATCH_SIZE, ImageLike, preprocess_images
from da3core.weights import is_random, load_strict, read_stamp

_AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def build_net(preset: str) -> nn.Module:
    """The (untrained) network of a preset."""
    p = get_preset(preset)
    return NestedDepthAnything3Net(p.net, p.metric) if p.metric else DepthAnything3Net(p.net)


def write_random_model_dir(
    preset: str, out_dir: str | os.PathLike, seed: int = 0, dtype: torch.dtype = torch.float32
) -> Path:
    """Write a model dir of seeded random weights for ``preset`` (official layout, stamped as random)."""
    with torch.device("meta"):
        net = build_net(preset)
    return _write_random(net, preset, out_dir, seed, dtype)


@dataclass
class Inference:
    """A prediction before pose alignment, with the input intrinsics mapped to the processed resolution."""

    prediction: Prediction
    input_intrinsics: np.ndarray | None  # (N, 3, 3) processed pixels, when intrinsics were given


class DepthAnything3(nn.Module):
    """A DA3 preset with its weights; ``inference`` follows the upstream API."""

    def __init__(self, model_name: str = "da3-large") -> None:
        super().__init__()
        self.preset = get_preset(model_name).name
        self.model = build_net(self.preset)
        self.precision = "auto"
        self.weights_file: Path | None = None
        self.config: dict[str, Any] = {"model_name": self.preset}
        self.stamp: dict[str, str] = {}  # the weights file's da3pipe stamp (seed etc. for random weights)

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike, device: str | torch.device = "cpu") -> DepthAnything3:
        """Load a local model dir or hub id strictly (missing or unexpected tensors are errors)."""
        model_dir = resolve_model_dir(source)
        config = read_config(model_dir)
        with torch.device("meta"):
            model = cls(config["model_name"])
        weights_file = model_dir / WEIGHTS_FILE
        load_strict(model.model, weights_file, prefix=KEY_PREFIX, what=f"the {model.preset} model")
        model.weights_file, model.config, model.stamp = weights_file, config, read_stamp(weights_file)
        return model.to(device).eval()

    @property
    def device(self) -> torch.device:
        """Where the weights live."""
        return next(self.parameters()).device

    @property
    def random_weights(self) -> bool:
        """True when the loaded weights are seeded random ones (never trained)."""
        return is_random(self.stamp)

    def set_precision(self, precision: str) -> DepthAnything3:
        """``auto`` | ``fp32`` | ``bf16`` | ``fp16`` for the backbone (see the module docstring)."""
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision '{precision}'; allowed: {', '.join(PRECISIONS)}")
        self.precision = precision
        return self

    def _autocast_dtype(self) -> torch.dtype | None:
        if self.precision == "auto":
            return torch.bfloat16 if self.device.type == "cuda" else None
        return _AUTOCAST_DTYPES[self.precision]

    @torch.inference_mode()
    def forward(
        self,
        images: torch.Tensor,
        extrinsics: torch.Tensor | None = None,
        intrinsics: torch.Tensor | None = None,
        export_feat_layers: Sequence[int] = (),
        infer_gs: bool = False,
        use_ray_pose: bool = False,
        ref_view_strategy: str = "saddle_balanced",
        seed: int = 0,
        return_rays: bool = False,
    ) -> dict[str, Any]:
        """Network outputs for normalised views (B, S, 3, H, W); extrinsics are normalised as upstream does."""
        images = images.to(self.device, torch.float32)
        if extrinsics is not None:
            if intrinsics is None:
                raise ValueError("extrinsics were given without intrinsics; pass both or neither")
            extrinsics = normalize_extrinsics(extrinsics.to(self.device, torch.float32))
            intrinsics = intrinsics.to(self.device, torch.float32)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        return self.model(
            images,
            extrinsics,
            intrinsics,
            export_feat_layers=tuple(export_feat_layers),
            infer_gs=infer_gs,
            use_ray_pose=use_ray_pose,
            ref_view_strategy=ref_view_strategy,
            autocast_dtype=self._autocast_dtype(),
            generator=generator,
            return_rays=return_rays,
        )

    def infer(
        self,
        image: Sequence[ImageLike],
        extrinsics: np.ndarray | None = None,
        intrinsics: np.ndarray | None = None,
        infer_gs: bool = False,
        use_ray_pose: bool = False,
        ref_view_strategy: str = "saddle_balanced",
        process_res: int = 504,
        process_res_method: str = "upper_bound_resize",
        export_feat_layers: Sequence[int] | None = None,
    ) -> Inference:
        """Preprocess and run the network (pose-conditioned when extrinsics + intrinsics are given), no alignment."""
        image = views_of(image)
        if isinstance(process_res, bool) or not isinstance(process_res, numbers.Integral) or process_res < PATCH_SIZE:
            raise ValueError(
                f"process_res must be a whole number of pixels, at least {PATCH_SIZE}, got {process_res!r}"
            )
        if ref_view_strategy not in REF_VIEW_STRATEGIES:
            raise ValueError(
                f"unknown ref_view_strategy {ref_view_strategy!r}; allowed: {', '.join(REF_VIEW_STRATEGIES)}"
            )
        if extrinsics is not None and intrinsics is None:
            raise ValueError("pose conditioning needs intrinsics together with extrinsics")
        intrinsics = None if intrinsics is None else check_intrinsics(intrinsics, len(image))
        if extrinsics is not None:
            extrinsics = check_extrinsics(extrinsics, len(image))
        if export_feat_layers:
            from da3core.export import check_feature_layers

            check_feature_layers(export_feat_layers, self.preset)
        batch = preprocess_images(image, process_res, process_res_method, intrinsics)
        ext_t = None if extrinsics is None else torch.from_numpy(_as44(extrinsics))[None].float()
        ixt_t = None if batch.intrinsics is None else torch.from_numpy(batch.intrinsics)[None]
        out = self.forward(
            batch.images[None],
            ext_t if ext_t is not None else None,
            ixt_t if ext_t is not None else None,
            export_feat_layers or (),
            infer_gs,
            use_ray_pose,
            ref_view_strategy,
        )
        pred = Prediction(
            depth=_np(out["depth"]),
            is_metric=int(out.get("is_metric", 0)),
            sky=None if "sky" not in out else _np(out["sky"]) >= 0.5,
            conf=None if "depth_conf" not in out else _np(out["depth_conf"]),
            extrinsics=None if "extrinsics" not in out else _np(out["extrinsics"]),
            intrinsics=None if "intrinsics" not in out else _np(out["intrinsics"]),
            processed_images=batch.processed_images,
            gaussians=out.get("gaussians"),
            aux={f"feat_layer_{i}": _np(f) for i, f in out["aux"].items()},
            scale_factor=out.get("scale_factor"),
            ref_view_idx=out["ref_view_idx"],
            source_sizes=batch.source_sizes,
            source_scale=batch.scale,
            source_offset=batch.offset,
            source_names=[os.path.basename(str(p)) for p in image]
            if all(isinstance(p, (str, Path)) for p in image)
            else None,
        )
        return Inference(pred, batch.intrinsics)

    def inference(
        self,
        image: Sequence[ImageLike],
        extrinsics: np.ndarray | None = None,
        intrinsics: np.ndarray | None = None,
        align_to_input_ext_scale: bool = True,
        infer_gs: bool = False,
        use_ray_pose: bool = False,
        ref_view_strategy: str = "saddle_balanced",
        render_exts: np.ndarray | None = None,
        render_ixts: np.ndarray | None = None,
        render_hw: tuple[int, int] | None = None,
        process_res: int = 504,
        process_res_method: str = "upper_bound_resize",
        export_dir: str | None = None,
        export_format: str = "mini_npz",
        export_feat_layers: Sequence[int] | None = None,
        conf_thresh_percentile: float = 40.0,
        num_max_points: int = 1_000_000,
        show_cameras: bool = True,
        feat_vis_fps: int = 15,
        export_kwargs: dict | None = None,
    ) -> Prediction:
        """Upstream-compatible inference: preprocess, forward, align to input poses, optionally export."""
        formats = None
        options = {
            **(export_kwargs or {}),
            "conf_thresh_percentile": conf_thresh_percentile,
            "num_max_points": num_max_points,
            "show_cameras": show_cameras,
            "feat_vis_fps": feat_vis_fps,
            "render_exts": render_exts,
            "render_ixts": render_ixts,
            "render_hw": render_hw,
        }
        if export_dir is not None:  # every export check that needs no prediction runs before inference
            from da3core.export import check_formats, parse_formats

            formats = parse_formats(export_format)
            check_formats(
                formats,
                has_conf=get_preset(self.preset).has_conf,
                has_gaussians=infer_gs,
                has_features=bool(export_feat_layers),
                has_cameras=get_preset(self.preset).net.any_view,
                process_res_method=process_res_method,
                options=options,
            )
        result = self.infer(
            image,
            extrinsics,
            intrinsics,
            infer_gs,
            use_ray_pose,
            ref_view_strategy,
            process_res,
            process_res_method,
            export_feat_layers,
        )
        pred = result.prediction
        if extrinsics is not None:
            pred = align_prediction_to_input(pred, extrinsics, result.input_intrinsics, align_to_input_ext_scale)
        if formats and export_dir is not None:
            from da3core.export import export

            export(pred, formats, export_dir, **options)
        return pred


def views_of(image: Any) -> list[ImageLike]:
    """The views of ``image``: a list or tuple of images, or an (N, H, W, C) array; anything else is refused (a single
    (H, W, 3) array would otherwise be read as H one-row views)."""
    if isinstance(image, np.ndarray) and image.ndim == 4:
        return list(image)
    if isinstance(image, (list, tuple)):
        if not image:
            raise ValueError("no images: pass a list of at least one image")
        return list(image)
    what = f"an array of shape {image.shape}" if isinstance(image, np.ndarray) else f"a {type(image).__name__}"
    raise TypeError(
        f"image must be a list of images (paths, PIL images or uint8 arrays) or an (N, H, W, 3) array, got {what}; "
        "pass one image as [image]"
    )


def check_intrinsics(intrinsics: Any, n: int) -> np.ndarray:
    """``intrinsics`` as a float (n, 3, 3) array (its own float type kept), refused unless finite with positive focal
    lengths."""
    K = _floats(intrinsics)
    if K.shape != (n, 3, 3):
        raise ValueError(f"intrinsics must be ({n}, 3, 3), one pinhole matrix per image, got {K.shape}")
    bad = np.flatnonzero(~np.isfinite(K).all(axis=(1, 2)) | (K[:, 0, 0] <= 0) | (K[:, 1, 1] <= 0))
    if len(bad):
        raise ValueError(
            f"intrinsics of view {bad[0]} are not finite with positive focal lengths: {K[bad[0]].tolist()}"
        )
    return K


def check_extrinsics(extrinsics: Any, n: int) -> np.ndarray:
    """``extrinsics`` as a float (n, 3|4, 4) world-to-camera array, refused unless finite rigid motions."""
    E = _floats(extrinsics)
    if E.ndim != 3 or E.shape[1:] not in ((3, 4), (4, 4)) or len(E) != n:
        raise ValueError(f"extrinsics must be ({n}, 3, 4) or ({n}, 4, 4) world-to-camera, one per image, got {E.shape}")
    R = E[:, :3, :3]
    with np.errstate(invalid="ignore"):  # NaN views are refused by the first test
        rigid = np.isfinite(E).all(axis=(1, 2))
        rigid &= np.abs(R @ R.transpose(0, 2, 1) - np.eye(3)).max(axis=(1, 2)) < 1e-3
        rigid &= np.linalg.det(np.where(np.isfinite(R), R, 0)) > 0
    if E.shape[1] == 4:
        rigid &= np.all(E[:, 3] == [0, 0, 0, 1], axis=1)
    bad = np.flatnonzero(~rigid)
    if len(bad):
        raise ValueError(
            f"extrinsics of view {bad[0]} are not a rigid world-to-camera motion (finite, rotation part orthonormal "
            f"with determinant 1, last row 0 0 0 1): {E[bad[0]].round(4).tolist()}"
        )
    return E


def _floats(values: Any) -> np.ndarray:
    array = np.asarray(values)
    return array if np.issubdtype(array.dtype, np.floating) else array.astype(np.float64)


def normalize_extrinsics(ext: torch.Tensor) -> torch.Tensor:
    """Express w2c poses (B, S, 4, 4) relative to view 0 and divide translations by the median camera distance."""
    from da3core.model.camera import affine_inverse

    rel = ext @ affine_inverse(ext[:, :1])
    dist = torch.clamp(torch.median(affine_inverse(rel)[..., :3, 3].norm(dim=-1)), min=0.1)
    rel = rel.clone()
    rel[..., :3, 3] = rel[..., :3, 3] / dist
    return rel


def _as44(ext: np.ndarray) -> np.ndarray:
    from da3core.geometry import as_homogeneous

    ext = np.asarray(ext)
    if ext.ndim != 3 or ext.shape[1:] not in ((3, 4), (4, 4)):
        raise ValueError(f"extrinsics must be (N, 3, 4) or (N, 4, 4) world-to-camera, got {ext.shape}")
    return as_homogeneous(ext).astype(np.float32)


def _np(t: torch.Tensor) -> np.ndarray:
    return t[0].float().cpu().numpy()
