"""How much an artifact of the test set really changed its image, against its label and the model's score.

``python -m training.effect runs/NAME/eval/results.json [--artifact motion] [--shared ../shared/data]``

For every single-artifact test case of an evaluation (``python -m training.evaluate``) the case is simulated again
twice with the same acquisition, once with its artifact and once without, and the realised effect is measured as
the foreground NRMSE between the two (root mean square difference over the brighter half of the clean image,
divided by its 99th percentile). The same acquisition is simulated a third time, clean and without thermal noise,
to measure the noise on the same scale: the ratio of the two (artifact to noise) says whether the artifact stands
out of the noise the image already has (a ratio below 1 changes the image less than its own noise does). It prints
the Spearman rank correlation of label severity, realised effect and the model's probability, and the figures per
acquisition kind and per severity band. A severity scale that tracks the realised effect poorly gives positives that
cannot be seen, which no network can detect; this is how to check it.
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
from training.evaluate import BANDS, CaseMaker, TestCase, spearman


@dataclass(frozen=True)
class Effect:
    index: int
    band: str
    kind: str
    severity: float
    nrmse: float
    probability: float
    noise_nrmse: float = float("nan")  # the thermal noise of the clean image, on the same scale

    @property
    def ratio(self) -> float:
        """Artifact to noise: the artifact's change over the noise's (below 1: smaller than the image's noise)."""
        return self.nrmse / self.noise_nrmse if self.noise_nrmse > 0 else float("nan")


def realised_nrmse(maker: CaseMaker, case: TestCase) -> tuple[str, float | None, float]:
    """(acquisition kind, foreground NRMSE of the case with against without its artifacts, NRMSE of the clean
    image's thermal noise), before the export nuisance; the artifact's NRMSE is ``None`` when the two grids differ
    (an artifact that changes the field of view, such as wrap), the noise's NaN when the noise-free image is cut
    to another size."""
    acq = maker.acquisition(case)

    def run(arts: list[Any], noise_free: bool = False) -> np.ndarray:
        img = simulate(acq.source, acq.plan, arts, noise_free=noise_free, object_sigma_mm=acq.object_sigma_mm).image
        return sitk.GetArrayFromImage(img).astype(np.float64)

    with_art, clean = run(acq.artifacts), run([])
    if with_art.shape != clean.shape:
        return acq.kind, None, float("nan")
    fg = clean > np.percentile(clean, 50)
    scale = float(np.percentile(clean[fg], 99)) or 1.0

    def nrmse(a: np.ndarray) -> float:
        return float(np.sqrt(((a - clean)[fg] ** 2).mean()) / scale)

    quiet = run([], noise_free=True)
    # a field of view cut at the head's edge is placed on the image, noise included: rarely, it lands elsewhere
    return acq.kind, nrmse(with_art), nrmse(quiet) if quiet.shape == clean.shape else float("nan")


def band_of(severity: float) -> str:
    """The severity band of the evaluation (``BANDS``; severe includes 1.0), or "below mild"."""
    for band, (lo, hi) in BANDS.items():
        if lo <= severity < hi or (band == "severe" and severity >= lo):
            return band
    return "below mild"


def effects(results: list[dict[str, Any]], artifact: str, shared: Path, seed: int) -> list[Effect]:
    maker = CaseMaker(shared, seed)
    out = []
    for r in results:
        c = r["case"]
        if c["unseen"] or c["band"] is None or list(c["artifacts"]) != [artifact]:
            continue
        case = TestCase(c["index"], c["source"], c["artifacts"], band=c["band"])
        kind, nrmse, noise = realised_nrmse(maker, case)
        if nrmse is not None:
            # banded by the realised severity, as the evaluation does (motion records one)
            realised = float(r.get("realised", {}).get(artifact, c["artifacts"][artifact]))
            band = band_of(realised)
            out.append(Effect(c["index"], band, kind, c["artifacts"][artifact], nrmse,
                              float(r["score"]["probabilities"][artifact]), noise))
    return out


def report(rows: list[Effect], artifact: str) -> str:
    sev = np.asarray([e.severity for e in rows])
    eff = np.asarray([e.nrmse for e in rows])
    prob = np.asarray([e.probability for e in rows])
    lines = [f"{artifact}: {len(rows)} single-artifact test cases", "",
             "| Spearman | severity label | realised NRMSE |", "|---|---|---|",
             f"| realised NRMSE | {spearman(sev, eff):.2f} | |",
             f"| model probability | {spearman(sev, prob):.2f} | {spearman(eff, prob):.2f} |", "",
             "| acquisition | n | median NRMSE | median noise NRMSE | median artifact/noise | median probability |",
             "|---|---|---|---|---|---|"]

    def row(label: str, sel: list[Effect]) -> str:
        return (f"| {label} | {len(sel)} | {np.median([e.nrmse for e in sel]):.3f} | "
                f"{np.nanmedian([e.noise_nrmse for e in sel]):.3f} | {np.nanmedian([e.ratio for e in sel]):.2f} | "
                f"{np.median([e.probability for e in sel]):.2f} |")

    lines += [row(kind, [e for e in rows if e.kind == kind]) for kind in KINDS if any(e.kind == kind for e in rows)]
    lines += ["", "| band | n | artifact below its noise (of measured) | median artifact/noise | median probability |",
              "|---|---|---|---|---|"]
    for band in ("below mild", *BANDS):
        sel = [e for e in rows if e.band == band]
        if sel:
            below = sum(e.ratio < 1 for e in sel)
            measured = sum(not np.isnan(e.ratio) for e in sel)
            ratio = np.nanmedian([e.ratio for e in sel])
            lines.append(f"| {band} | {len(sel)} | {below} of {measured} | {ratio:.2f} | "
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
