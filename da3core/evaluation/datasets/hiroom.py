"""HiRoom (DA3-BENCH layout): rendered indoor rooms with per-frame w2c poses, 16-bit depth and aliasing masks."""

from __future__ import annotations

import numpy as np

from da3core.evaluation.datasets.base import BenchDataset, BenchScene, FusionSettings, LayoutError

SCENE_LIST = "selected_scene_list_val.txt"
DEPTH_RANGE_M = 100.0  # 16-bit depth PNGs span [0, 100] m


class HiRoom(BenchDataset):
    """``<root>/data/<a>/<b>/<c>/{image/, depth/, pose/*.npy, aliasing_mask/, cam_K.npy}``, the GT point cloud
    ``<root>/fused_pcd/<a>-<b>-<c>.ply`` and the scene list ``<root>/selected_scene_list_val.txt``."""

    name = "hiroom"
    fusion = FusionSettings(
        voxel_length=4.0 / 512.0,
        sdf_trunc=0.04,
        max_depth=10000.0,
        n_points=1_000_000,
        eval_threshold=0.05,
        eval_voxel=4.0 / 512.0,
    )
    layout_hint = "data/{scene}/image"

    def benchmark_scenes(self) -> list[str]:
        """The scenes named in the dataset's own list file."""
        if not self.store.exists(SCENE_LIST):
            raise LayoutError(f"hiroom scene list missing: {self.store.url(SCENE_LIST)}")
        return self.store.read_text(SCENE_LIST).splitlines()

    def load(self, scene: str) -> BenchScene:
        folder = f"data/{scene}"
        self._require_scene(scene, folder)
        if not self.store.exists(folder, "cam_K.npy"):
            raise LayoutError(f"hiroom scene {scene} has no intrinsics file {self.store.url(folder, 'cam_K.npy')}")
        K = self.store.read_npy(folder, "cam_K.npy")
        poses = set(self.store.listdir(folder, "pose")) if self.store.isdir(folder, "pose") else set()
        files, extrinsics, frames = [], [], []
        for image_name in self.store.listdir(folder, "image"):
            frame = image_name.split(".")[0]
            if f"{frame}.npy" not in poses:
                continue
            files.append(self.store.url(folder, "image", image_name))
            extrinsics.append(self.store.read_npy(folder, "pose", f"{frame}.npy"))
            frames.append(frame)
        return self._scene(scene, folder, files, [K] * len(files), extrinsics, frames=frames)

    def _file(self, scene: BenchScene, index: int, kind: str) -> tuple[str, ...]:
        return f"data/{scene.name}", kind, f"{scene.aux['frames'][index]}.png"

    def gt_depth(self, scene: BenchScene, index: int) -> np.ndarray:
        return (self.store.read_image(*self._file(scene, index, "depth")) / 65535.0 * DEPTH_RANGE_M).astype(np.float32)

    def valid_mask(self, scene: BenchScene, index: int) -> np.ndarray | None:
        """Positive GT depth outside the aliasing mask; None when the depth file is missing."""
        depth_file, alias_file = self._file(scene, index, "depth"), self._file(scene, index, "aliasing_mask")
        if not self.store.exists(*depth_file):
            return None
        valid = self.store.read_image(*depth_file) > 0
        if self.store.exists(*alias_file):
            valid &= ~(self.store.read_image(*alias_file) > 0)
        return valid

    def gt_points(self, scene: BenchScene, seed: int = 0) -> np.ndarray:
        return self._cloud_points("fused_pcd", "-".join(scene.name.split("/")[-3:]) + ".ply")
