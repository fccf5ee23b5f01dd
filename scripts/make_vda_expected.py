"""Generate the Video Depth Anything test truth in tests/data/vda from the upstream code (run once, by hand).

    git clone https://github.com/DepthAnything/Video-Depth-Anything /tmp/vda_upstream
    pip install einops easydict          # upstream imports them; da3pipe does not need them
    PYTHONPATH=. python scripts/make_vda_expected.py --upstream /tmp/vda_upstream

Writes ``keys/<encoder>.keys.txt`` (the state-dict contract of upstream's model;
relative and metric models share it; upstream's constructor cannot run on the meta device, so it is
built on the CPU) and ``expected.npz``: a procedural clip, upstream's windowed output
(relative and metric) and streaming output on weights from our seeded factory, and upstream's network input
sizes for a few frame shapes. Nothing from upstream is copied into the repository.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch

from da3core.video_depth import write_random_checkpoint

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "vda"
# Upstream run.py's model_configs (kept here so the key lists do not depend on our own config table).
UPSTREAM_CONFIGS = {
    "vits": {"encoder": "vits", "features": 64, "out_channels": [48, 96, 192, 384]},
    "vitb": {"encoder": "vitb", "features": 128, "out_channels": [96, 192, 384, 768]},
    "vitl": {"encoder": "vitl", "features": 256, "out_channels": [256, 512, 1024, 1024]},
}
N_FRAMES, N_METRIC, N_STREAM = 70, 30, 45  # 4 windows; 2 windows; past the start of cache pruning (frame 11)
FRAME_H, FRAME_W, INPUT_SIZE = 20, 24, 56  # -> 56 x 70 network input (4 x 5 patches)
SIZE_CASES = [
    (720, 1280, 518),
    (1080, 1920, 518),
    (800, 1920, 518),
    (480, 640, 518),
    (1280, 720, 518),
    (20, 24, 56),
    (37, 100, 70),
    (518, 518, 518),
    (300, 1000, 392),
]


def procedural_clip(n: int, h: int, w: int) -> np.ndarray:
    """(n, h, w, 3) uint8: drifting colour waves over a moving checkerboard and a moving bright square."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    clip = np.zeros((n, h, w, 3))
    for t in range(n):
        clip[t, ..., 0] = 128 + 90 * np.sin(0.45 * x + 0.21 * t)
        clip[t, ..., 1] = 128 + 90 * np.cos(0.37 * y - 0.13 * t + 0.05 * x)
        clip[t, ..., 2] = 60 + 120 * (((x + t) // 4 + y // 4) % 2)
        cy, cx = 4 + (t * 0.3) % (h - 8), 3 + (t * 0.7) % (w - 8)
        clip[t, (y >= cy) & (y < cy + 6) & (x >= cx) & (x < cx + 6)] = 240
    return np.clip(np.round(clip), 0, 255).astype(np.uint8)


def import_upstream(root: Path) -> types.SimpleNamespace:
    """Upstream's modules, with a stand-in for torchvision's Compose when torchvision is absent."""
    try:
        import torchvision.transforms  # noqa: F401
    except ImportError:

        class Compose:
            def __init__(self, steps):
                self.steps = steps

            def __call__(self, sample):
                for step in self.steps:
                    sample = step(sample)
                return sample

        tv = types.ModuleType("torchvision")
        tv.transforms = types.ModuleType("torchvision.transforms")
        tv.transforms.Compose = Compose
        sys.modules.update({"torchvision": tv, "torchvision.transforms": tv.transforms})
    sys.path.insert(0, str(root))
    from video_depth_anything import video_depth, video_depth_stream
    from video_depth_anything.util.transform import Resize

    return types.SimpleNamespace(
        windowed=video_depth.VideoDepthAnything, streaming=video_depth_stream.VideoDepthAnything, Resize=Resize
    )


def write_keys(up: types.SimpleNamespace) -> None:
    """One key/shape list per encoder, from upstream's model."""
    (OUT / "keys").mkdir(parents=True, exist_ok=True)
    for encoder, config in UPSTREAM_CONFIGS.items():
        model = up.windowed(**config)  # on the CPU: upstream's constructor calls .item(), which meta cannot
        lines = [f"{k}\t{list(v.shape)}" for k, v in model.state_dict().items()]
        header = "# Upstream Video-Depth-Anything state-dict keys and shapes (relative and metric share them).\n"
        (OUT / "keys" / f"{encoder}.keys.txt").write_text(header + "\n".join(lines) + "\n")


def upstream_model(cls: type, checkpoint: Path, metric: bool) -> torch.nn.Module:
    """An upstream vits model with our seeded checkpoint loaded strictly."""
    kwargs = {"metric": metric} if cls.__module__.endswith("video_depth") else {}
    model = cls(**UPSTREAM_CONFIGS["vits"], **kwargs)
    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True), strict=True)
    return model.eval()


def write_expected(up: types.SimpleNamespace) -> None:
    """Upstream outputs on the procedural clip, fp32 on the CPU."""
    clip = procedural_clip(N_FRAMES, FRAME_H, FRAME_W)
    with tempfile.TemporaryDirectory() as tmp:
        rel = write_random_checkpoint(Path(tmp) / "video_depth_anything_vits.pth", "vits", seed=0)
        met = write_random_checkpoint(Path(tmp) / "metric_video_depth_anything_vits.pth", "vits", metric=True, seed=1)
        windows, _ = upstream_model(up.windowed, rel, False).infer_video_depth(
            clip, 30, input_size=INPUT_SIZE, device="cpu", fp32=True
        )
        metric, _ = upstream_model(up.windowed, met, True).infer_video_depth(
            clip[:N_METRIC], 30, input_size=INPUT_SIZE, device="cpu", fp32=True
        )
        stream_model = upstream_model(up.streaming, rel, False)
        stream = np.stack(
            [
                stream_model.infer_video_depth_one(f, input_size=INPUT_SIZE, device="cpu", fp32=True)
                for f in clip[:N_STREAM]
            ]
        )
    sizes = []
    for h, w, size in SIZE_CASES:  # upstream's input-size rule, then its lower-bound resize
        ratio = max(h, w) / min(h, w)
        if ratio > 1.78:
            size = round(int(size * 1.777 / ratio) / 14) * 14
        resize = up.Resize(
            size, size, resize_target=False, keep_aspect_ratio=True, ensure_multiple_of=14, resize_method="lower_bound"
        )
        new_w, new_h = resize.get_size(w, h)
        sizes.append((h, w, SIZE_CASES[len(sizes)][2], int(new_h), int(new_w)))
    np.savez_compressed(
        OUT / "expected.npz",
        frames=clip,
        windows_relative=windows.astype(np.float32),
        windows_metric=metric.astype(np.float32),
        streaming_relative=stream.astype(np.float32),
        input_sizes=np.array(sizes, dtype=np.int64),
        input_size=np.int64(INPUT_SIZE),
    )


def main() -> None:
    """Parse the upstream path and write both kinds of truth."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", type=Path, required=True, help="a checkout of DepthAnything/Video-Depth-Anything")
    args = parser.parse_args()
    torch.set_num_threads(1)
    up = import_upstream(args.upstream.resolve())
    write_keys(up)
    write_expected(up)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
