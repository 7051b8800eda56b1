"""Simulator 5: multiband 2-D EPI with slice leakage (the version ladder: test_simulator_versions)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tests.training.phantom import phantom
from training.acquisition import draw_sms, plan_acquisition, slice_leakage


def test_multiband_changes_only_the_sms_field_of_epi_plans() -> None:
    img = phantom()
    factors = []
    for seed in range(30):
        kind = "2d_epi" if seed % 3 else "2d_anat"
        a = plan_acquisition(img, np.random.default_rng(seed), kind=kind)
        b = plan_acquisition(img, np.random.default_rng(seed), kind=kind, multiband=True)
        assert a.sms == (1, 1, 0.0)
        for f in dataclasses.fields(a):
            if f.name != "sms":
                assert np.array_equal(np.asarray(getattr(a, f.name)), np.asarray(getattr(b, f.name))), f.name
        assert "sms" not in a.describe()
        if kind == "2d_anat":
            assert b.sms == (1, 1, 0.0)  # multiband is an EPI thing here
        else:
            factors.append(b.sms[0])
            if b.sms[0] > 1:
                assert b.describe()["sms"]["factor"] == b.sms[0]
            assert b.matrix[0] // b.sms[0] >= 6 or b.sms[0] == 1
    assert any(f > 1 for f in factors) and any(f == 1 for f in factors)  # most EPI, not all


def test_draw_sms_ranges() -> None:
    draws = [draw_sms(np.random.default_rng(i), 40) for i in range(300)]
    multi = [d for d in draws if d[0] > 1]
    assert 0.55 < len(multi) / len(draws) < 0.85
    assert {d[0] for d in multi} <= {2, 3, 4, 6} and {d[1] for d in multi} == {1, 2, 3, 4}
    assert all(0.005 <= d[2] <= 0.06 for d in multi)
    assert all(d == (1, 1, 0.0) for d in (draw_sms(np.random.default_rng(i), 8) for i in range(50)))  # too few


def test_slice_leakage_adds_a_weak_shifted_copy_of_the_partner_slice() -> None:
    n_ss, n_pe, n_ro = 12, 32, 16
    img = np.zeros((n_ss, n_pe, n_ro), np.complex64)
    img[2, 4:8, 4:8] = 1.0  # one small bright square, in slice 2 only
    k = np.fft.fftshift(np.fft.fft(img, axis=1), axes=1).astype(np.complex64)  # hybrid space, ky centred
    out = slice_leakage(k, (3, 2, 0.05), np.random.default_rng(0))
    back = np.abs(np.fft.ifft(np.fft.ifftshift(out, axes=1), axis=1))
    # multiband 3 over 12 slices: slices 2, 6 and 10 are excited together; slice 6 leaks into 2, 2 into 10 and 6
    for s, j in ((10, 1), (6, 2)):
        # slice s = 2 - j * 4 (mod 12) receives slice 2 shifted by j * FOV / 2 along pe
        shift = (j * n_pe // 2) % n_pe
        copy = back[s, 4 + shift:8 + shift, 4:8]
        assert 0.02 < copy.mean() < 0.08  # leak 0.05 times a factor in [0.5, 1.5]
        assert back[s].sum() == pytest.approx(copy.sum(), rel=1e-3)  # nothing else in that slice
    assert np.allclose(back[2], np.abs(img[2]), atol=1e-5)  # slice 2's partners are empty: unchanged
    assert back[[0, 1, 3, 4, 5, 7, 8, 9, 11]].max() < 1e-5  # slices not excited with slice 2 get nothing
    assert slice_leakage(k, (1, 1, 0.0), np.random.default_rng(0)) is k
