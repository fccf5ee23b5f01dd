"""Paths the tests share (import as `from paths import REPO_ROOT`)."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
