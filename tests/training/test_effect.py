"""The realised-effect check of test-set artifacts (training/effect.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.acquisition import KINDS
from training.effect import effects, report
from training.evaluate import spearman


def test_realised_effect_of_a_motion_case(tmp_path: Path) -> None:
    results = [
        {"case": {"index": 3, "source": "synthetic:20000", "artifacts": {"motion": 0.9}, "unseen": None,
                  "band": "severe"}, "score": {"probabilities": {"motion": 0.7}}},
        {"case": {"index": 4, "source": "synthetic:20000", "artifacts": {}, "unseen": None, "band": None},
         "score": {"probabilities": {"motion": 0.1}}},  # clean: no effect to measure
    ]
    rows = effects(results, "motion", tmp_path, seed=12345)
    assert len(rows) == 1
    row = rows[0]
    assert row.kind in KINDS and row.severity == 0.9 and row.probability == 0.7
    assert 0.005 < row.nrmse < 1.0  # 90 % of the scale moves the head by several voxels: it shows
    text = report(rows, "motion")
    assert "motion: 1 single-artifact test cases" in text and "| model probability | nan |" in text


def test_spearman() -> None:
    assert spearman(np.array([1.0, 2.0, 3.0]), np.array([10.0, 20.0, 30.0])) == 1.0
    assert spearman(np.array([1.0, 2.0, 3.0]), np.array([3.0, 2.0, 1.0])) == -1.0
    assert np.isnan(spearman(np.array([1.0, 1.0, 1.0]), np.array([3.0, 2.0, 1.0])))
