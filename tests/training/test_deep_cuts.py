"""Simulator 3: clean fields of view that cut the head as deeply as wrap-around folds it."""

from __future__ import annotations

import dataclasses

import numpy as np

from tests.training.phantom import phantom
from tests.training.phantom import plan as phantom_plan
from training.acquisition import AcqPlan, _crop_head, plan_acquisition, simulate
from training.artifacts import Wrap
from training.coverage import slab_coverage


def test_deep_cuts_widen_clean_coverage_with_the_same_random_draws() -> None:
    img = phantom()
    shallow, deep = [], []
    for seed in range(40):
        a = plan_acquisition(img, np.random.default_rng(seed), kind="3d_anat")
        b = plan_acquisition(img, np.random.default_rng(seed), kind="3d_anat", deep_cuts=True)
        # every other draw is the same: orientation, matrix in-plane, the plan's own seed
        assert np.array_equal(a.rotation, b.rotation) and a.seed == b.seed and a.matrix[1:] == b.matrix[1:]
        shallow.append(slab_coverage(img, a))
        deep.append(slab_coverage(img, b))
        assert b.fov_crop[1] <= 0.35 and a.fov_crop[1] <= 0.15
    assert min(shallow) > 0.7  # simulator 2: 3-D slabs cover at least 0.8 of the head (up to rounding)
    assert min(deep) < 0.7 and sum(d < 0.75 for d in deep) >= 5


def test_crop_on_both_sides_keeps_the_middle() -> None:
    img = np.zeros((8, 100, 40), np.float32)
    img[:, 20:80, :] = 1.0  # the head spans rows 20..79 along axis 1
    out, shift = _crop_head(img, 1, 0.3, 2)
    rows = np.nonzero(out.max(axis=(0, 2)) > 0)[0]
    assert out.shape[1] == len(rows) == 42  # 30 % of 60 rows cut: 9 above, 9 below
    assert abs(shift) <= 1.0  # a symmetric cut leaves the centre where it was
    one, _ = _crop_head(img, 1, 0.3, 0)
    assert one.shape[1] == 100 - 20 - 18  # one side: everything below the cut kept, to the image edge


def test_a_deep_cut_never_crops_a_fold_over_away() -> None:
    img = phantom()
    base = dataclasses.replace(phantom_plan(), fov_crop=(1, 0.3, 2))

    def pe_rows(plan: AcqPlan, wrapped: bool) -> int:
        arts = [Wrap(0.6, rng=np.random.default_rng(0))] if wrapped else []
        return int(simulate(img, plan, arts).image.GetSize()[1])  # stored (ro, pe, ss): pe rows

    deep = dataclasses.replace(base, deep_cuts=True)
    uncut = dataclasses.replace(base, fov_crop=(0, 0.0, 0), deep_cuts=True)
    assert pe_rows(deep, wrapped=False) < pe_rows(uncut, wrapped=False)  # clean: cut
    assert pe_rows(deep, wrapped=True) == pe_rows(uncut, wrapped=True)  # wrapped: the fold stays
    assert pe_rows(base, wrapped=True) < pe_rows(uncut, wrapped=True)  # simulator 1/2 unchanged: cut regardless
