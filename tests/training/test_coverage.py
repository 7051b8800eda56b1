"""The field-of-view coverage probe (training/coverage.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from qc_daemon.scoring.model import QCModel
from tests.training.phantom import phantom
from training.acquisition import plan_acquisition
from training.coverage import CoverageRow, probe, slab_coverage, summary

MODELS = Path(__file__).resolve().parents[2] / "models"


def test_slab_coverage_follows_the_planned_slab() -> None:
    img = phantom()
    plan = plan_acquisition(img, np.random.default_rng(3), kind="2d_anat")
    full = slab_coverage(img, plan)
    assert 0.3 < full < 2.0
    half = dataclasses.replace(plan, box=(plan.box[0] // 2, plan.box[1], plan.box[2]))
    assert abs(slab_coverage(img, half) - full / 2) < 0.05


def test_probe_scores_clean_acquisitions_with_the_shipped_model() -> None:
    model = QCModel.load(next(MODELS.glob("*.onnx")))
    rows = probe(model, [("phantom", phantom(), (1.0, 1.0, 1.0))], cases=2, seed=5)
    assert [r.kind for r in rows] == ["2d_anat", "3d_anat"]
    assert all(0.0 <= r.probability <= 1.0 and r.coverage > 0 for r in rows)
    threshold = model.metadata.thresholds["wrap"]
    assert all(r.flagged == (r.probability >= threshold) for r in rows)  # in distribution: the threshold decides
    # the same seed gives the same plans (pairs across models) and the same scores
    again = probe(model, [("phantom", phantom(), (1.0, 1.0, 1.0))], cases=2, seed=5)
    assert again == rows


def test_summary_bands_and_counts() -> None:
    # the flag is the model's decision (an out-of-distribution volume is never flagged), not probability > threshold
    rows = [CoverageRow("a", "3d_anat", 0.80, 0.9, True), CoverageRow("a", "2d_anat", 0.70, 0.1, False),
            CoverageRow("a", "3d_anat", 1.05, 0.02, False), CoverageRow("b", "3d_anat", 0.95, 0.3, False),
            CoverageRow("b", "2d_anat", 0.60, 0.95, False)]
    text = summary(rows, threshold=0.5)
    assert "| a | 0.00-0.85 | 2 | 0.500 | 0.900 | 1 |" in text
    assert "| a | >= 1.00 | 1 | 0.020 | 0.020 | 0 |" in text
    assert "| b | 0.00-0.85 | 1 | 0.950 | 0.950 | 0 |" in text
    assert "| b | >= 1.00 | 0 | - | - | 0 |" in text
    assert "| b | 0.85-1.00 | 1 | 0.300 | 0.300 | 0 |" in text
