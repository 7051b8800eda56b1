"""``--artifact-weights``: more loss for the artifacts the network fits worst, the loss keeping its scale."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch
import torch.nn.functional as F

from qc_daemon.artifacts import ARTIFACTS
from qc_daemon.scoring.model import METADATA_KEY
from training import export, train
from training.net import N_ART

from .phantom import head_folder, linked_run, tiny_run


def test_weights_parse_and_keep_a_mean_of_one() -> None:
    assert train.artifact_weights("") is None
    w = train.artifact_weights("motion=2,wrap=2")
    assert w is not None and w.shape == (N_ART,)
    assert torch.isclose(w.mean(), torch.tensor(1.0))
    m, g, wr = (float(w[ARTIFACTS.index(a)]) for a in ("motion", "ghosting", "wrap"))
    assert m == pytest.approx(2 * g) and wr == pytest.approx(m)
    assert g == pytest.approx(7 / 9)  # 2 + 2 + 5 x 1 = 9 over 7 artifacts


@pytest.mark.parametrize("bad", ["movement=2", "motion", "motion=x", "motion=0", "motion=-1"])
def test_bad_weights_are_refused_at_the_command_line(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        train.parse_args(["--out", "runs/x", "--artifact-weights", bad])
    assert "--artifact-weights" in capsys.readouterr().err


def test_weighted_slice_loss() -> None:
    torch.manual_seed(0)
    out = torch.randn(5, N_ART + 1 + N_ART)
    b = {"labels": (torch.rand(5, N_ART) > 0.5).float(), "rescan": torch.zeros(5),
         "severity": torch.rand(5, N_ART)}
    w = train.artifact_weights("motion=3")
    assert w is not None
    per = F.binary_cross_entropy_with_logits(out[:, :N_ART], b["labels"], reduction="none")
    plain, weighted = train.slice_loss(out, b), train.slice_loss(out, b, w)
    # only the artifact term moves: the rest of the loss is the same in both
    assert float(weighted - plain) == pytest.approx(float((per * w).mean() - per.mean()), abs=1e-6)
    assert float(plain) == pytest.approx(float(train.slice_loss(out, b, torch.ones(N_ART))), abs=1e-6)


def test_a_weighted_run_records_its_weights(tmp_path: Path) -> None:
    heads = head_folder(tmp_path)
    base = tmp_path / "base"
    train.train(train.parse_args(["--out", str(base), "--nifti", str(heads), *tiny_run(3)]))
    run = linked_run(tmp_path, "weighted", base)
    train.train(train.parse_args(["--out", str(run), "--nifti", str(heads), *tiny_run(3),
                                  "--artifact-weights", "motion=4"]))
    a = torch.load(base / "model.pt", weights_only=False)
    b = torch.load(run / "model.pt", weights_only=False)
    assert a["artifact_weights"] is None and b["artifact_weights"] == "motion=4"
    # same banks, same seed: the weights alone change what the network learns
    assert any(not torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    # and the shipped file says how it was trained
    onnx_path = tmp_path / "weighted.onnx"
    export.export(run, onnx_path, "weighted", "0.0.1", tolerance=1e-4, parity_inputs=export.bank_examples(run, 2))
    model = onnx.load(str(onnx_path))
    meta = json.loads({p.key: p.value for p in model.metadata_props}[METADATA_KEY])
    assert meta["artifact_weights"] == "motion=4"
