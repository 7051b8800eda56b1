"""The training-bank fit against the validation-bank fit (training/fitgap.py)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from qc_daemon.artifacts import ARTIFACTS
from qc_daemon.imaging.preprocess import PreprocessSpec
from training import train
from training.bank import Bank
from training.export import load_net
from training.fitgap import GROUPS, fit_groups, measure, report, separation, source_group
from training.train import predict

from .phantom import head_folder, tiny_run

MOTION = ARTIFACTS.index("motion")
WRAP = ARTIFACTS.index("wrap")


def _labels(rows: list[dict[int, float]]) -> tuple[np.ndarray, np.ndarray]:
    labels = np.zeros((len(rows), len(ARTIFACTS)), np.float32)
    sev = np.zeros_like(labels)
    for i, r in enumerate(rows):
        for j, s in r.items():
            labels[i, j], sev[i, j] = 1.0, s
    return labels, sev


def test_separation_counts_positives_against_clean_volumes_only() -> None:
    # 3 clean volumes, 2 mild and 1 severe motion, 1 wrap that also carries motion
    labels, sev = _labels([{}, {}, {}, {MOTION: 0.2}, {MOTION: 0.3}, {MOTION: 0.9}, {WRAP: 0.5, MOTION: 0.5}])
    probs = np.full(labels.shape, 0.5, np.float32)
    probs[:, MOTION] = [0.1, 0.2, 0.3, 0.25, 0.9, 0.95, 0.05]
    probs[:, WRAP] = [0.1, 0.2, 0.3, 0.0, 0.0, 0.0, 0.8]
    cells = separation(probs, labels, sev)
    m = cells["motion"]
    assert (m.n_pos, m.n_mild) == (4, 2)
    # motion positives 0.25, 0.9, 0.95, 0.05 against clean 0.1, 0.2, 0.3: 2 + 3 + 3 + 0 of 12 pairs
    assert math.isclose(m.auc, 8 / 12)
    assert math.isclose(m.auc_mild, (2 + 3) / 6)  # 0.25 beats two clean volumes, 0.9 all three
    w = cells["wrap"]
    assert (w.n_pos, w.n_mild, w.auc) == (1, 0, 1.0)  # the motion-only volumes are not its negatives
    assert math.isnan(w.auc_mild)  # no mild wrap: no figure, not a made-up one
    assert math.isnan(cells["spike"].auc)


def test_groups_split_by_source() -> None:
    labels, sev = _labels([{}, {MOTION: 0.2}, {}, {MOTION: 0.6}])
    probs = np.zeros(labels.shape, np.float32)
    probs[:, MOTION] = [0.1, 0.9, 0.8, 0.2]  # separated among synthetic heads, reversed among real ones
    groups = [source_group({"source": s}) for s in ("synthetic-3", "synthetic-4", "t1w_x.nii.gz", "t1w_x.nii.gz")]
    assert groups == ["synthetic", "synthetic", "real", "real"]
    rows = fit_groups(probs, labels, sev, groups, "bank_val")
    assert [(r.group, r.n, r.n_clean) for r in rows] == [("synthetic", 2, 1), ("real", 2, 1)]
    assert rows[0].cells["motion"].auc == 1.0 and rows[1].cells["motion"].auc == 0.0
    text = report(rows)
    assert "| bank_val | synthetic | 2 (1) | 1.00 / 1.00 (1/1)" in text
    assert "| bank_val | real | 2 (1) | 0.00 / nan (1/0)" in text


def test_measure_a_trained_run(tmp_path: Path) -> None:
    heads = head_folder(tmp_path)
    run = tmp_path / "run"
    train.train(train.parse_args(["--out", str(run), "--nifti", str(heads), *tiny_run(7)]))
    rows = measure(run, volumes=3)
    # a sample is scored as the same volumes are within the whole bank
    net, state = load_net(run / "model.pt")
    n = PreprocessSpec.from_dict(state["spec"]).slices_per_volume  # as ``measure`` reads them
    val = Bank.open(run / "bank_val")
    whole = predict(net, val, n)["probs"]
    assert np.allclose(predict(net, val, n, indices=np.array([3, 1]))["probs"], whole[[3, 1]], atol=1e-6)
    for name in ("bank_train", "bank_val"):
        bank = Bank.open(run / name)
        mine = [r for r in rows if r.bank == name]
        assert mine and {r.group for r in mine} <= set(GROUPS)
        assert sum(r.n for r in mine) == 3  # the sample, not the whole bank (4 volumes)
        for r in mine:
            assert set(r.cells) == set(ARTIFACTS)
            for c in r.cells.values():
                assert c.n_mild <= c.n_pos <= r.n - r.n_clean
                assert math.isnan(c.auc) or 0.0 <= c.auc <= 1.0
        assert sum(r.n_clean for r in mine) <= int((bank.labels.sum(axis=1) == 0).sum())
