"""Where benchmark sections go: printed, then appended to benchmarks/RESULTS.md unless told not to."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def publish(text: str, write: bool = True) -> None:
    """Print a results section and append it to RESULTS.md when ``write``."""
    print(text)
    if write:
        with open(RESULTS, "a") as f:
            f.write(text if text.endswith("\n") else text + "\n")
