"""The synthetic subjects shared by a run's bank workers (training/bank.py ``SubjectCache``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training import bank as bank_mod
from training.bank import Bank, BankConfig, SubjectCache, build_bank
from training.synth import make_subject


def _count_renders(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []

    def counted(seed: int, margin: int = 30, face: bool = False) -> object:
        calls.append(seed)
        return make_subject(seed, margin=margin, face=face)

    monkeypatch.setattr(bank_mod, "make_subject", counted)
    return calls


def test_a_stored_subject_is_the_subject(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_renders(monkeypatch)
    cache = SubjectCache(tmp_path / "subjects")
    first = cache.get(3, face=False)
    again = cache.get(3, face=False)  # read back from disk, not rendered again
    assert calls == [3]
    assert np.array_equal(first.labels, again.labels) and np.array_equal(first.texture, again.texture)
    assert again.origin == first.origin and again.labels.dtype == np.uint8 and again.texture.dtype == np.float16
    assert [p.name for p in (tmp_path / "subjects").iterdir()] == ["subject_3.npz"]  # no temporary file left


def test_banks_built_with_the_cache_hold_the_same_volumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = BankConfig(n_volumes=4, seed=11, synthetic_subjects=[0], real_fraction=0.0, shard_size=2,
                     spec={**BankConfig(1, 0, [0]).spec, "slice_size": 64, "slices_per_plane": 2})
    plain = build_bank(tmp_path / "plain", cfg, [], workers=1, progress=False)
    calls = _count_renders(monkeypatch)
    cached = build_bank(tmp_path / "cached", cfg, [], workers=2, progress=False, subjects=tmp_path / "subjects")
    # the two worker processes stored their subject in the shared folder
    assert (tmp_path / "subjects" / "subject_0.npz").exists()
    other = build_bank(tmp_path / "again", cfg, [], workers=1, progress=False, subjects=tmp_path / "subjects")
    # built in this process, the third bank read the subject instead of rendering it (the forked workers' renders
    # are not counted here)
    assert calls == []
    a, b, c = (Bank.open(p) for p in (plain, cached, other))
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.labels, c.labels)
    for i in range(len(a)):
        assert np.array_equal(a.get(i)[0], b.get(i)[0]) and np.array_equal(a.get(i)[0], c.get(i)[0])


def test_a_worker_holds_few_subjects_when_they_are_on_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_renders(monkeypatch)
    monkeypatch.setattr(bank_mod.VolumeFactory, "HELD_SUBJECTS", 2)  # fewer renders for the test
    cfg = BankConfig(n_volumes=1, seed=0, synthetic_subjects=list(range(3)), real_fraction=0.0)
    held = bank_mod.VolumeFactory(cfg, [], subjects=SubjectCache(tmp_path / "subjects"))
    kept = bank_mod.VolumeFactory(cfg, [])
    first = held.subject(0)
    held.subject(1)
    assert held.subject(0) is first  # used again, from memory: now the most recent
    held.subject(2)
    kept.subject(1)
    kept.subject(2)
    kept.subject(0)
    assert list(held._subjects) == [0, 2]  # bounded with a cache; 1, the least recently used, went first
    assert sorted(kept._subjects) == [0, 1, 2]  # without one every render is kept
    again = held.subject(1)  # read back from disk, not rendered again (one render here, one by ``kept``)
    assert calls.count(1) == 2 and np.array_equal(again.texture, kept._subjects[1].texture)
