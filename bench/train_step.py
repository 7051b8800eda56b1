"""Time training steps: seconds per step of the shipped recipe's network, with and without ``training.memory``.

``python bench/train_step.py --bank runs/NAME/bank_train [--steps 40] [--batch 128] [--threads 2]``

Each setting runs in a fresh process (the allocator setting is per process): the same slices (seeded batches from a
training bank written by ``python -m training.train``), the same network (``--widths`` as the recipe), bfloat16
autocast as ``--amp bf16``, AdamW. The first 5 steps are not timed. Prints seconds per step, user and system CPU
seconds per step, page faults per step and the peak resident size. Needs the ``train`` extra.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WARMUP = 5


def run_steps(bank_dir: Path, steps: int, batch: int, threads: int, widths: str, keep: bool) -> dict[str, float]:
    """Train ``steps`` steps in this process; per-step figures after the warm-up."""
    sys.path.insert(0, str(REPO))
    from training.memory import keep_freed_memory

    kept = keep_freed_memory() if keep else False
    import numpy as np
    import torch

    from qc_daemon.imaging.preprocess import PreprocessSpec
    from training.bank import Bank
    from training.net import QCNet
    from training.train import prefetch, slice_batches, slice_loss

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    bank = Bank.open(bank_dir)
    n = PreprocessSpec().slices_per_volume
    net = QCNet(tuple(int(w) for w in widths.split(","))).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    for p in (net.mix, net.calib_a, net.calib_b):
        p.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-3)
    t0, ru0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    for i, b in enumerate(prefetch(slice_batches(bank, batch, np.random.default_rng(0), steps + WARMUP, n))):
        if i == WARMUP:
            t0, ru0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        x = b["x"].contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, _ = net.slice_forward(x, b["side"])
            loss = slice_loss(out.float(), b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    wall = time.perf_counter() - t0
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {"kept": kept, "s_per_step": wall / steps, "user_per_step": (ru.ru_utime - ru0.ru_utime) / steps,
            "system_per_step": (ru.ru_stime - ru0.ru_stime) / steps,
            "faults_per_step": (ru.ru_minflt - ru0.ru_minflt) / steps, "peak_rss_gib": ru.ru_maxrss / 2**20}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bank", type=Path, required=True, help="a training bank folder (runs/NAME/bank_train)")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--widths", default="24,32,64,96,128")
    p.add_argument("--one", choices=("kept", "returned"), help=argparse.SUPPRESS)  # the child process
    args = p.parse_args(argv)
    if args.one:
        res = run_steps(args.bank, args.steps, args.batch, args.threads, args.widths, args.one == "kept")
        sys.stdout.write(json.dumps(res) + "\n")
        return 0
    print(f"{args.steps} steps of {args.batch} slices, {args.threads} threads, bank {args.bank}")
    for setting in ("returned", "kept"):
        cmd = [sys.executable, __file__, "--bank", str(args.bank), "--steps", str(args.steps), "--batch",
               str(args.batch), "--threads", str(args.threads), "--widths", args.widths, "--one", setting]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=dict(os.environ)).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"freed memory {setting:8s}: {r['s_per_step']:.3f} s/step (user {r['user_per_step']:.3f} s, "
              f"system {r['system_per_step']:.3f} s, {r['faults_per_step']:.0f} page faults per step), "
              f"peak RSS {r['peak_rss_gib']:.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
