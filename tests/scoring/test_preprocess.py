"""The preprocessing shared by training and the daemon."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from qc_daemon.imaging.preprocess import PLANES, PreprocessSpec, foreground_box, prepare, working_grid

SPEC = PreprocessSpec()


def head(shape: tuple[int, int, int] = (60, 80, 70), spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
         dtype: type = np.float32) -> sitk.Image:
    """An ellipsoid 'head' with an internal structure (z, y, x array order)."""
    z, y, x = np.indices(shape).astype(np.float32)
    c = [s / 2 for s in shape]
    r = sum(((g - ci) / (0.4 * n)) ** 2 for g, ci, n in zip((z, y, x), c, shape, strict=True))
    arr = np.where(r < 1, 100.0 + 50.0 * np.sin(x / 3.0) * np.cos(y / 4.0), 0.0) + 3.0 * (x % 2)
    img = sitk.GetImageFromArray(arr.astype(dtype))
    img.SetSpacing(spacing)
    return img


def test_output_shapes_and_side_input() -> None:
    p = prepare(head(), SPEC)
    n = SPEC.slices_per_volume
    assert p.slices.shape == (n, 3, SPEC.slice_size, SPEC.slice_size)
    assert p.slices.dtype == np.float32
    assert p.side.shape == (n, 3)
    assert [q.plane for q in p.positions] == [pl for pl in PLANES for _ in range(SPEC.slices_per_plane)]
    assert p.slices.min() >= 0 and p.slices.max() <= SPEC.clip_max
    np.testing.assert_allclose(p.side, 0.0)  # 1 mm everywhere: log2(1) = 0


@pytest.mark.parametrize("dtype", [np.int16, np.uint16, np.float64])
def test_pixel_type_does_not_matter(dtype: type) -> None:
    ref = prepare(head(), SPEC)
    other = prepare(head(dtype=dtype), SPEC)
    np.testing.assert_allclose(other.slices, ref.slices, atol=0.01)  # integer types round the values


def test_intensity_scale_does_not_matter() -> None:
    img = head()
    a = prepare(img, SPEC).slices
    b = prepare(img * 7.0, SPEC).slices
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_orientation_does_not_matter() -> None:
    """The same physical volume stored in another axis order and direction gives the same network input."""
    img = head()
    permuted = sitk.Flip(sitk.PermuteAxes(img, [2, 0, 1]), [True, False, True])
    a = prepare(img, SPEC)
    b = prepare(permuted, SPEC)
    np.testing.assert_array_equal(a.slices, b.slices)
    assert [(q.plane, q.position_mm) for q in a.positions] == [(q.plane, q.position_mm) for q in b.positions]


def test_coarse_data_is_not_upsampled_and_fine_data_is_resampled() -> None:
    coarse = head((36, 64, 64), (3.75, 3.75, 3.6))
    assert working_grid(sitk.DICOMOrient(coarse, "LPS"), SPEC).GetSpacing() == pytest.approx((3.75, 3.75, 3.6))
    p = prepare(coarse, SPEC)
    assert p.working_spacing == pytest.approx((3.75, 3.75, 3.6))
    assert p.side[0] == pytest.approx(np.log2([3.75, 3.75, 3.6]))
    fine = head((100, 120, 110), (0.5, 0.5, 0.9))
    g = working_grid(fine, SPEC)
    assert g.GetSpacing() == pytest.approx((1.0, 1.0, 1.0))
    assert g.GetSize() == (55, 60, 90)
    # physical extent is kept
    for a, b in zip(fine.TransformContinuousIndexToPhysicalPoint([-0.5] * 3),
                    g.TransformContinuousIndexToPhysicalPoint([-0.5] * 3), strict=True):
        assert a == pytest.approx(b, abs=1e-3)


def test_foreground_box_ignores_background_noise() -> None:
    rng = np.random.default_rng(0)
    arr = np.abs(rng.normal(0, 0.06, (150, 180, 160))).astype(np.float32)  # Rician-like background floor
    arr[50:100, 60:120, 55:105] += 1.0
    lo, hi = foreground_box(arr)
    assert np.all(np.abs(lo - [50, 60, 55]) <= 3), lo
    assert np.all(np.abs(hi - [99, 119, 104]) <= 3), hi


def test_statistics_for_the_gate() -> None:
    p = prepare(head(), SPEC)
    for key in ("scale", "negative_fraction", "foreground_fraction", "extent_s_mm", "min_size"):
        assert key in p.stats
    signed = head() - 60.0
    assert prepare(signed, SPEC).stats["negative_fraction"] > 0.2


def test_jitter_moves_slices_for_training_only() -> None:
    img = head()
    a = prepare(img, SPEC)
    b = prepare(img, SPEC, jitter=np.full(SPEC.slices_per_volume, 2, dtype=np.int64))
    assert not np.array_equal(a.slices, b.slices)
    np.testing.assert_array_equal(prepare(img, SPEC).slices, a.slices)  # deterministic


def test_spec_round_trip() -> None:
    spec = PreprocessSpec(slice_size=96, slices_per_plane=4)
    assert PreprocessSpec.from_dict(spec.to_dict() | {"unknown": 1}) == spec
