"""Exporters: write a :class:`~da3core.prediction.Prediction` as files (one module per format).

Public API: :func:`parse_formats`, :func:`check_formats`, :func:`check_feature_layers`, :func:`export`;
``FORMATS`` lists the names.
"""

from da3core.export.registry import FORMATS, check_feature_layers, check_formats, export, parse_formats

__all__ = ["FORMATS", "check_feature_layers", "check_formats", "export", "parse_formats"]
