"""The per-job caps of a backend, apart from :mod:`flows.backend.policy`: the command line reads their defaults
without importing the checks (pydantic, Hydra)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class JobLimits:
    """Per-job caps of the backend beyond the upload size (each refusal names its option)."""

    max_files: int | None = None  # entries in an upload; None: one per 64 KiB of the upload limit, at least 1024
    max_process_res: int = 1008  # processing.process_res
    max_pixels: int = 32_000_000  # processed pixels summed over the views (about 125 views at 504x504)
    max_input_pixels: int = 2_000_000_000  # decoded input pixels summed over the views (about 6 GB as RGB)

    def files_for(self, max_upload_bytes: int) -> int:
        """The entry cap for an upload limit of ``max_upload_bytes``."""
        return self.max_files if self.max_files is not None else max(1024, max_upload_bytes // 65536)
