"""DTU in the MVSNet evaluation layout (49 views, reconstruction) and DTU-64 (64 views, pose only)."""

from __future__ import annotations

import logging

import numpy as np

from da3core.evaluation.datasets.base import BenchDataset, BenchScene, GroundTruthMissingError, LayoutError

log = logging.getLogger(__name__)

DTU_SCENES = (
    "scan1",
    "scan4",
    "scan9",
    "scan10",
    "scan11",
    "scan12",
    "scan13",
    "scan15",
    "scan23",
    "scan24",
    "scan29",
    "scan32",
    "scan33",
    "scan34",
    "scan48",
    "scan49",
    "scan62",
    "scan75",
    "scan77",
    "scan110",
    "scan114",
    "scan118",
)
DTU64_SCENES = (
    "scan105",
    "scan114",
    "scan118",
    "scan122",
    "scan24",
    "scan37",
    "scan40",
    "scan55",
    "scan63",
    "scan65",
    "scan69",
    "scan83",
    "scan97",
)
REFERENCE_VIEW = 33  # the benchmark feeds view 33 first
MASK_THRESHOLD = 10  # depth_visual PNG values above this are valid


def read_cam_file(text: str, path: str) -> tuple[np.ndarray, np.ndarray]:
    """(K (3, 3), w2c (4, 4)) float32 from an MVSNet camera file: 'extrinsic' + 4 rows, blank, 'intrinsic' + 3 rows."""
    lines = text.splitlines()
    try:
        ext = np.array(" ".join(lines[1:5]).split(), dtype=np.float32).reshape(4, 4)
        K = np.array(" ".join(lines[7:10]).split(), dtype=np.float32).reshape(3, 3)
    except ValueError:
        raise LayoutError(
            f"malformed MVSNet camera file {path} (expected 'extrinsic', 4 rows, '', 'intrinsic', 3 rows)"
        ) from None
    return K, ext


def frame_names(reader: BenchDataset, scene: str, folder: str) -> list[str]:
    """The scene's PNG frames in ``folder``, view 33 first; a missing folder is a missing scene."""
    reader._require_scene(scene, folder)
    return reference_first([n for n in reader.store.listdir(folder) if n.endswith(".png")])


def reference_first(files: list[str]) -> list[str]:
    """Move view 33 to the front when there are more than 33 views."""
    return (
        [files[REFERENCE_VIEW]] + files[:REFERENCE_VIEW] + files[REFERENCE_VIEW + 1 :]
        if len(files) > REFERENCE_VIEW
        else files
    )


class DTU(BenchDataset):
    """``<root>/{Rectified/<scene>/rect_VVV_L_r5000.png, Cameras/VVVVVVVV_cam.txt, depth_raw/Depths/<scene>/
    depth_visual_VVVV.png, Points/stl/stlNNN_total.ply, SampleSet/mvs_data/ObsMask/{ObsMaskN_10,PlaneN}.mat}``
    (millimetres). Its reconstruction mode is not TSDF (``fusion`` is None): see da3core.evaluation.dtu_recon."""

    name = "dtu"
    scene_names = DTU_SCENES
    layout_hint = "Rectified/{scene}"

    def load(self, scene: str) -> BenchScene:
        folder = f"Rectified/{scene}"
        names = frame_names(self, scene, folder)
        if len(names) <= REFERENCE_VIEW:
            raise LayoutError(
                f"dtu scene {scene} has {len(names)} views in {self.store.url(folder)}; "
                f"the benchmark needs at least {REFERENCE_VIEW + 1}"
            )
        files, intrinsics, extrinsics, views = [], [], [], []
        for name in names:
            try:
                view = int(name.split("_")[1]) - 1
            except (IndexError, ValueError):
                raise LayoutError(
                    f"unexpected DTU image name {self.store.url(folder, name)} (want rect_VVV_*.png)"
                ) from None
            cam_file = ("Cameras", f"{view:08d}_cam.txt")
            if not self.store.exists(*cam_file):
                raise GroundTruthMissingError(f"dtu camera file missing: {self.store.url(*cam_file)}")
            K, ext = read_cam_file(self.store.read_text(*cam_file), self.store.url(*cam_file))
            files.append(self.store.url(folder, name))
            intrinsics.append(K)
            extrinsics.append(ext)
            views.append(view)
        scan_id = int(scene[4:])
        return self._scene(
            scene,
            folder,
            files,
            intrinsics,
            extrinsics,
            views=views,
            obs_mask_file=self.store.url(f"SampleSet/mvs_data/ObsMask/ObsMask{scan_id}_10.mat"),
            plane_file=self.store.url(f"SampleSet/mvs_data/ObsMask/Plane{scan_id}.mat"),
        )

    def valid_mask(self, scene: BenchScene, index: int) -> np.ndarray:
        """The depth_visual mask of the view (values above 10)."""
        path = ("depth_raw", "Depths", scene.name, f"depth_visual_{scene.aux['views'][index]:04d}.png")
        mask = self.store.read_image(*path)
        return (mask if mask.ndim == 2 else mask[..., 0]) > MASK_THRESHOLD

    def gt_points(self, scene: BenchScene, seed: int = 0) -> np.ndarray:
        """The structured-light scan ``Points/stl/stlNNN_total.ply`` (mm)."""
        return self._cloud_points("Points", "stl", f"stl{int(scene.name[4:]):03d}_total.ply")


class DTU64(BenchDataset):
    """``<root>/<scene>/image/VVVVVVVV.png`` and ``<root>/Cameras/VVVVVVVV_cam.txt``; pose evaluation only."""

    name = "dtu64"
    scene_names = DTU64_SCENES
    layout_hint = "{scene}/image"

    def load(self, scene: str) -> BenchScene:
        folder = f"{scene}/image"
        files, intrinsics, extrinsics = [], [], []
        for name in frame_names(self, scene, folder):
            cam_file = ("Cameras", f"{int(name.split('.')[0]):08d}_cam.txt")
            if not self.store.exists(*cam_file):
                log.warning("dtu64: camera file missing, view skipped: %s", self.store.url(*cam_file))
                continue
            K, ext = read_cam_file(self.store.read_text(*cam_file), self.store.url(*cam_file))
            files.append(self.store.url(folder, name))
            intrinsics.append(K)
            extrinsics.append(ext)
        return self._scene(scene, folder, files, intrinsics, extrinsics)
