"""Simulator 7's face and neck: air cavities, eyes and bone below and in front of a synthetic brain."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from training.synth import TISSUES, make_subject, render


def _enclosed_background(labels: np.ndarray) -> int:
    """Background voxels enclosed by the head in axial slices (air cavities; a 3-D fill would miss the pharynx,
    which is open at the cut neck)."""
    n = 0
    for k in range(labels.shape[0]):
        sl = sitk.GetImageFromArray((labels[k] > 0).astype(np.uint8))
        n += int(sitk.GetArrayFromImage(sitk.BinaryFillhole(sl)).sum() - (labels[k] > 0).sum())
    return n


def test_face_adds_air_eyes_bone_and_neck_below_and_in_front_of_the_brain() -> None:
    plain, faced = make_subject(20001), make_subject(20001, face=True)
    # the grid reaches further down (z) and forward (y: low indices are anterior in LPS)
    assert faced.labels.shape[0] == plain.labels.shape[0] + 40
    assert faced.labels.shape[1] == plain.labels.shape[1] + 25
    assert faced.origin[2] == plain.origin[2] - 40 and faced.origin[1] == plain.origin[1] - 25
    # the plain head is a brain in closed shells: hardly any air inside it; the face has sinuses, nose and pharynx
    assert _enclosed_background(plain.labels) < 2_000
    assert _enclosed_background(faced.labels) > 20_000
    # the lowest 40 mm hold a neck: muscle, fat, bone (vertebrae) and CSF with cord
    low = faced.labels[:40]
    present = {TISSUES[v] for v in np.unique(low)}
    assert {"scalp", "fat", "skull", "marrow", "csf", "wm"} <= present
    assert (plain.labels[:5] > 0).mean() < (low[:5] > 0).mean()
    # fluid-filled eye globes in front of the lowest brain: CSF-labelled voxels in the anterior quarter
    brain_z = np.nonzero((faced.labels == 2).any(axis=(1, 2)))[0].min()
    front = faced.labels[brain_z:brain_z + 100, : faced.labels.shape[1] // 4]
    assert (front == TISSUES.index("csf")).sum() > 2 * 4_000  # two globes of about 11 mm radius (6,000 mm3 each)


def test_faces_differ_between_subjects_and_repeat_for_one() -> None:
    a, b = make_subject(20002, face=True), make_subject(20003, face=True)
    again = make_subject(20002, face=True)
    assert np.array_equal(a.labels, again.labels)
    assert a.labels.shape == b.labels.shape
    assert (a.labels[:60] != b.labels[:60]).mean() > 0.05
    img, contrast = render(a, np.random.default_rng(0), "t1")
    arr = sitk.GetArrayFromImage(img)
    assert arr.shape == a.labels.shape and contrast == "t1"
    # air in the face renders dark inside a bright head: the lowest 60 mm are not uniformly lit
    assert (arr[:60][a.labels[:60] == 0] == 0).all()
