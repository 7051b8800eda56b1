"""The simulator's version ladder: what each ``--simulator`` asks of rendering and planning, and that the held-out
test set is drawn by none of the later versions (so every model's evaluation is on the same volumes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.training.phantom import phantom
from training import bank, evaluate
from training.synth import LOW_RES_PRESETS

# keyword -> (function the bank passes it to, first simulator version that sets it)
LADDER = {"deep_cuts": ("plan_acquisition", 3), "low_contrast": ("render", 4), "multiband": ("plan_acquisition", 5),
          "spin_history": ("plan_acquisition", 6), "face": ("make_subject", 7),
          "real_shading": ("plan_acquisition", 8)}


class _Planned(Exception):
    pass


@pytest.mark.parametrize("simulator", sorted(bank.SIMULATORS))
def test_each_version_asks_for_its_own_and_the_earlier_additions(monkeypatch: pytest.MonkeyPatch,
                                                                   simulator: int) -> None:
    calls: dict[str, dict[str, Any]] = {}

    def render(subject: object, rng: np.random.Generator, contrast: str | None = None, **kw: Any) -> Any:
        calls["render"] = kw
        return phantom(), "t1"

    def plan(*args: Any, **kw: Any) -> Any:
        calls["plan_acquisition"] = kw
        raise _Planned  # nothing after planning matters here

    def make_subject(seed: int, **kw: Any) -> None:
        calls["make_subject"] = kw

    monkeypatch.setattr(bank, "render", render)
    monkeypatch.setattr(bank, "plan_acquisition", plan)
    monkeypatch.setattr(bank, "make_subject", make_subject)
    factory = bank.VolumeFactory(bank.BankConfig(n_volumes=2, seed=0, synthetic_subjects=[20001], real_fraction=0.0,
                                                 simulator=simulator), real=[])
    with pytest.raises(_Planned):
        factory.make(0)
    asked = {key: bool(calls[fn].get(key, False)) for key, (fn, _) in LADDER.items()}
    assert asked == {key: simulator >= first for key, (_, first) in LADDER.items()}


def test_the_held_out_test_set_uses_none_of_the_later_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    rendered: list[tuple[str | None, dict[str, Any]]] = []
    planned: list[dict[str, Any]] = []
    subjects: list[dict[str, Any]] = []
    real_plan = evaluate.plan_acquisition

    def render(subject: object, rng: np.random.Generator, contrast: str | None = None, **kw: Any) -> Any:
        rendered.append((contrast, kw))
        return phantom(), contrast or "random"

    def plan(*args: Any, **kw: Any) -> Any:
        planned.append(kw)
        return real_plan(*args, **kw)

    monkeypatch.setattr(evaluate, "render", render)
    monkeypatch.setattr(evaluate, "plan_acquisition", plan)
    monkeypatch.setattr(evaluate, "make_subject", lambda seed, **kw: subjects.append(kw))
    maker = evaluate.CaseMaker(Path("unused"), seed=0)
    acquisitions = [maker.acquisition(evaluate.TestCase(i, "synthetic:20001", {})) for i in range(40)]
    assert len(rendered) == len(planned) == 40
    assert subjects  # the synthetic subject was made by the evaluation's own call
    assert {"2d_epi", "3d_anat"} <= {a.kind for a in acquisitions}
    for key, (fn, _) in LADDER.items():
        kwargs = {"render": [kw for _, kw in rendered], "plan_acquisition": planned, "make_subject": subjects}[fn]
        assert not any(kw.get(key, False) for kw in kwargs), key
    assert all(not a.plan.deep_cuts and a.plan.sms == (1, 1, 0.0) and a.plan.spin == (0.0, 0.0, 0.0)
               for a in acquisitions)
    # low-resolution kinds draw the original presets only (simulator 4's are not among them)
    assert {c for c, _ in rendered if c is not None} <= set(LOW_RES_PRESETS)


@pytest.mark.parametrize("kind", ["3d_anat", "2d_anat", "2d_epi", "3d_lowres"])
def test_real_shading_widens_the_clean_shading_of_anatomical_acquisitions_only(kind: str) -> None:
    from dataclasses import asdict, replace

    from training.acquisition import CLEAN_SHADING, CLEAN_SHADING_WIDE, plan_acquisition

    for seed in range(6):
        before = plan_acquisition(phantom(), np.random.default_rng(seed), kind=kind)
        after = plan_acquisition(phantom(), np.random.default_rng(seed), kind=kind, real_shading=True)
        wide = kind in ("2d_epi", "3d_lowres")
        # the same draw, scaled to the wider range: every other part of the plan is the same
        scale = 1.0 if wide else CLEAN_SHADING_WIDE / CLEAN_SHADING
        assert after.bias_beta == pytest.approx(before.bias_beta * scale, rel=1e-9)
        assert before.bias_beta <= (CLEAN_SHADING_WIDE if wide else CLEAN_SHADING)
        same = {k: str(v) for k, v in asdict(replace(after, bias_beta=before.bias_beta)).items()}
        assert same == {k: str(v) for k, v in asdict(before).items()}
