"""Download official Video Depth Anything checkpoints from the Hugging Face Hub.

    python -m da3core.video_depth.download_weights --list
    python -m da3core.video_depth.download_weights --model video_depth_anything_vits [--checkpoint-dir checkpoints]

``HF_HUB_TOKEN`` (or the hub's usual ``HF_TOKEN``) authenticates. Offline (``HF_HUB_OFFLINE=1`` or no route to
huggingface.co) it fails within two seconds and says where to fetch the file and where to put it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from da3core.video_depth.checkpoints import CHECKPOINTS
from da3core.video_depth.loading import DEFAULT_CHECKPOINT_DIR, download_checkpoint
from da3core.weights import WeightsError


def format_list() -> str:
    """A table of the official checkpoints: name, hub repo, file, approximate size, licence."""
    rows = [("name", "hub repo", "file", "size", "licence")]
    rows += [(i.name, i.repo_id, i.filename, f"~{i.approx_size_mb} MB", i.licence) for i in CHECKPOINTS.values()]
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status (0 ok, 2 on a download that cannot be done)."""
    parser = argparse.ArgumentParser(description="Download Video Depth Anything checkpoints.")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--list", action="store_true", help="list the official checkpoints")
    action.add_argument("--model", choices=sorted(CHECKPOINTS), help="checkpoint to download")
    parser.add_argument(
        "--checkpoint-dir",
        type=Path,
        default=DEFAULT_CHECKPOINT_DIR,
        help="where to put the file (default: ./checkpoints)",
    )
    args = parser.parse_args(argv)
    if args.list:
        print(format_list())
        return 0
    info = CHECKPOINTS[args.model]
    target = args.checkpoint_dir / info.filename
    if target.is_file():
        print(f"{target} already exists")
        return 0
    try:
        path = download_checkpoint(info, args.checkpoint_dir)
    except WeightsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"downloaded {info.name} ({info.licence}) to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
