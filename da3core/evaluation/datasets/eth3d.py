"""ETH3D multi-view (DA3-BENCH layout): COLMAP-text DSLR calibration, laser-scan mesh, raw float32 GT depth."""

from __future__ import annotations

import posixpath

import numpy as np
from scipy.spatial.transform import Rotation

from da3core.evaluation.datasets.base import BenchDataset, BenchScene, FusionSettings, LayoutError

ETH3D_SCENES = (
    "courtyard",
    "electro",
    "kicker",
    "pipes",
    "relief",
    "delivery_area",
    "facade",
    "office",
    "playground",
    "relief_2",
    "terrains",
)  # upstream leaves out terrace and meadow
# Views the benchmark drops (unusual camera rotations), matched against the end of the image name.
ETH3D_EXCLUDED_VIEWS = {
    "delivery_area": tuple(f"{i}.JPG" for i in range(711, 715)),
    "electro": tuple(f"{i}.JPG" for i in (9289, 9290, 9291, 9292, 9293, 9298)),
    "playground": tuple(f"{i}.JPG" for i in range(587, 593)),
    "relief": tuple(f"{i}.JPG" for i in range(427, 439)),
    "relief_2": tuple(f"{i}.JPG" for i in range(458, 469)),
}
CALIBRATION = "dslr_calibration_jpg"


def _camera_lines(text: str, header: int) -> list[tuple[int, list[str]]]:
    """(index after the header, tokens) of the non-empty, non-comment lines of a COLMAP text file."""
    lines = text.splitlines()[header:]
    return [(i, line.split()) for i, line in enumerate(lines) if line.strip() and not line.strip().startswith("#")]


class ETH3D(BenchDataset):
    """``<root>/<scene>/{images/, dslr_calibration_jpg/{cameras,images}.txt, combined_mesh.ply, ground_truth_depth/,
    masks_for_images/}``; frames in images.txt order, minus the benchmark's excluded views."""

    name = "eth3d"
    scene_names = ETH3D_SCENES
    fusion = FusionSettings(
        voxel_length=4.0 / 512.0 * 5,
        sdf_trunc=0.04 * 5,
        max_depth=100000.0,
        n_points=1_000_000,
        eval_threshold=0.05 * 5,
        eval_voxel=4.0 / 512.0 * 5,
    )
    layout_hint = "{scene}/" + CALIBRATION + "/images.txt"

    def _cameras(self, scene: str) -> dict[str, tuple[float, ...]]:
        """camera id -> (width, height, fx, fy, cx, cy) from cameras.txt (3 header lines)."""
        path = (scene, CALIBRATION, "cameras.txt")
        cameras = {}
        for _, tokens in _camera_lines(self.store.read_text(*path), header=3):
            if len(tokens) >= 8:
                try:
                    cameras[tokens[0]] = tuple(float(v) for v in tokens[2:8])
                except ValueError:
                    raise LayoutError(
                        f"malformed camera line {' '.join(tokens)!r} in {self.store.url(*path)}"
                    ) from None
        return cameras

    def _poses(self, scene: str) -> dict[str, tuple[np.ndarray, np.ndarray, str]]:
        """image name -> (quaternion wxyz, translation, camera id) from images.txt (4 header lines, 2 per image)."""
        path = (scene, CALIBRATION, "images.txt")
        poses = {}
        for index, tokens in _camera_lines(self.store.read_text(*path), header=4):
            if index % 2 == 0 and len(tokens) >= 10:  # odd lines hold the 2-D observations
                try:
                    poses[tokens[9]] = (np.array(tokens[1:5], float), np.array(tokens[5:8], float), tokens[8])
                except ValueError:
                    raise LayoutError(f"malformed image line {' '.join(tokens)!r} in {self.store.url(*path)}") from None
        return poses

    def load(self, scene: str) -> BenchScene:
        self._require_scene(scene, scene)
        cameras, poses = self._cameras(scene), self._poses(scene)
        excluded = ETH3D_EXCLUDED_VIEWS.get(scene, ())
        files, intrinsics, extrinsics, sizes = [], [], [], []
        for image_name, (quat, trans, camera_id) in poses.items():
            if (
                image_name.endswith(excluded)
                or camera_id not in cameras
                or not self.store.exists(scene, "images", image_name)
            ):
                continue
            width, height, fx, fy, cx, cy = cameras[camera_id]
            ext = np.eye(4)
            ext[:3, :3] = Rotation.from_quat(quat[[1, 2, 3, 0]]).as_matrix()
            ext[:3, 3] = trans
            files.append(self.store.url(scene, "images", image_name))
            intrinsics.append([[fx, 0, cx], [0, fy, cy], [0, 0, 1]])
            extrinsics.append(ext)
            sizes.append((int(height), int(width)))
        return self._scene(scene, scene, files, intrinsics, extrinsics, sizes=sizes)

    def _gt_file(self, scene: BenchScene, index: int, folder: str, ext: str | None = None) -> tuple[str, ...]:
        name = posixpath.basename(scene.image_files[index])
        return scene.name, folder, "dslr_images", name if ext is None else name.replace(".JPG", ext)

    def gt_depth(self, scene: BenchScene, index: int) -> np.ndarray:
        height, width = scene.aux["sizes"][index]
        path = self._gt_file(scene, index, "ground_truth_depth")
        raw = np.frombuffer(self.store.read_bytes(*path), dtype=np.float32)
        if raw.size != height * width:
            raise LayoutError(f"GT depth {self.store.url(*path)} holds {raw.size} values, not {height}x{width}")
        depth = raw.reshape(height, width).copy()
        depth[~np.isfinite(depth)] = 0
        return depth

    def valid_mask(self, scene: BenchScene, index: int) -> np.ndarray:
        """Not occluded (mask value 1) and with a GT depth that is neither 0 nor +inf; missing files mask nothing."""
        height, width = scene.aux["sizes"][index]
        depth_path, mask_path = (
            self._gt_file(scene, index, "ground_truth_depth"),
            self._gt_file(scene, index, "masks_for_images", ".png"),
        )
        depth = (
            np.frombuffer(self.store.read_bytes(*depth_path), dtype=np.float32).reshape(height, width)
            if self.store.exists(*depth_path)
            else np.ones((height, width), np.float32)
        )
        mask = (
            self.store.read_image(*mask_path) if self.store.exists(*mask_path) else np.zeros((height, width), np.uint8)
        )
        if mask.ndim == 3:
            raise LayoutError(f"occlusion mask {self.store.url(*mask_path)} must be single-channel")
        return (mask != 1) & (depth != 0) & (depth != np.inf)

    def gt_points(self, scene: BenchScene, seed: int = 0) -> np.ndarray:
        return self._mesh_points(self.fusion.n_points, seed, scene.name, "combined_mesh.ply")
