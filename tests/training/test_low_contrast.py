"""Simulator 4: low tissue-contrast synthetic heads (the version ladder: test_simulator_versions)."""

from __future__ import annotations

import collections
from typing import Any

import numpy as np

from training.synth import EXTRA_PRESETS, PRESETS, SyntheticSubject, render


def _tiny_subject() -> SyntheticSubject:
    labels = np.repeat(np.arange(8, dtype=np.uint8), 64).reshape(8, 8, 8)  # every tissue present
    return SyntheticSubject(0, labels, (0.0, 0.0, 0.0), np.zeros((8, 8, 8), np.float16))


def _tissue_means(img: Any, subject: SyntheticSubject) -> list[float]:
    import SimpleITK as sitk

    arr = sitk.GetArrayFromImage(img)
    return [float(arr[subject.labels == t].mean()) for t in range(8)]


def test_render_adds_low_contrast_only_when_asked() -> None:
    subj = _tiny_subject()
    plain = collections.Counter(render(subj, np.random.default_rng(i))[1] for i in range(300))
    extra = collections.Counter(render(subj, np.random.default_rng(i), low_contrast=True)[1] for i in range(300))
    assert set(plain) <= set(PRESETS) | {"random"}
    assert all(extra[name] > 0 for name in (*EXTRA_PRESETS, "flat"))


def test_flat_renders_have_nearly_equal_brain_tissues() -> None:
    subj = _tiny_subject()
    spreads = {}
    for contrast in ("t1", "flat"):
        rel = []
        for i in range(20):
            m = _tissue_means(render(subj, np.random.default_rng(i), contrast, low_contrast=True)[0], subj)
            csf, gm, wm = m[1:4]
            rel.append((max(csf, gm, wm) - min(csf, gm, wm)) / max(csf, gm, wm))
        spreads[contrast] = rel
    assert max(spreads["flat"]) < 0.25  # within +-8 % of one level, plus texture and noise
    assert min(spreads["t1"]) > 0.4  # a T1 preset keeps CSF far below white matter
