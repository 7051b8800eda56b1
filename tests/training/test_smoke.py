"""The CI smoke path: tiny data, a few training steps, export with the ONNX parity check, daemon scoring.

Runs the same code as the full training (``python -m training.train``), on two synthetic subjects, a handful of
simulated volumes and a small input size, and must finish in under 3 minutes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import SimpleITK as sitk

from qc_daemon.artifacts import ARTIFACTS, RESCAN_SCORE
from qc_daemon.scoring.model import METADATA_KEY, QCModel
from training import export, train
from training.bank import MIN_VISIBLE

from .phantom import phantom


def test_smoke_train_export_score(tmp_path: Path) -> None:
    started = time.monotonic()
    run = tmp_path / "run"
    heads = tmp_path / "nifti"  # one real head for training, one for validation only
    heads.mkdir()
    sitk.WriteImage(phantom(0), str(heads / "t1w_train.nii.gz"))
    sitk.WriteImage(phantom(1), str(heads / "t2w_val.nii.gz"))
    args = train.parse_args([
        "--out", str(run), "--nifti", str(heads), "--val-nifti-include", "t2w_val",
        "--synthetic-subjects", "1", "--val-synthetic-subjects", "1",
        "--bank-volumes", "6", "--val-volumes", "6", "--workers", "1", "--epochs", "1", "--max-steps", "2",
        "--batch", "3", "--slice-size", "96", "--slices-per-plane", "4", "--widths", "8,16,16,32,32",
        "--no-progress", "--seed", "3",
    ])
    model_pt = train.train(args)
    assert model_pt.exists() and (run / "split.json").exists() and (run / "last.pt").exists()
    split = json.loads((run / "split.json").read_text())
    assert split["real_train"] == ["t1w_train.nii.gz"] and split["real_validation_only"] == ["t2w_val.nii.gz"]
    calib = json.loads((run / "calibration.json").read_text())
    assert set(calib["thresholds"]) == {*ARTIFACTS, RESCAN_SCORE}
    # the bank's labels are the realised severities (motion: the change it made), what was asked is kept beside
    assert json.loads((run / "bank_train" / "bank.json").read_text())["simulator"] == 2
    shard = run / "bank_train" / "shard_0000"
    labels = np.load(shard / "labels.npy")
    for row, meta in zip(labels, json.loads((shard / "meta.json").read_text()), strict=True):
        assert set(meta["realised"]) == set(meta["artifacts"])
        expected = [float(meta["realised"].get(a, 0.0) >= MIN_VISIBLE) for a in ARTIFACTS]
        np.testing.assert_array_equal(row, expected)

    # resume: a second call with the same run folder continues from the checkpoint (nothing left to do)
    state_before = (run / "last.pt").stat().st_mtime
    train.train(args)
    assert (run / "last.pt").stat().st_mtime == state_before

    onnx_path = tmp_path / "smoke.onnx"
    export.export(run, onnx_path, "smoke", "0.0.1", tolerance=1e-4, parity_inputs=export.bank_examples(run, 2))
    assert not onnx_path.with_name(onnx_path.name + ".data").exists()
    parity = json.loads(onnx_path.with_suffix(".parity.json").read_text())
    assert parity["max_abs_diff"] < 1e-4 and parity["cases"] == 3
    props = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    meta = json.loads(props[METADATA_KEY])
    assert meta["artifacts"] == list(ARTIFACTS)
    assert meta["input"]["preprocess"]["slice_size"] == 96
    assert meta["training_data"]["real_training_volumes"] == ["t1w_train.nii.gz"]
    assert meta["training_data"]["real_validation_volumes"] == ["t2w_val.nii.gz"]

    model = QCModel.load(onnx_path)
    score = model.score_volume(phantom())
    assert set(score.probabilities) == set(ARTIFACTS)
    assert all(0.0 <= p <= 1.0 for p in score.probabilities.values())
    again = model.score_volume(phantom())
    assert again.probabilities == score.probabilities
    json.dumps(score.to_dict())
    elapsed = time.monotonic() - started
    assert elapsed < 180, f"smoke path took {elapsed:.0f} s"


def test_train_refuses_a_bank_with_another_configuration(tmp_path: Path) -> None:
    from training.bank import BankConfig, build_bank

    cfg = BankConfig(n_volumes=0, seed=1, synthetic_subjects=[0])
    build_bank(tmp_path, cfg, [], workers=1, progress=False)
    with pytest.raises(RuntimeError):
        build_bank(tmp_path, BankConfig(n_volumes=0, seed=2, synthetic_subjects=[0]), [], workers=1, progress=False)


def test_auc_helper() -> None:
    assert train.auc(np.array([0.9, 0.8, 0.1, 0.2]), np.array([1, 1, 0, 0])) == 1.0
    assert train.auc(np.array([0.5, 0.5]), np.array([1, 0])) == 0.5
    assert np.isnan(train.auc(np.array([0.5]), np.array([1])))


def test_device_choice_follows_what_torch_sees() -> None:
    import torch

    if torch.cuda.is_available():
        assert train.pick_device("auto").type == "cuda"
    else:
        assert train.pick_device("auto").type == "cpu"
        with pytest.raises(SystemExit, match="no CUDA device"):
            train.pick_device("cuda")
    assert train.pick_device("cpu").type == "cpu"


def test_ensemble_averages_member_slice_logits_and_joins_their_embeddings() -> None:
    import torch

    from training.net import EnsembleQCNet, ExportWrapper, QCNet, build

    torch.manual_seed(0)
    members = [QCNet((8, 8, 8, 8, 8), hidden=16).eval() for _ in range(3)]
    ens = EnsembleQCNet(members).eval()
    x, side = torch.rand(4, 3, 32, 32), torch.zeros(4, 3)
    with torch.no_grad():
        s, h = ens.slice_forward(x, side)
        parts = [m.slice_forward(x, side) for m in members]
    torch.testing.assert_close(s, torch.stack([p[0] for p in parts]).mean(dim=0))
    assert h.shape == (4, 48)
    torch.testing.assert_close(h[:, 16:32], parts[1][1])
    assert not any(p.requires_grad for p in ens.members.parameters())  # only the ensemble's pooling is fitted
    # the exported graph pools one volume exactly as training and calibration did
    with torch.no_grad():
        volume = ens(x, side, 4)[0][0]
        probs, rescan, severity, _, embedding = ExportWrapper(ens)(x, side)
    torch.testing.assert_close(probs, torch.sigmoid(volume[:7]))
    torch.testing.assert_close(rescan, torch.sigmoid(volume[7:8]))
    torch.testing.assert_close(severity, torch.sigmoid(volume[8:]))
    torch.testing.assert_close(embedding, h.mean(dim=0))
    # a checkpoint's config rebuilds the same ensemble
    again = build(ens.config)
    again.load_state_dict(ens.state_dict())
    again.eval()
    with torch.no_grad():
        torch.testing.assert_close(again(x, side, 4)[0], ens(x, side, 4)[0])


def test_ensemble_training_exports_one_model(tmp_path: Path) -> None:
    run = tmp_path / "run"
    heads = tmp_path / "nifti"
    heads.mkdir()
    sitk.WriteImage(phantom(0), str(heads / "t1w_train.nii.gz"))
    args = train.parse_args([
        "--out", str(run), "--nifti", str(heads), "--synthetic-subjects", "1", "--val-synthetic-subjects", "1",
        "--bank-volumes", "4", "--val-volumes", "4", "--workers", "1", "--epochs", "1", "--max-steps", "1",
        "--batch", "3", "--slice-size", "64", "--slices-per-plane", "4", "--widths", "8,8,8,8,8",
        "--no-progress", "--seed", "5", "--members", "2",
    ])
    train.train(args)
    assert (run / "member0.pt").exists() and (run / "member1.pt").exists() and not (run / "last.pt").exists()
    calib = json.loads((run / "calibration.json").read_text())
    assert calib["aggregation"]["mix"]  # the ensemble's own pooling was fitted
    onnx_path = tmp_path / "ens.onnx"
    export.export(run, onnx_path, "ens", "0.0.1", tolerance=1e-4, parity_inputs=export.bank_examples(run, 1))
    meta = json.loads({p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}[METADATA_KEY])
    assert meta["input"]["outputs"]["embedding"] == [2 * 128]
    score = QCModel.load(onnx_path).score_volume(phantom())
    assert set(score.probabilities) == set(ARTIFACTS)
    with pytest.raises(SystemExit):
        train.parse_args(["--out", str(run), "--members", "0"])


def test_runs_trained_apart_join_into_one_ensemble(tmp_path: Path) -> None:
    from training import ensemble

    heads = tmp_path / "nifti"
    heads.mkdir()
    sitk.WriteImage(phantom(0), str(heads / "t1w_train.nii.gz"))
    common = ["--nifti", str(heads), "--synthetic-subjects", "1", "--val-synthetic-subjects", "1",
              "--bank-volumes", "4", "--val-volumes", "4", "--workers", "1", "--epochs", "1", "--batch", "3",
              "--slice-size", "64", "--slices-per-plane", "4", "--widths", "8,8,8,8,8", "--no-progress",
              "--seed", "2"]
    a, b = tmp_path / "a", tmp_path / "b"
    train.train(train.parse_args(["--out", str(a), "--max-steps", "1", *common]))
    b.mkdir()
    for name in ("bank_train", "bank_val"):  # the same banks, a different network (one more step)
        (b / name).symlink_to(a / name, target_is_directory=True)
    train.train(train.parse_args(["--out", str(b), "--max-steps", "2", *common]))
    model_pt = ensemble.join([a, b], tmp_path / "ab", far=0.01)
    assert json.loads((tmp_path / "ab" / "calibration.json").read_text())["aggregation"]["mix"]
    onnx_path = tmp_path / "ab.onnx"
    export.export(model_pt.parent, onnx_path, "ab", "0.0.1", tolerance=1e-4)
    assert QCModel.load(onnx_path).score_volume(phantom()).probabilities.keys() == set(ARTIFACTS)
    # runs on another split cannot be joined: their held-out heads would leak
    (b / "split.json").write_text("{}")
    with pytest.raises(SystemExit, match="split differs"):
        ensemble.join([a, b], tmp_path / "bad", far=0.01)
    with pytest.raises(SystemExit, match="at least two"):
        ensemble.join([a], tmp_path / "bad", far=0.01)
