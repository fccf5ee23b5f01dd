"""7-Scenes (DA3-BENCH layout): one sequence per scene, camera-to-world pose text files, 16-bit depth in mm."""

from __future__ import annotations

import numpy as np

from da3core.evaluation.datasets.base import BenchDataset, BenchScene, FusionSettings

SEVENSCENES_SCENES = ("chess", "fire", "heads", "office", "pumpkin", "redkitchen", "stairs")
SEVENSCENES_K = ((585.0, 0.0, 320.0), (0.0, 585.0, 240.0), (0.0, 0.0, 1.0))  # one Kinect calibration for all frames
INVALID_DEPTH_MM = 65535


class SevenScenes(BenchDataset):
    """``<root>/7Scenes/<scene>/seq-01/frame-NNNNNN.{color.png,depth.png,pose.txt}`` (stairs: seq-02, 500 frames;
    others 1000) and ``<root>/7Scenes/meshes/<scene>.ply``."""

    name = "7scenes"
    scene_names = SEVENSCENES_SCENES
    fusion = FusionSettings(
        voxel_length=4.0 / 512.0,
        sdf_trunc=0.04,
        max_depth=1000000.0,
        n_points=1_000_000,
        eval_threshold=0.05,
        eval_voxel=4.0 / 512.0,
    )
    layout_hint = "7Scenes/{scene}"

    @staticmethod
    def sequence(scene: str) -> tuple[str, int]:
        """The sequence folder the benchmark uses and its frame count."""
        return ("seq-02", 500) if scene == "stairs" else ("seq-01", 1000)

    def load(self, scene: str) -> BenchScene:
        seq, n_frames = self.sequence(scene)
        folder = f"7Scenes/{scene}/{seq}"
        self._require_scene(scene, folder)
        present = set(self.store.listdir(folder))
        files, extrinsics, depth_files = [], [], []
        for i in range(n_frames):
            stem = f"frame-{i:06d}"
            if f"{stem}.color.png" not in present or f"{stem}.pose.txt" not in present:
                continue
            c2w = np.array(self.store.read_text(folder, f"{stem}.pose.txt").split(), dtype=np.float64).reshape(4, 4)
            files.append(self.store.url(folder, f"{stem}.color.png"))
            extrinsics.append(np.linalg.inv(c2w))
            depth_files.append((folder, f"{stem}.depth.png"))
        return self._scene(scene, folder, files, [SEVENSCENES_K] * len(files), extrinsics, depth_files=depth_files)

    def _depth_mm(self, scene: BenchScene, index: int) -> np.ndarray:
        depth = self.store.read_image(*scene.aux["depth_files"][index]).astype(np.float64)
        depth[depth == INVALID_DEPTH_MM] = 0
        return depth

    def gt_depth(self, scene: BenchScene, index: int) -> np.ndarray:
        return (self._depth_mm(scene, index) / 1000.0).astype(np.float32)

    def valid_mask(self, scene: BenchScene, index: int) -> np.ndarray | None:
        """Where the Kinect measured a depth; None (keep every valid prediction) when the depth file is missing."""
        if not self.store.exists(*scene.aux["depth_files"][index]):
            return None
        return self._depth_mm(scene, index) > 0

    def gt_points(self, scene: BenchScene, seed: int = 0) -> np.ndarray:
        return self._mesh_points(self.fusion.n_points, seed, "7Scenes", "meshes", f"{scene.name}.ply")
