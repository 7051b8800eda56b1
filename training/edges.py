"""Does the model read the lower edge of a head as an artifact? A probe on real clean volumes, edited at the edge.

``python -m training.edges --model models/NAME.onnx [--shared ../shared/data] [--volume NAME ...] [--rows 12]``

A 3-D field of view that ends in the face or the neck cuts anatomy at the image's inferior border. A model that has
learnt "tissue meets the edge" as fold-over raises ``wrap`` on clean heads (the card's `wrap` table). This probe
scores each volume three ways with the exported model (the daemon's code path): as stored; with its lowest
``--rows`` inferior slices set to zero (the cut anatomy removed, the field of view unchanged); and with ``--rows``
empty slices added below it (the field of view extended, the anatomy unchanged). A score that falls with both edits
says the model reads tissue meeting the image's edge (the cut); one that falls only when the lowest slices are
zeroed says it reads the lower anatomy itself; one that moves with neither says the edge is not the cause.

Volumes are reoriented to LPS first (array index 0 along the third axis is then the most inferior slice).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from qc_daemon.artifacts import ARTIFACTS
from qc_daemon.scoring.model import QCModel

DEFAULT_VOLUMES = ("t1w_niivue_chris_t1.nii.gz", "pdw_niivue_chris_PD.nii.gz")
EDITS = ("as stored", "lowest slices zeroed", "empty slices added below")


@dataclass(frozen=True)
class EdgeRow:
    volume: str
    edit: str
    probabilities: dict[str, float]
    flags: tuple[str, ...]


def lps(img: sitk.Image) -> sitk.Image:
    """The volume reoriented to LPS: the third array axis runs inferior to superior."""
    out: sitk.Image = sitk.DICOMOrient(img, "LPS")
    return out


def zero_inferior(img: sitk.Image, rows: int) -> sitk.Image:
    """The LPS volume with its ``rows`` most inferior slices set to zero; geometry unchanged."""
    arr = sitk.GetArrayFromImage(img)  # (z, y, x)
    arr[: max(0, min(rows, arr.shape[0]))] = 0
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(img)
    return out


def pad_inferior(img: sitk.Image, rows: int) -> sitk.Image:
    """The LPS volume with ``rows`` empty slices added below it; the origin moves down so the head stays put."""
    arr = sitk.GetArrayFromImage(img)
    pad = np.zeros((rows, *arr.shape[1:]), dtype=arr.dtype)
    out = sitk.GetImageFromArray(np.concatenate([pad, arr]))
    out.SetSpacing(img.GetSpacing())
    out.SetDirection(img.GetDirection())
    direction = np.asarray(img.GetDirection(), dtype=float).reshape(3, 3)
    origin = np.asarray(img.GetOrigin(), dtype=float) - rows * img.GetSpacing()[2] * direction[:, 2]
    out.SetOrigin(tuple(float(v) for v in origin))
    return out


def probe(model: QCModel, volumes: Sequence[tuple[str, sitk.Image]], rows: int) -> list[EdgeRow]:
    """Score each volume as stored, with its lowest ``rows`` slices zeroed, and padded by ``rows`` below."""
    out: list[EdgeRow] = []
    for name, img in volumes:
        base = lps(img)
        for edit, vol in zip(EDITS, (base, zero_inferior(base, rows), pad_inferior(base, rows)), strict=True):
            score = model.score_volume(vol)
            out.append(EdgeRow(name, edit, dict(score.probabilities), tuple(score.flags)))
    return out


def table(rows: Sequence[EdgeRow], artifacts: Sequence[str]) -> str:
    lines = ["| volume | edit | " + " | ".join(artifacts) + " | flags |",
             "|---|---|" + "---|" * len(artifacts) + "---|"]
    for r in rows:
        probs = " | ".join(f"{r.probabilities.get(a, float('nan')):.3f}" for a in artifacts)
        lines.append(f"| {r.volume} | {r.edit} | {probs} | {', '.join(r.flags) or '-'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.edges", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--shared", type=Path, default=Path("../shared/data"))
    p.add_argument("--volume", action="append", default=[],
                   help=f"NIfTI file names under SHARED/nifti (default: {', '.join(DEFAULT_VOLUMES)})")
    p.add_argument("--rows", type=int, default=12, help="slices zeroed at, and added below, the inferior edge")
    p.add_argument("--artifact", action="append", default=[], choices=ARTIFACTS,
                   help="columns to print (default: wrap)")
    args = p.parse_args(argv)
    if args.rows < 1:
        p.error(f"--rows must be at least 1, not {args.rows}")
    logging.basicConfig(level=logging.WARNING)
    model = QCModel.load(args.model)
    names = args.volume or list(DEFAULT_VOLUMES)
    vols = [(n, sitk.ReadImage(str(args.shared / "nifti" / n))) for n in names]
    rows = probe(model, vols, args.rows)
    print(f"{args.model.name}: {args.rows} slices at the inferior edge")
    print(table(rows, args.artifact or ["wrap"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
