"""Regenerate the bundled sample scene ``samples/room``: a COLMAP dataset of the seed-0 synthetic room.

Usage: python scripts/make_sample.py [out_dir]
"""

from __future__ import annotations

import sys
from pathlib import Path

from da3core.synthetic import make_capture, write_colmap

SAMPLE_VIEWS, SAMPLE_WIDTH, SAMPLE_HEIGHT, SAMPLE_SEED = 10, 448, 336, 0


def main(out: Path) -> None:
    """Write images/ (JPEG) and sparse/0/ (binary COLMAP with exact poses) under ``out``."""
    capture = make_capture(SAMPLE_VIEWS, SAMPLE_WIDTH, SAMPLE_HEIGHT, arc_deg=100.0, seed=SAMPLE_SEED)
    write_colmap(capture, out, sparse_subdir="sparse/0", image_ext="jpg", n_points=1000)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "samples" / "room")
