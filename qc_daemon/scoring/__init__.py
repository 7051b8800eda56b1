"""Scoring: the ONNX model wrapper (:mod:`qc_daemon.scoring.model`) and the series combination."""

from qc_daemon.scoring.combine import SeriesScore, combine_volume_scores

__all__ = ["SeriesScore", "combine_volume_scores"]
