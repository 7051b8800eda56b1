"""The shading measure returns the simulator's own bias-field scale, and the report counts flags per band."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from training.artifacts import BiasField
from training.shading import BANDS, CleanVolume, band_of, flatten, report, shading_beta


def _head(beta: float, seed: int) -> sitk.Image:
    """An ellipsoidal 'head' (scalp-bright shell, two tissues, dark ventricles) at 4 mm, times a simulated field."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[-1:1:44j, -1:1:52j, -1:1:44j]
    r = (x / 0.8) ** 2 + (y / 0.9) ** 2 + (z / 0.75) ** 2
    arr = np.where(r < 1, 0.8, 0.0) + np.where(r < 0.55, 0.2, 0.0) - np.where((r < 0.3) & (np.abs(x) < 0.15), 0.6, 0.0)
    arr = np.clip(arr * (1 + 0.03 * rng.standard_normal(arr.shape)), 0, None).astype(np.float32)
    field = BiasField(0.5, rng=np.random.default_rng(seed), beta_override=beta)
    img = sitk.GetImageFromArray(field.apply_object(arr, r < 1))  # beta 0: no field
    img.SetSpacing((4.0, 4.0, 4.0))
    return img


@pytest.mark.parametrize("beta", [0.0, 0.45, 0.7])
def test_shading_recovers_the_simulated_field(beta: float) -> None:
    got = shading_beta(_head(beta, seed=3))
    assert got == pytest.approx(beta, abs=0.06)


def test_a_fine_image_is_measured_on_a_coarse_grid_with_the_same_result() -> None:
    coarse = _head(0.45, seed=5)
    fine = sitk.Resample(coarse, [2 * n for n in coarse.GetSize()], sitk.Transform(), sitk.sitkLinear,
                         coarse.GetOrigin(), (2.0, 2.0, 2.0), coarse.GetDirection())
    assert shading_beta(fine) == pytest.approx(shading_beta(coarse), abs=0.06)


def test_an_empty_image_has_no_shading() -> None:
    img = sitk.Image(20, 20, 20, sitk.sitkFloat32)
    assert np.isnan(shading_beta(img))


def test_report_counts_flags_per_source_and_band() -> None:
    rows = [CleanVolume(0, "synthetic", 0.2, 0.1, False), CleanVolume(1, "synthetic", 0.3, 0.2, False),
            CleanVolume(2, "philips", 0.5, 0.5, True), CleanVolume(3, "philips", 0.8, 0.7, True)]
    assert [band_of(v.beta) for v in rows] == [BANDS[0][0], BANDS[0][0], BANDS[1][0], BANDS[2][0]]
    text = report(rows)
    assert "| philips | 2 | 0.65 | 0.80 | 2 | 0.60 |" in text
    assert "| synthetic | 2 | 0.25 | 0.30 | 0 | 0.15 |" in text
    assert "Spearman of shading and bias_field probability 1.00" in text
    assert f"| {BANDS[2][0]} ({BANDS[2][1]}-inf) | 1 | 0.80 | 0.80 | 1 | 0.70 |" in text


def test_flatten_removes_the_field_and_keeps_the_grid() -> None:
    shaded = _head(0.45, seed=7)
    flat = flatten(shaded)
    assert flat.GetSize() == shaded.GetSize() and flat.GetSpacing() == shaded.GetSpacing()
    assert shading_beta(flat) < 0.1
    # what was removed is the field: the flattened head times it gives the shaded head back
    ratio = sitk.GetArrayFromImage(shaded) / np.maximum(sitk.GetArrayFromImage(flat), 1e-6)
    inside = sitk.GetArrayFromImage(shaded) > 0.3
    assert np.log(np.percentile(ratio[inside], 99) / np.percentile(ratio[inside], 1)) == pytest.approx(0.45, abs=0.08)


def test_rescoring_simulates_the_head_again_from_its_flattened_self(monkeypatch: pytest.MonkeyPatch) -> None:
    """The causal test's wiring: only the named real head's clean cases, the same seeds, the flattened object."""
    from pathlib import Path

    from tests.training.phantom import phantom
    from training import evaluate, shading
    from training.sources import SourceVolume

    loads: list[int] = []

    def load() -> sitk.Image:
        loads.append(1)
        return phantom(seed=1)

    monkeypatch.setitem(evaluate.HELD_OUT_SOURCES, "phantom_head", SourceVolume("p", "phantom_head", "t1", load))
    flattened: list[tuple[int, ...]] = []

    def spy(img: sitk.Image, grid_mm: float = 4.0) -> sitk.Image:
        flattened.append(img.GetSize())
        return flatten(img, grid_mm)

    monkeypatch.setattr(shading, "flatten", spy)

    def row(index: int, source: str, artifacts: dict[str, float], p: float, flags: list[str]) -> dict[str, object]:
        return {"case": {"index": index, "source": source, "artifacts": artifacts, "unseen": None, "band": None},
                "score": {"probabilities": {"bias_field": p}, "flags": flags}}

    results = [row(0, "real:phantom_head", {}, 0.9, ["bias_field"]), row(1, "synthetic:20000", {}, 0.1, []),
               row(2, "real:phantom_head", {"noise": 0.5}, 0.2, []), row(3, "real:phantom_head", {}, 0.3, [])]
    model = Path(__file__).resolve().parents[2] / "models" / "qc-v4.onnx"
    out = shading.rescore_flattened(results, model, "phantom_head", Path("unused"), seed=5)
    assert len(flattened) == 1  # the head is flattened once, before any case is made
    assert len(loads) == 1  # and the cases are made from it: the case maker never reads the head's file itself
    assert [(r[0], r[1]) for r in out] == [(0.9, True), (0.3, False)]  # the head's clean cases, as evaluated
    assert all(0.0 <= r[2] <= 1.0 and isinstance(r[3], bool) for r in out)
