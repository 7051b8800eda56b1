"""The realised-effect check of test-set artifacts (training/effect.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.acquisition import KINDS
from training.effect import band_of, effects, report
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
    # the same acquisition's thermal noise, on the same scale: there is some, and a severe motion stands out of it
    assert 0.0 < row.noise_nrmse < row.nrmse and row.ratio > 2.0
    assert row.band == "severe"  # no realised severity recorded: the asked one bands it
    text = report(rows, "motion")
    assert "motion: 1 single-artifact test cases" in text and "| model probability | nan |" in text
    assert "| severe | 1 | 0 of 1 |" in text  # one severe case, none below its noise


def test_bands_follow_the_realised_severity() -> None:
    assert [band_of(s) for s in (0.05, 0.1, 0.39, 0.4, 0.7, 1.0)] == [
        "below mild", "mild", "mild", "moderate", "severe", "severe"]


def test_spearman() -> None:
    assert spearman(np.array([1.0, 2.0, 3.0]), np.array([10.0, 20.0, 30.0])) == 1.0
    assert spearman(np.array([1.0, 2.0, 3.0]), np.array([3.0, 2.0, 1.0])) == -1.0
    assert np.isnan(spearman(np.array([1.0, 1.0, 1.0]), np.array([3.0, 2.0, 1.0])))
