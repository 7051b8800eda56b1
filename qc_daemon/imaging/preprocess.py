# mypy: disable-error-code="no-untyped-call"
"""The preprocessing shared by training and the daemon (numpy and SimpleITK only).

One function, :func:`prepare`, turns any 3-D ``SimpleITK.Image`` (any pixel type, orientation and spacing) into
the network input: 2.5-D slices from the three canonical planes, each a stack of three neighbouring slices,
cropped or padded to a fixed square size around the head, with the pixel spacing of each slice as side input.

Steps, in order:

1. big, fine volumes are block-averaged first, in their own pixel type (``BinShrink`` by the integer part of
   ``min_spacing_mm / spacing`` along each axis finer than ``resample_below_mm``): a 512x512x400 float64 series
   is never copied at full resolution, which bounds the worker's memory and time;
2. cast to float32 (Philips rescaled series arrive as float64);
3. canonical orientation by axis permutation and flips only (``DICOMOrient`` to LPS, no interpolation);
4. **resolution-aware** working grid: an axis still finer than ``resample_below_mm`` is resampled to
   ``min_spacing_mm`` (with a Gaussian anti-alias filter); a coarser axis is kept as acquired, so low-resolution
   data (EPI, DWI) is never upsampled into fake blur;
5. robust intensity normalisation: divide by a high percentile of the foreground, clip to ``[0, clip_max]``;
6. 2.5-D slices: ``slices_per_plane`` slices per plane spread over the head, each with its two neighbours as
   channels, cropped/padded to ``slice_size`` square around the head centre.

Training (``training/``) imports this module, so what the network saw in training is what it sees in the node.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk

FloatArray = npt.NDArray[np.float32]

PLANES: tuple[str, str, str] = ("axial", "coronal", "sagittal")
#: canonical orientation: array axes (z, y, x) of the oriented image point to (S, P, L)
CANONICAL = "LPS"


@dataclass(frozen=True)
class PreprocessSpec:
    """What the network expects; stored in the model's metadata so the daemon prepares exactly that."""

    slice_size: int = 192
    slices_per_plane: int = 8
    neighbour_offset: int = 1
    min_spacing_mm: float = 1.0
    resample_below_mm: float = 0.95
    norm_percentile: float = 99.0
    clip_max: float = 2.5
    extent_lo: float = 0.12
    extent_hi: float = 0.88

    @property
    def slices_per_volume(self) -> int:
        """Network input slices per volume: ``slices_per_plane`` from each of the three planes."""
        return len(PLANES) * self.slices_per_plane

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreprocessSpec:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class SlicePosition:
    """Where one network input slice came from, in the canonical (LPS-oriented) input image."""

    plane: str
    index: int  # slice index along the plane's normal axis, in the oriented image before resampling
    position_mm: float  # LPS coordinate of the slice along that axis


@dataclass(frozen=True)
class PreparedVolume:
    slices: FloatArray  # (n, 3, S, S)
    side: FloatArray  # (n, 3): log2 of (row spacing, column spacing, neighbour distance) in mm
    positions: list[SlicePosition]
    working_spacing: tuple[float, float, float]  # x, y, z in mm after step 3
    stats: dict[str, float] = field(default_factory=dict)


def to_float32(image: sitk.Image) -> sitk.Image:
    """Cast to 32-bit float; multi-component images keep their first component."""
    if image.GetDimension() != 3:
        raise ValueError(f"expected a 3-D image, got {image.GetDimension()}-D")
    if image.GetNumberOfComponentsPerPixel() > 1:
        image = sitk.VectorIndexSelectionCast(image, 0, sitk.sitkFloat32)
    if image.GetPixelID() != sitk.sitkFloat32:
        image = sitk.Cast(image, sitk.sitkFloat32)
    return image


def to_canonical(image: sitk.Image) -> sitk.Image:
    """Float32, axes permuted and flipped to the closest LPS orientation (no interpolation)."""
    oriented: sitk.Image = sitk.DICOMOrient(to_float32(image), CANONICAL)
    return oriented


def bin_fine_axes(image: sitk.Image, spec: PreprocessSpec) -> sitk.Image:
    """Block-average (``BinShrink``) the axes much finer than the working grid, in the image's own pixel type.

    Along an axis with spacing below ``resample_below_mm`` the factor is the integer part of
    ``min_spacing_mm / spacing`` (0.5 mm -> 2, 0.3 mm -> 3); the block mean is the anti-alias filter. What remains
    finer than ``resample_below_mm`` is resampled later by :func:`working_grid`. Integer images are cast to
    float32 first (no rounding of the block means).
    """
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
    factors = [math.floor(spec.min_spacing_mm / sp + 1e-6) if sp < spec.resample_below_mm else 1 for sp in spacing]
    factors = [max(1, min(f, n)) for f, n in zip(factors, image.GetSize(), strict=True)]
    if all(f == 1 for f in factors):
        return image
    if image.GetPixelID() not in (sitk.sitkFloat32, sitk.sitkFloat64):
        image = to_float32(image)
    binned: sitk.Image = sitk.BinShrink(image, factors)
    return binned


def canonical_permutation(image: sitk.Image) -> tuple[int, int, int]:
    """For each canonical (LPS) axis, the axis of ``image`` that ``DICOMOrient`` puts there (direction only)."""
    probe = sitk.Image([2, 2, 2], sitk.sitkUInt8)
    probe.SetDirection(image.GetDirection())
    f = sitk.DICOMOrientImageFilter()
    f.SetDesiredCoordinateOrientation(CANONICAL)
    f.Execute(probe)
    perm = tuple(int(v) for v in f.GetPermuteOrder())
    return perm  # type: ignore[return-value]


def working_grid(image: sitk.Image, spec: PreprocessSpec) -> sitk.Image:
    """Resample only the axes finer than ``resample_below_mm`` to ``min_spacing_mm`` (anti-aliased)."""
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
    fine = spacing < spec.resample_below_mm
    if not fine.any():
        return image
    target = np.where(fine, spec.min_spacing_mm, spacing)
    factor = target / spacing
    # Gaussian anti-alias: sigma = (f - 1) / 2 source voxels (as skimage.transform.rescale), per axis.
    sigma = np.where(fine, np.maximum(factor - 1.0, 0.0) / 2.0 * spacing, 0.0)
    smoothed = _smooth_axes(image, sigma) if (sigma > 0.05 * spacing).any() else image
    size = [
        max(1, round(int(n) * float(sp) / float(t))) for n, sp, t in zip(image.GetSize(), spacing, target, strict=True)
    ]
    # keep the physical centre of the first voxel consistent: same origin and direction, new spacing/size
    origin = np.asarray(image.GetOrigin())
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    shift = direction @ ((target - spacing) / 2.0)
    resampler = sitk.ResampleImageFilter()
    resampler.SetOutputSpacing([float(v) for v in target])
    resampler.SetSize(size)
    resampler.SetOutputDirection(image.GetDirection())
    resampler.SetOutputOrigin([float(v) for v in origin + shift])
    resampler.SetInterpolator(sitk.sitkLinear)
    resampler.SetDefaultPixelValue(0.0)
    result: sitk.Image = resampler.Execute(smoothed)
    return result


def _smooth_axes(image: sitk.Image, sigma_mm: npt.NDArray[np.float64]) -> sitk.Image:
    out = image
    for axis, s in enumerate(sigma_mm):
        if s > 0:
            f = sitk.RecursiveGaussianImageFilter()
            f.SetDirection(axis)
            f.SetSigma(float(s))
            f.SetOrder(sitk.RecursiveGaussianImageFilter.ZeroOrder)
            out = f.Execute(out)
    return out


def _sample(arr: FloatArray, n: int = 400_000) -> FloatArray:
    step = max(1, arr.size // n)
    return arr.reshape(-1)[::step]


def intensity_scale(arr: FloatArray, spec: PreprocessSpec) -> tuple[float, dict[str, float]]:
    """The robust normalisation scale (a high percentile of the foreground) and input statistics.

    Computed on a regular subsample of the voxels (deterministic); the volume itself is not touched.
    """
    sample = _sample(arr)
    finite = np.isfinite(sample)
    stats: dict[str, float] = {"finite_fraction": float(finite.mean()) if sample.size else 0.0}
    sample = sample[finite]
    if sample.size == 0:
        return 0.0, stats | {"scale": 0.0}
    top = float(np.percentile(sample, 99.9))
    fg = sample[sample > 0.05 * top] if top > 0 else sample[:0]
    scale = float(np.percentile(fg, spec.norm_percentile)) if fg.size else 0.0
    if scale > 0:
        low = sample <= 0.1 * scale
        stats["negative_fraction"] = float((sample < -0.05 * scale).mean())
        stats["foreground_fraction"] = float((~low).mean())
        stats["fg_median"] = float(np.median(fg) / scale)
        stats["fg_p10"] = float(np.percentile(fg, 10) / scale)
        stats["background_median"] = float(np.median(sample[low]) / scale) if low.any() else 0.0
        stats["saturated_fraction"] = float((sample > spec.clip_max * scale).mean())
    else:
        stats["negative_fraction"] = float((sample < 0).mean())
        stats["foreground_fraction"] = 0.0
    stats["scale"] = scale
    return scale, stats


def normalise(arr: FloatArray, scale: float, spec: PreprocessSpec) -> FloatArray:
    """``arr / scale`` clipped to ``[0, clip_max]``; non-finite values become 0."""
    if scale <= 0:
        return np.zeros_like(arr, dtype=np.float32)
    out: FloatArray = np.clip(arr * np.float32(1.0 / scale), 0.0, spec.clip_max).astype(np.float32, copy=False)
    if not np.isfinite(out).all():
        out[~np.isfinite(out)] = 0.0
    return out


def foreground_box(arr: FloatArray, scale: float = 1.0) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Robust bounding box (lo, hi inclusive, per array axis) of the head in a volume (divided by ``scale``).

    The volume is block-averaged first so noise does not count as head, thresholded at 30 % of its 90th
    percentile (at least 0.1); the box spans the 1st to 99th percentile of foreground coordinates per axis.
    """
    b = [max(1, s // 48) for s in arr.shape]
    shp = [s // k * k for s, k in zip(arr.shape, b, strict=True)]
    small = (
        arr[: shp[0], : shp[1], : shp[2]]
        .reshape(shp[0] // b[0], b[0], shp[1] // b[1], b[1], shp[2] // b[2], b[2])
        .mean(axis=(1, 3, 5))
    )
    small = np.nan_to_num(small / max(scale, 1e-12), nan=0.0, posinf=0.0, neginf=0.0)
    mask = small > max(0.1, 0.3 * float(np.percentile(small, 90)))
    if mask.sum() < 8:
        lo = np.zeros(3, dtype=np.int64)
        hi = np.asarray(arr.shape, dtype=np.int64) - 1
        return lo, hi
    idx = np.nonzero(mask)
    lo_l, hi_l = [], []
    for axis in range(3):
        c = idx[axis].astype(float)
        lo_l.append(math.floor(np.percentile(c, 1) * b[axis]))
        hi_l.append(int(min(arr.shape[axis] - 1, math.ceil((np.percentile(c, 99) + 1) * b[axis] - 1))))
    return np.asarray(lo_l, dtype=np.int64), np.asarray(hi_l, dtype=np.int64)


def _crop_pad(img2d: FloatArray, centre: tuple[float, float], size: int) -> FloatArray:
    out = np.zeros((size, size), dtype=np.float32)
    starts = [round(c - size / 2) for c in centre]
    src, dst = [], []
    for axis in range(2):
        s0 = starts[axis]
        a0, a1 = max(0, s0), min(img2d.shape[axis], s0 + size)
        if a1 <= a0:
            return out
        src.append(slice(a0, a1))
        dst.append(slice(a0 - s0, a1 - s0))
    out[dst[0], dst[1]] = img2d[src[0], src[1]]
    return out


def slice_indices(lo: int, hi: int, n: int, spec: PreprocessSpec) -> list[int]:
    """``n`` slice indices spread between ``extent_lo`` and ``extent_hi`` of the head's extent [lo, hi]."""
    span = hi - lo
    if n == 1:
        return [round(lo + span / 2)]
    fr = np.linspace(spec.extent_lo, spec.extent_hi, n)
    return [round(lo + float(f) * span) for f in fr]


def extract_slices(
    arr: FloatArray,
    scale: float,
    spacing_zyx: tuple[float, float, float],
    spec: PreprocessSpec,
    jitter: npt.NDArray[np.int64] | None = None,
) -> tuple[FloatArray, FloatArray, list[tuple[str, int]], tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]]:
    """2.5-D slices (n, 3, S, S), side input (n, 3), and (plane, working-grid index) of each slice.

    ``arr`` is the volume in canonical array order (z=S, y=P, x=L), normalised here slice by slice with
    ``scale`` (see :func:`normalise`). ``jitter`` (training only) moves each slice by a few voxels.
    Also returns the head's bounding box.
    """
    lo, hi = foreground_box(arr, scale)
    centre = (lo + hi) / 2.0
    n = spec.slices_per_plane
    out = np.zeros((spec.slices_per_volume, 3, spec.slice_size, spec.slice_size), dtype=np.float32)
    side = np.zeros((spec.slices_per_volume, 3), dtype=np.float32)
    where: list[tuple[str, int]] = []
    k = 0
    for axis, plane in enumerate(PLANES):
        other = [a for a in range(3) if a != axis]
        sp_row, sp_col = spacing_zyx[other[0]], spacing_zyx[other[1]]
        off = spec.neighbour_offset
        sp_through = spacing_zyx[axis] * off
        for j, idx in enumerate(slice_indices(int(lo[axis]), int(hi[axis]), n, spec)):
            if jitter is not None:
                idx += int(jitter[axis * n + j])
            idx = int(np.clip(idx, 0, arr.shape[axis] - 1))
            for c, d in enumerate((-off, 0, off)):
                i2 = int(np.clip(idx + d, 0, arr.shape[axis] - 1))
                plane_img = np.take(arr, i2, axis=axis)
                out[k, c] = _crop_pad(plane_img, (float(centre[other[0]]), float(centre[other[1]])), spec.slice_size)
            side[k] = np.log2([sp_row, sp_col, sp_through]).astype(np.float32)
            where.append((plane, idx))
            k += 1
    return normalise(out, scale, spec), side, where, (lo, hi)


def prepare(image: sitk.Image, spec: PreprocessSpec, jitter: npt.NDArray[np.int64] | None = None) -> PreparedVolume:
    """The whole preprocessing: any 3-D image in, network input and statistics out."""
    perm = canonical_permutation(image)
    in_direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    in_size = image.GetSize()
    in_spacing = image.GetSpacing()
    c_size = [int(in_size[perm[a]]) for a in range(3)]
    c_sp = [float(in_spacing[perm[a]]) for a in range(3)]
    canon = to_canonical(bin_fine_axes(image, spec))
    geometry = sitk.Image([1, 1, 1], sitk.sitkUInt8)  # the input's geometry without its pixels
    geometry.SetOrigin(image.GetOrigin())
    geometry.SetSpacing(in_spacing)
    geometry.SetDirection(image.GetDirection())
    del image  # the caller's image stays alive; nothing here holds a full-resolution copy past this point
    work = working_grid(canon, spec)
    del canon
    arr = sitk.GetArrayViewFromImage(work)  # (z, y, x), float32, no copy
    scale, stats = intensity_scale(arr, spec)
    sx, sy, sz = (float(v) for v in work.GetSpacing())
    slices, side, where, (lo, hi) = extract_slices(arr, scale, (sz, sy, sx), spec, jitter)
    # map working-grid indices back to the oriented input image (for thumbnails) and to LPS millimetres
    positions: list[SlicePosition] = []
    for plane, idx in where:
        axis_xyz = {"axial": 2, "coronal": 1, "sagittal": 0}[plane]
        ijk = [0.0, 0.0, 0.0]
        ijk[axis_xyz] = float(idx)
        pt = work.TransformContinuousIndexToPhysicalPoint(ijk)
        src = perm[axis_xyz]  # the input image's axis that became this canonical axis
        cidx = geometry.TransformPhysicalPointToContinuousIndex(pt)[src]
        if in_direction[axis_xyz, src] < 0:  # that axis runs against the canonical one: DICOMOrient flipped it
            cidx = in_size[src] - 1 - cidx
        positions.append(
            SlicePosition(plane, int(np.clip(round(cidx), 0, c_size[axis_xyz] - 1)), round(float(pt[axis_xyz]), 2))
        )
    extent = (hi - lo + 1) * np.asarray([sz, sy, sx])
    stats.update(
        {
            "extent_s_mm": float(extent[0]),
            "extent_p_mm": float(extent[1]),
            "extent_l_mm": float(extent[2]),
            "min_size": float(min(c_size)),
            "max_spacing_mm": float(max(c_sp)),
        }
    )
    return PreparedVolume(slices, side, positions, (sx, sy, sz), stats)
