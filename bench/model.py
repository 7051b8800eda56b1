"""Time the shipped model on a 256x256x176 volume: preprocessing plus inference, ONNX Runtime on 2 threads.

``python bench/model.py [--model models/NAME.onnx] [--repeat 10] [--threads 2]``

The budget is 1 s per volume on 2 CPU threads (a bench, not a test: timings depend on the machine). The volume
is the held-out Philips MPRAGE of ``shared/data`` resampled to 256x256x176 when the data set is there, else a
synthetic head of that size; both pixel types the node sees (float64 from Philips rescaling, int16) are timed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from qc_daemon.scoring.model import QCModel  # noqa: E402


def volume(shared: Path) -> sitk.Image:
    folder = shared / "dicom" / "philips_t1_mprage_3d_sag"
    if folder.is_dir():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames([str(p) for p in sorted(folder.glob("*.dcm"))])
        img = reader.Execute()
        return sitk.Resample(img, [256, 256, 176], sitk.Transform(), sitk.sitkLinear, img.GetOrigin(),
                             img.GetSpacing(), img.GetDirection(), 0.0, img.GetPixelID())
    z, y, x = np.indices((176, 256, 256)).astype(np.float32)
    r = ((z - 88) / 80) ** 2 + ((y - 128) / 110) ** 2 + ((x - 128) / 90) ** 2
    arr = np.where(r < 1, 800 + 200 * np.sin(x / 5), 0) + np.random.default_rng(0).normal(0, 10, r.shape)
    return sitk.GetImageFromArray(np.abs(arr))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=None)
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    args = p.parse_args()
    path = args.model or sorted((REPO / "models").glob("*.onnx"))[-1]
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)
    model = QCModel.load(path, intra_op_threads=args.threads)
    base = volume(args.shared)
    print(f"model {model.metadata.name} {model.metadata.version} ({path.name}), providers {model.providers}, "
          f"{args.threads} threads, volume {base.GetSize()}")
    for label, img in (("float64", sitk.Cast(base, sitk.sitkFloat64)), ("int16", sitk.Cast(base, sitk.sitkInt16))):
        model.score_volume(img)  # warm-up
        total, pre, inf = [], [], []
        for _ in range(args.repeat):
            t = time.perf_counter()
            s = model.score_volume(img)
            total.append(time.perf_counter() - t)
            pre.append(s.timings["preprocess_s"])
            inf.append(s.timings["infer_s"])
        print(f"{label:8s} per volume: median {statistics.median(total):.3f} s, max {max(total):.3f} s "
              f"(preprocess {statistics.median(pre):.3f} s, inference {statistics.median(inf):.3f} s)"
              f" -> {'within' if statistics.median(total) <= 1.0 else 'OVER'} the 1 s budget")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
