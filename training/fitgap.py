"""How well a trained network separates the artifacts of its own training bank, against its validation bank.

``python -m training.fitgap --run runs/NAME [--volumes 400]``

For a random sample of volumes of each bank (the same simulated volumes the network was trained and calibrated
on, without augmentation), per artifact: the ROC AUC of the volume probability, the bank's positives against its
clean volumes, for every positive and for the mild ones (severity below 0.4), split by source (synthetic heads,
real heads). It tells two failures apart:

- an artifact the network cannot separate even on its training bank is **underfitted**: too little training or
  capacity, or positives that cannot be seen (``python -m training.effect`` measures the latter);
- one it separates on the training bank but not on the validation bank (new heads) **does not generalise**:
  too few heads, or a validation head unlike them.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from qc_daemon.artifacts import ARTIFACTS
from qc_daemon.imaging.preprocess import PreprocessSpec
from training.bank import RESCAN_SEVERITY, Bank
from training.export import load_net
from training.train import auc, predict

GROUPS = ("synthetic", "real")


@dataclass(frozen=True)
class Cell:
    """One artifact's separation in one bank and source group."""

    n_pos: int
    auc: float
    n_mild: int
    auc_mild: float


@dataclass(frozen=True)
class GroupFit:
    bank: str
    group: str
    n: int
    n_clean: int
    cells: dict[str, Cell]


def source_group(meta: dict[str, object]) -> str:
    return "synthetic" if str(meta.get("source", "")).startswith("synthetic") else "real"


def separation(probs: np.ndarray, labels: np.ndarray, severity: np.ndarray) -> dict[str, Cell]:
    """Per artifact: AUC of positives (all; mild) against the volumes with no artifact at all."""
    clean = labels.sum(axis=1) == 0
    out = {}
    for j, name in enumerate(ARTIFACTS):
        pos = labels[:, j] > 0
        mild = pos & (severity[:, j] < RESCAN_SEVERITY)
        s = probs[:, j]

        def sep(sel: np.ndarray, s: np.ndarray = s) -> float:
            return auc(np.r_[s[sel], s[clean]], np.r_[np.ones(int(sel.sum())), np.zeros(int(clean.sum()))])

        out[name] = Cell(int(pos.sum()), sep(pos), int(mild.sum()), sep(mild))
    return out


def fit_groups(probs: np.ndarray, labels: np.ndarray, severity: np.ndarray, groups: Sequence[str],
               bank_name: str) -> list[GroupFit]:
    g = np.asarray(groups)
    out = []
    for group in GROUPS:
        sel = g == group
        if sel.any():
            out.append(GroupFit(bank_name, group, int(sel.sum()), int((labels[sel].sum(axis=1) == 0).sum()),
                                separation(probs[sel], labels[sel], severity[sel])))
    return out


def measure(run: Path, volumes: int, seed: int = 0, banks: Sequence[str] = ("bank_train", "bank_val"),
            checkpoint: str = "model.pt") -> list[GroupFit]:
    net, state = load_net(run / checkpoint)
    n = PreprocessSpec.from_dict(state["spec"]).slices_per_volume
    out: list[GroupFit] = []
    for name in banks:
        bank = Bank.open(run / name)
        idx = np.sort(np.random.default_rng(seed).permutation(len(bank))[:volumes])
        pred = predict(net, bank, n, indices=idx)
        groups = [source_group(bank.meta[int(i)]) for i in idx]
        out += fit_groups(pred["probs"], bank.labels[idx], bank.severity[idx], groups, name)
    return out


def report(rows: Sequence[GroupFit]) -> str:
    head = "| bank | heads | volumes (clean) | " + " | ".join(ARTIFACTS) + " |"
    lines = ["AUC of positives against clean volumes, all / mild (positives in brackets)", "", head,
             "|" + "---|" * (3 + len(ARTIFACTS))]
    for r in rows:
        cells = [f"{c.auc:.2f} / {c.auc_mild:.2f} ({c.n_pos}/{c.n_mild})" for c in (r.cells[a] for a in ARTIFACTS)]
        lines.append(f"| {r.bank} | {r.group} | {r.n} ({r.n_clean}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.fitgap", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="a training run folder (model.pt and its banks)")
    p.add_argument("--volumes", type=int, default=400, help="volumes sampled from each bank")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(report(measure(args.run, args.volumes, args.seed)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
