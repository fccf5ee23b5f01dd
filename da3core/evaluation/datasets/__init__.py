"""Readers of the six DA3-BENCH dataset layouts, on local disk or behind an fsspec URL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from da3core.evaluation.datasets.base import (
    BenchDataset,
    BenchmarkDataError,
    BenchScene,
    DatasetNotFoundError,
    FusionSettings,
    GroundTruthMissingError,
    LayoutError,
)
from da3core.evaluation.datasets.dtu import DTU, DTU64
from da3core.evaluation.datasets.eth3d import ETH3D
from da3core.evaluation.datasets.hiroom import HiRoom
from da3core.evaluation.datasets.scannetpp import ScanNetPP
from da3core.evaluation.datasets.sevenscenes import SevenScenes

DATASETS: dict[str, type[BenchDataset]] = {cls.name: cls for cls in (ETH3D, SevenScenes, ScanNetPP, HiRoom, DTU, DTU64)}


def open_dataset(name: str, root: str | Path, storage_options: dict[str, Any] | None = None) -> BenchDataset:
    """The reader for dataset ``name`` (eth3d, 7scenes, scannetpp, hiroom, dtu, dtu64) rooted at ``root``."""
    if name not in DATASETS:
        raise ValueError(f"unknown benchmark dataset {name!r}; choose from {', '.join(DATASETS)}")
    return DATASETS[name](root, storage_options)


__all__ = [
    "DATASETS",
    "DTU",
    "DTU64",
    "ETH3D",
    "BenchDataset",
    "BenchScene",
    "BenchmarkDataError",
    "DatasetNotFoundError",
    "FusionSettings",
    "GroundTruthMissingError",
    "HiRoom",
    "LayoutError",
    "ScanNetPP",
    "SevenScenes",
    "open_dataset",
]
