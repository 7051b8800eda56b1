"""The rule that decides whether a candidate model replaces the shipped one (training/compare.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from training.compare import Gain, compare, main, real_count, report

ARTS = ("motion", "wrap")


def _vol(series: str, index: int, flags: list[str], in_far: bool = True) -> dict[str, Any]:
    return {"series": series, "index": index, "flags": flags, "in_far": in_far}


def _metrics(volumes: list[dict[str, Any]], rank: int, far: dict[str, float],
             auc: dict[str, float]) -> dict[str, Any]:
    return {"model": "m", "version": "1",
            "real": {"volumes": volumes, "siemens_vol2_worse": rank},
            "synthetic": {"per_artifact": {a: {"far_clean": far[a], "moderate": {"auc": auc[a]},
                                               "mild": {"auc": auc[a] - 0.2}} for a in ARTS}}}


BASE = _metrics(
    [_vol("a", 0, ["wrap"]), _vol("b", 0, []),
     _vol("siemens_epi_ax_mosaic", 0, []), _vol("siemens_epi_ax_mosaic", 1, ["motion"]),  # real motion: not clean
     _vol("trained_by_candidate", 0, ["wrap"])],
    rank=5, far={"motion": 0.0, "wrap": 0.05}, auc={"motion": 0.80, "wrap": 0.90})


def test_counts_only_series_held_out_from_both_and_not_the_moving_volume() -> None:
    cand = _metrics([_vol("a", 0, []), _vol("b", 0, ["wrap"]), _vol("siemens_epi_ax_mosaic", 0, []),
                     _vol("siemens_epi_ax_mosaic", 1, ["motion"]), _vol("trained_by_candidate", 0, [], in_far=False)],
                    rank=5, far={"motion": 0.0, "wrap": 0.04}, auc={"motion": 0.85, "wrap": 0.89})
    count = real_count(BASE, {"a", "b", "siemens_epi_ax_mosaic"})
    assert count.series == 3 and count.volumes == 3
    assert count.flagged_series == ("a",)
    results = compare(BASE, cand)
    assert all(r.passed for r in results), results
    # a stricter rule written before the evaluation: fewer flagged series than the baseline
    strict = {r.rule: r.passed for r in compare(BASE, cand, max_series=0)}
    assert strict["real clean series flagged"] is False


def test_each_rule_can_fail() -> None:
    cand = _metrics([_vol("a", 0, ["wrap"]), _vol("b", 0, ["motion"]), _vol("siemens_epi_ax_mosaic", 0, []),
                     _vol("siemens_epi_ax_mosaic", 1, []), _vol("trained_by_candidate", 0, [], in_far=False)],
                    rank=4, far={"motion": 0.08, "wrap": 0.0}, auc={"motion": 0.77, "wrap": 0.89})
    failed = {r.rule for r in compare(BASE, cand) if not r.passed}
    assert failed == {"real clean series flagged", "real clean volumes flagged", "real motion ranked",
                      "worst synthetic clean false-alarm rate", "moderate AUC motion"}


def test_command_exit_status_and_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "base.json").write_text(json.dumps(BASE))
    worse = json.loads(json.dumps(BASE))
    worse["real"]["siemens_vol2_worse"] = 3
    (tmp_path / "cand.json").write_text(json.dumps(worse))
    assert main([str(tmp_path / "base.json"), str(tmp_path / "base.json")]) == 0
    assert main([str(tmp_path / "base.json"), str(tmp_path / "cand.json")]) == 1
    out = capsys.readouterr().out
    assert "| real motion ranked | 5 of 5 | 3 of 5 | >= 5 | FAIL |" in out
    assert "breaks real motion ranked" in out
    # without --min-motion-rank the baseline's ranking is a veto; 0 keeps it in the report only
    assert main([str(tmp_path / "base.json"), str(tmp_path / "cand.json"), "--min-motion-rank", "0"]) == 0
    assert "| real motion ranked | 5 of 5 | 3 of 5 | >= 0 | pass |" in capsys.readouterr().out


def test_evaluation_report_names_the_series_it_does_not_count() -> None:
    from training.evaluate import markdown

    shipped = sorted((Path(__file__).parents[2] / "models").glob("*.metrics.json"))
    assert len(shipped) == 1, shipped
    metrics = json.loads(shipped[0].read_text())
    trained = sorted({v["series"] for v in metrics["real"]["volumes"] if v["used_in_training"]})
    assert trained, "the shipped model was trained on some real heads"
    for v in metrics["real"]["volumes"]:
        v["used_for_validation"] = v["series"] == "philips_dwi_ax"
    lines = markdown(metrics).splitlines()
    assert f"- not counted, trained on: {', '.join(trained)}" in lines
    assert "- not counted, thresholds fitted on: philips_dwi_ax" in lines


def test_intervals_of_the_evaluation() -> None:
    import numpy as np

    from training.evaluate import auc_ci95, wilson95
    from training.train import auc

    lo, hi = wilson95(10, 150)
    assert lo < 10 / 150 < hi and lo == pytest.approx(0.0366, abs=1e-3) and hi == pytest.approx(0.1183, abs=1e-3)
    assert wilson95(0, 150)[0] == 0.0 and 0.0 < wilson95(0, 150)[1] < 0.03
    rng = np.random.default_rng(1)
    scores = np.r_[rng.normal(1.0, 1.0, 15), rng.normal(0.0, 1.0, 300)]
    labels = np.r_[np.ones(15), np.zeros(300)]
    small = auc_ci95(scores, labels)
    assert small[0] < auc(scores, labels) < small[1]
    scores = np.r_[rng.normal(1.0, 1.0, 150), rng.normal(0.0, 1.0, 300)]
    labels = np.r_[np.ones(150), np.zeros(300)]
    big = auc_ci95(scores, labels)
    assert big[0] < auc(scores, labels) < big[1]
    assert big[1] - big[0] < small[1] - small[0]  # ten times the positives: a narrower interval


def test_a_required_gain_fails_when_the_candidate_does_not_improve_enough() -> None:
    better = json.loads(json.dumps(BASE))
    better["synthetic"]["per_artifact"]["motion"]["mild"]["auc"] = 0.66  # baseline 0.60
    rule = "mild AUC motion gain"
    assert {r.rule: r.passed for r in compare(BASE, better, gains=[Gain("motion", "mild", 0.05)])}[rule] is True
    assert {r.rule: r.passed for r in compare(BASE, better, gains=[Gain.parse("motion:mild:0.1")])}[rule] is False
    with pytest.raises(Exception, match="ARTIFACT:BAND:DELTA"):
        Gain.parse("motion-mild")


def test_report_lists_the_real_motion_pairs_of_both_models() -> None:
    base = json.loads(json.dumps(BASE))
    base["real"]["siemens_motion_vol1_vs_vol2"] = {"siemens_epi_ax_mosaic": {"vol1": 0.030, "vol2": 0.049}}
    cand = json.loads(json.dumps(BASE))
    cand["real"]["siemens_motion_vol1_vs_vol2"] = {"siemens_epi_ax_mosaic": {"vol1": 0.067, "vol2": 0.057},
                                                   "siemens_epi_cor_mosaic": {"vol1": 0.1, "vol2": 0.2}}
    text = report(compare(base, cand), base, cand)
    assert "| siemens_epi_ax_mosaic | 0.030 | 0.049 | 0.067 | 0.057 |" in text
    assert "| siemens_epi_cor_mosaic | - | - | 0.100 | 0.200 |" in text
    # evaluations without the pairs (older files) give no table rather than an error
    assert "Siemens series" not in report(compare(BASE, BASE), BASE, BASE)


def test_a_volume_the_manifest_says_to_score_must_not_end_out_of_distribution(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # qc-v24 passed rules 1-5 and then failed the node's test: its gate ended the GE fMRI phantom, which the
    # manifest says to score. A volume used for training counts too: the node must score it all the same.
    gated = json.loads(json.dumps(BASE))
    gated["real"]["volumes"].append({**_vol("ge_epi_fmri_phantom", 0, [], in_far=False),
                                     "ood": "unlike the training data (embedding distance 4.26 > 2.96)"})
    rule = "real volumes to score ended out of distribution"
    assert {r.rule: r.passed for r in compare(BASE, BASE)}[rule] is True
    assert {r.rule: r.passed for r in compare(BASE, gated)}[rule] is False
    assert {r.rule: r.passed for r in compare(BASE, gated, max_ood=1)}[rule] is True
    (tmp_path / "base.json").write_text(json.dumps(BASE))
    (tmp_path / "cand.json").write_text(json.dumps(gated))
    assert main([str(tmp_path / "base.json"), str(tmp_path / "cand.json")]) == 1
    out = capsys.readouterr().out
    assert f"| {rule} | 0 of 5 | 1 of 6 | <= 0 | FAIL |" in out
    assert "Out of distribution for the candidate: ge_epi_fmri_phantom#0: unlike the training data" in out
