"""Train the QC model: ``python -m training.train --out runs/NAME [data options]``.

Steps (each resumable; a second run with the same ``--out`` continues where the first stopped):

1. the data split (``split.json``): real volumes per subject (IXI: deterministic hash split; NIfTI folders and
   shared DICOM series: every listed volume is training data, hold test volumes out by not listing them, and
   ``--val-nifti-include`` / ``--val-dicom-include`` keep real heads for validation only) and synthetic subjects
   (disjoint seed ranges for train / val);
2. the sample banks (``bank_train/``, ``bank_val/``): simulated acquisitions with artifacts, preprocessed by
   ``qc_daemon.imaging.preprocess`` exactly as in the daemon;
3. training (``last.pt`` after every epoch, ``model.pt`` at the end), with a progress bar; with ``--members K``,
   K networks one after another (``memberI.pt``), joined into one ensemble (``training.net.EnsembleQCNet``);
4. calibration on the validation bank (``calibration.json``): per-artifact thresholds on the clean
   validation volumes (false alarms at most ``--far``), and the statistics of the out-of-distribution gate.

Then ``python -m training.export`` writes the ONNX model and ``python -m training.evaluate`` the metrics
(``python -m training.ensemble`` joins runs trained apart, as ``--members`` does within one command).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import queue
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from qc_daemon.artifacts import ARTIFACTS
from qc_daemon.imaging.preprocess import PreprocessSpec
from training.bank import RESCAN_SEVERITY, SIMULATOR, SIMULATORS, Bank, BankConfig, build_bank
from training.memory import keep_freed_memory
from training.net import N_ART, EnsembleQCNet, PooledNet, QCNet
from training.sources import (
    SourceVolume,
    ixi_volumes,
    nifti_volumes,
    shared_dicom_volumes,
    subject_split,
    write_split,
)

log = logging.getLogger("training.train")
# a threshold is never below this: real data differs from the validation volumes, a flag must mean something
MIN_THRESHOLD = 0.4
GLOBAL_ARTIFACTS = ("noise", "bias_field", "blur")  # visible in every slice: also trained per slice
TRAIN_SUBJECT_BASE, VAL_SUBJECT_BASE, TEST_SUBJECT_BASE = 0, 10_000, 20_000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="run folder (runs/NAME)")
    d = p.add_argument_group("data")
    d.add_argument("--nifti", type=Path, action="append", default=[], help="folder of NIfTI volumes (training)")
    d.add_argument("--nifti-include", default="", help="comma-separated name fragments to keep from --nifti")
    d.add_argument("--dicom-shared", type=Path, help="a shared/data folder (manifest.json, dicom/): real DICOM "
                   "series from it as training heads (every scorable volume; one subject per scanner)")
    d.add_argument("--dicom-include", default="", help="comma-separated series folder names from --dicom-shared")
    d.add_argument("--val-nifti-include", default="",
                   help="name fragments from --nifti kept for validation only: real heads the network never "
                        "sees, on which the volume pooling, thresholds and out-of-distribution gate are fitted")
    d.add_argument("--val-dicom-include", default="",
                   help="series folder names from --dicom-shared kept for validation only (as --val-nifti-include)")
    d.add_argument("--ixi", type=Path, help="IXI folder or IXI-T1.tar/IXI-T2.tar/IXI-PD.tar (or their folder)")
    d.add_argument("--ixi-site", default="", help="keep one IXI site (HH, Guys, IOP); default all")
    d.add_argument("--synthetic-subjects", type=int, default=24, help="synthetic heads for training")
    d.add_argument("--val-synthetic-subjects", type=int, default=4)
    d.add_argument("--real-fraction", type=float, default=0.3, help="share of volumes built from real sources")
    d.add_argument("--bank-volumes", type=int, default=2000)
    d.add_argument("--val-volumes", type=int, default=400)
    d.add_argument("--workers", type=int, default=2, help="simulation processes")
    d.add_argument("--simulator", type=int, choices=sorted(SIMULATORS), default=SIMULATOR,
                   help="; ".join(f"{v}: {what}" for v, what in SIMULATORS.items()))
    d.add_argument("--slice-size", type=int, default=PreprocessSpec.slice_size)
    d.add_argument("--slices-per-plane", type=int, default=PreprocessSpec.slices_per_plane)
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=int, default=6, help="passes over the bank's slices (volumes in volume mode)")
    t.add_argument("--mode", choices=("slice", "volume"), default="slice",
                   help="slice: batches of single slices from many volumes with the volume's labels (default); "
                        "volume: whole volumes, multiple-instance pooling")
    t.add_argument("--batch", type=int, default=128, help="slices per step (volumes per step in volume mode)")
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--weight-decay", type=float, default=1e-4)
    t.add_argument("--widths", default="24,32,64,96,128")
    t.add_argument("--members", type=int, default=1,
                   help="train this many networks one after another (network seeds --net-seed, +1, ...; --epochs each, "
                        "checkpoints memberI.pt) and ship their ensemble: slice logits averaged, pooled and "
                        "calibrated once on the validation bank")
    t.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (smoke tests)")
    t.add_argument("--seed", type=int, default=0, help="seeds the data: split, banks and (by default) the network")
    t.add_argument("--net-seed", type=int, default=None,
                   help="seed of the network's initial weights and slice order only (default --seed): other "
                        "runs of the same recipe on the same banks, to measure run-to-run variation")
    t.add_argument("--threads", type=int, default=2, help="CPU threads for torch")
    t.add_argument("--amp", choices=("off", "bf16"), default="off",
                   help="bf16: mixed-precision training steps (bfloat16 autocast; weights, optimiser, validation, "
                        "calibration and export stay float32, and so does the network's first convolution). "
                        "On the 2-core development CPU (AVX-512 BF16) an epoch took 0.8 of its float32 time; "
                        "off: float32 throughout")
    t.add_argument("--artifact-weights", default="",
                   help="weights of the artifacts' terms in the training loss, as NAME=W,... (the others 1; "
                        "rescaled to a mean of 1 over the artifacts, so the loss keeps its scale): more gradient "
                        "for artifacts the network fits worst on its own training bank (python -m training.fitgap)")
    t.add_argument("--device", default="auto",
                   help="torch device: auto (cuda when present, else cpu), cpu, cuda, cuda:1 ...")
    t.add_argument("--far", type=float, default=0.01, help="target false-alarm rate on clean validation volumes")
    t.add_argument("--no-progress", action="store_true")
    t.add_argument("--return-freed-memory", action="store_true",
                   help="leave glibc's allocator as it is (blocks above 32 MiB mapped and unmapped on every use); "
                        "by default freed memory stays in the process (training.memory), which made a training "
                        "step 1.2 to 1.6 times as fast on the development CPU (docs/benchmarks.md)")
    p.set_defaults(freed_memory_kept=False)  # set by main(), which applies training.memory
    args = p.parse_args(argv)
    if args.members < 1:
        p.error(f"--members must be at least 1, not {args.members}")
    try:
        artifact_weights(args.artifact_weights)
    except ValueError as e:
        p.error(f"--artifact-weights: {e}")
    return args


def artifact_weights(spec: str) -> torch.Tensor | None:
    """Per-artifact loss weights (in ``ARTIFACTS`` order, mean 1) from ``NAME=W,...``; None when not given."""
    if not spec:
        return None
    w = torch.ones(N_ART)
    for item in _names(spec):
        name, sep, value = item.partition("=")
        if not sep or name not in ARTIFACTS:
            raise ValueError(f"{item!r} is not NAME=WEIGHT with NAME one of {', '.join(ARTIFACTS)}")
        try:
            weight = float(value)
        except ValueError:
            raise ValueError(f"{item!r}: the weight is not a number") from None
        if not weight > 0:
            raise ValueError(f"{item!r}: a weight must be above 0")
        w[ARTIFACTS.index(name)] = weight
    out: torch.Tensor = w / w.mean()
    return out


def _names(csv: str) -> list[str]:
    return [s for s in csv.split(",") if s]


def real_sources(args: argparse.Namespace) -> tuple[list[SourceVolume], list[SourceVolume], dict[str, Any]]:
    """(train, val) real volumes and a description for the split file."""
    train: list[SourceVolume] = []
    val: list[SourceVolume] = []
    desc: dict[str, Any] = {}
    include = _names(args.nifti_include)
    val_include = _names(args.val_nifti_include)
    if val_include and not args.nifti:
        raise SystemExit("--val-nifti-include needs --nifti")
    for folder in args.nifti:
        held = nifti_volumes(folder, include=val_include) if val_include else []
        vols = nifti_volumes(folder, include=include)
        if not include:  # every file of the folder except the validation-only ones
            held_names = {h.name for h in held}
            vols = [v for v in vols if v.name not in held_names]
        train += vols
        desc.setdefault("nifti", []).extend(v.name for v in vols)
        if held:
            val += held
            desc.setdefault("nifti_validation_only", []).extend(v.name for v in held)
    dicom_names = _names(args.dicom_include)
    val_dicom = _names(args.val_dicom_include)
    if (dicom_names or val_dicom) and not args.dicom_shared:
        raise SystemExit("--dicom-include and --val-dicom-include need --dicom-shared")
    if args.dicom_shared and dicom_names:
        vols = shared_dicom_volumes(args.dicom_shared, dicom_names)
        train += vols
        desc["dicom"] = {"series": dicom_names, "volumes": len(vols),
                         "subjects": sorted({v.subject for v in vols})}
    if args.dicom_shared and val_dicom:
        vols = shared_dicom_volumes(args.dicom_shared, val_dicom)
        val += vols
        desc["dicom_validation_only"] = {"series": val_dicom, "volumes": len(vols),
                                         "subjects": sorted({v.subject for v in vols})}
    overlap = {v.name for v in train} & {v.name for v in val}
    if overlap:
        raise SystemExit(f"real volumes both in training and validation-only: {', '.join(sorted(overlap))}")
    if args.ixi:
        vols = ixi_volumes(args.ixi, sites=[args.ixi_site] if args.ixi_site else None)
        split_path = args.out / "ixi_split.json"
        write_split(split_path, vols, args.seed)
        train += [v for v in vols if subject_split(v.subject, args.seed) == "train"]
        val += [v for v in vols if subject_split(v.subject, args.seed) == "val"]
        desc["ixi"] = {"path": str(args.ixi), "site": args.ixi_site or "all", "split_file": split_path.name,
                       "n_train": sum(subject_split(v.subject, args.seed) == "train" for v in vols),
                       "n_val": sum(subject_split(v.subject, args.seed) == "val" for v in vols)}
    return train, val, desc


def make_banks(args: argparse.Namespace, spec: PreprocessSpec) -> tuple[Path, Path, dict[str, Any]]:
    train_real, val_real, desc = real_sources(args)
    train_subj = list(range(TRAIN_SUBJECT_BASE, TRAIN_SUBJECT_BASE + args.synthetic_subjects))
    val_subj = list(range(VAL_SUBJECT_BASE, VAL_SUBJECT_BASE + args.val_synthetic_subjects))
    split = {
        "seed": args.seed,
        "real_train": [v.name for v in train_real],
        "real_val": [v.name for v in val_real] or [v.name for v in train_real],
        "real_validation_only": [v.name for v in val_real],
        "synthetic_train_subjects": train_subj,
        "synthetic_val_subjects": val_subj,
        "synthetic_test_subjects_from": TEST_SUBJECT_BASE,
        "sources": desc,
        "note": "validation uses held-out synthetic subjects and the real validation-only subjects; when there "
                "are none, new acquisitions of the real training subjects (thresholds are set on clean "
                "validation volumes)",
    }
    (args.out / "split.json").write_text(json.dumps(split, indent=2))
    cfg_train = BankConfig(n_volumes=args.bank_volumes, seed=args.seed * 1000 + 1, synthetic_subjects=train_subj,
                           real_fraction=args.real_fraction if train_real else 0.0, spec=spec.to_dict(),
                           simulator=args.simulator)
    cfg_val = BankConfig(n_volumes=args.val_volumes, seed=args.seed * 1000 + 2, synthetic_subjects=val_subj,
                         real_fraction=args.real_fraction if (val_real or train_real) else 0.0,
                         clean_fraction=0.45, jitter=0, spec=spec.to_dict(), simulator=args.simulator)
    progress = not args.no_progress
    t0 = time.time()
    # the synthetic subjects are rendered once for the run and shared by the workers (the run's own cache)
    subjects = args.out / "subjects"
    build_bank(args.out / "bank_val", cfg_val, val_real or train_real, workers=args.workers, progress=progress,
               subjects=subjects)
    build_bank(args.out / "bank_train", cfg_train, train_real, workers=args.workers, progress=progress,
               subjects=subjects)
    desc["bank_seconds"] = round(time.time() - t0, 1)
    return args.out / "bank_train", args.out / "bank_val", split


def _augment(x: np.ndarray, side: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Flips and transposes (physically neutral: phase-encoding direction and handedness vary anyway)."""
    if rng.random() < 0.5:
        x = x[..., ::-1]
    if rng.random() < 0.5:
        x = x[..., ::-1, :]
    if rng.random() < 0.5:
        x = np.swapaxes(x, -1, -2)
        side = side[:, [1, 0, 2]]
    return np.ascontiguousarray(x), side


def batches(bank: Bank, batch: int, rng: np.random.Generator, augment: bool,
            order: np.ndarray | None = None) -> Iterator[dict[str, torch.Tensor]]:
    idx = rng.permutation(len(bank)) if order is None else order
    for start in range(0, len(idx), batch):
        sel = idx[start:start + batch]
        xs, ss = [], []
        for i in sel:
            x, s = bank.get(int(i))
            if augment:
                x, s = _augment(x, s, rng)
            xs.append(x)
            ss.append(s)
        labels = bank.labels[sel]
        sev = bank.severity[sel]
        yield {
            "x": torch.from_numpy(np.concatenate(xs)),
            "side": torch.from_numpy(np.concatenate(ss).astype(np.float32)),
            "labels": torch.from_numpy(labels),
            "severity": torch.from_numpy(sev),
            "rescan": torch.from_numpy((sev.max(axis=1) >= RESCAN_SEVERITY).astype(np.float32)),
            "index": torch.from_numpy(np.asarray(sel)),
        }


def slice_batches(bank: Bank, batch: int, rng: np.random.Generator, steps: int,
                  n: int) -> Iterator[dict[str, torch.Tensor]]:
    """Batches of single slices (with their neighbours) from random volumes, labelled with the volume's labels."""
    for _ in range(steps):
        vi = rng.integers(0, len(bank), batch)
        si = rng.integers(0, n, batch)
        xs, ss = [], []
        for i, k in zip(vi, si, strict=True):
            x, s = bank.get_slice(int(i), int(k))
            x, s2 = _augment(x, s[None], rng)
            xs.append(x)
            ss.append(s2[0])
        sev = bank.severity[vi]
        yield {
            "x": torch.from_numpy(np.stack(xs)),
            "side": torch.from_numpy(np.stack(ss).astype(np.float32)),
            "labels": torch.from_numpy(bank.labels[vi]),
            "severity": torch.from_numpy(sev),
            "rescan": torch.from_numpy((sev.max(axis=1) >= RESCAN_SEVERITY).astype(np.float32)),
        }


def slice_loss(out: torch.Tensor, b: dict[str, torch.Tensor], weights: torch.Tensor | None = None) -> torch.Tensor:
    y = b["labels"]
    loss = F.binary_cross_entropy_with_logits(out[:, :N_ART], y, weight=weights)
    loss = loss + 0.5 * F.binary_cross_entropy_with_logits(out[:, N_ART], b["rescan"])
    mask = y > 0
    if mask.any():
        loss = loss + 2.0 * ((torch.sigmoid(out[:, N_ART + 1:]) - b["severity"]) ** 2)[mask].mean()
    return loss


def to_device(b: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in b.items()}


def model_device(net: torch.nn.Module) -> torch.device:
    return next(net.parameters()).device


@torch.no_grad()
def slice_outputs(net: PooledNet, bank: Bank, n: int, batch: int = 8) -> torch.Tensor:
    """Slice logits (V, N, C) of every volume of a bank (on the network's device)."""
    net.eval()
    outs = []
    device = model_device(net)
    for b in batches(bank, batch, np.random.default_rng(0), augment=False, order=np.arange(len(bank))):
        b = to_device(b, device)
        s, _ = net.slice_forward(b["x"].contiguous(memory_format=torch.channels_last), b["side"])
        outs.append(s.reshape(-1, n, s.shape[-1]))
    net.train()
    return torch.cat(outs)


def fit_aggregation(net: PooledNet, slice_logits: torch.Tensor, bank: Bank, steps: int = 400) -> dict[str, float]:
    """Fit the volume pooling mix and the affine calibration on validation volumes (network frozen)."""
    device = slice_logits.device
    labels = torch.from_numpy(bank.labels).to(device)
    sev = torch.from_numpy(bank.severity).to(device)
    rescan = (sev.max(dim=1).values >= RESCAN_SEVERITY).float()
    params = [net.mix, net.calib_a, net.calib_b]
    opt = torch.optim.Adam(params, lr=0.05)
    n = slice_logits.shape[1]
    flat = slice_logits.reshape(-1, slice_logits.shape[-1])
    loss = torch.tensor(0.0, device=device)
    for _ in range(steps):
        v = net.aggregate(flat, n)
        loss = F.binary_cross_entropy_with_logits(v[:, :N_ART], labels)
        loss = loss + 0.5 * F.binary_cross_entropy_with_logits(v[:, N_ART], rescan)
        mask = labels > 0
        loss = loss + 2.0 * ((torch.sigmoid(v[:, N_ART + 1:]) - sev) ** 2)[mask].mean()
        loss = loss + 1e-3 * ((net.calib_a - 1) ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    for p in params:
        p.requires_grad_(False)
    with torch.no_grad():
        return {"val_loss": float(loss), "mix": [round(float(v), 3) for v in torch.sigmoid(net.mix)],  # type: ignore[dict-item]
                "calib_a": [round(float(v), 3) for v in net.calib_a],
                "calib_b": [round(float(v), 3) for v in net.calib_b]}


def prefetch(it: Iterator[dict[str, torch.Tensor]], depth: int = 3) -> Iterator[dict[str, torch.Tensor]]:
    """Read the next batches from disk in a thread while the network trains."""
    q: queue.Queue[Any] = queue.Queue(depth)
    done = object()

    def run() -> None:
        for b in it:
            q.put(b)
        q.put(done)

    threading.Thread(target=run, daemon=True).start()
    while (b := q.get()) is not done:
        yield b


def loss_fn(vol: torch.Tensor, sl: torch.Tensor, b: dict[str, torch.Tensor], n: int,
            weights: torch.Tensor | None = None) -> torch.Tensor:
    y = b["labels"]
    loss = F.binary_cross_entropy_with_logits(vol[:, :N_ART], y, weight=weights)
    loss = loss + 0.5 * F.binary_cross_entropy_with_logits(vol[:, N_ART], b["rescan"])
    mask = y > 0
    if mask.any():
        sev_pred = torch.sigmoid(vol[:, N_ART + 1:])
        loss = loss + 2.0 * ((sev_pred - b["severity"]) ** 2)[mask].mean()
    gi = [ARTIFACTS.index(a) for a in GLOBAL_ARTIFACTS]
    ys = y[:, gi].repeat_interleave(n, dim=0)
    loss = loss + 0.2 * F.binary_cross_entropy_with_logits(sl[:, gi], ys)
    return loss


@torch.no_grad()
def predict(net: PooledNet, bank: Bank, n: int, batch: int = 8,
            indices: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Volume probabilities, rescan, severity and embeddings for every volume of a bank (in order), or for the
    volumes ``indices`` (in that order)."""
    net.eval()
    probs, rescan, sev, emb = [], [], [], []
    order = np.arange(len(bank)) if indices is None else np.asarray(indices)
    device = model_device(net)
    for b in batches(bank, batch, np.random.default_rng(0), augment=False, order=order):
        b = to_device(b, device)
        vol, _, h = net(b["x"], b["side"], n)
        probs.append(torch.sigmoid(vol[:, :N_ART]).cpu().numpy())
        rescan.append(torch.sigmoid(vol[:, N_ART]).cpu().numpy())
        sev.append(torch.sigmoid(vol[:, N_ART + 1:]).cpu().numpy())
        emb.append(h.cpu().numpy())
    net.train()
    return {"probs": np.concatenate(probs), "rescan": np.concatenate(rescan), "severity": np.concatenate(sev),
            "embedding": np.concatenate(emb)}


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC (Mann-Whitney), NaN when one class is missing."""
    pos, neg = scores[labels > 0], scores[labels <= 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    allv = np.concatenate([pos, neg])
    ranks = np.argsort(np.argsort(allv, kind="mergesort"), kind="mergesort").astype(float) + 1
    # average ranks of ties
    _, inv, counts = np.unique(allv, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=ranks)
    ranks = (sums / counts)[inv]
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def calibrate(pred: dict[str, np.ndarray], labels: np.ndarray, far: float) -> dict[str, Any]:
    """Thresholds on clean validation volumes and the out-of-distribution gate's statistics."""
    clean = labels.sum(axis=1) == 0
    thresholds: dict[str, float] = {}
    for j, name in enumerate(ARTIFACTS):
        neg = pred["probs"][clean, j]
        q = float(np.quantile(neg, 1.0 - far)) if len(neg) else 0.5
        thresholds[name] = float(np.clip(q + 0.02, MIN_THRESHOLD, 0.95))
    neg = pred["rescan"][clean]
    thresholds["rescan_score"] = float(np.clip(float(np.quantile(neg, 1.0 - far)) + 0.02, MIN_THRESHOLD,
                                               0.95)) if len(neg) else 0.5
    emb = pred["embedding"]
    mean = emb.mean(axis=0)
    std = emb.std(axis=0) + 1e-3
    dist = np.sqrt((((emb - mean) / std) ** 2).mean(axis=1))
    ood = {"mean": mean.tolist(), "std": std.tolist(), "threshold": float(1.5 * np.quantile(dist, 0.995)),
           "val_distance_q50": float(np.median(dist)), "val_distance_max": float(dist.max())}
    return {"thresholds": thresholds, "far_target": far, "n_clean_val": int(clean.sum()), "ood": ood}


def finish(net: PooledNet, val: Bank, n: int, far: float, fit_pooling: bool) -> dict[str, Any]:
    """After training: fit the volume pooling (when asked) and calibrate on the validation bank."""
    aggregation: dict[str, Any] = {}
    if fit_pooling:
        for p in (net.mix, net.calib_a, net.calib_b):
            p.requires_grad_(True)
        aggregation = fit_aggregation(net, slice_outputs(net, val, n), val)
        log.info("volume pooling fitted on validation volumes: %s", aggregation)
    pred = predict(net, val, n)
    calib = calibrate(pred, val.labels, far)
    calib["aggregation"] = aggregation
    calib["val_auc"] = {a: auc(pred["probs"][:, j], val.labels[:, j]) for j, a in enumerate(ARTIFACTS)}
    return calib


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    """``auto`` is the GPU when torch sees one, else the CPU; a named device must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: torch sees no CUDA device")
    return device


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def train_member(args: argparse.Namespace, bank: Bank, val: Bank, n: int, device: torch.device,
                 ckpt: Path, seed: int, label: str = "") -> tuple[QCNet, list[dict[str, Any]]]:
    """Train one network on the bank's slices (or volumes), checkpointing to ``ckpt`` after every epoch and
    resuming from it; a finished checkpoint is loaded and returned as it is."""
    widths = tuple(int(w) for w in args.widths.split(","))
    net = QCNet(widths).to(device=device, memory_format=torch.channels_last)  # type: ignore[call-overload]
    if args.mode == "slice":
        steps_per_epoch = math.ceil(len(bank) * n / args.batch)
        for p in (net.mix, net.calib_a, net.calib_b):
            p.requires_grad_(False)
    else:
        steps_per_epoch = math.ceil(len(bank) / args.batch)
    total = steps_per_epoch * args.epochs
    if args.max_steps:
        total = min(total, args.max_steps)
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=args.lr,
                            weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=max(total, 2), pct_start=0.15)
    step, epoch = 0, 0
    history: list[dict[str, Any]] = []
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False, map_location=device)
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optim"])
        sched.load_state_dict(state["sched"])
        step, epoch, history = state["step"], state["epoch"], state["history"]
        log.info("resumed %sfrom %s at epoch %d, step %d", label, ckpt, epoch, step)
    rng = np.random.default_rng([seed, epoch])
    weights = artifact_weights(args.artifact_weights)
    if weights is not None:
        weights = weights.to(device)
        log.info("artifact loss weights: %s", " ".join(f"{a}={float(w):.3f}" for a, w in zip(ARTIFACTS, weights,
                                                                                              strict=True)))
    train_started = time.time()
    while epoch < args.epochs and step < total:
        net.train()
        bar = tqdm(total=min(steps_per_epoch, total - step), desc=f"{label}epoch {epoch + 1}/{args.epochs}",
                   disable=args.no_progress, mininterval=10.0)
        run_loss = 0.0
        source = (slice_batches(bank, args.batch, rng, min(steps_per_epoch, total - step), n)
                  if args.mode == "slice" else batches(bank, args.batch, rng, augment=True))
        for b in prefetch(source):
            b = to_device(b, device)
            x = b["x"].contiguous(memory_format=torch.channels_last)
            # the losses take float32 logits: under autocast only the network's layers run in bfloat16
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp == "bf16"):
                if args.mode == "slice":
                    out, _ = net.slice_forward(x, b["side"])
                    loss = slice_loss(out.float(), b, weights)
                else:
                    vol, sl, _ = net(x, b["side"], n)
                    loss = loss_fn(vol.float(), sl.float(), b, n, weights)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
            opt.step()
            sched.step()
            step += 1
            lv = float(loss.detach())
            run_loss = 0.95 * run_loss + 0.05 * lv if step > 1 else lv
            bar.set_postfix(loss=f"{run_loss:.3f}", lr=f"{sched.get_last_lr()[0]:.1e}", refresh=False)
            bar.update(1)
            if step >= total:
                break
        bar.close()
        epoch += 1
        pred = predict(net, val, n)
        aucs = {a: auc(pred["probs"][:, j], val.labels[:, j]) for j, a in enumerate(ARTIFACTS)}
        entry = {"epoch": epoch, "step": step, "loss": run_loss, "val_auc": aucs,
                 "seconds": round(time.time() - train_started, 1)}
        history.append(entry)
        log.info("%sepoch %d: loss %.3f, val AUC %s", label, epoch, run_loss,
                 " ".join(f"{a}={v:.3f}" for a, v in aucs.items()))
        torch.save({"model": net.state_dict(), "optim": opt.state_dict(), "sched": sched.state_dict(),
                    "step": step, "epoch": epoch, "history": history, "config": net.config}, ckpt)
    return net, history


def train(args: argparse.Namespace) -> Path:
    args.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    torch.set_num_threads(args.threads)
    kept = bool(args.freed_memory_kept)
    log.info("freed memory %s", "kept in the process (training.memory)" if kept else "returned to the kernel")
    net_seed = args.seed if args.net_seed is None else args.net_seed
    set_seed(net_seed)
    device = pick_device(args.device)
    log.info("training on %s", _device_name(device))
    spec = PreprocessSpec(slice_size=args.slice_size, slices_per_plane=args.slices_per_plane)
    started = time.time()
    (args.out / "args.json").write_text(json.dumps({k: str(v) for k, v in vars(args).items()}, indent=2))
    bank_dir, val_dir, split = make_banks(args, spec)
    bank_s = time.time() - started
    bank, val = Bank.open(bank_dir), Bank.open(val_dir)
    n = spec.slices_per_volume
    train_started = time.time()
    net: PooledNet
    if args.members == 1:
        net, history = train_member(args, bank, val, n, device, args.out / "last.pt", net_seed)
    else:
        members: list[QCNet] = []
        history = []
        for i in range(args.members):
            set_seed(net_seed + i)
            member, hist = train_member(args, bank, val, n, device, args.out / f"member{i}.pt", net_seed + i,
                                        label=f"member {i + 1}/{args.members} ")
            members.append(member)
            history += [{"member": i, **h} for h in hist]
        net = EnsembleQCNet(members, members[0].top_k).to(device)
    # an ensemble's pooling is its own, fitted here
    calib = finish(net, val, n, args.far, fit_pooling=args.mode == "slice" or args.members > 1)
    (args.out / "calibration.json").write_text(json.dumps(calib, indent=2))
    data_desc = {
        "real_training_volumes": split["real_train"],
        "synthetic_training_subjects": len(split["synthetic_train_subjects"]),
        "bank_volumes": len(bank), "val_volumes": len(val),
        "bank_config": asdict(BankConfig(n_volumes=len(bank), seed=args.seed * 1000 + 1,
                                         synthetic_subjects=split["synthetic_train_subjects"],
                                         simulator=args.simulator)),
    }
    torch.save({"model": net.state_dict(), "config": net.config, "spec": spec.to_dict(), "calibration": calib,
                "data": data_desc, "history": history, "seeds": {"data": args.seed, "network": net_seed},
                "precision": {"training": "bfloat16 autocast" if args.amp == "bf16" else "float32"},
                "artifact_weights": args.artifact_weights or None,
                "timing": {"bank_s": round(bank_s, 1), "train_s": round(time.time() - train_started, 1),
                           "total_s": round(time.time() - started, 1), "device": _device_name(device),
                           "bank_workers": args.workers, "freed_memory_kept": kept}}, args.out / "model.pt")
    log.info("done in %.0f s (bank %.0f s): %s", time.time() - started, bank_s, args.out / "model.pt")
    return args.out / "model.pt"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # the command's own process and the bank workers it forks (a process-wide setting: not in train(), which
    # tests call in their own process)
    args.freed_memory_kept = False if args.return_freed_memory else keep_freed_memory()
    train(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
