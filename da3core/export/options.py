"""The type and range of every writer option that no format checker owns, checked before any work.

A config carries whatever its author typed (``exporters.glb.camera_size=abc``), and a wrong value would otherwise
fail (or be silently misread: any non-empty string is truthy) only after inference. Each option has one
:class:`Rule`: booleans must be real booleans, numbers real and finite numbers (whole ones where a count or seed is
meant), percentiles in [0, 100], sizes positive. Options of a format with a ``checker`` (gs_ply, gs_video, feat_vis,
colmap) that appear in the checker's signature are left to it.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

from da3core.errors import UserError


class ExportOptionError(UserError, ValueError):
    """An export option of the wrong type or outside its range; ``key`` names it, the message says what is allowed."""

    def __init__(self, key: str, value: Any, problem: str, wanted: str) -> None:
        super().__init__(f"{key}={value!r} {problem}; use {wanted}")
        self.key, self.value = key, value


@dataclass(frozen=True)
class Rule:
    """What one option's value may be: ``kind`` bool/int/real, within ``low``..``high`` (inclusive unless open)."""

    kind: str
    wanted: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # ``low`` itself is refused (sizes, rates)
    nullable: bool = False  # None is the writer's "no cap" / "no floor"

    def check(self, key: str, value: Any) -> None:
        """Raise :class:`ExportOptionError` unless ``value`` fits this rule."""
        if value is None:
            if not self.nullable:
                raise ExportOptionError(key, value, "is null", self.wanted)
            return
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise ExportOptionError(key, value, "is not a boolean", self.wanted)
            return
        # bool is an int subclass, but show_cameras=true meant for num_max_points is a mistake, not 1.
        kind = numbers.Integral if self.kind == "int" else numbers.Real
        if isinstance(value, bool) or not isinstance(value, kind):
            raise ExportOptionError(
                key, value, "is not a whole number" if self.kind == "int" else "is not a number", self.wanted
            )
        number = float(value)
        low_ok = self.low is None or (number > self.low if self.low_open else number >= self.low)
        if not math.isfinite(number) or not low_ok or (self.high is not None and number > self.high):
            raise ExportOptionError(key, value, "is out of range", self.wanted)


_PERCENTILE = "a percentile from 0 to 100"
_POINTS = Rule("int", "a whole number of points, 1 or more", low=1, nullable=True)
_FLAG = Rule("bool", "true or false")
RULES: dict[str, Rule] = {
    "conf_thresh_percentile": Rule("real", _PERCENTILE, 0, 100),
    "ensure_thresh_percentile": Rule("real", f"{_PERCENTILE}, or null (no cap)", 0, 100, nullable=True),
    "conf_thresh": Rule("real", "a finite confidence floor, or null (none)", nullable=True),
    "num_max_points": _POINTS,
    "num_points": _POINTS,
    "seed": Rule("int", "a whole number, 0 or more", low=0),
    "camera_size": Rule("real", "a positive number (a fraction of the scene's extent)", low=0, low_open=True),
    "show_cameras": _FLAG,
    "export_depth_vis": _FLAG,
    "filter_black_bg": _FLAG,
    "filter_white_bg": _FLAG,
    "prune_border": _FLAG,
    "feat_vis_fps": Rule("real", "a positive frame rate", low=0, low_open=True),  # the shared name of feat_vis's fps
}


def check_option_ranges(options: dict[str, Any]) -> None:
    """Raise :class:`ExportOptionError` for the first option with a :data:`RULES` entry whose value breaks it."""
    for key, value in options.items():
        if key in RULES:
            RULES[key].check(key, value)
