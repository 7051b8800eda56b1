"""How much an artifact of the test set really changed its image, against its label and the model's score.

``python -m training.effect runs/NAME/eval/results.json [--artifact motion] [--shared ../shared/data]``

For every single-artifact test case of an evaluation (``python -m training.evaluate``) the case is simulated again
twice with the same acquisition, once with its artifact and once without, and the realised effect is measured as
the foreground NRMSE between the two (root mean square difference over the brighter half of the clean image,
divided by its 99th percentile). It prints the Spearman rank correlation of label severity, realised effect and the
model's probability, and the figures per acquisition kind. A severity scale that tracks the realised effect poorly
gives positives that cannot be seen, which no network can detect; this is how to check it.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from training.acquisition import KINDS, simulate
from training.evaluate import CaseMaker, TestCase, spearman


@dataclass(frozen=True)
class Effect:
    index: int
    band: str
    kind: str
    severity: float
    nrmse: float
    probability: float


def realised_nrmse(maker: CaseMaker, case: TestCase) -> tuple[str, float | None]:
    """(acquisition kind, foreground NRMSE of the case with against without its artifacts), before the export
    nuisance; ``None`` when the two grids differ (an artifact that changes the field of view, such as wrap)."""
    acq = maker.acquisition(case)
    with_art, clean = (sitk.GetArrayFromImage(simulate(acq.source, acq.plan, arts,
                                                       object_sigma_mm=acq.object_sigma_mm).image).astype(np.float64)
                       for arts in (acq.artifacts, []))
    if with_art.shape != clean.shape:
        return acq.kind, None
    fg = clean > np.percentile(clean, 50)
    scale = float(np.percentile(clean[fg], 99)) or 1.0
    return acq.kind, float(np.sqrt(((with_art - clean)[fg] ** 2).mean()) / scale)


def effects(results: list[dict[str, Any]], artifact: str, shared: Path, seed: int) -> list[Effect]:
    maker = CaseMaker(shared, seed)
    out = []
    for r in results:
        c = r["case"]
        if c["unseen"] or c["band"] is None or list(c["artifacts"]) != [artifact]:
            continue
        case = TestCase(c["index"], c["source"], c["artifacts"], band=c["band"])
        kind, nrmse = realised_nrmse(maker, case)
        if nrmse is not None:
            out.append(Effect(c["index"], c["band"], kind, c["artifacts"][artifact], nrmse,
                              float(r["score"]["probabilities"][artifact])))
    return out


def report(rows: list[Effect], artifact: str) -> str:
    sev = np.asarray([e.severity for e in rows])
    eff = np.asarray([e.nrmse for e in rows])
    prob = np.asarray([e.probability for e in rows])
    lines = [f"{artifact}: {len(rows)} single-artifact test cases", "",
             "| Spearman | severity label | realised NRMSE |", "|---|---|---|",
             f"| realised NRMSE | {spearman(sev, eff):.2f} | |",
             f"| model probability | {spearman(sev, prob):.2f} | {spearman(eff, prob):.2f} |", "",
             "| acquisition | n | median NRMSE | median probability |", "|---|---|---|---|"]
    for kind in KINDS:
        sel = [e for e in rows if e.kind == kind]
        if sel:
            lines.append(f"| {kind} | {len(sel)} | {np.median([e.nrmse for e in sel]):.3f} | "
                         f"{np.median([e.probability for e in sel]):.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.effect", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", type=Path, help="results.json of python -m training.evaluate")
    p.add_argument("--artifact", default="motion")
    p.add_argument("--shared", type=Path, default=Path("../shared/data"))
    p.add_argument("--seed", type=int, default=12345, help="the evaluation's --seed")
    args = p.parse_args(argv)
    rows = effects(json.loads(args.results.read_text()), args.artifact, args.shared, args.seed)
    print(report(rows, args.artifact))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
