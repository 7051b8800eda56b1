"""Every artifact transform: severity 0 is the identity, the effect grows with severity, and its physics."""

from __future__ import annotations

import numpy as np
import pytest

from qc_daemon.artifacts import ARTIFACTS
from training.acquisition import acquire_kspace, simulate, time_map
from training.artifacts import (
    ARTIFACT_TYPES,
    BIAS_ONSET,
    BLUR_ONSET,
    MOTION_ONSET,
    NOISE_ONSET,
    WRAP_ONSET,
    BiasField,
    Blur,
    Ghosting,
    Motion,
    Noise,
    Spike,
    Wrap,
    compose_motion,
    fold,
    make_artifact,
    motion_severity,
)

from .phantom import arr, phantom, plan

SOURCE = phantom()


def _make(name: str, severity: float, seed: int = 3) -> object:
    return make_artifact(name, severity, np.random.default_rng(seed))


def _effect(name: str, severity: float, mode: str = "3d") -> float:
    """Relative RMS change of the stored image caused by the artifact (same acquisition otherwise)."""
    p = plan(mode=mode, order="linear_ss_outer" if mode == "3d" else "sequential_tr")
    ref = arr(simulate(SOURCE, p, []).image)
    img = simulate(SOURCE, p, [_make(name, severity)]).image  # type: ignore[list-item]
    out = arr(img)
    if out.shape != ref.shape:  # wrap shrinks the field of view: compare the overlapping rows
        n = min(out.shape[1], ref.shape[1])
        out, ref = out[:, :n], ref[:, :n]
    return float(np.sqrt(np.mean((out - ref) ** 2)) / np.sqrt(np.mean(ref**2)))


def test_names_match_the_shared_artifact_list() -> None:
    assert set(ARTIFACT_TYPES) == set(ARTIFACTS)
    for name, cls in ARTIFACT_TYPES.items():
        assert cls.name == name
        assert cls.__doc__ and "Physics" in cls.__doc__ and "Severity" in cls.__doc__


@pytest.mark.parametrize("name", ARTIFACTS)
def test_severity_zero_is_identity(name: str) -> None:
    p = plan()
    ref = arr(simulate(SOURCE, p, []).image)
    out = arr(simulate(SOURCE, p, [_make(name, 0.0)]).image)  # type: ignore[list-item]
    assert out.shape == ref.shape
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("name", ARTIFACTS)
def test_effect_grows_with_severity(name: str) -> None:
    effects = [_effect(name, s) for s in (0.15, 0.5, 1.0)]
    assert effects[0] > 0.0
    assert effects[0] < effects[1] < effects[2], effects


@pytest.mark.parametrize("name", ARTIFACTS)
def test_severity_outside_unit_interval_is_refused(name: str) -> None:
    with pytest.raises(ValueError):
        _make(name, 1.5)


def test_rician_noise_is_non_negative_with_a_rayleigh_floor() -> None:
    p = plan()
    img = arr(simulate(SOURCE, p, [Noise(0.8, rng=np.random.default_rng(0))]).image)
    assert img.min() >= 0.0
    # background (outside the phantom): Rayleigh distributed, mean/std = sqrt(pi/2)/sqrt(2-pi/2) = 1.91
    bg = img[:, :8, :].ravel()
    assert bg.mean() > 0
    assert 1.7 < bg.mean() / bg.std() < 2.1
    # the noise is complex and added in k-space: sigma relative to the mean head intensity as specified
    noise = Noise(0.8)
    assert noise.sigma_rel == pytest.approx(NOISE_ONSET + 0.2 * 0.8**0.8)


def test_motion_changes_kspace_lines_after_the_motion_time_only() -> None:
    p = plan(order="linear_ss_outer")
    motion = Motion(0.8, voxel_mm=1.0, rng=np.random.default_rng(1), kind="sudden", times=(0.7,))
    still = acquire_kspace(SOURCE, p, [])
    moved = acquire_kspace(SOURCE, p, [motion])
    t = time_map(p)
    before, after = t < 0.7, t >= 0.7
    # the k-space centre is acquired at t = 0.5, before the move: it is the reference pose
    np.testing.assert_allclose(moved.k[before], still.k[before], rtol=0, atol=1e-6)
    diff_after = np.abs(moved.k[after] - still.k[after]).mean()
    assert diff_after > 1e-4 * np.abs(still.k).mean()
    segs = motion.segments(0.5)
    assert segs[0].rotation_deg == (0.0, 0.0, 0.0) and segs[0].translation_mm == (0.0, 0.0, 0.0)
    assert segs[1].t0 == pytest.approx(0.7)


def test_motion_is_referenced_to_the_kspace_centre() -> None:
    motion = Motion(1.0, rng=np.random.default_rng(2), kind="sudden", times=(0.3,))
    segs = motion.segments(0.5)  # the centre is acquired after the move: the second pose is the reference
    assert segs[1].rotation_deg == (0.0, 0.0, 0.0)
    assert any(abs(v) > 0 for v in segs[0].rotation_deg + segs[0].translation_mm)


def test_motion_moves_at_least_the_requested_amount() -> None:
    motion = Motion(0.5, voxel_mm=2.0, rng=np.random.default_rng(3), kind="sudden", times=(0.6,))
    seg = motion.segments(0.0)[1]
    shift = np.linalg.norm(seg.translation_mm) + np.radians(np.linalg.norm(seg.rotation_deg)) * 80.0
    amount = (MOTION_ONSET + 7.0 * 0.5) * 2.0
    assert 0.4 * amount < shift <= amount + 1e-6


@pytest.mark.parametrize("order", ["linear_ss_outer", "centric"])
def test_motion_is_timed_to_make_the_change_its_severity_stands_for(order: str) -> None:
    p = plan(order=order)
    still = acquire_kspace(SOURCE, p, [])
    realised = []
    for sev in (0.2, 0.6):
        motion = Motion(sev, voxel_mm=1.0, rng=np.random.default_rng(5), kind="sudden")
        data = acquire_kspace(SOURCE, p, [motion])
        # the recorded effect is the relative RMS change against the acquisition held still (Parseval)
        direct = np.linalg.norm(data.k - still.k) / np.linalg.norm(still.k)
        assert data.motion_effect == pytest.approx(direct, rel=1e-3)
        assert motion.target_effect is not None
        assert data.motion_effect == pytest.approx(motion.target_effect, rel=0.15)
        assert motion_severity(data.motion_effect) == pytest.approx(sev, abs=0.1)
        realised.append(data.motion_effect)
    assert realised[1] > 1.5 * realised[0]


def test_motion_with_given_times_keeps_them_and_still_records_its_effect() -> None:
    p = plan(order="linear_ss_outer")
    motion = Motion(0.8, voxel_mm=1.0, rng=np.random.default_rng(1), kind="sudden", times=(0.7,))
    assert motion.target_effect is None
    data = acquire_kspace(SOURCE, p, [motion])
    assert data.segments[1].t0 == pytest.approx(0.7)
    assert data.motion_effect > 0
    assert acquire_kspace(SOURCE, p, []).motion_effect == 0.0


def test_compose_motion_takes_each_line_from_its_pose() -> None:
    from training.artifacts import Segment

    t = np.linspace(0, 0.999, 20, dtype=np.float32).reshape(4, 5)
    k0 = np.zeros((4, 5, 3), np.complex64)
    k1 = np.ones((4, 5, 3), np.complex64)
    segs = [Segment(0.0, 0.5, (0, 0, 0), (0, 0, 0)), Segment(0.5, 1.0, (1, 0, 0), (0, 0, 0))]
    out = compose_motion([k0, k1], segs, t)
    np.testing.assert_array_equal(out[t < 0.5], 0)
    np.testing.assert_array_equal(out[t >= 0.5], 1)


def test_wrap_folds_signal_into_a_smaller_field_of_view() -> None:
    x = np.arange(10, dtype=np.float32).reshape(1, 10, 1) + 1
    out = fold(x, 2, 6, axis=1)
    assert out.shape == (1, 6, 1)
    assert out.sum() == pytest.approx(x.sum())  # aliasing keeps the signal, it only moves it
    assert out[0, 0, 0] == x[0, 2, 0] + x[0, 8, 0]
    w = Wrap(0.5, rng=np.random.default_rng(0))
    start, length = w.window((10, 110))  # type: ignore[misc]
    assert length == round(100 * (1 - WRAP_ONSET - 0.3 * 0.5))
    assert 10 <= start <= 110 - length
    assert Wrap(0.0).window((10, 110)) is None
    img = simulate(SOURCE, plan(), [w]).image
    ref = simulate(SOURCE, plan(), []).image
    # same matrix, smaller field of view along phase encoding (as on a scanner)
    assert img.GetSize()[1] * img.GetSpacing()[1] < 0.9 * ref.GetSize()[1] * ref.GetSpacing()[1]


def test_blur_truncates_kspace_and_keeps_dc() -> None:
    b = Blur(0.6, rng=np.random.default_rng(0), axes=(1, 2), kind="truncate")
    w = b.window_1d(100)
    assert w[50] == 1.0
    assert (w > 0).sum() <= 100 * b.keep + 2
    assert b.keep == pytest.approx(1 / (BLUR_ONSET + 2.2 * 0.6))
    g = Blur(0.6, rng=np.random.default_rng(0), kind="gaussian")
    assert g.window_1d(100)[50] == pytest.approx(1.0)
    assert Blur(0.0).apply_window(np.ones((2, 4, 4), np.complex64)).sum() == 32
    # high spatial frequencies lose energy as severity grows
    energies = []
    for s in (0.0, 0.3, 0.9):
        blur = Blur(s, rng=np.random.default_rng(0), axes=(0, 1, 2))
        img = arr(simulate(SOURCE, plan(), [blur], noise_free=True).image)
        spec = np.abs(np.fft.fftshift(np.fft.fft(img, axis=2), axes=2)) ** 2
        f = np.abs(np.arange(img.shape[2]) - img.shape[2] // 2) / img.shape[2]
        energies.append(float(spec[..., f > 0.12].sum() / spec.sum()))
    assert energies[0] > energies[1] > energies[2]


def test_nyquist_ghost_appears_half_a_field_of_view_away() -> None:
    k = np.zeros((1, 64, 32), np.complex64)
    img = np.zeros((1, 64, 32), np.complex64)
    img[0, 28:36, 12:20] = 1.0
    k = np.fft.fftshift(np.fft.fftn(img, axes=(1, 2), norm="forward"), axes=(1, 2)).astype(np.complex64)
    g = Ghosting(0.5, rng=np.random.default_rng(0), kind="nyquist")
    out = np.abs(np.fft.ifftn(np.fft.ifftshift(g.apply_kspace(k), axes=(1, 2)), axes=(1, 2), norm="forward"))
    ghost = out[0, (np.arange(28, 36) + 32) % 64, 12:20].mean()
    assert ghost == pytest.approx(0.04 + 0.31 * 0.5, rel=0.35)
    assert Ghosting(0.0).apply_kspace(k) is k


def test_spike_adds_a_few_kspace_samples() -> None:
    from training.artifacts import KContext

    k = np.zeros((8, 16, 16), np.complex64)
    ctx = KContext("3d", np.zeros((8, 16), np.float32), 1.0, k.size)
    out = Spike(0.5, rng=np.random.default_rng(0)).apply_kspace(k, ctx)
    n = int((np.abs(out) > 0).sum())
    assert 1 <= n <= 3
    assert np.abs(out).max() <= 0.4 * 0.5 + 1e-6
    assert np.abs(out[4, 8, 8]) == 0  # never the k-space centre


def test_bias_field_spans_the_requested_range_over_the_head() -> None:
    b = BiasField(0.5, rng=np.random.default_rng(0))
    support = np.zeros((40, 40, 40), bool)
    support[5:35, 5:35, 5:35] = True
    f = b.field((40, 40, 40), support)
    ratio = np.log(np.percentile(f[support], 99) / np.percentile(f[support], 1))
    assert ratio == pytest.approx(BIAS_ONSET + 0.9 * 0.5, rel=0.15)
    assert np.all(BiasField(0.0).apply_object(np.ones((4, 4, 4), np.float32)) == 1)


def test_two_dimensional_acquisitions_work_too() -> None:
    for name in ("motion", "spike", "ghosting"):
        assert _effect(name, 0.6, mode="2d") > 0.001


def test_export_nuisance_keeps_geometry_and_zeroes_background() -> None:
    from training.acquisition import export_nuisance

    img = simulate(SOURCE, plan(), []).image
    out, modes = export_nuisance(img, np.random.default_rng(0), p=(1.0, 1.0, 1.0))
    assert modes == ["mask", "clip", "quantise"]
    assert out.GetSize() == img.GetSize() and out.GetSpacing() == img.GetSpacing()
    assert out.GetOrigin() == img.GetOrigin() and out.GetDirection() == img.GetDirection()
    a, b = arr(img), arr(out)
    assert (a == 0).mean() < 0.01 < 0.2 < (b == 0).mean()  # the Rician floor is gone
    assert b.min() >= 0 and len(np.unique(b)) < 260
    same, none = export_nuisance(img, np.random.default_rng(0), p=(0.0, 0.0, 0.0))
    assert none == [] and same is img
