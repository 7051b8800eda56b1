"""Synthetic heads from the MNI152 template and its tissue maps (domain randomisation, after SynthSeg).

A handful of real brains cannot teach a network what "clean" looks like across subjects, contrasts and
scanners, and the network must not learn the subjects. Following the domain-randomisation idea of SynthSeg
(Billot et al. 2023), each synthetic *subject* is the MNI152 2009 template's grey matter, white matter and CSF
maps under a random smooth (B-spline) deformation and scaling, wrapped in synthetic head layers (extra-cerebral
CSF, skull tables with marrow, scalp muscle and fat) whose thickness varies smoothly. Each synthetic *image*
then draws random tissue intensities (realistic T1/T2/PD/FLAIR/EPI/DWI-like presets or fully random), a
per-tissue texture, and partial-volume mixing. nilearn ships the template, GM, WM and brain mask inside its
wheel; there is no CSF map offline, so CSF = brain mask - GM - WM (clipped at 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import SimpleITK as sitk

from training.types import FloatArray

# tissue classes of a synthetic head, in this order
TISSUES = ("background", "csf", "gm", "wm", "skull", "marrow", "scalp", "fat")

# (csf, gm, wm, skull, marrow, scalp, fat) relative intensities per contrast family
PRESETS: dict[str, tuple[float, ...]] = {
    "t1": (0.12, 0.45, 0.72, 0.04, 0.55, 0.45, 0.95),
    "t1_mprage": (0.08, 0.40, 0.75, 0.03, 0.45, 0.35, 0.85),
    "t2": (1.0, 0.55, 0.40, 0.03, 0.45, 0.40, 0.70),
    "pd": (0.85, 0.80, 0.62, 0.04, 0.60, 0.55, 0.90),
    "flair": (0.06, 0.65, 0.50, 0.03, 0.40, 0.40, 0.80),
    "epi_bold": (0.95, 0.70, 0.55, 0.02, 0.10, 0.25, 0.08),
    "dwi_b1000": (0.15, 0.55, 0.50, 0.01, 0.05, 0.10, 0.03),
    "dwi_b2000": (0.08, 0.42, 0.48, 0.01, 0.03, 0.06, 0.02),
    "asl_source": (0.80, 0.75, 0.62, 0.03, 0.20, 0.30, 0.10),
}
LOW_RES_PRESETS = ("epi_bold", "dwi_b1000", "dwi_b2000", "asl_source", "pd", "t2")

# Low tissue-contrast families, in training only from simulator 4 (the held-out test set keeps PRESETS, so every
# model's numbers stay measured on the same volumes). Real clean series that every model up to qc-v14 flagged
# were of this kind: background-suppressed pCASL control/label images (static tissue nulled: grey matter, white
# matter and CSF within a few per cent of each other, scalp fat bright) and a proton-density volume. The networks
# had seen brains only with the tissue contrast of the presets above, so a flat brain read as a blurred one.
EXTRA_PRESETS: dict[str, tuple[float, ...]] = {
    "asl_bs": (0.38, 0.46, 0.52, 0.03, 0.55, 0.55, 1.0),
    "pd_flat": (0.72, 0.76, 0.70, 0.04, 0.65, 0.60, 0.95),
}
EXTRA_LOW_RES_PRESETS = ("asl_bs", "pd_flat")
_ALL_PRESETS = {**PRESETS, **EXTRA_PRESETS}


@dataclass(frozen=True)
class SyntheticSubject:
    """Tissue labels (z, y, x, uint8, indices into :data:`TISSUES`) of one deformed template head, 1 mm LPS grid."""

    seed: int
    labels: np.ndarray
    origin: tuple[float, float, float]
    texture: np.ndarray  # float16 smooth unit-std field (z, y, x): tissue heterogeneity, rolled per render

    def grid_image(self, arr: FloatArray) -> sitk.Image:
        img = sitk.GetImageFromArray(arr.astype(np.float32, copy=False))
        img.SetSpacing((1.0, 1.0, 1.0))
        img.SetOrigin(self.origin)
        return img


@lru_cache(maxsize=1)
def _template_labels() -> tuple[np.ndarray, tuple[float, float, float]]:
    """Hard template labels (0 background, 1 CSF, 2 GM, 3 WM) as (z, y, x) uint8 in LPS order, and the origin."""
    from nilearn import datasets

    gm_img = datasets.load_mni152_gm_template(resolution=1)
    gm = np.asarray(gm_img.get_fdata(), dtype=np.float32)
    wm = np.asarray(datasets.load_mni152_wm_template(resolution=1).get_fdata(), dtype=np.float32)
    mask = np.asarray(datasets.load_mni152_brain_mask(resolution=1).get_fdata(), dtype=np.float32)
    csf = np.clip(mask - gm - wm, 0.0, 1.0)
    lab = np.argmax(np.stack([1.0 - mask, csf, gm, wm]), axis=0).astype(np.uint8)
    aff = gm_img.affine
    # nibabel arrays are (i, j, k) in RAS; flip i and j to LPS and transpose to (z, y, x)
    lps = np.ascontiguousarray(lab[::-1, ::-1, :].transpose(2, 1, 0))
    ni, nj, _ = gm.shape
    corner = aff @ np.array([ni - 1, nj - 1, 0, 1.0])
    return lps, (float(-corner[0]), float(-corner[1]), float(corner[2]))


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], corr_vox: float) -> FloatArray:
    """Zero-mean unit-std smooth random field with correlation length ~``corr_vox`` voxels (coarse + upsample)."""
    f = max(1.0, float(corr_vox))
    small = tuple(max(3, int(s / f) + 3) for s in shape)
    z = rng.standard_normal(small).astype(np.float32)
    img = sitk.SmoothingRecursiveGaussian(sitk.GetImageFromArray(z), 1.0)
    img.SetSpacing((f, f, f))
    img.SetOrigin((-f, -f, -f))
    ref = sitk.Image([shape[2], shape[1], shape[0]], sitk.sitkFloat32)
    out = sitk.GetArrayFromImage(sitk.Resample(img, ref, sitk.Transform(), sitk.sitkLinear))
    out -= out.mean()
    sd = float(out.std())
    return (out / sd if sd > 0 else out).astype(np.float32)


def _random_warp(rng: np.random.Generator, ref: sitk.Image) -> sitk.Transform:
    """Anisotropic scaling about the centre plus a smooth random displacement field (coarse grid, 10 mm)."""
    size = ref.GetSize()
    centre = ref.TransformContinuousIndexToPhysicalPoint([s / 2 for s in size])
    affine = sitk.AffineTransform(3)
    affine.SetCenter(centre)
    affine.SetMatrix(tuple(float(v) for v in np.diag(rng.uniform(0.9, 1.1, 3)).ravel()))
    step = 10.0
    csize = [int(s / step) + 3 for s in size]
    amp = rng.uniform(1.5, 4.0)
    comps = []
    for _ in range(3):
        d = sitk.SmoothingRecursiveGaussian(sitk.GetImageFromArray(
            rng.standard_normal(csize[::-1]).astype(np.float64)), 1.0)
        arr = sitk.GetArrayFromImage(d)
        comps.append(arr / max(float(arr.std()), 1e-6) * amp)
    field = sitk.GetImageFromArray(np.stack(comps, axis=-1), isVector=True)
    field.SetSpacing((step, step, step))
    field.SetOrigin(tuple(o - step for o in ref.GetOrigin()))
    dense = sitk.Resample(field, [int(s / 2) + 1 for s in size], sitk.Transform(), sitk.sitkLinear,
                          ref.GetOrigin(), (2.0, 2.0, 2.0), ref.GetDirection(), 0.0, sitk.sitkVectorFloat64)
    disp = sitk.DisplacementFieldTransform(dense)
    return sitk.CompositeTransform([affine, disp])


def make_subject(seed: int, margin: int = 30) -> SyntheticSubject:
    """One synthetic subject: the deformed template's tissues plus head layers, as a label map."""
    rng = np.random.default_rng(seed)
    lab0, origin0 = _template_labels()
    src = sitk.GetImageFromArray(lab0)
    src.SetOrigin(origin0)
    # output grid: the template's brain box plus a margin for the head layers
    nz = np.nonzero(lab0)
    lo = np.asarray([int(a.min()) for a in nz]) - margin
    hi = np.asarray([int(a.max()) for a in nz]) + margin
    shape = tuple(int(v) for v in hi - lo + 1)
    origin = (origin0[0] + float(lo[2]), origin0[1] + float(lo[1]), origin0[2] + float(lo[0]))
    ref = sitk.Image([shape[2], shape[1], shape[0]], sitk.sitkUInt8)
    ref.SetOrigin(origin)
    lab = sitk.GetArrayFromImage(sitk.Resample(src, ref, _random_warp(rng, ref), sitk.sitkNearestNeighbor, 0))
    brain = sitk.GetImageFromArray((lab > 0).astype(np.uint8))
    dist = sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(brain, insideIsPositive=False,
                                                               squaredDistance=False, useImageSpacing=True))
    dist = dist.astype(np.float32) + 1.2 * _smooth_noise(rng, shape, 12.0)
    t_csf, t_skull = rng.uniform(1.0, 3.5), rng.uniform(4.0, 8.0)
    t_scalp, t_fat = rng.uniform(3.0, 7.0), rng.uniform(1.0, 4.0)
    d1, d2 = t_csf, t_csf + t_skull
    d3, d4 = d2 + t_scalp, d2 + t_scalp + t_fat
    out = lab.copy()
    outside = lab == 0
    out[outside & (dist <= d1)] = 1
    skull = outside & (dist > d1) & (dist <= d2)
    marrow = skull & (np.abs(dist - (d1 + d2) / 2) < t_skull * 0.25) & (_smooth_noise(rng, shape, 8.0) > -0.5)
    out[skull] = 4
    out[marrow] = 5
    out[outside & (dist > d2) & (dist <= d3)] = 6
    out[outside & (dist > d3) & (dist <= d4)] = 7
    texture = _smooth_noise(rng, shape, 5.0).astype(np.float16)
    return SyntheticSubject(seed, out.astype(np.uint8), origin, texture)


def render(subject: SyntheticSubject, rng: np.random.Generator, contrast: str | None = None,
           low_contrast: bool = False) -> tuple[sitk.Image, str]:
    """One synthetic image of a subject: random tissue intensities and texture (partial volume: see simulate).

    ``contrast``: a key of :data:`PRESETS` or :data:`EXTRA_PRESETS`, ``"random"``, ``"flat"``, or None: 70 % a
    jittered preset, 30 % fully random; with ``low_contrast`` (simulator 4) the presets include
    :data:`EXTRA_PRESETS` and a fifth of the random draws are ``"flat"``: the three brain tissues within a few
    per cent of one random level, the head layers random. Returns a 1 mm float32 image (LPS grid, values about
    0..1) and the contrast name used.
    """
    presets = _ALL_PRESETS if low_contrast else PRESETS
    if contrast is None:
        contrast = str(rng.choice(list(presets))) if rng.random() < 0.7 else "random"
        if contrast == "random" and low_contrast and rng.random() < 0.2:
            contrast = "flat"
    if contrast == "random":
        means = rng.uniform(0.0, 1.0, 7)
    elif contrast == "flat":
        means = rng.uniform(0.0, 1.0, 7)
        means[:3] = rng.uniform(0.2, 0.8) * (1.0 + rng.uniform(-0.08, 0.08, 3))
    else:
        base = np.asarray(_ALL_PRESETS[contrast])
        means = np.clip(base * rng.uniform(0.8, 1.2, 7) + rng.normal(0, 0.03, 7), 0.0, 1.2)
    lut = np.concatenate([[0.0], means]).astype(np.float32)
    shape = subject.labels.shape
    img = lut[subject.labels]
    # smooth multiplicative texture (tissue heterogeneity) with a tissue-dependent amplitude; the subject's
    # texture field is rolled by a random offset so every render gets another pattern
    amp = np.concatenate([[0.0], rng.uniform(0.02, 0.08, 7)]).astype(np.float32)
    shift = tuple(int(v) for v in rng.integers(0, 64, 3))
    tex = np.roll(subject.texture, shift, axis=(0, 1, 2))
    if rng.random() < 0.5:
        tex = tex[::-1]
    img *= 1.0 + amp[subject.labels] * tex.astype(np.float32)
    img *= 1.0 + np.float32(rng.uniform(0.005, 0.03)) * rng.standard_normal(shape, dtype=np.float32)
    np.clip(img, 0.0, None, out=img)
    # partial volume is applied by the acquisition simulator as a Gaussian k-space window (cheap)
    return subject.grid_image(img), contrast
