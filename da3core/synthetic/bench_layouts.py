"""Miniature benchmark datasets in the six DA3-BENCH layouts, rendered from procedural rooms with exact ground truth.

Each writer lays out ``<root>/<dataset>/`` as the benchmark's readers expect (cameras, images, GT depth and masks,
the reconstruction reference), with a few small views per scene so tests and the offline example run in seconds.
GT depth is exact up to each format's storage (float32 for ETH3D, 1 mm for 7-Scenes/ScanNet++, 100/65535 m for HiRoom).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import trimesh
from PIL import Image
from scipy.io import savemat
from scipy.spatial.transform import Rotation

from da3core.geometry import affine_inverse, as_homogeneous, intrinsics_from_fov
from da3core.synthetic.scene import (
    SyntheticScene,
    make_scene,
    orbit_extrinsics,
    render_view,
    scene_mesh,
    surface_points,
)

GT_CLOUD_SPACING = 0.025  # metres between the points of the GT point clouds (HiRoom, DTU)


def _render(scene: SyntheticScene, K: np.ndarray, extrinsics: np.ndarray, height: int, width: int):
    """(images (N, H, W, 3) uint8, z-depth (N, H, W) float64, 0 where no surface) of every camera."""
    views = [render_view(scene, K, ext, height, width) for ext in extrinsics]
    return np.stack([v[0] for v in views]), np.stack([v[1] for v in views])


def _cameras(n_views: int, width: int, height: int, seed: int, fov_deg: float = 65.0):
    scene = make_scene(seed)
    return scene, intrinsics_from_fov(width, height, fov_deg), orbit_extrinsics(n_views, scene.target)


def _write_mesh(scene: SyntheticScene, path: Path, scale: float = 1.0) -> None:
    vertices, triangles = scene_mesh(scene)
    path.parent.mkdir(parents=True, exist_ok=True)
    trimesh.Trimesh(vertices * scale, triangles, process=False).export(path)


def _write_cloud(points: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    trimesh.PointCloud(points).export(path)


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), array[..., ::-1] if array.ndim == 3 else array):
        raise OSError(f"could not write {path}")


def _depth_u16(depth: np.ndarray, per_metre: float, invalid: int = 0) -> np.ndarray:
    return np.where(depth > 0, np.clip(np.round(depth * per_metre), 1, 65534), invalid).astype(np.uint16)


def _occlusion_block(shape: tuple[int, int]) -> np.ndarray:
    """A top-left block marked as excluded in the first view's GT mask, so masks are exercised."""
    mask = np.zeros(shape, dtype=bool)
    mask[: shape[0] // 4, : shape[1] // 4] = True
    return mask


def write_eth3d(
    root: Path, scenes: Sequence[str] = ("courtyard", "electro"), n_views: int = 4, size: tuple[int, int] = (96, 64)
) -> Path:
    """ETH3D: COLMAP-text calibration, JPEG frames, raw float32 depth (+inf = none), occlusion masks, GT mesh.

    The ``electro`` scene also gets view DSC_9289.JPG, which the benchmark excludes.
    """
    width, height = size
    for s, name in enumerate(scenes):
        scene, K, exts = _cameras(n_views + (name == "electro"), width, height, seed=s)
        images, depth = _render(scene, K, exts, height, width)
        folder = root / "eth3d" / name
        names = [f"dslr_images/DSC_{1000 + i:04d}.JPG" for i in range(n_views)] + (
            ["dslr_images/DSC_9289.JPG"] if name == "electro" else []
        )
        cam_lines = [
            "# Camera list with one line of data per camera:",
            "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]",
            "# Number of cameras: 1",
            f"0 PINHOLE {width} {height} " + " ".join(repr(float(v)) for v in (K[0, 0], K[1, 1], K[0, 2], K[1, 2])),
        ]
        image_lines = [
            "# Image list with two lines of data per image:",
            "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
            "#   POINTS2D[] as (X, Y, POINT3D_ID)",
            f"# Number of images: {len(names)}",
        ]
        for i, (image_name, ext) in enumerate(zip(names, exts)):
            qx, qy, qz, qw = Rotation.from_matrix(ext[:3, :3]).as_quat()
            image_lines += [
                " ".join(repr(float(v)) for v in (qw, qx, qy, qz, *ext[:3, 3])).join([f"{i} ", f" 0 {image_name}"]),
                "",
            ]
            stem = Path(image_name).name
            (folder / "images" / "dslr_images").mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i]).save(folder / "images" / image_name, quality=95)
            gt = np.where(depth[i] > 0, depth[i], np.inf).astype(np.float32)
            (folder / "ground_truth_depth" / "dslr_images").mkdir(parents=True, exist_ok=True)
            gt.tofile(folder / "ground_truth_depth" / "dslr_images" / stem)
            occluded = _occlusion_block((height, width)) if i == 0 else np.zeros((height, width), bool)
            _save(folder / "masks_for_images" / "dslr_images" / stem.replace(".JPG", ".png"), occluded.astype(np.uint8))
        (folder / "dslr_calibration_jpg").mkdir(parents=True, exist_ok=True)
        (folder / "dslr_calibration_jpg" / "cameras.txt").write_text("\n".join(cam_lines) + "\n")
        (folder / "dslr_calibration_jpg" / "images.txt").write_text("\n".join(image_lines) + "\n")
        _write_mesh(scene, folder / "combined_mesh.ply")
    return root / "eth3d"


def write_7scenes(root: Path, scenes: Sequence[str] = ("chess", "stairs"), n_views: int = 3) -> Path:
    """7-Scenes: 640x480 frames at the dataset's fixed Kinect intrinsics, c2w pose files, depth in mm (65535 = none)."""
    K = np.array([[585.0, 0.0, 320.0], [0.0, 585.0, 240.0], [0.0, 0.0, 1.0]])
    for s, name in enumerate(scenes):
        scene = make_scene(s)
        exts = orbit_extrinsics(n_views, scene.target)
        images, depth = _render(scene, K, exts, 480, 640)
        folder = root / "7scenes" / "7Scenes" / name / ("seq-02" if name == "stairs" else "seq-01")
        for i in range(n_views):
            _save(folder / f"frame-{i:06d}.color.png", images[i])
            _save(folder / f"frame-{i:06d}.depth.png", _depth_u16(depth[i], 1000.0, invalid=65535))
            np.savetxt(folder / f"frame-{i:06d}.pose.txt", affine_inverse(as_homogeneous(exts[i])), fmt="%.17g")
        _write_mesh(scene, root / "7scenes" / "7Scenes" / "meshes" / f"{name}.ply")
    return root / "7scenes"


def write_scannetpp(
    root: Path, scenes: Sequence[str] = ("09c1414f1b", "1ada7a0617"), n_views: int = 4, size: tuple[int, int] = (64, 48)
) -> Path:
    """ScanNet++: a binary COLMAP model (OPENCV cameras, zero distortion) of iPhone frames plus one DSLR frame the
    benchmark skips, 16-bit mm render depth, GT mesh."""
    import pycolmap

    width, height = size
    for s, name in enumerate(scenes):
        scene, K, exts = _cameras(n_views + 1, width, height, seed=s)
        images, depth = _render(scene, K, exts, height, width)
        folder = root / "scannetpp" / name / "merge_dslr_iphone"
        names = [f"iphone/frame_{i:06d}.jpg" for i in range(n_views)] + ["dslr/DSC00001.JPG"]
        model = pycolmap.Reconstruction()
        for i, image_name in enumerate(names):
            camera = pycolmap.Camera.create_from_model_name(i + 1, "OPENCV", float(K[0, 0]), width, height)
            camera.params = [K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5, 0.0, 0.0, 0.0, 0.0]  # COLMAP pixel centres
            model.add_camera_with_trivial_rig(camera)
            image = pycolmap.Image(name=image_name, camera_id=i + 1, image_id=i + 1)
            pose = pycolmap.Rigid3d(pycolmap.Rotation3d(exts[i][:3, :3]), exts[i][:3, 3])
            model.add_image_with_trivial_frame(image, pose)
            (folder / "images" / Path(image_name).parent).mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i]).save(folder / "images" / image_name, quality=95)
            _save(folder / "render_depth" / (Path(image_name).stem + ".png"), _depth_u16(depth[i], 1000.0))
        (folder / "colmap" / "sparse_render_rgb").mkdir(parents=True, exist_ok=True)
        model.write_binary(str(folder / "colmap" / "sparse_render_rgb"))
        _write_mesh(scene, root / "scannetpp" / name / "scans" / "mesh_aligned_0.05.ply")
    return root / "scannetpp"


def write_hiroom(
    root: Path,
    scenes: Sequence[str] = ("synthetic/room_00/cam_00", "synthetic/room_01/cam_00"),
    n_views: int = 4,
    size: tuple[int, int] = (64, 48),
) -> Path:
    """HiRoom: w2c pose .npy per frame, shared cam_K.npy, depth PNGs over [0, 100] m, aliasing masks, GT point cloud,
    the scene list; each scene also has one image without a pose, which the benchmark skips."""
    width, height = size
    dataset = root / "hiroom"
    for s, name in enumerate(scenes):
        scene, K, exts = _cameras(n_views + 1, width, height, seed=s)
        images, depth = _render(scene, K, exts, height, width)
        folder = dataset / "data" / name
        (folder / "pose").mkdir(parents=True, exist_ok=True)
        np.save(folder / "cam_K.npy", K)
        for i in range(n_views + 1):
            _save(folder / "image" / f"{i:05d}.png", images[i])
            if i == n_views:
                continue
            np.save(folder / "pose" / f"{i:05d}.npy", as_homogeneous(exts[i]))
            _save(folder / "depth" / f"{i:05d}.png", _depth_u16(depth[i], 65535.0 / 100.0))
            aliasing = _occlusion_block((height, width)) if i == 0 else np.zeros((height, width), bool)
            _save(folder / "aliasing_mask" / f"{i:05d}.png", aliasing.astype(np.uint8) * 255)
        _write_cloud(
            surface_points(scene, GT_CLOUD_SPACING), dataset / "fused_pcd" / ("-".join(name.split("/")[-3:]) + ".ply")
        )
    (dataset / "selected_scene_list_val.txt").write_text("\n".join(scenes) + "\n")
    return dataset


def _write_mvsnet_cam(path: Path, K: np.ndarray, ext: np.ndarray, depth_range: tuple[float, float]) -> None:
    rows = [
        "extrinsic",
        *(" ".join(repr(float(v)) for v in row) for row in as_homogeneous(ext)),
        "",
        "intrinsic",
        *(" ".join(repr(float(v)) for v in row) for row in K),
        "",
        f"{depth_range[0]} {depth_range[1]}",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(rows) + "\n")


def _dtu_cameras(n_views: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """One camera rig shared by every scan, as in DTU; translations in millimetres."""
    _, K, exts = _cameras(n_views, width, height, seed=0)
    exts = exts.copy()
    exts[:, :3, 3] *= 1000.0
    return K, exts


def _mm_render(seed: int, K: np.ndarray, exts_mm: np.ndarray, height: int, width: int):
    scene = make_scene(seed)
    exts_m = exts_mm.copy()
    exts_m[:, :3, 3] /= 1000.0
    return scene, *_render(scene, K, exts_m, height, width)


def write_dtu(
    root: Path, scenes: Sequence[str] = ("scan1", "scan4"), n_views: int = 35, size: tuple[int, int] = (48, 36)
) -> Path:
    """DTU (MVSNet evaluation layout, millimetres): rectified frames, shared camera files, depth_visual masks, the
    stl point cloud and an observation mask / ground plane that keep every point."""
    width, height = size
    dataset = root / "dtu"
    K, exts = _dtu_cameras(n_views, width, height)
    for v in range(n_views):
        _write_mvsnet_cam(dataset / "Cameras" / f"{v:08d}_cam.txt", K, exts[v], (425.0, 2.5))
    for s, name in enumerate(scenes):
        scene, images, depth = _mm_render(s, K, exts, height, width)
        for v in range(n_views):
            _save(dataset / "Rectified" / name / f"rect_{v + 1:03d}_3_r5000.png", images[v])
            _save(
                dataset / "depth_raw" / "Depths" / name / f"depth_visual_{v:04d}.png",
                (depth[v] > 0).astype(np.uint8) * 255,
            )
        points = surface_points(scene, GT_CLOUD_SPACING) * 1000.0
        scan_id = int(name[4:])
        _write_cloud(points, dataset / "Points" / "stl" / f"stl{scan_id:03d}_total.ply")
        res = 100.0  # mm per observation-mask cell
        lo = points.min(0) - res
        grid = np.ones(np.ceil((points.max(0) + res - lo) / res).astype(int) + 1, dtype=bool)
        obs = dataset / "SampleSet" / "mvs_data" / "ObsMask"
        obs.mkdir(parents=True, exist_ok=True)
        savemat(
            obs / f"ObsMask{scan_id}_10.mat",
            {"ObsMask": grid, "BB": np.stack([lo, lo + res * np.array(grid.shape)]), "Res": np.array([[res]])},
        )
        savemat(obs / f"Plane{scan_id}.mat", {"P": np.array([[0.0], [0.0], [1.0], [1000.0]])})  # z > -1 m: all above
    return dataset


def write_dtu64(
    root: Path, scenes: Sequence[str] = ("scan105", "scan114"), n_views: int = 36, size: tuple[int, int] = (48, 36)
) -> Path:
    """DTU-64 (pose only, millimetres): frames per scan and shared camera files; the last view has no camera file,
    so the benchmark skips it."""
    width, height = size
    dataset = root / "dtu64"
    K, exts = _dtu_cameras(n_views, width, height)
    for v in range(n_views - 1):
        _write_mvsnet_cam(dataset / "Cameras" / f"{v:08d}_cam.txt", K, exts[v], (425.0, 2.5))
    for s, name in enumerate(scenes):
        _, images, _ = _mm_render(s, K, exts, height, width)
        for v in range(n_views):
            _save(dataset / name / "image" / f"{v:08d}.png", images[v])
    return dataset


MINIATURE_WRITERS: dict[str, Callable[[Path], Path]] = {
    "eth3d": write_eth3d,
    "7scenes": write_7scenes,
    "scannetpp": write_scannetpp,
    "hiroom": write_hiroom,
    "dtu": write_dtu,
    "dtu64": write_dtu64,
}


def write_miniature(dataset: str, root: str | Path) -> Path:
    """Write the miniature of ``dataset`` under ``root`` (``root/<dataset>``) and return that dataset folder."""
    if dataset not in MINIATURE_WRITERS:
        raise ValueError(f"unknown benchmark dataset {dataset!r}; choose from {', '.join(MINIATURE_WRITERS)}")
    return MINIATURE_WRITERS[dataset](Path(root))
