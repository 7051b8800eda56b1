"""A small MR acquisition simulator: a 1 mm object in, the magnitude image a scanner would reconstruct out.

The object (a real brain or a synthetic head, :mod:`training.synth`) is resampled into a box aligned with the
acquisition axes (readout ``ro``, phase encoding ``pe``, slice/partition ``ss``) at 1 mm, Fourier-transformed,
cropped to the acquisition matrix (so the resolution, Gibbs ringing and field of view are those of the chosen
protocol), optionally zero-filled, inverse-transformed, and its magnitude taken. The artifacts of
:mod:`training.artifacts` act at the stage where their physics lives (object, field of view, pose, k-space
window, k-space lines, noise).

A plan (:class:`AcqPlan`) is drawn at random by :func:`plan_acquisition` - 3-D anatomical, 2-D anatomical
with thick slices, low-resolution single-shot EPI-like (with geometric distortion and susceptibility dropout)
or low-resolution 3-D - with a random orientation, obliquity, field of view, resolution, k-space order,
baseline noise and mild "nuisance" imperfections that every real image has (a weak bias field, a faint EPI
ghost, vendor k-space filters, zero-filling).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import scipy.fft as sfft
import SimpleITK as sitk
from scipy import ndimage

from training.artifacts import (
    Artifact,
    BiasField,
    Blur,
    Ghosting,
    KContext,
    Motion,
    Noise,
    Segment,
    Wrap,
    compose_motion,
    fold,
    motion_severity,
)
from training.types import ComplexArray, FloatArray

KINDS = ("3d_anat", "2d_anat", "2d_epi", "3d_lowres")
KIND_WEIGHTS = (0.35, 0.25, 0.30, 0.10)


# Clean ("nuisance") shading of a simulated acquisition, log(brightest / darkest) over the head
# (artifacts.BiasField's beta), drawn uniformly from 0 to this; the bias_field artifact starts at BIAS_ONSET (0.6).
CLEAN_SHADING = 0.3  # 3-D and 2-D anatomical acquisitions
CLEAN_SHADING_WIDE = 0.45  # 2-D EPI and low-resolution 3-D; every kind with ``real_shading`` (simulator 8)


@dataclass
class AcqPlan:
    """Everything random about one acquisition except the artifacts."""

    kind: str
    mode: str  # "3d" | "2d"
    order: str  # k-space order, see time_map
    rotation: FloatArray  # (3, 3) columns: ro, pe, ss unit vectors in LPS
    centre: FloatArray  # (3,) LPS mm: box centre
    box: tuple[int, int, int]  # (ss, pe, ro) box size at 1 mm
    pe_window: tuple[int, int]  # (start, length) of the encoded FOV along pe, in box rows
    head_pe: tuple[int, int]  # head extent along pe, in box rows
    matrix: tuple[int, int, int]  # (ss, pe, ro) acquired matrix
    zero_fill: tuple[int, int]  # (pe, ro) reconstructed matrix (>= acquired)
    noise_rel: float  # baseline noise sigma / mean head intensity
    bias_beta: float  # nuisance bias field (log brightest/darkest)
    ghost_amp: float  # nuisance ghost amplitude (EPI)
    filter_taper: float  # vendor k-space filter (Tukey taper share)
    epi_distortion_mm: float
    epi_dropout: float
    flow_ghost_amp: float  # nuisance periodic (flow/pulsation) ghosts, any kind
    fov_crop: tuple[int, float, int]  # (axis 1=pe / 2=ro, fraction of the head cut, side 0=low 1=high 2=both); 0 = none
    interpolation: int  # sitk interpolator for the object
    storage: tuple[int, int, int]  # permutation of (ro, pe, ss) into the stored image's (x, y, z)
    flips: tuple[bool, bool, bool]
    seed: int
    # simulator 3: a fold-over is never cropped away (the pe cut is skipped when wrap-around is simulated)
    deep_cuts: bool = False
    # simulator 5: simultaneous multi-slice EPI, (multiband factor, CAIPI shift FOV/n, slice leakage); 1 = none
    sms: tuple[int, int, float] = (1, 1, 0.0)
    # simulator 6: spin history of 2-D single-shot EPI under motion, (TR s, T1 s, flip deg); 0 = not simulated.
    # Simulator 6 also times the slices of a multiband band together (``time_map``).
    spin: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def spacing(self) -> tuple[float, float, float]:
        """Stored spacing along (ro, pe, ss) in mm."""
        fov_pe = self.pe_window[1]
        return (self.box[2] / self.zero_fill[1], fov_pe / self.zero_fill[0], self.box[0] / self.matrix[0])

    def describe(self) -> dict[str, Any]:
        sp = self.spacing()
        out: dict[str, Any] = {
            "kind": self.kind, "mode": self.mode, "order": self.order,
            "spacing_ro_pe_ss": [round(v, 3) for v in sp], "matrix": list(self.matrix),
            "zero_fill": list(self.zero_fill), "noise_rel": round(self.noise_rel, 4),
        }
        if self.sms[0] > 1:  # simulator 5's multiband set-up, in the bank's record of each volume
            out["sms"] = {"factor": self.sms[0], "caipi": self.sms[1], "leak": round(self.sms[2], 4)}
        if self.spin[0] > 0:  # simulator 6's spin-history set-up
            out["spin"] = {"tr_s": round(self.spin[0], 3), "t1_s": round(self.spin[1], 3),
                           "flip_deg": round(self.spin[2], 1)}
        return out


def _rotation(rng: np.random.Generator, plane: str, pe_choice: int, max_deg: float) -> FloatArray:
    """Acquisition axes (columns ro, pe, ss) for a base plane, with a random oblique tilt."""
    lps = np.eye(3)
    # (in-plane axis A, in-plane axis B, normal) for each base plane, in LPS
    base = {"axial": (0, 1, 2), "coronal": (0, 2, 1), "sagittal": (1, 2, 0)}[plane]
    a, b, n = (lps[:, i] for i in base)
    ro, pe = (a, b) if pe_choice == 1 else (b, a)
    m = np.stack([ro, pe, n], axis=1)
    angles = np.radians(rng.uniform(-max_deg, max_deg, 3))
    rot = sitk.Euler3DTransform((0, 0, 0), *[float(v) for v in angles])
    r = np.asarray(rot.GetMatrix()).reshape(3, 3)
    out: FloatArray = (r @ m).astype(np.float32)
    return out


def _extent(profile: np.ndarray, frac: float = 0.04) -> tuple[int, int]:
    """[first, last+1) index where a 1-D signal profile exceeds ``frac`` of its max."""
    idx = np.nonzero(profile > frac * float(profile.max()))[0]
    if idx.size == 0:
        return 0, len(profile)
    return int(idx[0]), int(idx[-1]) + 1


def _resample_box(source: sitk.Image, rotation: FloatArray, centre: FloatArray, box: tuple[int, int, int],
                  spacing: float, transform: sitk.Transform | None, interp: int) -> FloatArray:
    size = [int(box[2]), int(box[1]), int(box[0])]  # x=ro, y=pe, z=ss
    half = np.asarray(size, float) * spacing / 2.0
    origin = centre - rotation @ (half - spacing / 2.0)
    out = sitk.Resample(source, size, transform or sitk.Transform(), interp, [float(v) for v in origin],
                        (spacing,) * 3, [float(v) for v in rotation.ravel()], 0.0, sitk.sitkFloat32)
    arr: FloatArray = sitk.GetArrayFromImage(out)
    return arr


def head_extent_probe(source: sitk.Image, rotation: FloatArray, centre: FloatArray,
                      size_mm: int = 320) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """Extent of the signal along (ss, pe, ro) in a ``size_mm`` cube (1 mm rows), from a 4 mm probe."""
    n = size_mm // 4
    arr = _resample_box(source, rotation, centre, (n, n, n), 4.0, None, sitk.sitkLinear)
    out = []
    for axis in range(3):
        prof = arr.max(axis=tuple(a for a in range(3) if a != axis))
        a, b = _extent(prof, 0.08)
        out.append((a * 4, b * 4))
    return out[0], out[1], out[2]


def plan_acquisition(source: sitk.Image, rng: np.random.Generator, kind: str | None = None,
                     source_res: tuple[float, float, float] = (1.0, 1.0, 1.0), low_res_ok: bool = True,
                     deep_cuts: bool = False, multiband: bool = False, spin_history: bool = False,
                     real_shading: bool = False) -> AcqPlan:
    """Draw a random, realistic acquisition of ``source`` (a 1 mm-ish image with physical geometry).

    ``deep_cuts`` (simulator 3): clean fields of view cut the head as deeply as a wrap-around folds it (slabs down
    to 0.55 of the head, in-plane cuts of up to 35 % on one or both sides), so that "the head reaches the edge of
    the image" no longer tells wrap from clean: only the folded copy does. Same number of random draws either way.

    ``multiband`` (simulator 5): most 2-D EPI plans become simultaneous multi-slice acquisitions (see
    :func:`draw_sms`), drawn from a generator of their own, so every other draw is unchanged.

    ``spin_history`` (simulator 6): 2-D EPI plans carry a repetition time, tissue T1 and flip angle (see
    :func:`draw_spin`; from a generator of their own), so that motion changes the excitation history of the tissue
    (:func:`spin_history_map`), and multiband slices are timed band by band.

    ``real_shading`` (simulator 8): the clean shading of 3-D and 2-D anatomical acquisitions reaches
    ``CLEAN_SHADING_WIDE``, as that of EPI and low-resolution 3-D already did: the level real heads bring
    (``python -m training.shading``). Same random draws either way.
    """
    if kind is None:
        kinds = KINDS if low_res_ok else KINDS[:2]
        w = np.asarray(KIND_WEIGHTS[: len(kinds)])
        kind = str(rng.choice(kinds, p=w / w.sum()))
    plane = str(rng.choice(["axial", "coronal", "sagittal"], p=[0.5, 0.25, 0.25]))
    rotation = _rotation(rng, plane, int(rng.integers(0, 2)), 12.0)
    # head centre: centre of the source's bright voxels
    arr = sitk.GetArrayViewFromImage(source)
    step = max(1, arr.size // 300_000)
    flat = np.asarray(arr).reshape(-1)[::step]
    thr = 0.1 * float(np.percentile(flat, 99))
    idx = np.nonzero(np.asarray(arr)[::2, ::2, ::2] > thr)
    ctr_idx = [float(np.mean(i)) * 2 for i in idx[::-1]] if idx[0].size else [s / 2 for s in source.GetSize()]
    centre = np.asarray(source.TransformContinuousIndexToPhysicalPoint(ctr_idx), dtype=np.float32)
    centre = centre + rng.normal(0, 4.0, 3).astype(np.float32)
    (s0, s1), (p0, p1), (r0, r1) = head_extent_probe(source, rotation, centre)
    ext_ss, ext_pe, ext_ro = s1 - s0, p1 - p0, r1 - r0
    # re-centre the box on the head along each axis (probe rows are relative to a 320 mm cube)
    shift = np.asarray([(r0 + r1) / 2 - 160, (p0 + p1) / 2 - 160, (s0 + s1) / 2 - 160], dtype=np.float32)
    centre = centre + rotation @ shift

    mode = "3d" if kind.startswith("3d") else "2d"
    if kind == "3d_anat":
        inplane = rng.uniform(0.8, 1.3)
        d = (inplane, inplane * rng.uniform(1.0, 1.25), rng.uniform(0.8, 1.4))
        order = str(rng.choice(["linear_ss_outer", "linear_pe_outer", "centric"], p=[0.45, 0.3, 0.25]))
    elif kind == "2d_anat":
        inplane = rng.uniform(0.7, 1.4)
        d = (inplane, inplane * rng.uniform(1.0, 1.3), rng.uniform(2.0, 6.0))
        order = "sequential_tr"
    elif kind == "2d_epi":
        inplane = rng.uniform(1.8, 4.0)
        d = (inplane, inplane, rng.uniform(2.0, 5.0))
        order = "single_shot"
    else:
        inplane = rng.uniform(1.5, 3.0)
        d = (inplane, inplane, inplane * rng.uniform(1.0, 1.6))
        order = str(rng.choice(["linear_ss_outer", "centric"]))
    # never finer than the source along any acquisition axis
    res_along = [float(np.max(np.abs(rotation[:, a]) * np.asarray(source_res))) for a in range(3)]
    d_ro, d_pe, d_ss = (max(v, 0.9 * r) for v, r in zip(d, res_along, strict=True))

    low_ro = max(0.9 * ext_ro, 150)  # a small head (below 90 mm) still gets a scanner's smallest usual FOV
    fov_ro = int(np.clip(rng.uniform(low_ro, max(ext_ro + 60, low_ro + 1)), 96, 300))
    if mode == "2d":
        cover = rng.uniform(0.55, 1.1) if kind == "2d_epi" else rng.uniform(0.55 if deep_cuts else 0.7, 1.15)
    else:
        cover = rng.uniform(0.55 if deep_cuts else 0.8, 1.15)
    fov_ss = int(np.clip(cover * ext_ss, 20 * d_ss, 300))
    n_ss = max(16, round(fov_ss / d_ss))
    fov_ss = max(fov_ss, math.ceil(n_ss * 0.9))
    # encoded FOV along pe: covers the head plus a margin (the wrap artifact may shrink it later)
    margin = rng.uniform(0.0, 40.0)
    fov_pe = int(ext_pe + margin)
    box_pe = int(max(ext_pe, fov_pe) + 8)
    head_pe = (int((box_pe - ext_pe) / 2), int((box_pe - ext_pe) / 2) + ext_pe)
    start = int(head_pe[0] - rng.uniform(0, 1) * margin)
    start = int(np.clip(start, 0, box_pe - fov_pe))
    n_ro = max(32, round(fov_ro / d_ro))
    n_pe = max(32, round(fov_pe / d_pe))
    zf_pe, zf_ro = n_pe, n_ro
    u = rng.random()
    if u < 0.15:
        f = rng.uniform(1.05, 1.25)
        zf_pe, zf_ro = round(n_pe * f), round(n_ro * f)
    elif u < 0.22 and d_ro < 1.05:
        zf_pe, zf_ro = 2 * n_pe, 2 * n_ro  # "interpolate x2" (undone by preprocessing when it lands < 0.95 mm)
    storage_perm = tuple(int(v) for v in rng.permutation(3)) if rng.random() < 0.5 else (0, 1, 2)
    epi = kind == "2d_epi"
    plan = AcqPlan(
        kind=kind, mode=mode, order=order, rotation=rotation, centre=centre.astype(np.float32),
        box=(int(fov_ss), box_pe, fov_ro), pe_window=(start, fov_pe), head_pe=head_pe,
        matrix=(n_ss, n_pe, n_ro), zero_fill=(zf_pe, zf_ro),
        noise_rel=float(np.exp(rng.uniform(np.log(0.003), np.log(0.045 if epi else 0.04)))),
        bias_beta=float(rng.uniform(0.0, CLEAN_SHADING_WIDE if real_shading or kind in ("2d_epi", "3d_lowres")
                                    else CLEAN_SHADING)),
        ghost_amp=float(rng.uniform(0.0, 0.035)) if epi else 0.0,
        filter_taper=float(rng.uniform(0.0, 0.4)) if rng.random() < 0.5 else 0.0,
        epi_distortion_mm=float(rng.uniform(0.5, 2.5) * d_pe) if epi else 0.0,
        epi_dropout=float(rng.uniform(0.3, 0.9)) if epi and rng.random() < 0.7 else 0.0,
        flow_ghost_amp=float(rng.uniform(0.0, 0.012)) if rng.random() < 0.5 else 0.0,
        # a field of view that cuts the head without fold-over (phase oversampling, tight readout FOV, cropped
        # exports): the head touching the border is no wrap-around
        fov_crop=(int(rng.integers(1, 3)), float(rng.uniform(0.02, 0.35 if deep_cuts else 0.15)),
                  int(rng.integers(0, 3 if deep_cuts else 2)))
        if rng.random() < 0.25 else (0, 0.0, 0),
        interpolation=sitk.sitkLinear,
        storage=storage_perm,  # type: ignore[arg-type]
        flips=tuple(bool(v) for v in rng.random(3) < 0.2),  # type: ignore[arg-type]
        seed=int(rng.integers(0, 2**31 - 1)),
        deep_cuts=deep_cuts,
    )
    if multiband and epi:
        plan.sms = draw_sms(np.random.default_rng([plan.seed, 6]), n_ss)
    if spin_history and epi:
        plan.spin = draw_spin(np.random.default_rng([plan.seed, 8]), plan.sms[0])
    return plan


def draw_spin(rng: np.random.Generator, factor: int) -> tuple[float, float, float]:
    """(TR in s, T1 in s, flip angle in degrees) of a 2-D EPI with multiband ``factor`` (1: single band).

    BOLD and diffusion EPI repeat every 1.5 to 3 s single-band and 0.5 to 1.5 s multiband, with the flip angle
    within 10 degrees of grey matter's Ernst angle (T1 1.4 s: 46 to 82 degrees; HCP: 0.72 s, 52 degrees); one T1
    for the head, 0.9 to 2 s (white matter to grey matter and beyond).
    """
    tr = float(rng.uniform(0.5, 1.5) if factor > 1 else rng.uniform(1.5, 3.0))
    t1 = float(np.exp(rng.uniform(np.log(0.9), np.log(2.0))))
    ernst = math.degrees(math.acos(math.exp(-tr / 1.4)))  # the sequence is set up for grey matter at 3 T
    return (tr, t1, float(np.clip(ernst + rng.uniform(-10.0, 10.0), 20.0, 90.0)))


def draw_sms(rng: np.random.Generator, n_slices: int) -> tuple[int, int, float]:
    """A simultaneous multi-slice (multiband) set-up for a 2-D EPI of ``n_slices`` slices, or none (1, 1, 0).

    Slices ``n_slices / factor`` apart are excited together; their signals are separated by coil sensitivities,
    with a CAIPIRINHA shift of FOV/``caipi`` along phase encoding between them. The separation is never perfect:
    a few per cent of each partner slice leaks into the other (slice leakage, Xu et al. 2013). On a clean multiband
    scan this is a faint, shifted copy of another part of the head: a property of the sequence, not a ghosting
    fault to rescan for.
    """
    if rng.random() < 0.3:
        return (1, 1, 0.0)
    factors = [f for f in (2, 3, 4, 6) if n_slices // f >= 6]
    if not factors:
        return (1, 1, 0.0)
    factor = int(rng.choice(factors))
    caipi = int(rng.choice([1, 2, 3, 4]))
    leak = float(np.exp(rng.uniform(np.log(0.005), np.log(0.06))))
    return (factor, caipi, leak)


def slice_leakage(k: ComplexArray, sms: tuple[int, int, float], rng: np.random.Generator) -> ComplexArray:
    """Add slice leakage to hybrid-space 2-D data ``k`` (slice, ky, kx), centred along ky.

    Slice ``s`` receives ``leak`` (times a per-slice factor in [0.5, 1.5]) of each slice excited with it
    (``s + j * n / factor``), shifted by ``j`` FOV/``caipi`` along phase encoding (a linear phase over ky).
    """
    factor, caipi, leak = sms
    n_ss, n_pe = k.shape[0], k.shape[1]
    if factor <= 1 or leak <= 0 or n_ss < factor:
        return k
    gap = n_ss // factor
    ky = np.arange(n_pe, dtype=np.float32) - n_pe // 2
    out = k.copy()
    for j in range(1, factor):
        partner = (np.arange(n_ss) + j * gap) % n_ss
        ramp = np.exp(2j * np.pi * j * ky / caipi).astype(np.complex64)  # caipi 1: a whole FOV, no shift
        w = (leak * rng.uniform(0.5, 1.5, n_ss)).astype(np.float32)
        out += w[:, None, None] * k[partner] * ramp[None, :, None]
    return out


def spin_history_map(plan: AcqPlan, segments: Sequence[Segment], time: FloatArray, pe_window: tuple[int, int],
                     grid: int = 16, sub: int = 5) -> FloatArray:
    """Signal of each slice's tissue relative to its steady state, (slice, pe, ro) on a ``grid`` x ``grid`` map.

    Physics (spin history; Friston et al. 1996): in a 2-D multi-slice acquisition each slice is excited once per TR
    and its tissue sits at a steady-state longitudinal magnetisation. When the head moves through the slices, the
    tissue a slice excites was last excited by another slice, ``tau`` ago, or never (from outside the slab): after a
    saturation to ``Mss cos(flip)`` it recovered to ``1 - (1 - Mss cos(flip)) exp(-tau / T1)``, so it is darker
    than steady state when ``tau`` < TR (tissue from a slice excited just before) and brighter when ``tau`` > TR.
    The map is the mean ratio over ``sub`` depths across the slice thickness (partial volume), with the head at
    the pose of the segment the slice was acquired in; before the acquisition the head rested at the first
    segment's pose. A slice's acquisition time is that of its central k-space line; time is in TRs (one volume).
    """
    n_ss, n_pe, _ = plan.matrix
    tr, t1, flip = plan.spin
    thick = plan.box[0] / n_ss
    start, length = pe_window
    ro = (np.arange(grid) + 0.5) * plan.box[2] / grid - plan.box[2] / 2.0
    pe = start + (np.arange(grid) + 0.5) * length / grid - plan.box[1] / 2.0
    depth = (np.arange(sub) + 0.5) / sub
    poses = []
    for seg in segments:
        rot = sitk.Euler3DTransform((0, 0, 0), *[float(v) for v in np.radians(seg.rotation_deg)])
        poses.append((np.asarray(rot.GetMatrix()).reshape(3, 3), np.asarray(seg.translation_mm, float)))
    bounds = np.asarray([seg.t0 for seg in segments[1:]], float)

    def pose_at(t: np.ndarray) -> np.ndarray:
        return np.where(t < 0, 0, np.searchsorted(bounds, t, side="right"))

    t_slice = time[:, n_pe // 2].astype(float)
    # every excitation of the last three TRs: (time, slice, pose), latest first
    ev_t = np.concatenate([t_slice - r for r in range(3)])
    ev_n = np.tile(np.arange(n_ss), 3)
    order = np.argsort(-ev_t, kind="stable")
    ev_t, ev_n = ev_t[order], ev_n[order]
    ev_pose = pose_at(ev_t)
    e = math.exp(-tr / t1)
    cos_f = math.cos(math.radians(flip))
    mss = (1.0 - e) / (1.0 - e * cos_f)
    slice_pose = pose_at(t_slice)
    out = np.ones((n_ss, grid, grid), np.float32)
    zz, yy, xx = np.meshgrid(depth, pe, ro, indexing="ij")
    for s in range(n_ss):
        a_i, b_i = poses[int(slice_pose[s])]
        u = np.stack([xx, yy, (s + zz) * thick - plan.box[0] / 2.0], axis=-1).reshape(-1, 3)  # (ro, pe, ss)
        src = u @ a_i.T + b_i  # where the tissue is in the source
        # the slice each pose puts that tissue in
        slices = np.stack([np.floor((((src - b) @ a)[:, 2] + plan.box[0] / 2.0) / thick) for a, b in poses])
        before = ev_t < t_slice[s]
        hit = (slices[ev_pose[before]] == ev_n[before][:, None])
        tau = np.where(hit.any(axis=0), t_slice[s] - ev_t[before][np.argmax(hit, axis=0)], np.inf)  # never: relaxed
        ratio = (1.0 - (1.0 - mss * cos_f) * np.exp(-tau * tr / t1)) / mss
        out[s] = ratio.reshape(sub, grid, grid).mean(axis=0)
    return out


def apply_spin_history(k: ComplexArray, ratio: FloatArray) -> ComplexArray:
    """Multiply each slice of hybrid-space ``k`` (slice, ky, kx; centred) by its map ``ratio`` (slice, g, g),
    interpolated smoothly onto the slice's pixels."""
    _, n_pe, n_ro = k.shape
    img = _to_image_domain(k, (1, 2))
    zoomed = ndimage.zoom(ratio, (1, n_pe / ratio.shape[1], n_ro / ratio.shape[2]), order=1, mode="nearest",
                          grid_mode=True)
    img *= zoomed[:, :n_pe, :n_ro].astype(np.float32)
    out: ComplexArray = np.fft.fftshift(sfft.fftn(img, axes=(1, 2), norm="forward", workers=1),
                                        axes=(1, 2)).astype(np.complex64, copy=False)
    return out


def time_map(plan: AcqPlan) -> FloatArray:
    """Acquisition time in [0, 1) of each (ss or slice, pe) line, in centred index order."""
    n_ss, n_pe, _ = plan.matrix
    iz, iy = np.meshgrid(np.arange(n_ss), np.arange(n_pe), indexing="ij")
    total = n_ss * n_pe
    if plan.order == "linear_ss_outer":
        t = (iz * n_pe + iy) / total
    elif plan.order == "linear_pe_outer":
        t = (iy * n_ss + iz) / total
    elif plan.order == "centric":
        r = ((iz - n_ss // 2) / n_ss) ** 2 + ((iy - n_pe // 2) / n_pe) ** 2
        t = np.argsort(np.argsort(r.ravel(), kind="stable"), kind="stable").reshape(r.shape) / total
    elif plan.order == "sequential_tr":
        # each TR excites every slice once (interleaved: even slices, then odd), one pe line per slice
        slot = _interleaved(n_ss)
        t = (iy + (slot[iz] + 0.5) / n_ss) / n_pe
    elif plan.order == "single_shot":
        bands = n_ss // plan.sms[0] if plan.spin[0] > 0 and plan.sms[0] > 1 else n_ss
        slot = _interleaved(bands)  # simulator 6: the slices of a multiband band share their time
        t = (slot[iz % bands] + iy / n_pe) / bands
    else:
        raise ValueError(plan.order)
    out: FloatArray = np.clip(t, 0.0, 0.999999).astype(np.float32)
    return out


def _interleaved(n: int) -> np.ndarray:
    order = list(range(0, n, 2)) + list(range(1, n, 2))
    slot = np.empty(n, dtype=np.int64)
    slot[order] = np.arange(n)
    return slot


def centre_time(plan: AcqPlan, time: FloatArray) -> float:
    """When the centre of k-space was acquired (the reference pose); single-shot EPI: mid-acquisition."""
    if plan.order == "single_shot":
        return 0.5
    n_ss, n_pe, _ = plan.matrix
    return float(time[n_ss // 2, n_pe // 2])


def _pose_transform(seg: Segment, plan: AcqPlan) -> sitk.Transform:
    """The segment's rigid pose as a resampling transform (output point -> source point) about the centre."""
    rot = np.radians(np.asarray(seg.rotation_deg))
    tr = np.asarray(seg.translation_mm)
    # angles/translations are given in the acquisition frame (ro, pe, ss); express in LPS
    r_acq = sitk.Euler3DTransform((0, 0, 0), *[float(v) for v in rot])
    m_acq = np.asarray(r_acq.GetMatrix()).reshape(3, 3)
    m = plan.rotation @ m_acq @ plan.rotation.T
    t = plan.rotation @ tr
    out = sitk.AffineTransform(3)
    out.SetCenter([float(v) for v in plan.centre])
    out.SetMatrix([float(v) for v in m.ravel()])
    out.SetTranslation([float(v) for v in t])
    return out


def _distortion(plan: AcqPlan, rng: np.random.Generator) -> sitk.Transform | None:
    """EPI geometric distortion: a smooth displacement along phase encoding (B0 off-resonance)."""
    if plan.epi_distortion_mm <= 0:
        return None
    step = 16.0
    n = [int(plan.box[2] / step) + 3, int(plan.box[1] / step) + 3, int(plan.box[0] / step) + 3]
    g = rng.standard_normal(n[::-1])
    sm = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(sitk.GetImageFromArray(g), 1.0))
    sm = sm / max(float(np.abs(sm).max()), 1e-6) * plan.epi_distortion_mm
    vec = sm[..., None] * plan.rotation[:, 1][None, None, None, :]
    f = sitk.GetImageFromArray(vec.astype(np.float64), isVector=True)
    f.SetSpacing((step,) * 3)
    f.SetDirection([float(v) for v in plan.rotation.ravel()])
    half = np.asarray([plan.box[2], plan.box[1], plan.box[0]], float) / 2.0 + step
    f.SetOrigin([float(v) for v in plan.centre - plan.rotation @ half])
    return sitk.DisplacementFieldTransform(f)


def _dropout(shape: tuple[int, int, int], plan: AcqPlan, rng: np.random.Generator, obj: FloatArray) -> FloatArray:
    """Susceptibility dropout: smooth signal voids near the inferior surface of the brain (EPI)."""
    out = np.ones(shape, np.float32)
    if plan.epi_dropout <= 0:
        return out
    mask = obj > 0.2 * float(np.percentile(obj, 99))
    idx = np.argwhere(mask[::4, ::4, ::4]) * 4
    if len(idx) == 0:
        return out
    # "inferior" in LPS is -z: project voxel positions on the LPS z axis through the box axes
    zdir = plan.rotation[2, [2, 1, 0]]  # LPS-z component of the (ss, pe, ro) box axes... as array axes
    proj = idx @ zdir
    low = idx[proj < np.percentile(proj, 25)]
    grid = np.indices((shape[0] // 4 + 1, shape[1] // 4 + 1, shape[2] // 4 + 1)).reshape(3, -1).T * 4
    acc = np.zeros(len(grid), np.float32)
    for _ in range(int(rng.integers(1, 4))):
        c = low[int(rng.integers(0, len(low)))]
        r = rng.uniform(8.0, 18.0)
        acc = np.maximum(acc, np.exp(-0.5 * (((grid - c) ** 2).sum(1) / r**2)).astype(np.float32))
    small = (1.0 - plan.epi_dropout * acc).reshape(shape[0] // 4 + 1, shape[1] // 4 + 1, shape[2] // 4 + 1)
    img = sitk.GetImageFromArray(small.astype(np.float32))
    img.SetSpacing((4.0, 4.0, 4.0))
    ref = sitk.Image([shape[2], shape[1], shape[0]], sitk.sitkFloat32)
    res: FloatArray = sitk.GetArrayFromImage(sitk.Resample(img, ref, sitk.Transform(), sitk.sitkLinear, 1.0))
    return res


def _smooth_phase(shape: tuple[int, int, int], rng: np.random.Generator) -> tuple[ComplexArray, ...]:
    """A smooth random object phase (B0 and coil phase), separable: one complex factor per axis."""
    out = []
    for n in shape:
        x = np.linspace(-1, 1, n, dtype=np.float32)
        c = rng.normal(0, 1.0, 2)
        out.append(np.exp(1j * (c[0] * x + c[1] * x * x)).astype(np.complex64))
    return tuple(out)


def _centred_index(n_out: int, n_in: int) -> np.ndarray:
    """FFT-order indices (into an axis of length ``n_in``) of the ``n_out`` central frequencies, centred order."""
    return (np.arange(n_out) - n_out // 2) % n_in


def _crop_centre(k: ComplexArray, shape: tuple[int, int, int]) -> ComplexArray:
    """Crop (or zero-pad) a centred k-space to ``shape``, keeping it centred."""
    out = np.zeros(shape, np.complex64)
    sl_in, sl_out = [], []
    for n_in, n_out in zip(k.shape, shape, strict=True):
        if n_out <= n_in:
            a = n_in // 2 - n_out // 2
            sl_in.append(slice(a, a + n_out))
            sl_out.append(slice(0, n_out))
        else:
            a = n_out // 2 - n_in // 2
            sl_in.append(slice(0, n_in))
            sl_out.append(slice(a, a + n_in))
    out[tuple(sl_out)] = k[tuple(sl_in)]
    return out


def _kspace_crop(x: ComplexArray, shape: tuple[int, int, int]) -> ComplexArray:
    """Centred k-space of the image ``x``, cropped (or zero-padded) to ``shape``.

    Image arrays are never shifted (index 0 is the first voxel); only k-space is kept centred, built by index
    selection from the FFT output instead of a full ``fftshift`` of the large box.
    """
    full = sfft.fftn(x, norm="forward", workers=1, overwrite_x=True)
    idx = []
    for n_out, n_in in zip(shape, full.shape, strict=True):
        idx.append(_centred_index(min(n_out, n_in), n_in))
    small: ComplexArray = full[np.ix_(*idx)].astype(np.complex64, copy=False)
    if tuple(small.shape) != tuple(shape):
        small = _crop_centre(small, shape)
    return small


def _to_image_domain(k: ComplexArray, axes: tuple[int, ...]) -> ComplexArray:
    """Inverse transform of a centred k-space along ``axes`` (forward normalisation: amplitudes kept)."""
    shifted = np.fft.ifftshift(k, axes=axes)
    out: ComplexArray = sfft.ifftn(shifted, axes=axes, norm="forward", workers=1, overwrite_x=True).astype(
        np.complex64, copy=False)
    return out


@dataclass
class SimResult:
    image: sitk.Image
    plan: AcqPlan
    mu: float
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class KSpaceData:
    """The acquired k-space (centred; 2-D: hybrid slice/ky/kx) before thermal noise, and how it was acquired."""

    k: ComplexArray
    time: FloatArray
    segments: list[Segment]
    ctx: KContext
    pe_window: tuple[int, int]
    motion_effect: float = 0.0  # ||k - k_still|| / ||k_still||: relative RMS change motion made (Parseval)


def simulate(source: sitk.Image, plan: AcqPlan, artifacts: Sequence[Artifact] = (),
             noise_free: bool = False, object_sigma_mm: float = 0.0) -> SimResult:
    """Acquire ``source`` with ``plan`` and the given artifact transforms; returns the stored image.

    ``object_sigma_mm``: a Gaussian partial-volume blur of the object itself (synthetic label-based objects),
    applied as a k-space window.
    """
    return reconstruct(acquire_kspace(source, plan, artifacts, object_sigma_mm), plan, artifacts, noise_free)


def acquire_kspace(source: sitk.Image, plan: AcqPlan, artifacts: Sequence[Artifact] = (),
                   object_sigma_mm: float = 0.0) -> KSpaceData:
    """Object, field of view, poses, k-space window and k-space line artifacts: everything but noise."""
    rng = np.random.default_rng(plan.seed)
    by_stage = {a.stage: a for a in artifacts if a.active}
    motion = by_stage.get("pose")
    wrap = by_stage.get("fov")
    time = time_map(plan)
    t_c = centre_time(plan, time)
    if isinstance(motion, Motion):
        segments = motion.segments(t_c)
    else:
        segments = [Segment(0.0, 1.0, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0))]
    start, length = plan.pe_window
    if isinstance(wrap, Wrap):
        w = wrap.window(plan.head_pe)
        if w is not None:
            start, length = w
    distortion = _distortion(plan, rng)
    phase = _smooth_phase(plan.box, rng)
    nuisance_bias = BiasField(0.0, rng=np.random.default_rng(plan.seed + 1), beta_override=plan.bias_beta)
    bias = by_stage.get("object")
    window = by_stage.get("window")
    n_ss, n_pe, n_ro = plan.matrix
    kspaces: list[ComplexArray] = []
    mu = 1.0
    dropout: FloatArray | None = None
    for i, seg in enumerate(segments):
        tf = _pose_transform(seg, plan)
        if distortion is not None:
            comp = sitk.CompositeTransform([tf, distortion])
            tf = comp
        obj = _resample_box(source, plan.rotation, plan.centre, plan.box, 1.0, tf, plan.interpolation)
        support = obj > 0.1 * float(np.percentile(obj[::3, ::3, ::3], 99))
        if i == 0:
            mu = float(obj[support].mean()) if support.any() else float(obj.mean() + 1e-6)
            dropout = _dropout(plan.box, plan, rng, obj) if plan.epi_dropout > 0 else None
        if dropout is not None:
            obj = obj * dropout
        obj = nuisance_bias.apply_object(obj, support)
        if isinstance(bias, BiasField):
            obj = bias.apply_object(obj, support)
        cobj = obj * phase[0][:, None, None]
        cobj *= phase[1][None, :, None]
        cobj *= phase[2][None, None, :]
        if isinstance(wrap, Wrap) or start < 0 or start + length > plan.box[1]:
            cobj = fold(cobj, start, length, axis=1)
        else:  # the encoded FOV holds the whole head: no signal to fold
            cobj = cobj[:, start:start + length]
        k = _kspace_crop(cobj, (n_ss, n_pe, n_ro))
        if object_sigma_mm > 0:
            k = _gaussian_object_window(k, object_sigma_mm, (plan.box[0], length, plan.box[2]))
        if isinstance(window, Blur):
            k = window.apply_window(k)
        kspaces.append(k)
    if mu <= 0:
        mu = 1.0
    if plan.mode == "2d":  # hybrid space: slices are not Fourier-encoded
        kspaces = [_to_image_domain(k, (0,)) for k in kspaces]
    motion_effect = 0.0
    if len(kspaces) > 1:
        target = motion.target_effect if isinstance(motion, Motion) else None
        still = kspaces[_still_index(segments)]
        window = (start, length)
        if target is not None:
            measure = partial(_composed_change, kspaces, time, plan, window, still) if has_spin_history(plan) else None
            segments = fit_motion_timing(kspaces, segments, time, t_c, target, measure)
            del measure  # it holds the poses' k-spaces, freed below
        k = compose_acquisition(kspaces, segments, time, plan, window)
        motion_effect = realised_motion(k, still)
        del still
    else:
        k = kspaces[0]
    del kspaces
    if plan.mode == "2d" and plan.sms[0] > 1:
        k = slice_leakage(k, plan.sms, np.random.default_rng([plan.seed, 7]))
    n_transform = (n_pe * n_ro) if plan.mode == "2d" else (n_ss * n_pe * n_ro)
    ctx = KContext(plan.mode, time, mu, n_transform)
    if plan.ghost_amp > 0:
        k = Ghosting(0.0, rng=np.random.default_rng(plan.seed + 2), kind="nyquist",
                     amplitude_override=plan.ghost_amp).apply_kspace(k, ctx)
    if plan.flow_ghost_amp > 0:
        k = Ghosting(0.0, rng=np.random.default_rng(plan.seed + 4), kind="periodic",
                     amplitude_override=plan.flow_ghost_amp).apply_kspace(k, ctx)
    if plan.filter_taper > 0:
        k = _vendor_filter(k, plan.filter_taper)
    for a in artifacts:
        if a.active and a.stage == "kspace":
            k = a.apply_kspace(k, ctx)  # type: ignore[attr-defined]
    return KSpaceData(k, time, segments, ctx, (start, length), motion_effect)


def has_spin_history(plan: AcqPlan) -> bool:
    """Simulator 6: motion changes the excitation history of a 2-D single-shot EPI (one excitation per slice)."""
    return plan.spin[0] > 0 and plan.order == "single_shot"


def compose_acquisition(kspaces: list[ComplexArray], segments: list[Segment], time: FloatArray, plan: AcqPlan,
                        pe_window: tuple[int, int]) -> ComplexArray:
    """The moving head's acquisition: each line from its pose (:func:`compose_motion`), and, where the plan has
    it, the spin history of the tissue (:func:`spin_history_map`)."""
    k = compose_motion(kspaces, segments, time)
    if has_spin_history(plan):
        k = apply_spin_history(k, spin_history_map(plan, segments, time, pe_window))
    return k


def _composed_change(kspaces: list[ComplexArray], time: FloatArray, plan: AcqPlan, pe_window: tuple[int, int],
                     still: ComplexArray, segments: list[Segment]) -> float:
    return realised_motion(compose_acquisition(kspaces, segments, time, plan, pe_window), still)


def _still_index(segments: Sequence[Segment]) -> int:
    """The segment at the reference pose (the one the k-space centre was acquired in)."""
    for i, seg in enumerate(segments):
        if not any(seg.rotation_deg) and not any(seg.translation_mm):
            return i
    return 0


def fit_motion_timing(kspaces: Sequence[ComplexArray], segments: list[Segment], time: FloatArray, t_centre: float,
                      target: float, measure: Callable[[list[Segment]], float] | None = None) -> list[Segment]:
    """The same poses with their switch times moved towards or away from the k-space centre's time so that the
    motion changes the image by ``target`` (relative RMS, :func:`realised_motion`) as nearly as it can.

    A boundary at relative distance ``u`` in (0, 1] from the centre's time towards the start (or the end) of the
    acquisition moves to ``u ** g`` for one power ``g``: below 1 the moves go out to the edges of k-space (less
    change), above 1 in towards its centre (more); the order of the poses and the pose at the centre stay, only how
    much of k-space, and of which energy, each pose fills. The change of any choice is computed from per-line
    energies, without composing k-space; ``measure`` (simulator 6: spin history changes the image besides the
    poses) replaces that with the change of the whole composed acquisition, over a coarser set of powers.
    """
    bounds = np.asarray([s.t0 for s in segments[1:]], np.float64)
    after = bounds > t_centre
    span = np.where(after, 1.0 - t_centre, t_centre)
    u = np.clip(np.abs(bounds - t_centre) / np.maximum(span, 1e-9), 0.0, 1.0)

    def stretched(g: float) -> np.ndarray:
        return np.asarray(np.clip(t_centre + np.where(after, 1.0, -1.0) * span * u ** g, 0.0, 1.0))

    def timed(b: np.ndarray) -> list[Segment]:
        edges = [0.0, *(float(v) for v in b), 1.0]
        return [Segment(edges[i], edges[i + 1], s.rotation_deg, s.translation_mm) for i, s in enumerate(segments)]

    if measure is None:  # per-line energies of each pose's difference from the still one
        ref = _still_index(segments)
        still = kspaces[ref]
        total = float(np.vdot(still, still).real) or 1.0
        diff = [np.zeros(time.shape, np.float64) if i == ref else
                (np.abs(k - still) ** 2).sum(axis=-1, dtype=np.float64) for i, k in enumerate(kspaces)]

        def change(b: np.ndarray) -> float:
            edges = np.concatenate([[0.0], b, [np.inf]])
            pose = np.searchsorted(edges, time, side="right") - 1
            return math.sqrt(sum(float(d[pose == i].sum()) for i, d in enumerate(diff) if i != ref) / total)
        powers = np.geomspace(0.02, 50.0, 61)
    else:
        def change(b: np.ndarray) -> float:
            return measure(timed(b))
        powers = np.geomspace(0.02, 50.0, 25)
    misses = [abs(change(stretched(g)) - target) + 1e-4 * abs(math.log(g)) for g in powers]
    return timed(stretched(float(powers[int(np.argmin(misses))])))


def realised_motion(k: ComplexArray, k_still: ComplexArray) -> float:
    """Relative RMS change that motion made: ``||k - k_still|| / ||k_still||``.

    By Parseval this is the relative RMS difference of the complex images with and without the motion (the same
    acquisition held still at the reference pose), before noise; it measures what motion did to the image, where
    the motion amplitude alone does not (a move late in a centric acquisition changes little).
    """
    num = float(np.linalg.norm((k - k_still).ravel()))
    den = float(np.linalg.norm(k_still.ravel())) or 1.0
    return num / den


def realised_severities(asked: Mapping[str, float], sim: SimResult) -> dict[str, float]:
    """The severity each artifact of a simulation reached: as asked, but motion by the change it made to the image
    (``Motion.target_effect``; it falls short when the drawn moves are too small for the target)."""
    out = dict(asked)
    if "motion" in out:
        out["motion"] = motion_severity(float(sim.info["motion_effect"]))
    return out


def reconstruct(data: KSpaceData, plan: AcqPlan, artifacts: Sequence[Artifact] = (),
                noise_free: bool = False) -> SimResult:
    """Thermal noise (complex, in k-space), zero-filling, inverse transform, magnitude, stored geometry."""
    k, ctx = data.k, data.ctx
    start, length = data.pe_window
    if not noise_free:
        k = Noise(0.0, rng=np.random.default_rng(plan.seed + 3), sigma_rel_override=plan.noise_rel).apply_kspace(k, ctx)
        for a in artifacts:
            if a.active and a.stage == "noise":
                k = a.apply_kspace(k, ctx)  # type: ignore[attr-defined]
    zf = (k.shape[0], plan.zero_fill[0], plan.zero_fill[1])
    if zf != k.shape:
        k = _crop_centre(k, zf)
    axes = (1, 2) if plan.mode == "2d" else (0, 1, 2)
    img = np.abs(_to_image_domain(k, axes)).astype(np.float32)
    # the zero-filled inverse transform keeps amplitudes (forward normalisation by the acquired size)
    # the stored image is centred on the encoded FOV, which may sit off the box centre along pe
    pe_shift = (start + length / 2.0) - plan.box[1] / 2.0
    centre = plan.centre + plan.rotation[:, 1] * np.float32(pe_shift)
    axis, frac, side = plan.fov_crop
    # a deep pe cut would remove the very copy a wrap label stands for (simulator 3 cuts up to 35 %)
    keeps_fold = plan.deep_cuts and axis == 1 and any(isinstance(a, Wrap) and a.active for a in artifacts)
    if axis in (1, 2) and frac > 0 and not keeps_fold:
        img, shift_vox = _crop_head(img, axis, frac, side)
        spacing_axis = length / plan.zero_fill[0] if axis == 1 else plan.box[2] / plan.zero_fill[1]
        centre = centre + plan.rotation[:, 1 if axis == 1 else 0] * np.float32(shift_vox * spacing_axis)
    return SimResult(_to_image(img, plan, length, centre), plan, ctx.mu,
                     {"pe_window": (start, length), "motion_effect": data.motion_effect})


def _crop_head(img: FloatArray, axis: int, frac: float, side: int) -> tuple[FloatArray, float]:
    """Cut ``frac`` of the head's extent off one side of the image along ``axis`` (no fold-over); side 2: half of
    it off each side.

    Returns the cropped image and the shift of its centre in voxels (positive: towards higher indices).
    """
    prof = img.max(axis=tuple(a for a in range(3) if a != axis))
    lo, hi = _extent(prof, 0.1)
    cut = max(1, round(frac * (hi - lo)))
    n = img.shape[axis]
    if side == 2:
        a, b = lo + cut // 2, hi - (cut - cut // 2)
    else:
        a, b = (lo + cut, n) if side == 0 else (0, hi - cut)
    if b - a < 16:
        return img, 0.0
    sl = [slice(None)] * 3
    sl[axis] = slice(a, b)
    shift = ((a + b) / 2.0) - n / 2.0
    return np.ascontiguousarray(img[tuple(sl)]), float(shift)


def _gaussian_object_window(k: ComplexArray, sigma_mm: float, fov_mm: tuple[int, int, int]) -> ComplexArray:
    """Multiply a centred k-space by the transform of a Gaussian of ``sigma_mm`` (the object's partial volume)."""
    ws = []
    for n, fov in zip(k.shape, fov_mm, strict=True):
        f = (np.arange(n) - n // 2) / float(fov)  # cycles per mm
        ws.append(np.exp(-2.0 * (np.pi * sigma_mm * f) ** 2).astype(np.float32))
    k *= ws[0][:, None, None]
    k *= ws[1][None, :, None]
    k *= ws[2][None, None, :]
    return k


def _vendor_filter(k: ComplexArray, taper: float) -> ComplexArray:
    """A vendor's in-plane k-space filter (Tukey taper over the outer ``taper`` share of k-space)."""
    ws = []
    for ax in (1, 2):
        n = k.shape[ax]
        a = np.abs((np.arange(n) - n // 2) / (n / 2))
        w = np.ones(n, np.float32)
        t0 = 1 - taper
        ramp = a > t0
        w[ramp] = 0.5 * (1 + np.cos(np.pi * (a[ramp] - t0) / max(taper, 1e-6)))
        ws.append(w)
    k *= (ws[0][:, None] * ws[1][None, :])[None, :, :]
    return k


def _to_image(arr: FloatArray, plan: AcqPlan, fov_pe: int, centre: FloatArray) -> sitk.Image:
    """Stored image with physical geometry (array axes (ss, pe, ro) -> image axes x=ro, y=pe, z=ss)."""
    n_ss, n_pe, n_ro = arr.shape
    # spacing from the reconstructed matrix (the image may have been cropped after reconstruction)
    sp = (plan.box[2] / plan.zero_fill[1], fov_pe / plan.zero_fill[0], plan.box[0] / n_ss)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(sp)
    img.SetDirection([float(v) for v in plan.rotation.ravel()])
    half = np.asarray([n_ro * sp[0], n_pe * sp[1], n_ss * sp[2]]) / 2.0 - np.asarray(sp) / 2.0
    img.SetOrigin([float(v) for v in centre - plan.rotation @ half])
    if plan.storage != (0, 1, 2):
        img = sitk.PermuteAxes(img, list(plan.storage))
    if any(plan.flips):
        img = sitk.Flip(img, list(plan.flips), flipAboutOrigin=False)
    return img


EXPORT_MODES = ("mask", "clip", "quantise")


def export_nuisance(image: sitk.Image, rng: np.random.Generator,
                    p: tuple[float, float, float] = (0.15, 0.2, 0.2)) -> tuple[sitk.Image, list[str]]:
    """How a clean magnitude image may be stored: what scanners and pipelines do to it after reconstruction.

    Many real clean series have no noise floor at all (the Philips MPRAGE of ``shared/data``: 71 % of the
    background voxels are exactly 0; SPM/FSL outputs such as ``chris_t1``: everything outside the head is 0;
    Enhanced MR field maps and ASL: 56-65 %), or come as 8-bit integers. Each mode is drawn independently
    (probabilities ``p``):

    ``mask``: zero outside a smooth head mask (3 mm Gaussian of the image above 4-12 % of its 99th percentile);
    ``clip``: subtract a small offset (0.5-4 % of the 99th percentile) and clip at zero (a background partly 0);
    ``quantise``: round to 100-200 levels below the 99th percentile (8-bit exports).

    Returns the image (same geometry) and the modes applied.
    """
    u = rng.random(3)
    modes = [m for m, v, q in zip(EXPORT_MODES, u, p, strict=True) if v < q]
    if not modes:
        return image, []
    arr = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
    p99 = float(np.percentile(arr[::2, ::2, ::2], 99)) or 1.0
    if "mask" in modes:
        smooth = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(sitk.Cast(image, sitk.sitkFloat32), 3.0))
        arr[smooth <= rng.uniform(0.04, 0.12) * p99] = 0.0
    if "clip" in modes:
        arr = np.maximum(arr - np.float32(rng.uniform(0.005, 0.04) * p99), np.float32(0.0))
    if "quantise" in modes:
        step = np.float32(p99 / rng.uniform(100.0, 200.0))
        arr = np.round(arr / step) * step
    out = sitk.GetImageFromArray(arr.astype(np.float32, copy=False))
    out.CopyInformation(image)
    return out, modes
