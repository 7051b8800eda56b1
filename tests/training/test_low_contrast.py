"""Simulator 4: low tissue-contrast synthetic heads in training, never in the held-out test set."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.training.bank_probe import first_call_kwargs
from tests.training.phantom import phantom
from training import evaluate
from training.synth import EXTRA_PRESETS, LOW_RES_PRESETS, PRESETS, SyntheticSubject, render


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


def test_the_held_out_test_set_never_renders_low_contrast(monkeypatch: pytest.MonkeyPatch) -> None:
    """The evaluation's synthetic cases keep the original contrasts, so every model is measured on the same set."""
    asked: list[tuple[str | None, bool]] = []

    def fake_render(subject: object, rng: np.random.Generator, contrast: str | None = None,
                    low_contrast: bool = False) -> tuple[Any, str]:
        asked.append((contrast, low_contrast))
        return phantom(), contrast or "random"

    monkeypatch.setattr(evaluate, "render", fake_render)
    monkeypatch.setattr(evaluate, "make_subject", lambda seed: None)
    maker = evaluate.CaseMaker(Path("unused"), seed=0)
    for i in range(40):
        maker.source(evaluate.TestCase(i, "synthetic:20001", {}), np.random.default_rng(i),
                     "2d_epi" if i % 2 else "3d_anat")
    assert len(asked) == 40 and not any(low for _, low in asked)
    assert {c for c, _ in asked if c is not None} <= set(LOW_RES_PRESETS)  # low-resolution kinds: original presets


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


@pytest.mark.parametrize(("simulator", "low_contrast"), [(3, False), (4, True)])
def test_the_bank_asks_for_low_contrast_from_simulator_4(monkeypatch: pytest.MonkeyPatch, simulator: int,
                                                          low_contrast: bool) -> None:
    assert first_call_kwargs(monkeypatch, simulator, "render").get("low_contrast", False) is low_contrast
