"""What every DA3-BENCH reader shares: storage on local disk or any fsspec URL, the scene record, the errors."""

from __future__ import annotations

import io
import logging
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import cv2
import fsspec
import numpy as np

from da3core.errors import UserError
from da3core.evaluation.fusion import TriangleMesh, sample_surface
from da3core.io.storage import is_remote, localize

log = logging.getLogger(__name__)


class BenchmarkDataError(UserError):
    """A benchmark dataset or scene that cannot be read; the message is one line naming the path."""


class DatasetNotFoundError(BenchmarkDataError):
    """The dataset folder itself is missing."""


class GroundTruthMissingError(BenchmarkDataError):
    """A scene whose ground truth (poses, depth, or reconstruction reference) is absent."""


class LayoutError(BenchmarkDataError):
    """Files that are not in the layout the reader expects (wrong folder, malformed camera file)."""


@dataclass(frozen=True)
class FusionSettings:
    """Per-dataset TSDF fusion and reconstruction-evaluation constants of the DA3 benchmark (metres)."""

    voxel_length: float
    sdf_trunc: float
    max_depth: float
    n_points: int  # points sampled from the fused and the GT meshes
    eval_threshold: float  # precision/recall distance
    eval_voxel: float  # voxel downsampling before the metrics
    crop_margin: float | None = None  # crop the prediction to the GT's bounding box grown by this (ScanNet++)


class DatasetStore:
    """A dataset root on local disk or behind an fsspec URL (``s3://...``), addressed by '/'-joined relative paths."""

    def __init__(self, root: str | Path, storage_options: dict[str, Any] | None = None):
        self.root = str(root).rstrip("/")
        self.storage_options = dict(storage_options or {})
        self.fs = fsspec.core.url_to_fs(self.root, **self.storage_options)[0]

    def url(self, *parts: str) -> str:
        """The full path or URL of ``parts`` below the root."""
        return posixpath.join(self.root, *parts)

    def exists(self, *parts: str) -> bool:
        return self.fs.exists(self.url(*parts))

    def isdir(self, *parts: str) -> bool:
        return self.fs.isdir(self.url(*parts))

    def listdir(self, *parts: str) -> list[str]:
        """Names of the entries of a folder, sorted."""
        folder = self.url(*parts)
        if not self.fs.isdir(folder):
            raise LayoutError(f"expected a folder at {folder}")
        itself = fsspec.core.strip_protocol(folder).rstrip("/")
        return sorted(
            posixpath.basename(p.rstrip("/")) for p in self.fs.ls(folder, detail=False) if p.rstrip("/") != itself
        )

    def read_bytes(self, *parts: str) -> bytes:
        path = self.url(*parts)
        try:
            return self.fs.cat_file(path)
        except FileNotFoundError:
            raise GroundTruthMissingError(f"missing file {path}") from None

    def read_text(self, *parts: str) -> str:
        return self.read_bytes(*parts).decode()

    def read_image(self, *parts: str) -> np.ndarray:
        """An image file decoded as stored (8/16-bit, grey or BGR as OpenCV reads it)."""
        data = np.frombuffer(self.read_bytes(*parts), dtype=np.uint8)
        if not data.size:  # OpenCV asserts on an empty buffer
            raise LayoutError(f"image {self.url(*parts)} is empty (0 bytes); download that file of the dataset again")
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
        if image is None:
            raise LayoutError(f"cannot decode image {self.url(*parts)}; download that file of the dataset again")
        return image

    def read_npy(self, *parts: str) -> np.ndarray:
        """A ``.npy`` array; LayoutError naming the file when it is empty, cut short or not an array file."""
        try:
            return np.load(io.BytesIO(self.read_bytes(*parts)), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:  # numpy's words ("allow_pickle") would mislead here
            reason = str(exc).splitlines()[0] if str(exc) else "empty"
            raise LayoutError(
                f"cannot read {self.url(*parts)} as a .npy array ({reason}); download that file of the dataset again"
            ) from exc

    def local(self, *parts: str) -> Path:
        """A local path to a file or folder (remote ones are copied into the cache once)."""
        url = self.url(*parts)
        return localize(url, self.storage_options) if is_remote(url) else Path(url)


@dataclass
class BenchScene:
    """One benchmark scene: N frames with world-to-camera extrinsics and intrinsics (float32), GT access on demand.

    ``image_files`` are paths (or URLs, for a remote root) in the frame order the benchmark feeds the model.
    """

    dataset: str
    name: str
    image_files: list[str]
    intrinsics: np.ndarray  # (N, 3, 3)
    extrinsics: np.ndarray  # (N, 4, 4) world-to-camera
    reader: BenchDataset = field(repr=False)
    aux: dict[str, Any] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.image_files)

    def gt_depth(self, index: int) -> np.ndarray:
        """GT z-depth of frame ``index`` in the dataset's unit (float32, 0 where unknown)."""
        return self.reader.gt_depth(self, index)

    def valid_mask(self, index: int) -> np.ndarray | None:
        """The pixels whose fused depth the benchmark keeps (its GT mask), or None where it keeps all valid ones."""
        return self.reader.valid_mask(self, index)

    def gt_points(self, seed: int = 0) -> np.ndarray:
        """The reconstruction reference as an (M, 3) point set (meshes sampled as the benchmark samples them)."""
        return self.reader.gt_points(self, seed)

    def image(self, index: int) -> np.ndarray:
        """Frame ``index`` as stored, RGB uint8 (H, W, 3)."""
        image = cv2.imdecode(
            np.frombuffer(self.reader.store.fs.cat_file(self.image_files[index]), np.uint8), cv2.IMREAD_COLOR
        )
        if image is None:
            raise LayoutError(f"cannot decode image {self.image_files[index]}")
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class BenchDataset:
    """Base reader: ``scenes()`` lists the benchmark scenes present, ``load(scene)`` reads one."""

    name: ClassVar[str]
    scene_names: ClassVar[tuple[str, ...]] = ()  # the benchmark's scene list
    fusion: ClassVar[FusionSettings | None] = None  # None: no TSDF reconstruction mode
    layout_hint: ClassVar[str]  # a relative path every scene has, shown in layout errors

    def __init__(self, root: str | Path, storage_options: dict[str, Any] | None = None):
        self.store = DatasetStore(root, storage_options)
        if not self.store.isdir():
            raise DatasetNotFoundError(f"{self.name} dataset folder not found: {self.store.root}")

    def benchmark_scenes(self) -> list[str]:
        """The scene list the benchmark defines for this dataset."""
        return list(self.scene_names)

    def has_scene(self, scene: str) -> bool:
        """Whether the scene's folder is in the expected place."""
        return self.store.exists(self.layout_hint.format(scene=scene))

    def scenes(self) -> list[str]:
        """The benchmark's scenes present under the root, in benchmark order; a layout error when there are none."""
        present = [s for s in self.benchmark_scenes() if self.has_scene(s)]
        if not present:
            example = self.store.url(self.layout_hint.format(scene="<scene>"))
            raise LayoutError(f"no {self.name} scene found under {self.store.root} (expected e.g. {example})")
        missing = sorted(set(self.benchmark_scenes()) - set(present))
        if missing:
            log.info("%s: %d benchmark scene(s) absent under %s: %s", self.name, len(missing), self.store.root, missing)
        return present

    def load(self, scene: str) -> BenchScene:
        """Read one scene's frames and cameras; raises a :class:`BenchmarkDataError` naming the path at fault."""
        raise NotImplementedError

    def gt_depth(self, scene: BenchScene, index: int) -> np.ndarray:
        """See :meth:`BenchScene.gt_depth`; datasets without GT depth maps raise."""
        raise GroundTruthMissingError(f"{self.name} has no GT depth ({self.store.root})")

    def valid_mask(self, scene: BenchScene, index: int) -> np.ndarray | None:
        """See :meth:`BenchScene.valid_mask`."""
        return None

    def gt_points(self, scene: BenchScene, seed: int = 0) -> np.ndarray:
        """See :meth:`BenchScene.gt_points`; pose-only datasets raise."""
        raise GroundTruthMissingError(f"{self.name} has no reconstruction ground truth ({self.store.root})")

    def fusion_view(self, scene: BenchScene, index: int, depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(RGB image, predicted depth resized to it by nearest neighbour): the frame as the benchmark fuses it."""
        image = scene.image(index)
        return image, cv2.resize(depth, image.shape[1::-1], interpolation=cv2.INTER_NEAREST)

    def posed_intrinsics(self, scene: BenchScene, index: int, size: tuple[int, int]) -> np.ndarray:
        """The GT intrinsics of frame ``index`` for a fusion frame of ``size`` (H, W) in the posed mode."""
        return scene.intrinsics[index]

    def _scene(
        self, scene: str, folder: str, image_files: list[str], intrinsics: list, extrinsics: list, **aux: Any
    ) -> BenchScene:
        if not image_files:
            raise GroundTruthMissingError(
                f"{self.name} scene {scene} has no frame with both an image and a GT pose under "
                f"{self.store.url(folder)}"
            )
        return BenchScene(
            self.name,
            scene,
            image_files,
            np.asarray(intrinsics, dtype=np.float32),
            np.asarray(extrinsics, dtype=np.float32),
            self,
            aux,
        )

    def _require_scene(self, scene: str, folder: str) -> None:
        if not self.store.isdir(folder):
            raise GroundTruthMissingError(f"{self.name} scene {scene} not found: no folder {self.store.url(folder)}")

    def _mesh_points(self, n_points: int, seed: int, *parts: str) -> np.ndarray:
        """Points sampled uniformly from a GT mesh file, as the benchmark samples its reference meshes."""
        import open3d as o3d

        if not self.store.exists(*parts):
            raise GroundTruthMissingError(f"reconstruction ground truth missing: {self.store.url(*parts)}")
        mesh = o3d.io.read_triangle_mesh(str(self.store.local(*parts)))
        if len(mesh.triangles) == 0:
            raise LayoutError(f"no triangle mesh in {self.store.url(*parts)}")
        return sample_surface(
            TriangleMesh(np.asarray(mesh.vertices), np.asarray(mesh.triangles), np.asarray(mesh.vertex_colors)),
            n_points,
            seed,
        )

    def _cloud_points(self, *parts: str) -> np.ndarray:
        """The vertices of a GT point-cloud PLY."""
        import open3d as o3d

        if not self.store.exists(*parts):
            raise GroundTruthMissingError(f"reconstruction ground truth missing: {self.store.url(*parts)}")
        points = np.asarray(o3d.io.read_point_cloud(str(self.store.local(*parts))).points)
        if len(points) == 0:
            raise LayoutError(f"no points in {self.store.url(*parts)}")
        return points
