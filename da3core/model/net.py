"""DA3 networks: the any-view / mono net and the nested (any-view + metric) combination.

``forward`` takes ImageNet-normalised views (B, S, 3, H, W) and returns a flat dict of tensors:
``depth`` (B, S, H, W), ``depth_conf``, ``extrinsics`` (B, S, 3, 4) w2c, ``intrinsics`` (B, S, 3, 3),
``ray``/``ray_conf`` (when requested), ``sky`` (mono/metric), ``gaussians`` (numpy, batch 0),
``aux`` ({layer: (B, S, h, w, C)}), ``ref_view_idx``, and for nested models ``is_metric``/``scale_factor``.
The backbone may run under autocast; cameras, heads and geometry always run in fp32.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor, nn

from da3core.model.backbone import PATCH_SIZE, Backbone
from da3core.model.camera import CameraDec, CameraEnc, affine_inverse, decode_pose
from da3core.model.gaussians import gaussians_from_raw
from da3core.model.heads import GSDPT, DualDPT, MonoDPT
from da3core.model.presets import NetSpec
from da3core.ray_pose import rays_to_cameras

SKY_THRESHOLD = 0.3
QUANTILE_SAMPLES = 100_000
METRIC_FOCAL = 300.0
MAX_SKY_DEPTH = 200.0


def _sampled_quantile(values: Tensor, q: float, generator: torch.Generator | None) -> Tensor:
    """Quantile of at most 100k values drawn with replacement (torch.quantile has a size limit)."""
    if values.numel() > QUANTILE_SAMPLES:
        idx = torch.randint(0, values.numel(), (QUANTILE_SAMPLES,), device=values.device, generator=generator)
        values = values[idx]
    return torch.quantile(values, q)


class DepthAnything3Net(nn.Module):
    """Backbone + depth head (+ camera encoder/decoder for any-view models, + Gaussian head for giant)."""

    def __init__(self, spec: NetSpec):
        super().__init__()
        self.spec = spec
        c = spec.embed_dim
        self.backbone = Backbone(spec)
        if spec.any_view:
            self.head: DualDPT | MonoDPT = DualDPT(2 * c, spec.head_features, spec.head_channels)
            self.cam_enc = CameraEnc(c)
            self.cam_dec = CameraDec(2 * c)
        else:
            self.head = MonoDPT(c, spec.head_features, spec.head_channels)
        if spec.gaussians:
            self.gs_head = GSDPT(2 * c, spec.head_features, spec.head_channels)

    def forward(
        self,
        x: Tensor,
        extrinsics: Tensor | None = None,
        intrinsics: Tensor | None = None,
        export_feat_layers: tuple[int, ...] = (),
        infer_gs: bool = False,
        use_ray_pose: bool = False,
        ref_view_strategy: str = "saddle_balanced",
        autocast_dtype: torch.dtype | None = None,
        generator: torch.Generator | None = None,
        return_rays: bool = False,
    ) -> dict[str, Any]:
        """See the module docstring; ``extrinsics`` (B, S, 4, 4) w2c + ``intrinsics`` condition the cameras."""
        H, W = x.shape[-2:]
        fp32 = torch.autocast(x.device.type, enabled=False)
        cam_token = None
        if extrinsics is not None:
            if not self.spec.any_view:
                raise ValueError("mono/metric presets cannot take camera poses; use an any-view preset")
            with fp32:
                cam_token = self.cam_enc(extrinsics, intrinsics, (H, W))
        amp = torch.autocast(x.device.type, dtype=autocast_dtype) if autocast_dtype else nullcontext()
        with amp:
            feats, aux, ref_idx = self.backbone(
                x,
                cam_token=cam_token,
                export_feat_layers=tuple(export_feat_layers),
                ref_view_strategy=ref_view_strategy,
            )
        with fp32:
            feats = [(f.float(), c.float()) for f, c in feats]
            patches = [f for f, _ in feats]
            if self.spec.any_view:
                out = self.head(patches, H, W, with_rays=use_ray_pose or return_rays)
                if use_ray_pose:
                    out["extrinsics"], out["intrinsics"] = rays_to_cameras(
                        out["ray"], out["ray_conf"], (H, W), generator
                    )
                else:
                    c2w, out["intrinsics"] = decode_pose(self.cam_dec(feats[-1][1]), (H, W))
                    out["extrinsics"] = affine_inverse(c2w)
                if not return_rays:
                    out.pop("ray", None), out.pop("ray_conf", None)
                if infer_gs:
                    if not self.spec.gaussians:
                        raise ValueError("infer_gs needs a Gaussian head: use da3-giant or da3nested-giant-large")
                    out["gaussians"] = self._gaussians(patches, x, out, extrinsics)
            else:
                out = self.head(patches, H, W)
                out["depth"] = self._fill_sky(out["depth"], out["sky"], generator)
        h, w = H // PATCH_SIZE, W // PATCH_SIZE
        out["aux"] = {i: f.float().reshape(f.shape[0], f.shape[1], h, w, -1) for i, f in aux.items()}
        out["ref_view_idx"] = ref_idx
        return out

    def _gaussians(self, patches: list[Tensor], x: Tensor, out: dict, input_extrinsics: Tensor | None):
        H, W = x.shape[-2:]
        gs = self.gs_head(patches, H, W, images=x.float())
        p = gs["raw_gs_conf"]
        opacity = 0.5 * (1 - (1 - p) ** 1 + p ** (1 / 1))  # upstream's pdf -> opacity map at step 0
        ext44 = torch.cat(
            [
                out["extrinsics"],
                torch.tensor([0, 0, 0, 1.0], device=x.device).expand(*out["extrinsics"].shape[:2], 1, 4),
            ],
            dim=-2,
        )
        return gaussians_from_raw(gs["raw_gs"], opacity, out["depth"], ext44, out["intrinsics"], input_extrinsics)

    @staticmethod
    def _fill_sky(depth: Tensor, sky: Tensor, generator: torch.Generator | None) -> Tensor:
        """Set sky pixels to the 99th percentile of non-sky depth (when both regions are non-trivial)."""
        non_sky = sky < SKY_THRESHOLD
        if non_sky.sum() <= 10 or (~non_sky).sum() <= 10:
            return depth
        depth = depth.clone()
        depth[~non_sky] = _sampled_quantile(depth[non_sky], 0.99, generator)
        return depth


class NestedDepthAnything3Net(nn.Module):
    """Any-view giant + metric large: the any-view depth and poses are scaled to metres by the metric branch."""

    def __init__(self, anyview: NetSpec, metric: NetSpec):
        super().__init__()
        self.da3 = DepthAnything3Net(anyview)
        self.da3_metric = DepthAnything3Net(metric)

    def forward(
        self,
        x: Tensor,
        *args,
        generator: torch.Generator | None = None,
        autocast_dtype: torch.dtype | None = None,
        **kwargs,
    ) -> dict[str, Any]:
        """Same inputs and outputs as DepthAnything3Net, plus ``is_metric`` = 1 and ``scale_factor``."""
        out = self.da3(x, *args, generator=generator, autocast_dtype=autocast_dtype, **kwargs)
        metric = self.da3_metric(x, generator=generator, autocast_dtype=autocast_dtype)
        with torch.autocast(x.device.type, enabled=False):
            K = out["intrinsics"]
            focal = (K[:, :, 0, 0] + K[:, :, 1, 1]) / 2
            metric_depth = metric["depth"] * (focal[:, :, None, None] / METRIC_FOCAL)
            non_sky = metric["sky"] < SKY_THRESHOLD
            if non_sky.sum() <= 10:
                raise ValueError("metric scaling failed: fewer than 10 non-sky pixels in the input")
            conf_ns = out["depth_conf"][non_sky]
            if conf_ns.numel() > QUANTILE_SAMPLES:
                conf_ns = conf_ns.flatten()[
                    torch.randperm(conf_ns.numel(), device=x.device, generator=generator)[:QUANTILE_SAMPLES]
                ]
            median_conf = torch.quantile(conf_ns, 0.5)
            mask = (out["depth_conf"] >= median_conf) & non_sky & (metric_depth > 1e-2) & (out["depth"] > 1e-3)
            a, d = metric_depth[mask], out["depth"][mask]
            scale = torch.dot(a, d) / torch.dot(d, d).clamp_min(1e-12)
            out["depth"] = out["depth"] * scale
            out["extrinsics"] = out["extrinsics"].clone()
            out["extrinsics"][:, :, :3, 3] *= scale
            sky_depth = _sampled_quantile(out["depth"][non_sky], 0.99, generator).clamp(max=MAX_SKY_DEPTH)
            out["depth"] = torch.where(non_sky, out["depth"], sky_depth)
            out["depth_conf"] = torch.where(non_sky, out["depth_conf"], torch.ones_like(out["depth_conf"]))
        out["is_metric"], out["scale_factor"] = 1, float(scale)
        return out
