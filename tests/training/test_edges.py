"""The inferior-edge probe (training/edges.py): the edits keep the head where it is, and the probe scores them
with the shipped model the way the daemon does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from qc_daemon.scoring.model import QCModel
from tests.training.phantom import phantom
from training.edges import EDITS, lps, pad_inferior, probe, table, zero_inferior

MODELS = Path(__file__).resolve().parents[2] / "models"


def _ras(img: sitk.Image) -> sitk.Image:
    """The phantom stored RAS (the NIfTI habit), so the probe has to reorient it."""
    return sitk.DICOMOrient(img, "RAS")


def test_zeroed_slices_are_the_most_inferior_in_space() -> None:
    img = lps(_ras(phantom()))
    out = zero_inferior(img, 12)  # the phantom's scalp starts at slice 6
    a, b = sitk.GetArrayFromImage(img), sitk.GetArrayFromImage(out)
    changed = np.flatnonzero(np.any(a != b, axis=(1, 2)))
    assert changed.tolist() == list(range(6, 12))
    # array index 0 is the lowest in patient space (LPS: +z superior)
    assert out.TransformIndexToPhysicalPoint((0, 0, 0))[2] < out.TransformIndexToPhysicalPoint((0, 0, 1))[2]
    assert out.GetOrigin() == img.GetOrigin() and out.GetSize() == img.GetSize()


def test_padding_keeps_every_voxel_at_its_place() -> None:
    img = lps(_ras(phantom()))
    out = pad_inferior(img, 7)
    assert out.GetSize()[2] == img.GetSize()[2] + 7
    for idx in ((0, 0, 0), (10, 20, 30), (40, 50, 71)):
        point = img.TransformIndexToPhysicalPoint(idx)
        moved = out.TransformPhysicalPointToIndex(point)
        assert moved == (idx[0], idx[1], idx[2] + 7)
        assert out[moved] == img[idx]
    assert not sitk.GetArrayFromImage(out)[:7].any()


def test_probe_scores_the_three_edits_with_the_model() -> None:
    model = QCModel.load(next(MODELS.glob("*.onnx")))
    vol = _ras(phantom())
    rows = probe(model, [("phantom", vol)], rows=12)
    assert [r.edit for r in rows] == list(EDITS)
    stored = model.score_volume(lps(vol))
    assert rows[0].probabilities == stored.probabilities
    assert rows[1].probabilities != rows[0].probabilities  # the edit reached the model
    text = table(rows, ["wrap", "motion"])
    assert text.splitlines()[0] == "| volume | edit | wrap | motion | flags |"
    assert f"| phantom | lowest slices zeroed | {rows[1].probabilities['wrap']:.3f} |" in text
