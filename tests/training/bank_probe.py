"""What the bank asks of one simulator step, for the tests of each simulator version."""

from __future__ import annotations

from typing import Any

import pytest

from tests.training.phantom import phantom
from training import bank


class _Called(Exception):
    pass


def first_call_kwargs(monkeypatch: pytest.MonkeyPatch, simulator: int, name: str) -> dict[str, Any]:
    """The keyword arguments ``bank.VolumeFactory.make`` passes to ``bank.<name>`` (``render`` or
    ``plan_acquisition``) for the first volume of a synthetic-only bank built by ``simulator``."""
    seen: list[dict[str, Any]] = []

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs)
        raise _Called

    monkeypatch.setattr(bank, "render", lambda subject, rng, contrast=None, **kw: (phantom(), "t1"))
    monkeypatch.setattr(bank, name, spy)
    factory = bank.VolumeFactory(bank.BankConfig(n_volumes=2, seed=0, synthetic_subjects=[20001], real_fraction=0.0,
                                                 simulator=simulator), real=[])
    monkeypatch.setattr(factory, "subject", lambda seed: None)
    with pytest.raises(_Called):
        factory.make(0)
    assert len(seen) == 1
    return seen[0]
