"""The typed schemas of conf/: one dataclass per flow, registered with Hydra, and what each key changes.

Every key says what it affects, in its field metadata: ``INFERENCE`` keys change what the model computes (and
everything under a marked section does, unless marked otherwise); ``RUN`` keys change only where or how a run
goes (locations, device, concurrency), never its results; unmarked keys change the outputs written from the
same inference (export formats and options). The hashes that decide skip / re-export / recompute are derived
from these marks (:func:`flows.config.config_hashes`): a new key is covered by being marked, never by a list.
Enum value sets are the library's own (:mod:`da3core.choices`) and the preset registry's, never copies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from da3core.choices import BENCHMARK_DATASETS, Device, EvalMode, Precision, RefViewStrategy, ResizeMethod

INFERENCE = {"affects": "inference"}  # field metadata: the key (and everything under it) changes inference
RUN = {"affects": "nothing"}  # where or how the run goes; same results


class Weights(Enum):
    pretrained = "pretrained"  # model.path, else the preset's hub id
    random = "random"  # seeded random init for smoke runs; stamped into every output


class Runner(Enum):
    thread = "thread"
    dask = "dask"


class Predictor(Enum):
    model = "model"  # inference through the reconstruct tasks, one store per scene and inference kind
    ground_truth = "ground_truth"  # the GT fed back as the prediction (checks the benchmark itself; no inference)


@dataclass
class ModelConfig:
    preset: str = MISSING  # chosen with model=<preset>; its model card (hub id) comes from da3core.model.presets
    path: Optional[str] = None  # local model dir (config.json + model.safetensors) or a hub id
    weights: Weights = Weights.pretrained
    seed: int = 0  # for weights=random
    device: Device = field(default=Device.auto, metadata=RUN)  # same weights, same result on any device
    precision: Precision = Precision.auto


@dataclass
class ProcessingConfig:
    process_res: int = 504
    method: ResizeMethod = ResizeMethod.upper_bound_resize


@dataclass
class PoseConfig:
    use_ray_pose: bool = False
    align_to_input_ext_scale: bool = True


@dataclass
class InputConfig:
    fps: float = 1.0  # video sampling rate; <= 0 keeps every frame
    max_frames: Optional[int] = None  # the first N views of a folder, video or COLMAP model; None or <= 0: all
    image_extensions: list[str] = field(default_factory=lambda: ["png", "jpg", "jpeg", "webp", "bmp", "tiff", "tif"])
    sparse_subdir: str = ""  # COLMAP model folder (sparse/1, or 1 as upstream); empty tries sparse/0 then sparse


@dataclass
class StorageConfig:
    root: str = "outputs"  # local folder or fsspec URL (s3://bucket/prefix)
    options: dict[str, Any] = field(default_factory=dict)  # fsspec storage options, e.g. client_kwargs.endpoint_url
    lock_timeout: float = 0.0  # seconds to wait while another run writes the same scene; 0 fails at once naming it


@dataclass
class SyntheticPredictorConfig:
    """Noise of the test predictor (``streaming.predictor=synthetic:<path>``, da3core.synthetic.GaugePredictor)."""

    seed: int = 0  # the gauge and noise of each call
    drift: float = 0.0  # progressive bend per view of a call (radians, scene units, log-scale)
    pose_noise: float = 0.0  # random rigid motion per view
    depth_noise: float = 0.0  # multiplicative log-normal noise per pixel


@dataclass
class StreamingConfig:
    """A long scene in overlapping chunks, aligned and loop-closed into one store (README: Long sequences)."""

    enabled: bool = False
    chunk_size: int = 60  # views per forward pass; a scene no longer than this is one pass, as without streaming
    overlap: int = 30  # views consecutive chunks share (1 .. chunk_size - 1), the alignment's correspondences
    loop_closure: bool = False  # find revisits, verify each by inferring the pair, optimise a Sim(3) pose graph
    loop_min_similarity: float = 0.9  # cosine similarity of two frames' mean-removed descriptors to be a candidate
    # "model", or for tests only "synthetic:loop" | "synthetic:open": the exact depth and cameras of
    # da3core.synthetic.make_sequence(path, <number of views>) written as PNGs (never chosen by default).
    predictor: str = "model"
    synthetic: SyntheticPredictorConfig = field(default_factory=SyntheticPredictorConfig)


@dataclass
class Catalog:
    """Names for scenes and datasets (conf/catalog/, and your own in conf/local/default.yaml), shared by every flow."""

    scenes: dict[str, str] = field(default_factory=dict, metadata=RUN)  # name -> image, folder, video, COLMAP, URL
    datasets: dict[str, str] = field(default_factory=dict, metadata=RUN)  # name -> folder or prefix of scenes


@dataclass
class ReconstructConfig(Catalog):
    scene: str = field(default="sample", metadata=RUN)  # a name from `scenes`, a path, or an s3:// URL
    export: str = "glb"  # formats joined by '+', e.g. glb+gs_video
    model: ModelConfig = field(default_factory=ModelConfig, metadata=INFERENCE)
    processing: ProcessingConfig = field(default_factory=ProcessingConfig, metadata=INFERENCE)
    ref_view_strategy: RefViewStrategy = field(default=RefViewStrategy.saddle_balanced, metadata=INFERENCE)
    pose: PoseConfig = field(default_factory=PoseConfig, metadata=INFERENCE)
    infer_gs: bool = field(default=False, metadata=INFERENCE)
    export_feat_layers: list[int] = field(default_factory=list, metadata=INFERENCE)
    input: InputConfig = field(default_factory=InputConfig, metadata=INFERENCE)
    storage: StorageConfig = field(default_factory=StorageConfig, metadata=RUN)
    output_dir: Optional[str] = field(default=None, metadata=RUN)  # the scene's folder; default <storage.root>/<scene>
    exporters: dict[str, Any] = field(default_factory=dict)  # per-format options, exporters.<format>.<key>
    force: bool = field(default=False, metadata=RUN)  # recompute even when a complete store for the same config exists
    streaming: StreamingConfig = field(default_factory=StreamingConfig, metadata=INFERENCE)
    # Where tasks run: the scenes of a batch, the chunks of a streaming scene (in a batch, its scenes).
    concurrency: int = field(default=1, metadata=RUN)  # tasks at once on the thread runner
    runner: Runner = field(default=Runner.thread, metadata=RUN)
    dask_address: Optional[str] = field(default=None, metadata=RUN)  # existing scheduler; None: a local cluster
    dask_workers: int = field(default=2, metadata=RUN)


@dataclass
class BatchConfig(ReconstructConfig):
    dataset: str = field(default=MISSING, metadata=RUN)  # a name from `datasets`, a folder, or an s3:// prefix


@dataclass
class VideoStorageConfig:
    options: dict[str, Any] = field(default_factory=dict)  # fsspec options for s3:// videos and output folders
    lock_timeout: float = 0.0  # seconds to wait while another run writes the same output; 0 fails at once naming it


@dataclass
class VideoDepthConfig(Catalog):
    """Video Depth Anything on one video; option names follow Annolid's ``run_video_depth_anything``."""

    video: str = field(default=MISSING, metadata=RUN)  # a video path, an s3:// URL or a name from `scenes`
    output_dir: Optional[str] = field(default=None, metadata=RUN)  # default: next to the video (mice.mp4 -> mice/)
    encoder: str = field(default="vits", metadata=INFERENCE)  # vits | vitb | vitl
    metric: bool = field(default=False, metadata=INFERENCE)  # metric: metres; relative: relative disparity
    weights: Optional[str] = field(default=None, metadata=INFERENCE)  # checkpoint file/dir/name; "random" = seeded
    seed: int = field(default=0, metadata=INFERENCE)  # for weights=random
    device: Device = field(default=Device.auto, metadata=RUN)
    fp32: bool = field(default=False, metadata=INFERENCE)  # full precision on CUDA too (off CUDA always fp32)
    input_size: int = field(default=518, metadata=INFERENCE)  # network input short side
    max_res: int = field(default=1280, metadata=INFERENCE)  # cap on the processed frame's long side; <= 0: source
    target_fps: float = field(default=-1, metadata=INFERENCE)  # frame stride round(fps / target_fps); <= 0: all
    max_frames: int = field(default=-1, metadata=INFERENCE)  # Annolid's max_len; <= 0: all
    streaming: bool = field(default=True, metadata=INFERENCE)  # one frame at a time (Annolid's default)
    windows_per_batch: int = field(default=1, metadata=INFERENCE)  # windowed mode: windows per forward pass
    grayscale: bool = False
    save_depth_video: bool = False  # <stem>_vis.mp4
    save_depth_frames: bool = False  # depth_frames/depth_00000.png
    save_point_clouds: bool = False  # point_clouds/point_0000.csv
    save_npz: bool = False  # <stem>_depths.npz
    save_exr: bool = False  # <stem>_depths_exr/frame_00000.exr
    focal_length_x: float = 470.4  # point-cloud intrinsics, pixels of the processed frame
    focal_length_y: float = 470.4
    storage: VideoStorageConfig = field(default_factory=VideoStorageConfig, metadata=RUN)
    force: bool = field(default=False, metadata=RUN)  # recompute even when a complete store for this config exists
    # Annolid's settings file (its `video_depth_anything:` section) read under the other overrides; the values it
    # sets are hashed under their own keys (flows.config.load_config).
    defaults_file: Optional[str] = field(default=None, metadata=RUN)


@dataclass
class EvaluateConfig(Catalog):
    """The DA3 benchmark over DA3-BENCH datasets (``python -m flows.evaluate``); names follow upstream's ``eval.*``."""

    benchmark: list[str] = field(default_factory=lambda: list(BENCHMARK_DATASETS), metadata=RUN)  # datasets to score
    bench_root: str = field(default="da3-bench", metadata=RUN)  # a name from `datasets`, a folder or URL of <dataset>/
    modes: list[EvalMode] = field(
        default_factory=lambda: [EvalMode.pose, EvalMode.recon_unposed, EvalMode.recon_posed]
    )  # what is scored
    scene_names: list[str] = field(default_factory=list, metadata=RUN)  # only these benchmark scenes; empty: all
    max_frames: int = field(default=100, metadata=INFERENCE)  # seeded sample of larger scenes, as upstream; <= 0: all
    # RUN: it picks where predictions come from; ground_truth writes no store, so no hash ever sees it
    predictor: Predictor = field(default=Predictor.model, metadata=RUN)
    model: ModelConfig = field(default_factory=ModelConfig, metadata=INFERENCE)
    processing: ProcessingConfig = field(default_factory=ProcessingConfig, metadata=INFERENCE)
    ref_view_strategy: RefViewStrategy = field(default=RefViewStrategy.first, metadata=INFERENCE)  # upstream's eval
    pose: PoseConfig = field(default_factory=PoseConfig, metadata=INFERENCE)
    storage: StorageConfig = field(default_factory=StorageConfig, metadata=RUN)
    output_dir: Optional[str] = field(default=None, metadata=RUN)  # default <storage.root>/evaluation/<preset>
    force: bool = field(default=False, metadata=RUN)  # recompute predictions even when complete stores exist
    concurrency: int = field(default=1, metadata=RUN)  # scenes at once (thread runner)
    runner: Runner = field(default=Runner.thread, metadata=RUN)
    dask_address: Optional[str] = field(default=None, metadata=RUN)  # existing scheduler; None: a local cluster
    dask_workers: int = field(default=2, metadata=RUN)


def register() -> None:
    """Register the schemas and the ``model`` group (one entry per preset of the registry) with Hydra."""
    from da3core.model.presets import PRESETS

    store = ConfigStore.instance()
    store.store(name="reconstruct_schema", node=ReconstructConfig)
    store.store(name="batch_schema", node=BatchConfig)
    store.store(name="video_depth_schema", node=VideoDepthConfig)
    store.store(name="evaluate_schema", node=EvaluateConfig)
    for preset in PRESETS:  # `model=<preset>` selects one; nothing is repeated in YAML
        store.store(group="model", name=preset, node=ModelConfig(preset=preset))
