"""The temporal DPT head of Video Depth Anything: the Depth-Anything-V2 DPT decoder plus four temporal modules.

Temporal modules sit on reassembled layers 3 and 4 and after refinenet4 and refinenet3. The high-resolution
tail (refinenet2, refinenet1, the output convolutions) runs in micro-batches of frames, which bounds its
activation memory (upstream PR #24: "Split batch_size(=32) into micro_batch_size(=4)").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from da3core.model.dpt_blocks import FeatureFusionBlock, make_projects, make_resize_layers, make_scratch
from da3core.video_depth.temporal import TemporalModule

PATCH_SIZE = 14
MICRO_BATCH = 4
OUTPUT_HIDDEN = 32


class TemporalDPTHead(nn.Module):
    """Token maps of four ViT layers for B*T frames -> relative disparity (or metric depth) at 14x the patch grid."""

    def __init__(self, dim_in: int, features: int, out_channels: list[int]) -> None:
        super().__init__()
        self.projects = make_projects(dim_in, out_channels)
        self.resize_layers = make_resize_layers(out_channels)
        self.scratch = make_scratch(out_channels, features)
        for k in range(1, 5):
            setattr(self.scratch, f"refinenet{k}", FeatureFusionBlock(features))
        self.scratch.output_conv1 = nn.Conv2d(features, features // 2, 3, padding=1)
        self.scratch.output_conv2 = nn.Sequential(
            nn.Conv2d(features // 2, OUTPUT_HIDDEN, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(OUTPUT_HIDDEN, 1, 1),
            nn.ReLU(),
        )
        self.motion_modules = nn.ModuleList(
            TemporalModule(c) for c in (out_channels[2], out_channels[3], features, features)
        )

    def forward(
        self,
        features: list[Tensor],
        patch_h: int,
        patch_w: int,
        frames: int,
        cached: list[Tensor] | None = None,
        micro_batch: int = MICRO_BATCH,
    ) -> tuple[Tensor, list[Tensor]]:
        """Patch tokens [(B*T, h*w, C)] x 4 -> (depth (B*T, 1, 14h, 14w), 8 cacheable temporal states).

        ``cached`` holds the 8 states of earlier frames (2 per temporal module, concatenated along frames);
        the streaming mode passes it with T = 1.
        """
        layers = []
        for tokens, project, resize in zip(features, self.projects, self.resize_layers):
            x = tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[-1], patch_h, patch_w).contiguous()
            layers.append(resize(project(x)))
        layer_1, layer_2, layer_3, layer_4 = layers

        states: list[Tensor] = []

        def temporal(k: int, x: Tensor) -> Tensor:
            x, new = self.motion_modules[k](x, frames, None if cached is None else cached[2 * k : 2 * k + 2])
            states.extend(new)
            return x

        layer_3 = temporal(0, layer_3)
        layer_4 = temporal(1, layer_4)
        s = self.scratch
        layer_1_rn, layer_2_rn = s.layer1_rn(layer_1), s.layer2_rn(layer_2)
        layer_3_rn, layer_4_rn = s.layer3_rn(layer_3), s.layer4_rn(layer_4)
        path_4 = temporal(2, s.refinenet4(layer_4_rn, size=layer_3_rn.shape[2:]))
        path_3 = temporal(3, s.refinenet3(path_4, layer_3_rn, size=layer_2_rn.shape[2:]))

        out_size = (patch_h * PATCH_SIZE, patch_w * PATCH_SIZE)
        chunks = []
        for i in range(0, path_3.shape[0], micro_batch):
            path_2 = s.refinenet2(
                path_3[i : i + micro_batch], layer_2_rn[i : i + micro_batch], size=layer_1_rn.shape[2:]
            )
            path_1 = s.refinenet1(path_2, layer_1_rn[i : i + micro_batch])
            out = F.interpolate(s.output_conv1(path_1), out_size, mode="bilinear", align_corners=True)
            # The last convolutions always run in fp32, as upstream does under fp16 autocast.
            with torch.autocast(device_type=out.device.type, enabled=False):
                chunks.append(s.output_conv2(out.float()).to(out.dtype))
        return torch.cat(chunks), states
