"""ScanNet++ (DA3-BENCH layout): re-calibrated COLMAP model of the merged DSLR + iPhone capture; iPhone frames only."""

from __future__ import annotations

import posixpath
from collections.abc import Sequence

import cv2
import numpy as np

from da3core.evaluation.datasets.base import BenchDataset, BenchScene, FusionSettings, LayoutError

SCANNETPP_SCENES = (
    "09c1414f1b",
    "1ada7a0617",
    "40aec5fffa",
    "3e8bba0176",
    "acd95847c5",
    "578511c8a9",
    "5f99900f09",
    "c4c04e6d6c",
    "f3d64c30f8",
    "7bc286c1b6",
    "c5439f4607",
    "286b55a2bf",
    "fb5a96b1a2",
    "7831862f02",
    "38d58a7a31",
    "bde1e479ad",
    "9071e139d9",
    "21d970d8de",
    "bcd2436daf",
    "cc5237fd77",
)
FUSION_SIZE = (768, 1024)  # (H, W) the benchmark undistorts, crops and resizes frames (and GT masks) to for fusion
PINHOLE_FIRST = {"PINHOLE", "OPENCV", "FULL_OPENCV", "OPENCV_FISHEYE", "FOV", "THIN_PRISM_FISHEYE"}  # fx fy cx cy first
CAPTURE = "merge_dslr_iphone"


class ScanNetPP(BenchDataset):
    """``<root>/<scene>/merge_dslr_iphone/{images/, colmap/sparse_render_rgb/, render_depth/}`` and
    ``<root>/<scene>/scans/mesh_aligned_0.05.ply``. Intrinsics are those of the undistorted frame (OPENCV models)."""

    name = "scannetpp"
    scene_names = SCANNETPP_SCENES
    fusion = FusionSettings(
        voxel_length=0.02,
        sdf_trunc=0.15,
        max_depth=5.0,
        n_points=1_000_000,
        eval_threshold=0.05,
        eval_voxel=0.02,
        crop_margin=0.1,
    )
    layout_hint = "{scene}/" + CAPTURE + "/colmap/sparse_render_rgb"

    def load(self, scene: str) -> BenchScene:
        import pycolmap

        folder = f"{scene}/{CAPTURE}"
        self._require_scene(scene, folder)
        model_dir = (folder, "colmap", "sparse_render_rgb")
        if not self.store.isdir(*model_dir):
            raise LayoutError(f"no COLMAP model folder {self.store.url(*model_dir)}")
        try:
            model = pycolmap.Reconstruction(str(self.store.local(*model_dir)))
        except Exception as exc:  # pycolmap raises plain RuntimeErrors
            raise LayoutError(f"cannot read the COLMAP model in {self.store.url(*model_dir)}: {exc}") from None
        images = {image.name: image for image in model.images.values()}
        files, intrinsics, extrinsics = [], [], []
        aux: dict[str, list] = {"dist": [], "roi": [], "camera_hw": [], "raw_intrinsics": [], "depth_files": []}
        for name in sorted(n for n in images if "iphone" in n):
            if not self.store.exists(folder, "images", name):
                continue
            image = images[name]
            camera = model.cameras[image.camera_id]
            if camera.model_name not in PINHOLE_FIRST:
                raise LayoutError(
                    f"camera model {camera.model_name} of {name} in {self.store.url(*model_dir)} has no "
                    "fx fy cx cy parameters"
                )
            # float32 and the -0.5 shift to pixel-centre coordinates, in the benchmark's order of operations
            K: np.ndarray = np.eye(3, dtype=np.float32)
            K[0, 0], K[1, 1], K[0, 2], K[1, 2] = camera.params[:4]
            K[:2, 2] -= 0.5
            dist = np.zeros(5, dtype=np.float32)
            roi: Sequence[int] = (0, 0, camera.width, camera.height)
            raw_K = K.copy()
            if camera.model_name == "OPENCV":
                dist[:4] = camera.params[4:8]
                K, roi = cv2.getOptimalNewCameraMatrix(
                    K, dist, (camera.width, camera.height), 1, (camera.width, camera.height)
                )
            files.append(self.store.url(folder, "images", name))
            intrinsics.append(K)
            extrinsics.append(np.vstack([image.cam_from_world().matrix(), [0, 0, 0, 1]]))
            aux["dist"].append(dist)
            aux["roi"].append(tuple(int(v) for v in roi))
            aux["camera_hw"].append((camera.height, camera.width))
            aux["raw_intrinsics"].append(raw_K)
            aux["depth_files"].append((folder, "render_depth", posixpath.basename(name)[:-4] + ".png"))
        return self._scene(scene, folder, files, intrinsics, extrinsics, **aux)

    def gt_depth(self, scene: BenchScene, index: int) -> np.ndarray:
        """The rendered mesh depth at the camera's resolution (16-bit mm)."""
        return (self.store.read_image(*scene.aux["depth_files"][index]) / 1000.0).astype(np.float32)

    def valid_mask(self, scene: BenchScene, index: int) -> np.ndarray | None:
        """GT depth resized (bilinear) to the fusion size, positive and finite; None when the depth file is missing."""
        if not self.store.exists(*scene.aux["depth_files"][index]):
            return None
        depth = self.store.read_image(*scene.aux["depth_files"][index]) / 1000.0
        depth = cv2.resize(depth, FUSION_SIZE[::-1], interpolation=cv2.INTER_LINEAR).astype(np.float32)
        return (depth > 0) & (depth != np.inf)

    def fusion_view(self, scene: BenchScene, index: int, depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The frame undistorted, cropped to its valid region and resized to 1024x768 (area); the depth resized to the
        camera size (nearest), then to 1024x768 (bilinear)."""
        height, width = scene.aux["camera_hw"][index]
        image = cv2.undistort(
            scene.image(index),
            scene.aux["raw_intrinsics"][index],
            scene.aux["dist"][index],
            newCameraMatrix=scene.intrinsics[index],
        )
        x, y, w, h = scene.aux["roi"][index]
        image = cv2.resize(image[y : y + h, x : x + w], FUSION_SIZE[::-1], interpolation=cv2.INTER_AREA)
        depth = cv2.resize(depth, (width, height), interpolation=cv2.INTER_NEAREST)
        return image, cv2.resize(depth, FUSION_SIZE[::-1], interpolation=cv2.INTER_LINEAR).astype(np.float32)

    def posed_intrinsics(self, scene: BenchScene, index: int, size: tuple[int, int]) -> np.ndarray:
        """The GT intrinsics back in COLMAP pixel coordinates (+0.5), scaled from the camera size to ``size``."""
        height, width = scene.aux["camera_hw"][index]
        K = scene.intrinsics[index].copy()
        K[:2, 2] += 0.5
        K[0] *= size[1] / width
        K[1] *= size[0] / height
        return K

    def gt_points(self, scene: BenchScene, seed: int = 0) -> np.ndarray:
        return self._mesh_points(self.fusion.n_points, seed, scene.name, "scans", "mesh_aligned_0.05.ply")
