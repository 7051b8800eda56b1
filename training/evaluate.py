"""Evaluate an exported model end to end (``QCModel`` on ONNX Runtime, the daemon's own code path).

``python -m training.evaluate --model models/NAME.onnx --out runs/NAME/eval [--shared ../shared/data]``

Three parts, each written to ``--out`` (``metrics.json``, ``metrics.md``, PNG plots):

1. **Held-out synthetic test set**: acquisitions simulated from held-out subjects only (the real volumes
   ``chris_t1``, ``chris_PD`` and the Philips MPRAGE, none used in training - or, with ``--ixi``, the IXI
   test split - plus synthetic heads from a seed range never used in training or validation), clean or with
   artifacts at mild (severity 0.1-0.4), moderate (0.4-0.7) and severe (0.7-1.0) levels. Per artifact and
   severity band: ROC AUC (positives: volumes with the artifact in that band; negatives: every volume without
   the artifact), average precision, sensitivity and specificity at the model's threshold, expected
   calibration error (10 bins); false-alarm rate on clean volumes. ROC and calibration plots.
2. **Unseen generator**: the same clean acquisitions corrupted by TorchIO's own transforms (RandomMotion,
   RandomGhosting, RandomSpike, RandomBiasField, RandomBlur, RandomNoise - image-domain implementations the
   model never saw, Gaussian noise included; their output's magnitude is kept, as a scanner stores it) and a
   magnitude-domain fold-over for wrap, each at a "mild" and a "default" strength. Reported separately.
3. **Real data** (``--shared``): every volume of ``shared/data`` that must be scored; false alarms over the
   clean human volumes not used in training, and the Siemens EPI check (volume 2 has real head motion).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import multiprocessing as mp
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from qc_daemon.artifacts import ARTIFACTS, RESCAN_SCORE
from training.acquisition import AcqPlan, export_nuisance, plan_acquisition, realised_severities, simulate
from training.artifacts import Artifact, make_artifact
from training.memory import keep_freed_memory
from training.sources import SourceVolume, ixi_volumes, prepare_source, subject_split
from training.synth import LOW_RES_PRESETS, make_subject, render
from training.train import TEST_SUBJECT_BASE, auc

log = logging.getLogger("training.evaluate")
BANDS = {"mild": (0.1, 0.4), "moderate": (0.4, 0.7), "severe": (0.7, 1.0)}
HELD_OUT_REAL = ("t1w_niivue_chris_t1.nii.gz", "pdw_niivue_chris_PD.nii.gz")
SIEMENS_REAL_MOTION = ("siemens_epi_ax_mosaic", "siemens_epi_cor_mosaic", "siemens_epi_sag_mosaic",
                       "siemens_epi_mb_jpeg_lossless", "siemens_epi_mb_jpeg2000")
UNSEEN = ("motion", "ghosting", "spike", "noise", "bias_field", "blur", "wrap")


@dataclass
class TestCase:
    index: int
    source: str  # "real:<name>" or "synthetic:<seed>"
    artifacts: dict[str, float]  # our generator: name -> severity
    unseen: str | None = None  # unseen generator: "<artifact>:<strength>"
    band: str | None = None


# held-out real volumes by name (filled before the worker processes fork; default: shared/data)
HELD_OUT_SOURCES: dict[str, SourceVolume] = {}


def load_real(shared: Path, name: str) -> sitk.Image:
    if name in HELD_OUT_SOURCES:
        return HELD_OUT_SOURCES[name].load()
    if name == "philips_t1_mprage_3d_sag":
        from training.realdata import read_series

        return read_series(shared / "dicom" / name)[0]
    return sitk.ReadImage(str(shared / "nifti" / name))


@dataclass
class CaseAcquisition:
    kind: str
    source: sitk.Image
    plan: AcqPlan
    artifacts: list[Artifact]
    object_sigma_mm: float


class CaseMaker:
    """Builds test volumes (one worker's caches)."""

    def __init__(self, shared: Path, seed: int) -> None:
        self.shared = shared
        self.seed = seed
        self._real: dict[str, tuple[sitk.Image, tuple[float, float, float]]] = {}
        self._subj: dict[int, Any] = {}

    def use_real(self, key: str, prepared: tuple[sitk.Image, tuple[float, float, float]]) -> None:
        """Make the real head ``key`` from ``prepared`` (an object and its resolution) instead of its file."""
        self._real[key] = prepared

    def source(self, case: TestCase, rng: np.random.Generator, kind: str) -> tuple[sitk.Image, tuple[float, ...],
                                                                                   bool]:
        typ, key = case.source.split(":", 1)
        if typ == "real":
            if key not in self._real:
                self._real[key] = prepare_source(load_real(self.shared, key))
            img, res = self._real[key]
            return img, res, False
        seed = int(key)
        if seed not in self._subj:
            self._subj[seed] = make_subject(seed)
        low = kind in ("2d_epi", "3d_lowres")
        img, _ = render(self._subj[seed], rng, str(rng.choice(LOW_RES_PRESETS)) if low and rng.random() < 0.8
                        else None)
        return img, (1.0, 1.0, 1.0), True

    def acquisition(self, case: TestCase) -> CaseAcquisition:
        """The case's draws: acquisition kind, source, plan, artifacts and partial-volume blur."""
        rng = np.random.default_rng([self.seed, case.index])
        from training.acquisition import KIND_WEIGHTS, KINDS

        kind = str(rng.choice(KINDS, p=np.asarray(KIND_WEIGHTS) / sum(KIND_WEIGHTS)))
        img, res, synthetic = self.source(case, rng, kind)
        plan = plan_acquisition(img, rng, kind=kind, source_res=res)  # type: ignore[arg-type]
        arts = []
        for j, (name, sev) in enumerate(case.artifacts.items()):
            kw: dict[str, Any] = {"voxel_mm": float(plan.spacing()[0])} if name == "motion" else {}
            arts.append(make_artifact(name, sev, np.random.default_rng([self.seed, case.index, 7, j]), **kw))
        sigma = float(rng.uniform(0.35, 0.7)) if synthetic else 0.0
        return CaseAcquisition(kind, img, plan, arts, sigma)

    def make(self, case: TestCase) -> tuple[sitk.Image, dict[str, float]]:
        """The test volume and the severities it realised (motion: the severity of the change it made, which can
        fall short of the asked one when the drawn moves are too small for it)."""
        acq = self.acquisition(case)
        sim = simulate(acq.source, acq.plan, acq.artifacts, object_sigma_mm=acq.object_sigma_mm)
        out, _ = export_nuisance(sim.image, np.random.default_rng([self.seed, case.index, 11]))
        if case.unseen:
            out = apply_unseen(out, case.unseen, np.random.default_rng([self.seed, case.index, 9]))
        return out, realised_severities(case.artifacts, sim)


def apply_unseen(image: sitk.Image, what: str, rng: np.random.Generator) -> sitk.Image:
    """Corrupt a magnitude image with TorchIO's transforms (or a magnitude-domain fold-over for wrap)."""
    import torch
    import torchio as tio

    torch.manual_seed(int(rng.integers(0, 2**31 - 1)))
    name, strength = what.split(":")
    mild = strength == "mild"
    arr = sitk.GetArrayFromImage(image).astype(np.float32)  # (z, y, x)
    scale = float(np.percentile(arr, 99)) or 1.0
    if name == "wrap":
        # fold the outer part of the image along one in-plane axis back onto the other side (magnitude sum)
        axis = int(rng.integers(1, 3))
        n = arr.shape[axis]
        cut = max(2, int(n * (rng.uniform(0.04, 0.1) if mild else rng.uniform(0.12, 0.25))))
        keep = np.take(arr, range(cut, n), axis=axis).copy()
        folded = np.take(arr, range(cut), axis=axis)
        idx = [slice(None)] * 3
        idx[axis] = slice(keep.shape[axis] - cut, keep.shape[axis])
        keep[tuple(idx)] += folded
        out = sitk.GetImageFromArray(keep)
        out.SetSpacing(image.GetSpacing())
        out.SetDirection(image.GetDirection())
        out.SetOrigin(image.GetOrigin())
        return out
    tensor = torch.from_numpy(arr.transpose(2, 1, 0)[None].copy() / scale)  # TorchIO: (C, x, y, z)
    sp = image.GetSpacing()
    affine = np.diag([sp[0], sp[1], sp[2], 1.0])
    subject = tio.Subject(img=tio.ScalarImage(tensor=tensor, affine=affine))
    if name == "motion":
        t = tio.RandomMotion(degrees=3 if mild else 10, translation=3 if mild else 10, num_transforms=2)
    elif name == "ghosting":
        t = tio.RandomGhosting(intensity=(0.15, 0.4) if mild else (0.5, 1.0))
    elif name == "spike":
        t = tio.RandomSpike(intensity=(0.3, 0.8) if mild else (1.0, 3.0))
    elif name == "noise":
        t = tio.RandomNoise(std=(0.02, 0.05) if mild else (0.05, 0.15))
    elif name == "bias_field":
        t = tio.RandomBiasField(coefficients=0.25 if mild else 0.5)
    elif name == "blur":
        t = tio.RandomBlur(std=(0.6, 1.0) if mild else (1.0, 2.5))
    else:
        raise ValueError(name)
    out_t = t(subject)["img"].data[0].numpy().transpose(2, 1, 0) * scale
    # TorchIO returns the real part of its k-space transforms and adds Gaussian noise to the magnitude, so its
    # images have negative values; a scanner stores magnitudes, so the magnitude is what the model is given
    out_t = np.abs(out_t)
    out = sitk.GetImageFromArray(out_t.astype(np.float32))
    out.CopyInformation(image)
    return out


def build_cases(n_per_cell: int, n_clean: int, n_unseen: int, n_combo: int, seed: int) -> list[TestCase]:
    rng = np.random.default_rng(seed)
    names = sorted(HELD_OUT_SOURCES) or [*HELD_OUT_REAL, "philips_t1_mprage_3d_sag"]
    sources = [f"real:{n}" for n in names]
    synth = [f"synthetic:{TEST_SUBJECT_BASE + i}" for i in range(4)]

    def pick() -> str:
        return str(rng.choice(sources)) if rng.random() < 0.5 else str(rng.choice(synth))

    cases: list[TestCase] = []
    for _ in range(n_clean):
        cases.append(TestCase(len(cases), pick(), {}))
    for a in ARTIFACTS:
        for band, (lo, hi) in BANDS.items():
            for _ in range(n_per_cell):
                cases.append(TestCase(len(cases), pick(), {a: float(rng.uniform(lo, hi))}, band=band))
    for _ in range(n_combo):
        names = rng.choice(list(ARTIFACTS), 2, replace=False)
        cases.append(TestCase(len(cases), pick(), {str(n): float(rng.uniform(0.3, 1.0)) for n in names}))
    for a in UNSEEN:
        for strength in ("mild", "default"):
            for _ in range(n_unseen):
                cases.append(TestCase(len(cases), pick(), {}, unseen=f"{a}:{strength}"))
    return cases


_WORKER: dict[str, Any] = {}


def _init_worker(model_path: str, shared: str, seed: int) -> None:
    from qc_daemon.scoring.model import QCModel

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    _WORKER["model"] = QCModel.load(Path(model_path), intra_op_threads=1)
    _WORKER["maker"] = CaseMaker(Path(shared), seed)


def _run_case(case: TestCase) -> dict[str, Any]:
    img, realised = _WORKER["maker"].make(case)
    score = _WORKER["model"].score_volume(img)
    return {"case": case.__dict__, "realised": realised, "score": score.to_dict()}


def run_cases(model: Path, shared: Path, cases: Sequence[TestCase], workers: int, seed: int) -> list[dict[str, Any]]:
    from tqdm import tqdm

    ctx = mp.get_context("fork")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(str(model), str(shared), seed)) as pool:
        return list(tqdm(pool.imap(_run_case, cases, chunksize=2), total=len(cases), desc="test volumes",
                         mininterval=10.0))


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    if labels.sum() == 0:
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    y = labels[order]
    tp = np.cumsum(y)
    precision = tp / np.arange(1, len(y) + 1)
    return float((precision * y).sum() / y.sum())


def auc_ci95(scores: np.ndarray, labels: np.ndarray, n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95 % interval of the ROC AUC by a stratified bootstrap (positives and negatives resampled apart)."""
    pos, neg = scores[labels > 0], scores[labels <= 0]
    if len(pos) < 2 or len(neg) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    boots = [auc(np.r_[rng.choice(pos, len(pos)), rng.choice(neg, len(neg))], y) for _ in range(n_boot)]
    lo, hi = np.quantile(boots, [0.025, 0.975])
    return float(lo), float(hi)


def wilson95(k: int, n: int) -> tuple[float, float]:
    """95 % Wilson score interval of a rate of ``k`` in ``n``."""
    if n == 0:
        return float("nan"), float("nan")
    z = 1.96
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def ece(p: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for lo, hi in itertools.pairwise(edges):
        m = (p >= lo) & ((p < hi) if hi < 1 else (p <= hi))
        if m.any():
            total += abs(float(p[m].mean()) - float(y[m].mean())) * m.sum()
    return total / max(len(p), 1)


def case_severities(results: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """(severity per case and artifact, the realised one where recorded; which were asked for but realised
    below the mild band). The latter are neither positives nor negatives: a motion too small to change the image
    is no artifact, and not a clean volume either."""
    sev = np.asarray([[r.get("realised", {}).get(a, r["case"]["artifacts"].get(a, 0.0)) for a in ARTIFACTS]
                      for r in results], dtype=float).reshape(len(results), len(ARTIFACTS))
    asked = np.asarray([[r["case"]["artifacts"].get(a, 0.0) for a in ARTIFACTS] for r in results],
                       dtype=float).reshape(len(results), len(ARTIFACTS))
    unclear = (asked > 0) & (sev < BANDS["mild"][0])
    return np.where(unclear, 0.0, sev), unclear


def synthetic_metrics(results: list[dict[str, Any]], thresholds: dict[str, float]) -> dict[str, Any]:
    # every test volume counts: one that ended out of distribution keeps its probabilities for the AUC but,
    # raising no flag, is a miss for the sensitivity (the gate must not hide failures)
    ours = [r for r in results if not r["case"]["unseen"]]
    ood = [r for r in ours if r["score"]["out_of_distribution"] is not None]
    probs = np.asarray([[r["score"]["probabilities"][a] for a in ARTIFACTS] for r in ours])
    flags = np.asarray([[a in r["score"]["flags"] for a in ARTIFACTS] for r in ours])
    sev, unclear = case_severities(ours)
    clean = (sev.sum(axis=1) == 0) & ~unclear.any(axis=1)
    out: dict[str, Any] = {"n_volumes": len(ours), "n_clean": int(clean.sum()), "n_out_of_distribution": len(ood),
                           "ood_reasons": sorted({r["score"]["out_of_distribution"][:60] for r in ood}),
                           "per_artifact": {}}
    for j, a in enumerate(ARTIFACTS):
        thr = thresholds[a]
        neg = (sev[:, j] == 0) & ~unclear[:, j]
        entry: dict[str, Any] = {"threshold": thr,
                                 "far_clean": float(flags[clean, j].mean()) if clean.any() else None,
                                 "far_clean_ci95": wilson95(int(flags[clean, j].sum()), int(clean.sum())),
                                 "specificity": float((~flags[neg, j]).mean())}
        for band, (lo, hi) in BANDS.items():
            pos = (sev[:, j] >= lo) & (sev[:, j] < hi if hi < 1 else sev[:, j] <= hi)
            sel = pos | neg
            y = pos[sel].astype(float)
            p = probs[sel, j]
            entry[band] = {
                "n_pos": int(pos.sum()), "auc": auc(p, y), "auc_ci95": auc_ci95(p, y, seed=j),
                "ap": average_precision(p, y),
                "sensitivity": float(flags[pos, j].mean()) if pos.any() else float("nan"),
                "ece": ece(p, y),
            }
        allpos = sev[:, j] > 0
        known = ~unclear[:, j]
        entry["all"] = {"n_pos": int(allpos.sum()), "auc": auc(probs[known, j], allpos[known].astype(float))}
        out["per_artifact"][a] = entry
    rescan = np.asarray([r["score"]["rescan_score"] for r in ours])
    need = (sev.max(axis=1) >= 0.4).astype(float)
    out["rescan"] = {"auc": auc(rescan, need), "threshold": thresholds[RESCAN_SCORE],
                     "far_clean": float((rescan[clean] >= thresholds[RESCAN_SCORE]).mean()) if clean.any() else None}
    out["any_flag_on_clean"] = float(flags[clean].any(axis=1).mean()) if clean.any() else None
    out["far_by_source"] = far_by_source([r["case"]["source"] for r in ours], clean, flags)
    pred_sev = np.asarray([[(r["score"]["severity"] or {}).get(a, 0.0) for a in ARTIFACTS] for r in ours])
    corr = {}
    for j, a in enumerate(ARTIFACTS):
        m = sev[:, j] > 0
        if m.sum() > 3:
            corr[a] = spearman(sev[m, j], pred_sev[m, j])
    out["severity_spearman"] = corr
    return out


def source_group(source: str) -> str:
    """A test case's source head: "synthetic" (every held-out synthetic head) or the real head's name."""
    return "synthetic" if source.startswith("synthetic:") else source.split(":", 1)[1]


def far_by_source(sources: Sequence[str], clean: np.ndarray, flags: np.ndarray) -> dict[str, dict[str, Any]]:
    """Per source head, the clean volumes and how many of them each artifact flagged: a false-alarm rate driven
    by one real head (its own coil shading, its field of view) reads differently from one spread over all."""
    groups = np.asarray([source_group(s) for s in sources])
    out: dict[str, dict[str, Any]] = {}
    for g in sorted(set(groups[clean])):
        sel = clean & (groups == g)
        out[g] = {"n_clean": int(sel.sum()),
                  "flagged": {a: int(flags[sel, j].sum()) for j, a in enumerate(ARTIFACTS) if flags[sel, j].any()}}
    return out


def unseen_metrics(results: list[dict[str, Any]], thresholds: dict[str, float]) -> dict[str, Any]:
    clean = [r for r in results if not r["case"]["unseen"] and not r["case"]["artifacts"]]
    out: dict[str, Any] = {}
    for a in UNSEEN:
        ARTIFACTS.index(a)
        for strength in ("mild", "default"):
            pos = [r for r in results if r["case"]["unseen"] == f"{a}:{strength}"]
            pos_ok = pos  # out-of-distribution volumes count, as misses (no flag)
            p = np.asarray([r["score"]["probabilities"][a] for r in pos_ok + clean])
            y = np.asarray([1.0] * len(pos_ok) + [0.0] * len(clean))
            flagged_other = np.mean([bool(set(r["score"]["flags"]) - {a}) for r in pos_ok]) if pos_ok else float("nan")
            out[f"{a}:{strength}"] = {
                "n": len(pos), "n_ood": sum(r["score"]["out_of_distribution"] is not None for r in pos),
                "auc_vs_clean": auc(p, y),
                "sensitivity": float(np.mean([a in r["score"]["flags"] for r in pos_ok])) if pos_ok else float("nan"),
                "any_flag": float(np.mean([bool(r["score"]["flags"]) for r in pos_ok])) if pos_ok else float("nan"),
                "other_flags": float(flagged_other),
            }
    return out


def has_real_motion(series: str, index: int) -> bool:
    """Volume 2 of the two-volume Siemens EPI series has real head motion (shared/data/README.md): not clean."""
    return series in SIEMENS_REAL_MOTION and index == 1


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Rank correlation (no tie correction); NaN for fewer than 3 values or a constant one."""
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.argsort(np.argsort(b)).astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])


def trained_series(train_names: Sequence[str]) -> set[str]:
    """Real series and NIfTI files the model was trained on, from its metadata's volume names (a DICOM series
    used for training is listed as ``<series>#<volume>``, every volume of it)."""
    return set(train_names) | {n.split("#")[0] for n in train_names}


def real_metrics(model_path: Path, shared: Path, train_names: Sequence[str],
                 val_names: Sequence[str] = ()) -> dict[str, Any]:
    """Scores of every real volume of ``shared``; the false-alarm figures count only the clean series used
    neither for training (``train_names``) nor for choosing the thresholds (``val_names``)."""
    from qc_daemon.scoring.model import QCModel
    from training.realdata import iter_real_volumes

    model = QCModel.load(model_path)
    trained = trained_series(train_names)
    validated = trained_series(val_names)
    rows = []
    for v in iter_real_volumes(shared):
        s = model.score_volume(v.image)
        rows.append({"series": v.series, "index": v.index, "subject": v.subject, "contrast": v.contrast,
                     "in_far": v.in_false_alarm_rate and v.series not in trained | validated,
                     "used_in_training": v.series in trained,
                     "used_for_validation": v.series in validated,
                     "size": list(v.image.GetSize()), "spacing": [round(x, 3) for x in v.image.GetSpacing()],
                     "flags": s.flags, "ood": s.out_of_distribution, "rescan": s.rescan_score,
                     "probabilities": s.probabilities, "timings": s.timings})
    far_rows = [r for r in rows if r["in_far"]]
    flagged = [r for r in far_rows if r["flags"]]
    # volume 2 of the two-volume Siemens EPI series has real head motion (shared/data/README.md): not clean
    real_motion = [r for r in far_rows if has_real_motion(r["series"], r["index"])]
    clean_rows = [r for r in far_rows if r not in real_motion]
    per_series: dict[str, list[dict[str, Any]]] = {}
    for r in far_rows:
        per_series.setdefault(r["series"], []).append(r)
    motion_check = {}
    for r in rows:
        if r["series"] in SIEMENS_REAL_MOTION:
            motion_check.setdefault(r["series"], {})[f"vol{r['index'] + 1}"] = r["probabilities"]["motion"]
    nine = [r for r in rows if r["series"] == "siemens_epi_ts_9syntaxes"]
    return {
        "volumes": rows,
        "n_clean_volumes": len(far_rows),
        "n_flagged_volumes": len(flagged),
        "n_clean_volumes_without_real_motion": len(clean_rows),
        "n_flagged_volumes_without_real_motion": sum(bool(r["flags"]) for r in clean_rows),
        "real_motion_volumes_flags": {f"{r['series']}#{r['index']}": r["flags"] for r in real_motion},
        "flagged": [f"{r['series']}#{r['index']}: {','.join(r['flags'])}" for r in flagged],
        "n_clean_series": len(per_series),
        "n_flagged_series": sum(any(r["flags"] for r in v) for v in per_series.values()),
        "n_ood": sum(1 for r in rows if r["ood"]),
        "ood": [f"{r['series']}#{r['index']}: {r['ood']}" for r in rows if r["ood"]],
        "siemens_motion_vol1_vs_vol2": motion_check,
        "siemens_vol2_worse": sum(v.get("vol2", 0) > v.get("vol1", 1) for v in motion_check.values()),
        "nine_syntaxes_identical": len({json.dumps(r["probabilities"]) for r in nine}) == 1 if nine else None,
    }


def plots(results: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ours = [r for r in results if not r["case"]["unseen"]]
    probs = np.asarray([[r["score"]["probabilities"][a] for a in ARTIFACTS] for r in ours])
    sev, unclear = case_severities(ours)
    fig, axs = plt.subplots(2, 4, figsize=(16, 8))
    for j, a in enumerate(ARTIFACTS):
        ax = axs.ravel()[j]
        neg = (sev[:, j] == 0) & ~unclear[:, j]
        for band, (lo, hi) in BANDS.items():
            pos = (sev[:, j] >= lo) & (sev[:, j] <= hi)
            sel = pos | neg
            y, p = pos[sel], probs[sel, j]
            thr = np.unique(np.concatenate([[-1.0, 2.0], p]))[::-1]
            tpr = [(p[y] >= t).mean() if y.any() else 0 for t in thr]
            fpr = [(p[~y] >= t).mean() for t in thr]
            ax.plot(fpr, tpr, label=f"{band} (AUC {auc(p, y.astype(float)):.2f})")
        ax.plot([0, 1], [0, 1], "k:", lw=0.5)
        ax.set_title(a)
        ax.set_xlabel("false-positive rate")
        ax.set_ylabel("sensitivity")
        ax.legend(fontsize=7)
    axs.ravel()[-1].axis("off")
    fig.tight_layout()
    fig.savefig(out / "roc.png", dpi=80)
    plt.close(fig)
    fig, axs = plt.subplots(2, 4, figsize=(16, 8))
    edges = np.linspace(0, 1, 11)
    for j, a in enumerate(ARTIFACTS):
        ax = axs.ravel()[j]
        y = (sev[~unclear[:, j], j] > 0).astype(float)
        p = probs[~unclear[:, j], j]
        xs, ys = [], []
        for lo, hi in itertools.pairwise(edges):
            m = (p >= lo) & (p <= hi)
            if m.any():
                xs.append(p[m].mean())
                ys.append(y[m].mean())
        ax.plot([0, 1], [0, 1], "k:", lw=0.5)
        ax.plot(xs, ys, "o-")
        ax.set_title(f"{a} (ECE {ece(p, y):.3f})")
        ax.set_xlabel("predicted probability")
        ax.set_ylabel("observed frequency")
    axs.ravel()[-1].axis("off")
    fig.tight_layout()
    fig.savefig(out / "calibration.png", dpi=80)
    plt.close(fig)


def markdown(m: dict[str, Any]) -> str:
    def f(v: Any) -> str:
        if v is None or (isinstance(v, float) and v != v):
            return "n/a"
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    syn = m["synthetic"]
    lines = [f"Held-out synthetic test set: {syn['n_volumes']} volumes ({syn['n_clean']} clean), "
             f"{syn['n_out_of_distribution']} ended out of distribution (counted as unflagged); any flag on a clean "
             f"volume: {f(syn['any_flag_on_clean'])}. In brackets: 95 % intervals (Wilson for rates, stratified "
             f"bootstrap for AUC).", "",
             "| artifact | threshold | FAR clean | AUC mild | AUC moderate | AUC severe | sens. mild | sens. moderate "
             "| sens. severe | AP mild | AP moderate | ECE moderate | specificity |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    def ci(v: Any) -> str:  # metrics written before the intervals existed have none
        return f" ({f(v[0])}-{f(v[1])})" if v else ""

    for a, e in syn["per_artifact"].items():
        lines.append(f"| {a} | {f(e['threshold'])} | {f(e['far_clean'])}{ci(e.get('far_clean_ci95'))} | "
                     f"{f(e['mild']['auc'])}{ci(e['mild'].get('auc_ci95'))} | "
                     f"{f(e['moderate']['auc'])}{ci(e['moderate'].get('auc_ci95'))} | {f(e['severe']['auc'])} | "
                     f"{f(e['mild']['sensitivity'])} | "
                     f"{f(e['moderate']['sensitivity'])} | {f(e['severe']['sensitivity'])} | {f(e['mild']['ap'])} | "
                     f"{f(e['moderate']['ap'])} | {f(e['moderate']['ece'])} | {f(e['specificity'])} |")
    if "far_by_source" in syn:  # metrics written before the breakdown existed have none
        lines += ["", "False alarms on clean volumes by source head: " + "; ".join(
            f"{g} {e['n_clean']} clean, " + (", ".join(f"{a} {k}" for a, k in e["flagged"].items()) or "none flagged")
            for g, e in syn["far_by_source"].items()) + "."]
    r = syn["rescan"]
    lines += ["", f"Rescan score: AUC {f(r['auc'])} (target: any artifact at severity >= 0.4), threshold "
              f"{f(r['threshold'])}, FAR on clean {f(r['far_clean'])}.", ""]
    lines += ["Unseen generator (TorchIO transforms; wrap: magnitude fold-over), each vs the clean volumes:", "",
              "| transform | n | out of distribution | AUC vs clean | sensitivity at threshold | any flag "
              "| other artifacts flagged |",
              "|---|---|---|---|---|---|---|"]
    for k, e in m["unseen"].items():
        lines.append(f"| {k} | {e['n']} | {e['n_ood']} | {f(e['auc_vs_clean'])} | {f(e['sensitivity'])} | "
                     f"{f(e['any_flag'])} | {f(e['other_flags'])} |")
    if "real" in m:
        rr = m["real"]
        lines += ["", f"Real data: {rr['n_flagged_volumes']} of {rr['n_clean_volumes']} human volumes used "
                  f"neither in training nor for the thresholds flagged ({rr['n_flagged_series']} of "
                  f"{rr['n_clean_series']} series); without the 5 Siemens volumes with real head motion: "
                  f"{rr['n_flagged_volumes_without_real_motion']} of {rr['n_clean_volumes_without_real_motion']}; "
                  f"{rr['n_ood']} volumes out of distribution.", ""]
        for use, key in (("trained on", "used_in_training"), ("thresholds fitted on", "used_for_validation")):
            names = sorted({v["series"] for v in rr["volumes"] if v.get(key)})
            if names:
                lines.append(f"- not counted, {use}: {', '.join(names)}")
        for k in rr["flagged"]:
            lines.append(f"- flagged: {k}")
        for k in rr["ood"]:
            lines.append(f"- out of distribution: {k}")
        lines += ["", "| Siemens series | motion vol 1 | motion vol 2 (real motion) |", "|---|---|---|"]
        for s, v in rr["siemens_motion_vol1_vs_vol2"].items():
            lines.append(f"| {s} | {f(v.get('vol1'))} | {f(v.get('vol2'))} |")
        lines.append(f"\nNine encodings of one volume score identically: {rr['nine_syntaxes_identical']}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    p.add_argument("--per-cell", type=int, default=15, help="test volumes per artifact and severity band")
    p.add_argument("--clean", type=int, default=150)
    p.add_argument("--unseen", type=int, default=10, help="volumes per unseen transform and strength")
    p.add_argument("--combo", type=int, default=30)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--skip-real", action="store_true")
    p.add_argument("--ixi", type=Path, help="IXI folder/archives: use the test split's subjects as held-out real "
                   "volumes (with --ixi-split-seed, the seed of the training run's split)")
    p.add_argument("--ixi-split-seed", type=int, default=0)
    p.add_argument("--ixi-site", default="")
    args = p.parse_args(argv)
    if args.ixi:
        for v in ixi_volumes(args.ixi, sites=[args.ixi_site] if args.ixi_site else None):
            if subject_split(v.subject, args.ixi_split_seed) == "test":
                HELD_OUT_SOURCES[v.name] = v
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    keep_freed_memory()  # many large, short-lived arrays: see training.memory
    args.out.mkdir(parents=True, exist_ok=True)
    from qc_daemon.scoring.model import QCModel

    model = QCModel.load(args.model)
    thresholds = model.thresholds()
    started = time.time()
    cases = build_cases(args.per_cell, args.clean, args.unseen, args.combo, args.seed)
    results = run_cases(args.model, args.shared, cases, args.workers, args.seed)
    (args.out / "results.json").write_text(json.dumps(results))
    metrics: dict[str, Any] = {"model": model.metadata.name, "version": model.metadata.version,
                               "synthetic": synthetic_metrics(results, thresholds),
                               "unseen": unseen_metrics(results, thresholds)}
    plots(results, args.out)
    if not args.skip_real:
        data = model.metadata.training_data
        metrics["real"] = real_metrics(args.model, args.shared, list(data.get("real_training_volumes", [])),
                                       list(data.get("real_validation_volumes", [])))
    metrics["seconds"] = round(time.time() - started, 1)
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))
    (args.out / "metrics.md").write_text(markdown(metrics))
    print(markdown(metrics))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
