"""Join runs trained apart into one ensemble model: ``python -m training.ensemble --runs runs/A runs/B ... --out
runs/NAME``.

The runs must share the data split and the preprocessing (trained by ``python -m training.train`` with the same
data options, e.g. other seeds or epochs, or on other machines). Their slice logits are averaged; one volume
pooling and one calibration are fitted on the first run's validation bank, as ``--members`` does within one
command. The output folder is a run folder for ``python -m training.export``: ``model.pt``, ``calibration.json``,
the first run's ``split.json`` and links to its banks.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from qc_daemon.imaging.preprocess import PreprocessSpec
from training.bank import Bank
from training.net import EnsembleQCNet, QCNet, build
from training.train import finish

log = logging.getLogger("training.ensemble")


def load_member(run: Path) -> tuple[QCNet, dict[str, Any]]:
    state = torch.load(run / "model.pt", weights_only=False, map_location="cpu")
    net = build(state["config"])
    if not isinstance(net, QCNet):
        raise SystemExit(f"{run}: already an ensemble; give its member runs instead")
    net.load_state_dict(state["model"])
    return net.eval(), state


def join(runs: list[Path], out: Path, far: float) -> Path:
    if len(runs) < 2:
        raise SystemExit("an ensemble needs at least two runs")
    members, states = zip(*(load_member(r) for r in runs), strict=True)
    splits = [(r / "split.json").read_text() if (r / "split.json").exists() else "" for r in runs]
    for r, state, split in zip(runs[1:], states[1:], splits[1:], strict=True):
        if state["spec"] != states[0]["spec"]:
            raise SystemExit(f"{r}: preprocessing differs from {runs[0]}: {state['spec']} != {states[0]['spec']}")
        if split != splits[0]:
            raise SystemExit(f"{r}: data split differs from {runs[0]} (held-out heads could leak into training)")
    out.mkdir(parents=True, exist_ok=True)
    for name in ("bank_train", "bank_val"):
        link = out / name
        if not link.exists():
            link.symlink_to((runs[0] / name).resolve(), target_is_directory=True)
    if splits[0]:
        shutil.copyfile(runs[0] / "split.json", out / "split.json")
    val = Bank.open(out / "bank_val")
    spec = states[0]["spec"]
    n = PreprocessSpec.from_dict(spec).slices_per_volume
    net = EnsembleQCNet(list(members), members[0].top_k)
    calib = finish(net, val, n, far, fit_pooling=True)
    (out / "calibration.json").write_text(json.dumps(calib, indent=2))
    timing = {"members": [s.get("timing", {}) for s in states],
              "train_s": round(sum(float(s.get("timing", {}).get("train_s", 0)) for s in states), 1)}
    torch.save({"model": net.state_dict(), "config": net.config, "spec": spec, "calibration": calib,
                "data": {**states[0].get("data", {}), "members": [str(r) for r in runs]},
                "history": [], "timing": timing}, out / "model.pt")
    log.info("ensemble of %d runs: %s", len(runs), out / "model.pt")
    return out / "model.pt"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.ensemble", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=Path, nargs="+", required=True, help="run folders with a model.pt each")
    p.add_argument("--out", type=Path, required=True, help="new run folder (runs/NAME)")
    p.add_argument("--far", type=float, default=0.01, help="target false-alarm rate on clean validation volumes")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    torch.set_num_threads(args.threads)
    join(args.runs, args.out, args.far)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
