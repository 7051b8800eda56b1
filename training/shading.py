"""How much smooth intensity shading a head carries, measured as the field measures it (N4), and whether it explains
an evaluation's ``bias_field`` false alarms.

``python -m training.shading [--shared ../shared/data]``
    the real heads of ``shared/data`` as stored (no simulator): their own shading, beside the simulator's clean and
    bias-field levels;
``python -m training.shading --results runs/NAME/eval/results.json [--seed 12345]``
    the clean volumes of an evaluation, simulated again as the evaluation made them: their total shading against the
    model's ``bias_field`` probability and flag, per source head and per shading band;
``python -m training.shading --results runs/NAME/eval/results.json --model M.onnx --flatten HEAD``
    the causal test: one real head's clean test volumes simulated again, with the same seeds, from the head with its
    own shading removed (divided by N4's field), and scored by the model: what the head's shading alone adds.

Shading is on the simulator's scale (``training.artifacts.BiasField``): ``beta``, the log of the brightest to the
darkest part of the multiplicative field over the head, between the field's 1st and 99th percentiles there. The
simulator's clean acquisitions carry a nuisance field of ``beta`` up to 0.3 (3-D and 2-D anatomical; 0.45 from
simulator 8 on) or 0.45 (EPI, low-resolution 3-D); its ``bias_field`` artifact starts at ``BIAS_ONSET`` (0.6) and a
mild one is 0.69 (2x) or more. A real head brings its own coil shading into the simulator, which adds its clean
field on top: this measures how much there is, and (``--flatten``) how much of a model's ``bias_field`` response
on a real head's clean volumes that shading causes.

The field is estimated with N4 (SimpleITK's ``N4BiasFieldCorrectionImageFilter``, Tustison et al. 2010) on a grid
of about 4 mm inside an Otsu mask of the head; on simulated fields of known ``beta`` it returns ``beta`` within a few
hundredths (``tests/training/test_shading.py``). N4 can also take a slow tissue-intensity trend for shading, so a
figure is an upper bound on the coil's field more than an exact value.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from training.acquisition import CLEAN_SHADING_WIDE
from training.artifacts import BIAS_ONSET
from training.evaluate import CaseMaker, TestCase, load_real, source_group, spearman
from training.sources import prepare_source, shared_dicom_volumes

# CLEAN_SHADING_WIDE: the largest clean nuisance field of any acquisition kind
BANDS = (("within the clean nuisance", 0.0, CLEAN_SHADING_WIDE),
         ("above it, below the onset", CLEAN_SHADING_WIDE, BIAS_ONSET),
         ("at or above the bias-field onset", BIAS_ONSET, np.inf))


def _n4(img: sitk.Image, grid_mm: float) -> tuple[sitk.N4BiasFieldCorrectionImageFilter, sitk.Image, np.ndarray] | None:
    """N4 fitted on a ``grid_mm`` grid inside an Otsu head mask: (the fitted filter, the coarse image, the mask),
    or None when no head is found."""
    factors = [max(1, round(grid_mm / s)) for s in img.GetSpacing()]
    small = sitk.Shrink(img, factors)
    mask = sitk.OtsuThreshold(small, 0, 1, 200)
    inside = sitk.GetArrayFromImage(mask) > 0
    if inside.sum() < 64:
        return None
    n4 = sitk.N4BiasFieldCorrectionImageFilter()
    n4.SetMaximumNumberOfIterations([50, 50, 30])
    n4.Execute(small, mask)
    return n4, small, inside


def shading_beta(img: sitk.Image, grid_mm: float = 4.0) -> float:
    """The image's shading on the simulator's scale: the 1st-to-99th percentile range of N4's log field over the
    head (NaN when no head is found)."""
    fit = _n4(sitk.Cast(img, sitk.sitkFloat32), grid_mm)
    if fit is None:
        return float("nan")
    n4, small, inside = fit
    lo, hi = np.percentile(sitk.GetArrayFromImage(n4.GetLogBiasFieldAsImage(small))[inside], [1, 99])
    return float(hi - lo)


def flatten(img: sitk.Image, grid_mm: float = 4.0) -> sitk.Image:
    """The image with its own shading removed: divided by N4's field, evaluated at the image's full resolution
    (unchanged when no head is found)."""
    img = sitk.Cast(img, sitk.sitkFloat32)
    fit = _n4(img, grid_mm)
    if fit is None:
        return img
    field = sitk.Cast(sitk.Exp(fit[0].GetLogBiasFieldAsImage(img)), sitk.sitkFloat32)
    field.CopyInformation(img)
    return img / field


def real_heads(shared: Path) -> dict[str, sitk.Image]:
    """The real heads the training and evaluation can use as objects: the NIfTI heads, the Philips 3-D T1 and the
    b=0 volume of the Philips diffusion series, as ``prepare_source`` makes them objects."""
    heads = {p.name.removesuffix(".nii.gz"): load_real(shared, p.name)
             for p in sorted((shared / "nifti").glob("*.nii.gz"))}
    heads["philips_t1_mprage_3d_sag"] = load_real(shared, "philips_t1_mprage_3d_sag")
    dwi = shared_dicom_volumes(shared, ["philips_dwi_ax"])
    if dwi:
        heads[dwi[0].name] = dwi[0].load()
    return {name: prepare_source(img)[0] for name, img in heads.items()}


@dataclass(frozen=True)
class CleanVolume:
    """One clean test volume: its source head, total shading, and the model's bias-field output."""

    index: int
    source: str
    beta: float
    probability: float
    flagged: bool


_MAKER: dict[str, CaseMaker] = {}


def _init(shared: str, seed: int) -> None:
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    _MAKER["maker"] = CaseMaker(Path(shared), seed)


def _measure(row: dict[str, Any]) -> CleanVolume:
    c = row["case"]
    img, _ = _MAKER["maker"].make(TestCase(c["index"], c["source"], c["artifacts"], band=c["band"]))
    score = row["score"]
    return CleanVolume(c["index"], source_group(c["source"]), shading_beta(img),
                       float(score["probabilities"]["bias_field"]), "bias_field" in score["flags"])


def clean_volumes(results: Sequence[dict[str, Any]], shared: Path, seed: int, workers: int = 2) -> list[CleanVolume]:
    """Simulate the evaluation's clean volumes again (same seeds) and measure their shading."""
    rows = [r for r in results if not r["case"]["artifacts"] and not r["case"]["unseen"]]
    with mp.get_context("fork").Pool(workers, initializer=_init, initargs=(str(shared), seed)) as pool:
        return list(pool.imap(_measure, rows, chunksize=2))


def rescore_flattened(results: Sequence[dict[str, Any]], model: Path, head: str, shared: Path,
                      seed: int) -> list[tuple[float, bool, float, bool]]:
    """The causal test: the clean test volumes of one real ``head`` (``results.json`` source name), simulated
    again with the same seeds from the head with its own shading removed (:func:`flatten`), and scored by
    ``model``. Per volume: (bias_field probability and flag as evaluated, the same after flattening)."""
    from qc_daemon.scoring.model import QCModel

    maker = CaseMaker(shared, seed)
    obj, res = prepare_source(load_real(shared, head))
    maker.use_real(head, (flatten(obj), res))
    qc = QCModel.load(model)
    out = []
    for r in results:
        c = r["case"]
        if c["artifacts"] or c["unseen"] or c["source"] != f"real:{head}":
            continue
        img, _ = maker.make(TestCase(c["index"], c["source"], {}))
        s = qc.score_volume(img)
        out.append((float(r["score"]["probabilities"]["bias_field"]), "bias_field" in r["score"]["flags"],
                    float(s.probabilities["bias_field"]), "bias_field" in s.flags))
    return out


def band_of(beta: float) -> str:
    return next(name for name, lo, hi in BANDS if lo <= beta < hi)


def report(rows: Sequence[CleanVolume]) -> str:
    def line(label: str, sel: Sequence[CleanVolume]) -> str:
        betas = [v.beta for v in sel]
        return (f"| {label} | {len(sel)} | {np.median(betas):.2f} | {np.max(betas):.2f} | "
                f"{sum(v.flagged for v in sel)} | {np.median([v.probability for v in sel]):.2f} |")

    lines = [f"{len(rows)} clean test volumes; bias-field onset {BIAS_ONSET}, largest clean nuisance "
             f"{CLEAN_SHADING_WIDE}; Spearman of shading and bias_field probability "
             f"{spearman(np.asarray([v.beta for v in rows]), np.asarray([v.probability for v in rows])):.2f}", "",
             "| source | n | median shading | max shading | bias_field flags | median probability |",
             "|---|---|---|---|---|---|"]
    lines += [line(s, [v for v in rows if v.source == s]) for s in sorted({v.source for v in rows})]
    lines += ["", "| shading band | n | median shading | max shading | bias_field flags | median probability |",
              "|---|---|---|---|---|---|"]
    lines += [line(f"{name} ({lo}-{hi})", sel) for name, lo, hi in BANDS
              if (sel := [v for v in rows if band_of(v.beta) == name])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.shading", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    p.add_argument("--results", type=Path, help="results.json of python -m training.evaluate")
    p.add_argument("--seed", type=int, default=12345, help="the evaluation's --seed")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--flatten", metavar="HEAD", help="with --results and --model: score the clean test volumes of "
                   "this real head again, simulated from the head with its own shading removed")
    p.add_argument("--model", type=Path, help="the evaluated model (.onnx), for --flatten")
    args = p.parse_args(argv)
    if args.flatten:
        if args.results is None or args.model is None:
            p.error("--flatten needs --results and --model")
        rows = rescore_flattened(json.loads(args.results.read_text()), args.model, args.flatten, args.shared,
                                 args.seed)
        if not rows:
            p.error(f"no clean test volume of {args.flatten} in {args.results}")
        print(f"{args.flatten}: {len(rows)} clean test volumes; bias_field median probability and flags as evaluated "
              f"{np.median([r[0] for r in rows]):.3f}, {sum(r[1] for r in rows)}; from the head with its own shading "
              f"removed {np.median([r[2] for r in rows]):.3f}, {sum(r[3] for r in rows)}")
        return 0
    if args.results is None:
        print("| real head | shading (beta) | brightest / darkest |\n|---|---|---|")
        for name, img in real_heads(args.shared).items():
            beta = shading_beta(img)
            print(f"| {name} | {beta:.2f} | {np.exp(beta):.2f} |")
        return 0
    rows = clean_volumes(json.loads(args.results.read_text()), args.shared, args.seed, args.workers)
    print(report(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
