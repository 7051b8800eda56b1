"""Does a field of view that cuts the head read as an artifact? A probe on clean simulated acquisitions.

``python -m training.coverage --model models/NAME.onnx [--shared ../shared/data]``

Real series often cover less than the whole head: a 2-D slab of 20 to 50 slices, a tight 3-D field of view. A
clean cut is not a fold-over, and a model that has learnt "anatomy meets the edge of the image" as ``wrap`` raises
false alarms on real heads. This probe simulates clean acquisitions (2-D and 3-D anatomical, alternating, with the
training simulator's own random plans) of a held-out real head (``chris_t1``, never used for training) and of a
held-out synthetic head, scores them with the exported model (the daemon's code path), and reports the artifact's
probability by slab coverage: the encoded slab thickness divided by the head's extent along the slice direction.
The same ``--seed`` gives the same plans for every model, so two models compare pair by pair.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from qc_daemon.scoring.model import QCModel
from training.acquisition import AcqPlan, head_extent_probe, plan_acquisition, simulate
from training.sources import prepare_source
from training.synth import make_subject, render

BANDS = ((0.0, 0.85), (0.85, 1.0), (1.0, math.inf))
KINDS_PROBED = ("2d_anat", "3d_anat")


@dataclass(frozen=True)
class CoverageRow:
    source: str
    kind: str
    coverage: float
    probability: float
    flagged: bool  # the model's own decision (threshold and out-of-distribution gate), not recomputed here


def slab_coverage(source: sitk.Image, plan: AcqPlan) -> float:
    """Encoded slab thickness over the head's extent along the plan's slice direction."""
    (s0, s1), _, _ = head_extent_probe(source, plan.rotation, plan.centre)
    return float(plan.box[0]) / max(1, s1 - s0)


def probe(model: QCModel, sources: Sequence[tuple[str, sitk.Image, tuple[float, float, float]]], cases: int,
          seed: int, artifact: str = "wrap") -> list[CoverageRow]:
    """``cases`` clean acquisitions per source, alternating the kinds of :data:`KINDS_PROBED`."""
    rng = np.random.default_rng(seed)
    rows: list[CoverageRow] = []
    for name, image, res in sources:
        for i in range(cases):
            kind = KINDS_PROBED[i % len(KINDS_PROBED)]
            plan = plan_acquisition(image, rng, kind=kind, source_res=res)
            coverage = slab_coverage(image, plan)
            score = model.score_volume(simulate(image, plan).image)
            rows.append(CoverageRow(name, kind, round(coverage, 3), float(score.probabilities[artifact]),
                                    artifact in score.flags))
    return rows


def summary(rows: Sequence[CoverageRow], threshold: float, artifact: str = "wrap") -> str:
    """Markdown table: per source and coverage band, the cases, the median probability and how many are flagged."""
    lines = [f"| source | slab coverage | cases | median {artifact} | max | flagged (>= {threshold:.3f}) |",
             "|---|---|---|---|---|---|"]
    for name in dict.fromkeys(r.source for r in rows):
        for lo, hi in BANDS:
            band_rows = [r for r in rows if r.source == name and lo <= r.coverage < hi]
            p = [r.probability for r in band_rows]
            band = f"{lo:.2f}-{hi:.2f}" if math.isfinite(hi) else f">= {lo:.2f}"
            if p:
                lines.append(f"| {name} | {band} | {len(p)} | {float(np.median(p)):.3f} | {max(p):.3f} | "
                             f"{sum(r.flagged for r in band_rows)} |")
            else:
                lines.append(f"| {name} | {band} | 0 | - | - | 0 |")
    return "\n".join(lines)


def default_sources(shared: Path, synthetic_seed: int) -> list[tuple[str, sitk.Image, tuple[float, float, float]]]:
    """The held-out real head ``chris_t1`` and one held-out synthetic head (test seed range, from 20000)."""
    real, res = prepare_source(sitk.ReadImage(str(shared / "nifti" / "t1w_niivue_chris_t1.nii.gz")))
    synthetic, _ = render(make_subject(synthetic_seed), np.random.default_rng(1))
    return [("chris_t1", real, res), ("synthetic", synthetic, (1.0, 1.0, 1.0))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.coverage", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--shared", type=Path, default=Path("../shared/data"))
    p.add_argument("--artifact", default="wrap")
    p.add_argument("--cases", type=int, default=24, help="clean acquisitions per source")
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--synthetic-seed", type=int, default=20007)
    args = p.parse_args(argv)
    model = QCModel.load(args.model)
    rows = probe(model, default_sources(args.shared, args.synthetic_seed), args.cases, args.seed, args.artifact)
    threshold = float(model.metadata.thresholds[args.artifact])
    print(summary(rows, threshold, args.artifact))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
