"""A small head-like phantom and small acquisition plans, so the artifact tests run in seconds."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from training.acquisition import AcqPlan

SHAPE = (72, 112, 96)  # (z, y, x) at 1 mm


def phantom(seed: int = 0) -> sitk.Image:
    """Nested ellipsoids (scalp, skull, brain with texture, ventricles) on a 1 mm LPS grid centred at 0."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(SHAPE).astype(np.float32)
    cz, cy, cx = (s / 2 - 0.5 for s in SHAPE)

    def ell(a: float, b: float, c: float, dz: float = 0, dy: float = 0, dx: float = 0) -> np.ndarray:
        return ((z - cz - dz) / a) ** 2 + ((y - cy - dy) / b) ** 2 + ((x - cx - dx) / c) ** 2 <= 1

    img = np.zeros(SHAPE, np.float32)
    img[ell(30, 45, 38)] = 0.8  # scalp
    img[ell(27, 42, 35)] = 0.05  # skull
    img[ell(25, 40, 33)] = 0.55  # brain
    img[ell(18, 30, 25) & ~ell(14, 24, 20)] = 0.75  # "white matter" shell
    img[ell(6, 12, 4, dx=-6)] = 1.0  # ventricles
    img[ell(6, 12, 4, dx=6)] = 1.0
    img *= 1 + 0.03 * rng.standard_normal(SHAPE).astype(np.float32)
    out = sitk.GetImageFromArray(np.clip(img, 0, None))
    out.SetOrigin(tuple(-(s / 2 - 0.5) for s in SHAPE[::-1]))
    return out


def plan(mode: str = "3d", order: str = "linear_ss_outer", matrix: tuple[int, int, int] = (64, 104, 96),
         zero_fill: tuple[int, int] | None = None, seed: int = 1) -> AcqPlan:
    """An axial acquisition of the phantom: box (ss 64, pe 112, ro 96) at 1 mm, head rows 11..101 along pe."""
    return AcqPlan(
        kind="test", mode=mode, order=order, rotation=np.eye(3, dtype=np.float32)[:, [0, 1, 2]],
        centre=np.zeros(3, np.float32), box=(64, 112, 96), pe_window=(4, 104), head_pe=(11, 101),
        matrix=matrix, zero_fill=zero_fill or (matrix[1], matrix[2]), noise_rel=0.01, bias_beta=0.0,
        ghost_amp=0.0, filter_taper=0.0, epi_distortion_mm=0.0, epi_dropout=0.0, flow_ghost_amp=0.0,
        fov_crop=(0, 0.0, 0), interpolation=sitk.sitkLinear,
        storage=(0, 1, 2), flips=(False, False, False), seed=seed,
    )


def arr(img: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(img).astype(np.float64)


def head_folder(tmp_path: Path) -> Path:
    """A NIfTI folder with one phantom head, for tiny training runs."""
    heads = tmp_path / "nifti"
    heads.mkdir()
    sitk.WriteImage(phantom(0), str(heads / "t1w_train.nii.gz"))
    return heads


def linked_run(tmp_path: Path, name: str, base: Path) -> Path:
    """A new run folder whose banks are links to ``base``'s (another training run on the same banks)."""
    run = tmp_path / name
    run.mkdir()
    for bank in ("bank_train", "bank_val"):
        os.symlink(base / bank, run / bank)
    return run


def tiny_run(seed: int) -> list[str]:
    """``training.train`` options for a run of seconds: one synthetic subject, 4-volume banks, 2 steps."""
    return ["--synthetic-subjects", "1", "--val-synthetic-subjects", "1", "--bank-volumes", "4", "--val-volumes",
            "4", "--workers", "1", "--epochs", "1", "--max-steps", "2", "--batch", "3", "--slice-size", "64",
            "--slices-per-plane", "2", "--widths", "8,8,16,16,16", "--no-progress", "--seed", str(seed)]
