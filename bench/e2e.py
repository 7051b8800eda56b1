"""End-to-end latency and worker memory of the running node.

Sends series with dcmtk ``storescu`` to a real ``qc-daemon serve`` and measures, from the node's own database,
the time from the last acknowledged instance to committed scores, minus the configured quiet period
(``finished_at - last_received_at - series_quiet_seconds``), and the peak resident memory (VmHWM) of each worker
process.

    .venv/bin/python bench/e2e.py                  # 20 series of 256x256x176, then 460x512x160 and 512x512x400
    .venv/bin/python bench/e2e.py --repeats 5 --no-big

Series are synthesised from the real UIH T1 volume of the shared data (resampled onto each grid), so they look
like heads to the model. Goals (docs/benchmarks.md): p95 <= 3 s for 256x256x176 on 2 cores; the big series
within 2 GB of worker memory.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import shared_data_dir  # noqa: E402
from tests.dicomgen import write_series  # noqa: E402
from tests.integration.node import Node  # noqa: E402
from tests.peers import dcmtk_env, storescu_cmd  # noqa: E402


def resample(image: sitk.Image, size: tuple[int, int, int], spacing: tuple[float, float, float]) -> sitk.Image:
    """The head resampled onto a grid of ``size`` voxels of ``spacing`` mm, centred, same orientation."""
    image = sitk.Cast(image, sitk.sitkFloat32)
    centre = image.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in image.GetSize()])
    direction = image.GetDirection()
    ref = sitk.Image(size, sitk.sitkFloat32)
    ref.SetSpacing(spacing)
    ref.SetDirection(direction)
    half = [(n - 1) * sp / 2 for n, sp in zip(size, spacing, strict=True)]
    d = [direction[0:3], direction[3:6], direction[6:9]]
    origin = [centre[i] - sum(d[i][j] * half[j] for j in range(3)) for i in range(3)]
    ref.SetOrigin(origin)
    return sitk.Resample(image, ref, sitk.Transform(), sitk.sitkLinear, 0.0)


def worker_peak_mb(node: Node) -> dict[str, float]:
    """VmHWM of each worker process of the node (found by the supervisor's "process started" log lines)."""
    peaks: dict[str, float] = {}
    for line in node.log_lines():
        if line.get("msg") == "process started" and str(line.get("child", "")).startswith("worker-"):
            pid = line.get("child_pid")
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            for row in status.splitlines():
                if row.startswith("VmHWM:"):
                    peaks[f"{line['child']}({pid})"] = int(row.split()[1]) / 1024
    return peaks


def send(node: Node, folder: Path) -> float:
    started = time.perf_counter()
    proc = subprocess.run(storescu_cmd(node.dicom_port, [folder]), env=dcmtk_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stdout[-2000:] + proc.stderr[-2000:])
    return time.perf_counter() - started


def wait_done(db: Path, series_uid: str, timeout: float = 300) -> tuple[str, float, dict[str, float]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with sqlite3.connect(db, timeout=30) as conn:
            row = conn.execute(
                "SELECT status, last_received_at, finished_at, timings FROM series WHERE series_uid = ?",
                (series_uid,),
            ).fetchone()
        if row and row[0] in ("done", "skipped", "failed") and row[2]:
            last = datetime.fromisoformat(row[1])
            fin = datetime.fromisoformat(row[2])
            import json

            return row[0], (fin - last).total_seconds(), json.loads(row[3] or "{}")
        time.sleep(0.05)
    raise TimeoutError(series_uid)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--no-big", action="store_true", help="skip the 460x512x160 and 512x512x400 series")
    parser.add_argument("--quiet-seconds", type=float, default=1.0)
    parser.add_argument("--model", default=None, help="ONNX model (default: the one shipped in models/)")
    args = parser.parse_args()

    head = sitk.ReadImage(str(shared_data_dir() / "nifti" / "t1w_uih_umr770_gre3d_sag_1mm.nii.gz"))
    grids = [("256x256x176", (256, 256, 176), (1.0, 1.0, 1.0), args.repeats)]
    if not args.no_big:
        grids += [
            ("460x512x160", (460, 512, 160), (0.5, 0.5, 1.0), 1),
            ("512x512x400", (512, 512, 400), (0.5, 0.5, 0.5), 1),
        ]
    with tempfile.TemporaryDirectory(prefix="qc-e2e-") as tmp_name:
        tmp = Path(tmp_name)
        extra = {"model_path": args.model} if args.model else {}
        node = Node(tmp / "node", workers="1", series_quiet_seconds=str(args.quiet_seconds), **extra)
        node.start()
        db = tmp / "node" / "qc.db"
        print(f"node up; quiet period {args.quiet_seconds} s; cpu count {os.cpu_count()}")
        print(
            f"{'grid':<13} {'n':>3} {'send s':>7} {'p50 s':>7} {'p95 s':>7} {'max s':>7}  convert/prep/infer s (median)"
        )
        try:
            for name, size, spacing, repeats in grids:
                volume = resample(head, size, spacing)
                latencies: list[float] = []
                sends: list[float] = []
                stages: list[dict[str, float]] = []
                for i in range(repeats):
                    folder = tmp / f"{name}-{i}"
                    uid = write_series(volume, folder, series_description=f"bench {name}")
                    sends.append(send(node, folder))
                    status, raw, timings = wait_done(db, uid)
                    if status != "done":
                        raise RuntimeError(f"{name}: series ended {status}")
                    latencies.append(raw - args.quiet_seconds)
                    stages.append(timings)
                    for f in folder.iterdir():
                        f.unlink()
                    folder.rmdir()
                lat = sorted(latencies)
                p95 = lat[min(len(lat) - 1, round(0.95 * (len(lat) - 1)))]
                med = {
                    k: statistics.median(t.get(k, 0.0) for t in stages)
                    for k in ("convert_s", "preprocess_s", "infer_s")
                }
                print(
                    f"{name:<13} {repeats:>3} {statistics.median(sends):>7.2f} {statistics.median(lat):>7.2f} "
                    f"{p95:>7.2f} {lat[-1]:>7.2f}  "
                    f"{med['convert_s']:.2f}/{med['preprocess_s']:.2f}/{med['infer_s']:.2f}"
                )
                print(
                    f"{'':<13} worker peak memory after {name}: "
                    + ", ".join(f"{k} {v:.0f} MB" for k, v in worker_peak_mb(node).items())
                )
        finally:
            node.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
