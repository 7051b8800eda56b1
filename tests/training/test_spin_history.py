"""Simulator 6: spin history of moving 2-D EPI and band-by-band timing of multiband slices (the version ladder:
test_simulator_versions)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import SimpleITK as sitk

from tests.training.phantom import phantom
from training.acquisition import AcqPlan, draw_spin, plan_acquisition, simulate, spin_history_map, time_map
from training.artifacts import Motion, Segment


def _epi(seed: int = 3, **kw: bool) -> AcqPlan:
    plan = plan_acquisition(phantom(), np.random.default_rng(seed), kind="2d_epi", spin_history=True, **kw)
    assert plan.order == "single_shot" and plan.spin[0] > 0
    return plan


def _still_then(after: Segment) -> list[Segment]:
    return [Segment(0.0, after.t0, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0)), after]


def test_spin_history_changes_only_the_spin_field_of_epi_plans() -> None:
    img = phantom()
    for seed in range(12):
        kind = "2d_epi" if seed % 3 else "2d_anat"
        a = plan_acquisition(img, np.random.default_rng(seed), kind=kind, multiband=True)
        b = plan_acquisition(img, np.random.default_rng(seed), kind=kind, multiband=True, spin_history=True)
        for f in dataclasses.fields(a):
            if f.name != "spin":
                assert np.array_equal(np.asarray(getattr(a, f.name)), np.asarray(getattr(b, f.name))), f.name
        assert a.spin == (0.0, 0.0, 0.0) and "spin" not in a.describe()
        assert (b.spin[0] > 0) == (kind == "2d_epi")


def test_draw_spin_ranges_near_the_ernst_angle() -> None:
    for i in range(200):
        factor = 1 + i % 2
        tr, t1, flip = draw_spin(np.random.default_rng(i), factor)
        assert (0.5 <= tr <= 1.5) if factor > 1 else (1.5 <= tr <= 3.0)
        assert 0.9 <= t1 <= 2.0
        assert abs(flip - math.degrees(math.acos(math.exp(-tr / 1.4)))) <= 10.0 + 1e-9


def test_multiband_slices_share_their_time_from_simulator_6_only() -> None:
    plan = _epi(seed=1, multiband=True)
    factor = plan.sms[0]
    assert factor > 1
    n_ss = plan.matrix[0]
    gap = n_ss // factor
    banded = time_map(plan)
    single = time_map(dataclasses.replace(plan, spin=(0.0, 0.0, 0.0)))
    for s in range(gap):
        assert np.array_equal(banded[s], banded[s + gap])  # excited together
    assert not np.array_equal(single[0], single[gap])  # simulator 5 kept single-band timing
    assert len(np.unique(banded[:, 0])) == gap  # one time per band


def test_no_through_plane_motion_leaves_the_steady_state() -> None:
    plan = _epi()
    time = time_map(plan)
    still = spin_history_map(plan, [Segment(0.0, 1.0, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0))], time, plan.pe_window)
    assert np.allclose(still, 1.0)
    in_plane = spin_history_map(plan, _still_then(Segment(0.5, 1.0, (0.0, 0.0, 0.0), (4.0, -3.0, 0.0))), time,
                                plan.pe_window)
    assert np.allclose(in_plane, 1.0)


def test_a_one_slice_shift_darkens_recently_excited_tissue_and_brightens_fresh_tissue() -> None:
    plan = _epi()
    tr, t1, flip = plan.spin
    n_ss, n_pe, _ = plan.matrix
    thick = plan.box[0] / n_ss
    time = time_map(plan)
    t_slice = time[:, n_pe // 2]
    ratio = spin_history_map(plan, _still_then(Segment(0.5, 1.0, (0.0, 0.0, 0.0), (0.0, 0.0, thick))), time,
                             plan.pe_window)
    e, c = math.exp(-tr / t1), math.cos(math.radians(flip))
    mss = (1 - e) / (1 - e * c)
    moved = t_slice >= 0.5
    assert np.allclose(ratio[~moved], 1.0)  # acquired before the move
    # the moved tissue of slice s sat in slice s + 1 before the move; the last slice's came from outside the slab
    top = n_ss - 1
    assert moved[top] and ratio[top].mean() == pytest.approx(1 / mss, rel=1e-5)
    # interior moved slices whose source slice s + 1 was excited (at the old pose) earlier in this volume
    checked = [s for s in np.nonzero(moved)[0] if s < top and t_slice[s + 1] < 0.5]
    assert checked
    for s in checked:
        tau = t_slice[s] - t_slice[s + 1]
        expected = (1 - (1 - mss * c) * math.exp(-tau * tr / t1)) / mss
        assert ratio[s].mean() == pytest.approx(expected, rel=1e-4)
        assert expected < 1.0  # recovered for less than a TR: darker


def test_spin_history_in_a_simulated_moving_epi() -> None:
    img = phantom()
    plan = dataclasses.replace(_epi(seed=2), sms=(1, 1, 0.0))
    off = dataclasses.replace(plan, spin=(0.0, 0.0, 0.0))

    def stored(p: AcqPlan, artifacts: list[Motion]) -> np.ndarray:
        return sitk.GetArrayFromImage(simulate(img, p, artifacts, noise_free=True).image)

    # no motion: the tissue stays at its steady state, the same image as without spin history
    assert np.allclose(stored(plan, []), stored(off, []), atol=1e-4)
    # a fixed move (no fitting): spin history changes the image besides the poses
    def moving() -> list[Motion]:
        return [Motion(0.8, voxel_mm=plan.spacing()[0], rng=np.random.default_rng(5), times=(0.3,))]
    assert not np.allclose(stored(plan, moving()), stored(off, moving()), atol=1e-3)
