"""Time the training-bank simulation: seconds per simulated volume, and a fingerprint of what it made.

``python bench/bank.py [--volumes 16] [--subjects 4] [--simulator 8] [--cache DIR] [--profile 20]``

More than half of a training run on the 2-core machine is spent here (qc-v23: banks 3,401 s of 6,096 s;
``docs/model-experiments.md``), so a faster simulator lets a bigger recipe fit the 2-hour budget. A speed-up must
keep the same random draws: the fingerprint printed at the end (the labels exactly, the slices' mean and the
largest difference from a reference file written with ``--save``) shows whether the volumes changed.

One process, one SimpleITK thread, freed memory kept in the process (as one bank worker runs; ``training.memory``;
``--return-freed-memory`` for the allocator as it was before). Synthetic heads only (no real heads needed); the
subjects are rendered first (or read from ``--cache``, a run's ``subjects/`` folder) and timed apart. Needs the
``train`` extra.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from training.bank import BankConfig, SubjectCache, VolumeFactory  # noqa: E402
from training.memory import keep_freed_memory  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--volumes", type=int, default=16)
    p.add_argument("--subjects", type=int, default=4, help="synthetic training subjects (seeds 0..N-1)")
    p.add_argument("--simulator", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", type=Path, default=None, help="a SubjectCache folder (a run's subjects/)")
    p.add_argument("--profile", type=int, default=0, help="print the N functions with the most own time")
    p.add_argument("--save", type=Path, default=None, help="write the labels and slices to this .npz (a reference)")
    p.add_argument("--against", type=Path, default=None, help="compare the labels and slices with a reference .npz")
    p.add_argument("--return-freed-memory", action="store_true",
                   help="leave glibc's allocator as it is (freed blocks above 32 MiB go back to the kernel)")
    args = p.parse_args(argv)

    kept = False if args.return_freed_memory else keep_freed_memory()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    cfg = BankConfig(n_volumes=args.volumes, seed=args.seed, synthetic_subjects=list(range(args.subjects)),
                     real_fraction=0.0, simulator=args.simulator)
    with tempfile.TemporaryDirectory() as tmp:
        cache = SubjectCache(args.cache if args.cache is not None else Path(tmp))
        t0 = time.perf_counter()
        for seed in range(args.subjects):
            cache.get(seed, face=args.simulator >= 7)
        render_s = time.perf_counter() - t0
        factory = VolumeFactory(cfg, [], cache)
        profiler = cProfile.Profile() if args.profile else None
        times: list[float] = []
        items = []
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        for i in range(args.volumes):
            t = time.perf_counter()
            if profiler is not None:
                profiler.enable()
            items.append(factory.make(i))
            if profiler is not None:
                profiler.disable()
            times.append(time.perf_counter() - t)
        ru = resource.getrusage(resource.RUSAGE_SELF)

    slices = np.stack([it["slices"].astype(np.float32) for it in items])
    labels = np.stack([it["labels"] for it in items])
    print(f"simulator {args.simulator}, {args.volumes} volumes from {args.subjects} synthetic subjects "
          f"(subjects ready in {render_s:.1f} s)")
    print(f"seconds per volume: mean {statistics.mean(times):.3f}, median {statistics.median(times):.3f}, "
          f"max {max(times):.3f}, total {sum(times):.1f}")
    print(f"freed memory {'kept' if kept else 'returned'}: user {ru.ru_utime - ru0.ru_utime:.1f} s, "
          f"system {ru.ru_stime - ru0.ru_stime:.1f} s, page faults {ru.ru_minflt - ru0.ru_minflt}, "
          f"peak RSS {ru.ru_maxrss / 2**20:.2f} GiB")
    print(f"fingerprint: labels sum {labels.sum():.0f} of {labels.size}, slices mean {slices.mean():.6f}")
    if args.save is not None:
        np.savez_compressed(args.save, slices=slices, labels=labels)
        print(f"reference written: {args.save}")
    if args.against is not None:
        with np.load(args.against) as ref:
            same_labels = bool(np.array_equal(ref["labels"], labels))
            diff = float(np.abs(ref["slices"] - slices).max()) if ref["slices"].shape == slices.shape else float("inf")
        print(f"against {args.against}: labels identical {same_labels}, largest slice difference {diff:.3g}")
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
