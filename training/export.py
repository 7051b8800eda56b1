"""Export a trained run to one ONNX file with its metadata, and check ONNX Runtime against torch.

``python -m training.export --run runs/NAME --out models/NAME.onnx [--name ... --version ...]``

The file holds the weights (no external ``.onnx.data``) and, in ``metadata_props['qc_model']``, a JSON
document: name, version, artifact names in output order, thresholds (per artifact and for the rescan score),
the input specification (preprocessing parameters, input and output names and shapes), the
out-of-distribution gate, and a description and SHA-256 hash of the training data. The export fails when the
largest absolute difference between ONNX Runtime and torch exceeds ``--tolerance`` (1e-4).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from qc_daemon.artifacts import ARTIFACTS, RESCAN_SCORE
from qc_daemon.imaging.preprocess import PreprocessSpec
from qc_daemon.scoring.model import METADATA_KEY, OUTPUTS
from training.net import ExportWrapper, PooledNet, build

log = logging.getLogger("training.export")
INPUTS = ("slices", "side")


def load_net(checkpoint: Path) -> tuple[PooledNet, dict[str, Any]]:
    state = torch.load(checkpoint, weights_only=False, map_location="cpu")
    net = build(state["config"])
    net.load_state_dict(state["model"])
    net.eval()
    return net, state


def training_data_hash(run: Path, state: dict[str, Any]) -> str:
    """SHA-256 over the split, the bank configurations and the real training files' bytes."""
    h = hashlib.sha256()
    for name in ("split.json", "bank_train/bank.json", "bank_val/bank.json"):
        p = run / name
        if p.exists():
            h.update(name.encode())
            h.update(p.read_bytes())
    h.update(json.dumps(state.get("data", {}), sort_keys=True, default=str).encode())
    return h.hexdigest()


def build_metadata(run: Path, state: dict[str, Any], name: str, version: str, n_slices: int) -> dict[str, Any]:
    calib = state["calibration"]
    spec = PreprocessSpec.from_dict(state["spec"])
    split = json.loads((run / "split.json").read_text()) if (run / "split.json").exists() else {}
    thresholds = {a: round(float(calib["thresholds"][a]), 4) for a in ARTIFACTS}
    thresholds[RESCAN_SCORE] = round(float(calib["thresholds"][RESCAN_SCORE]), 4)
    ood = calib["ood"]
    return {
        "name": name,
        "version": version,
        "artifacts": list(ARTIFACTS),
        "thresholds": thresholds,
        "threshold_rule": f"per artifact: the {1 - calib['far_target']:.0%} quantile of the probability on "
                          f"{calib['n_clean_val']} clean validation volumes (+0.01)",
        "input": {
            "preprocess": spec.to_dict(),
            "module": "qc_daemon.imaging.preprocess.prepare",
            "inputs": {"slices": [n_slices, 3, spec.slice_size, spec.slice_size], "side": [n_slices, 3]},
            "outputs": {"probabilities": [len(ARTIFACTS)], "rescan": [1], "severity": [len(ARTIFACTS)],
                        "slice_probabilities": [n_slices, len(ARTIFACTS) + 1], "embedding": [len(ood["mean"])]},
            "normalisation": f"divide by the {spec.norm_percentile}th percentile of the foreground, clip to "
                             f"[0, {spec.clip_max}]",
        },
        "ood": {"embedding_mean": [round(v, 6) for v in ood["mean"]],
                "embedding_std": [round(v, 6) for v in ood["std"]],
                "embedding_threshold": round(float(ood["threshold"]), 4),
                "min_slices": 10, "min_inplane": 32, "max_negative_fraction": 0.02, "min_extent_mm": 50.0,
                "max_spacing_mm": 10.0},
        "training_data": {
            "description": state.get("data_description", "simulated acquisitions (k-space artifacts) of real "
                                     "BSD-licensed brains and synthetic MNI152-based heads; see models/README.md"),
            "real_training_volumes": split.get("real_train", []),
            "real_validation_volumes": split.get("real_validation_only", []),
            "synthetic_training_subjects": len(split.get("synthetic_train_subjects", [])),
            "bank_volumes": state.get("data", {}).get("bank_volumes"),
            "val_volumes": state.get("data", {}).get("val_volumes"),
            "sources": split.get("sources", {}),
        },
        "training_data_hash": training_data_hash(run, state),
        "validation_auc": {k: (round(v, 4) if v == v else None) for k, v in calib.get("val_auc", {}).items()},
        "timing": state.get("timing", {}),
        # runs from before --amp have no entry: they trained in float32
        "precision": state.get("precision", {"training": "float32"}),
        # per-artifact loss weights of the training (--artifact-weights); None: all equal
        "artifact_weights": state.get("artifact_weights"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "torch": torch.__version__,
        "onnxruntime_checked": ort.__version__,
    }


def example_input(spec: PreprocessSpec, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    n = spec.slices_per_volume
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((n, 3, spec.slice_size, spec.slice_size), generator=g)
    side = torch.zeros((n, 3))
    return x, side


def export(run: Path, out: Path, name: str, version: str, tolerance: float = 1e-4,
           checkpoint: Path | None = None, parity_inputs: list[tuple[np.ndarray, np.ndarray]] | None = None) -> Path:
    net, state = load_net(checkpoint or run / "model.pt")
    spec = PreprocessSpec.from_dict(state["spec"])
    wrapper = ExportWrapper(net).eval()
    x, side = example_input(spec)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(wrapper, (x, side), str(out), input_names=list(INPUTS), output_names=list(OUTPUTS),
                      dynamo=True, external_data=False, opset_version=18)
    model = onnx.load(str(out))
    meta = build_metadata(run, state, name, version, x.shape[0])
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = json.dumps(meta)
    model.doc_string = f"{name} {version}: MRI artifact scores ({', '.join(ARTIFACTS)}) and rescan score"
    onnx.checker.check_model(model)
    onnx.save_model(model, str(out), save_as_external_data=False)
    stray = out.with_name(out.name + ".data")
    if stray.exists():
        stray.unlink()
    # parity: ONNX Runtime (2 threads, as in the daemon) against eager torch
    sess_opts = ort.SessionOptions()
    sess_opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(out), sess_opts, providers=["CPUExecutionProvider"])
    cases = [(x.numpy(), side.numpy()), *list(parity_inputs or [])]
    worst = 0.0
    with torch.no_grad():
        for xs, ss in cases:
            ref = [t.numpy() for t in wrapper(torch.from_numpy(xs), torch.from_numpy(ss))]
            got = sess.run(list(OUTPUTS), {"slices": xs.astype(np.float32), "side": ss.astype(np.float32)})
            for r, g in zip(ref, got, strict=True):
                worst = max(worst, float(np.max(np.abs(r - g))))
    log.info("ONNX Runtime vs torch: max abs difference %.2e (tolerance %.0e)", worst, tolerance)
    if worst > tolerance:
        out.unlink()
        raise RuntimeError(f"ONNX Runtime differs from torch by {worst:.2e} > {tolerance:.0e}")
    (out.with_suffix(".parity.json")).write_text(json.dumps({"max_abs_diff": worst, "cases": len(cases)}))
    return out


def bank_examples(run: Path, k: int = 3) -> list[tuple[np.ndarray, np.ndarray]]:
    """A few real network inputs from the validation bank, for the parity check."""
    from training.bank import Bank

    folder = run / "bank_val"
    if not folder.exists():
        return []
    bank = Bank.open(folder)
    return [bank.get(i) for i in range(min(k, len(bank)))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="models/NAME.onnx")
    p.add_argument("--name", default="qc-brain-2p5d")
    p.add_argument("--version", default="1.0.0")
    p.add_argument("--tolerance", type=float, default=1e-4)
    p.add_argument("--checkpoint", type=Path)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    for noisy in ("onnxscript", "torch.onnx", "onnx_ir"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    torch.set_num_threads(2)
    out = export(args.run, args.out, args.name, args.version, args.tolerance, args.checkpoint,
                 bank_examples(args.run))
    log.info("wrote %s (%.1f MB)", out, out.stat().st_size / 1e6)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
