"""Test cases are banded by the severity they realised, not only the one asked for (training/evaluate.py)."""

from __future__ import annotations

from typing import Any

import numpy as np

from qc_daemon.artifacts import ARTIFACTS, RESCAN_SCORE
from training.evaluate import case_severities, markdown, synthetic_metrics


def _result(asked: dict[str, float], realised: dict[str, float] | None, p_motion: float,
            flags: tuple[str, ...] = (), source: str = "synthetic:20000") -> dict[str, Any]:
    probs = {a: 0.01 for a in ARTIFACTS}
    probs["motion"] = p_motion
    r: dict[str, Any] = {"case": {"artifacts": asked, "unseen": None, "source": source},
                         "score": {"probabilities": probs, "flags": list(flags), "out_of_distribution": None,
                                   "rescan_score": p_motion, "severity": None}}
    if realised is not None:
        r["realised"] = realised
    return r


RESULTS = [
    _result({}, {}, 0.05),
    _result({}, None, 0.10),  # an evaluation written before realised severities: the asked one counts
    _result({"motion": 0.3}, {"motion": 0.02}, 0.90, ("motion",)),  # asked, but moved too little to show
    _result({"motion": 0.3}, {"motion": 0.5}, 0.80),  # asked mild, realised moderate
    _result({"motion": 0.6}, None, 0.70),
]


def test_realised_severity_replaces_the_asked_one_and_invisible_motion_is_neither_class() -> None:
    sev, unclear = case_severities(RESULTS)
    m = ARTIFACTS.index("motion")
    np.testing.assert_allclose(sev[:, m], [0.0, 0.0, 0.0, 0.5, 0.6])
    assert unclear[:, m].tolist() == [False, False, True, False, False]


def test_an_invisible_motion_case_counts_neither_as_clean_nor_as_a_positive() -> None:
    thresholds = {a: 0.5 for a in ARTIFACTS} | {RESCAN_SCORE: 0.5}
    m = synthetic_metrics(RESULTS, thresholds)
    assert m["n_clean"] == 2
    motion = m["per_artifact"]["motion"]
    assert motion["far_clean"] == 0.0  # the flagged invisible-motion case is not a clean volume
    assert motion["mild"]["n_pos"] == 0 and motion["moderate"]["n_pos"] == 2
    assert motion["moderate"]["auc"] == 1.0
    # over all severities too: the invisible-motion case (scored 0.90) is not counted as a negative
    assert motion["all"]["n_pos"] == 2 and motion["all"]["auc"] == 1.0


def test_clean_false_alarms_are_counted_per_source_head() -> None:
    results = [
        _result({}, {}, 0.05, source="synthetic:20000"),
        _result({}, {}, 0.05, source="synthetic:20001"),
        _result({}, {}, 0.90, ("motion", "wrap"), source="real:philips_t1_mprage_3d_sag"),
        _result({}, {}, 0.05, source="real:philips_t1_mprage_3d_sag"),
        _result({}, {}, 0.05, source="real:t1w_niivue_chris_t1.nii.gz"),
        _result({"motion": 0.6}, None, 0.95, ("motion",), source="real:t1w_niivue_chris_t1.nii.gz"),  # not clean
    ]
    thresholds = {a: 0.5 for a in ARTIFACTS} | {RESCAN_SCORE: 0.5}
    m = synthetic_metrics(results, thresholds)
    by = m["far_by_source"]
    assert by == {"philips_t1_mprage_3d_sag": {"n_clean": 2, "flagged": {"motion": 1, "wrap": 1}},
                  "synthetic": {"n_clean": 2, "flagged": {}},
                  "t1w_niivue_chris_t1.nii.gz": {"n_clean": 1, "flagged": {}}}
    assert ("by source head: philips_t1_mprage_3d_sag 2 clean, motion 1, wrap 1; synthetic 2 clean, none flagged; "
            "t1w_niivue_chris_t1.nii.gz 1 clean, none flagged.") in markdown({"synthetic": m, "unseen": {}})
