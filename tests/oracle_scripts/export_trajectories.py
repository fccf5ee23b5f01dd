"""Capture the cameras the reference gs_video would render for each trajectory mode (rendering stubbed out).

inputs: extrinsics (N, 4, 4) w2c, intrinsics (N, 3, 3) pixels; args: {"modes": [...], "height": H, "width": W}.
Outputs ``<mode>_w2c`` (M, 4, 4) and ``<mode>_intr`` (M, 3, 3) normalised intrinsics.
"""

import json
import sys

import numpy as np

inputs, args = dict(np.load(sys.argv[1])), json.loads(open(sys.argv[2]).read())

import torch  # noqa: E402
from depth_anything_3.model.utils import gs_renderer  # noqa: E402

captured = []


def fake_render(extrinsics, intrinsics, image_shape, gaussian, num_view=1, **kwargs):
    captured.append((extrinsics.double().numpy().copy(), intrinsics.double().numpy().copy()))
    return torch.zeros(len(extrinsics), 3, 2, 2), torch.zeros(len(extrinsics), 2, 2)


gs_renderer.render_3dgs = fake_render
out = {}
for mode in args["modes"]:
    captured.clear()
    gs_renderer.run_renderer_in_chunk_w_trj_mode(
        gaussians=None,
        extrinsics=torch.from_numpy(inputs["extrinsics"]).float()[None],
        intrinsics=torch.from_numpy(inputs["intrinsics"]).float()[None],
        image_shape=(args["height"], args["width"]),
        chunk_size=100000,
        trj_mode=mode,
    )
    out[f"{mode}_w2c"] = np.concatenate([c[0] for c in captured])
    out[f"{mode}_intr"] = np.concatenate([c[1] for c in captured])
np.savez(sys.argv[3], **out)
