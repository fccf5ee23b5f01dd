"""The value sets of the library's string options, in one torch-free place so configs and CLIs can list them.

Each set is an Enum (for configs, command lines and forms) with its values as a tuple beside it (for checks in
the library, which takes plain strings).
"""

from __future__ import annotations

from enum import Enum


class ResizeMethod(Enum):
    """How views are resized to the processing resolution (upstream's process_res_method)."""

    upper_bound_resize = "upper_bound_resize"
    upper_bound_crop = "upper_bound_crop"
    lower_bound_resize = "lower_bound_resize"
    lower_bound_crop = "lower_bound_crop"


class RefViewStrategy(Enum):
    """How the reference view of a multi-view forward pass is chosen."""

    first = "first"
    middle = "middle"
    saddle_balanced = "saddle_balanced"
    saddle_sim_range = "saddle_sim_range"


class Precision(Enum):
    """The backbone's precision; auto is bf16 autocast on CUDA and fp32 elsewhere."""

    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class Device(Enum):
    """Where a model runs; auto is cuda, then mps, then cpu."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class EvalMode(Enum):
    """What the benchmark scores (da3core.evaluation.benchmark): poses, TSDF reconstructions, or per-pixel depth."""

    pose = "pose"
    recon_unposed = "recon_unposed"
    recon_posed = "recon_posed"
    rel_depth = "rel_depth"
    metric_depth = "metric_depth"


RESIZE_METHODS = tuple(m.value for m in ResizeMethod)
REF_VIEW_STRATEGIES = tuple(s.value for s in RefViewStrategy)
PRECISIONS = tuple(p.value for p in Precision)
DEVICES = tuple(d.value for d in Device)
EVAL_MODES = tuple(m.value for m in EvalMode)
BENCHMARK_DATASETS = ("eth3d", "7scenes", "scannetpp", "hiroom", "dtu", "dtu64")  # readers: da3core.evaluation.datasets
