"""``--net-seed``: another run of the same recipe on the same banks (linked, not rebuilt), to measure how much a
result moves from one training run to the next without any change of data."""

from __future__ import annotations

from pathlib import Path

import torch

from training import train

from .phantom import head_folder, linked_run, tiny_run

TINY = tiny_run(5)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = torch.load(run / "model.pt", weights_only=False)["model"]
    return state


def test_net_seed_reuses_banks_and_changes_only_the_network(tmp_path: Path) -> None:
    heads = head_folder(tmp_path)
    base = tmp_path / "base"
    train.train(train.parse_args(["--out", str(base), "--nifti", str(heads), *TINY]))
    shards = sorted((base / "bank_train").glob("shard_*/labels.npy"))
    stamps = [p.stat().st_mtime_ns for p in shards]

    other = linked_run(tmp_path, "other", base)
    train.train(train.parse_args(["--out", str(other), "--nifti", str(heads), *TINY, "--net-seed", "6"]))
    same = linked_run(tmp_path, "same", base)
    train.train(train.parse_args(["--out", str(same), "--nifti", str(heads), *TINY, "--net-seed", "5"]))

    # the banks were reused as they were, and the split is the data seed's
    assert [p.stat().st_mtime_ns for p in shards] == stamps
    assert (other / "split.json").read_text() == (base / "split.json").read_text()
    state = torch.load(other / "model.pt", weights_only=False)
    assert state["seeds"] == {"data": 5, "network": 6}
    assert state["data"]["bank_config"]["seed"] == 5 * 1000 + 1
    # another network seed trains another network; the data seed's own value reproduces the default run
    a, b, c = _weights(base), _weights(other), _weights(same)
    assert any(not torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(a[k], c[k]) for k in a)
