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


def make_subject(seed: int, margin: int = 30, face: bool = False) -> SyntheticSubject:
    """One synthetic subject: the deformed template's tissues plus head layers, as a label map.

    ``face`` (simulator 7): the grid reaches 40 mm further down and 25 mm further forward, and the head gets a face,
    skull base and neck (:func:`add_face_neck`, from a generator of its own). The larger grid moves the centre
    of the random warp, so a subject's brain is not the same as without a face.
    """
    rng = np.random.default_rng(seed)
    lab0, origin0 = _template_labels()
    src = sitk.GetImageFromArray(lab0)
    src.SetOrigin(origin0)
    # output grid: the template brain box plus a margin for the head layers (with a face, room below and in front)
    nz = np.nonzero(lab0)
    lo = np.asarray([int(a.min()) for a in nz]) - margin - (np.asarray([40, 25, 0]) if face else 0)
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
    if face:
        out = add_face_neck(out, lab > 0, origin, dist, d2, np.random.default_rng([seed, 7]))
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


# ---- simulator 7: face and neck below and in front of the brain ---------------------------------------------------
# Template brain-mask box (MNI RAS mm) that the face and neck coordinates below are relative to.
_TEMPLATE_BOX = ((-72.0, 72.0), (-107.0, 73.0), (-72.0, 82.0))


def _ellipsoid(c: tuple[float, float, float], r: tuple[float, float, float],
               axes: tuple[FloatArray, FloatArray, FloatArray]) -> FloatArray:
    """Normalised radius of an axis-aligned ellipsoid (< 1 inside), over broadcast (z, y, x) coordinates."""
    x, y, z = axes
    out: FloatArray = np.sqrt(((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((z - c[2]) / r[2]) ** 2)
    return out


def add_face_neck(labels: np.ndarray, brain: np.ndarray, origin: tuple[float, float, float], dist: FloatArray,
                  skull_mm: float, rng: np.random.Generator) -> np.ndarray:
    """Face, skull base and neck around a synthetic brain (simulator 7), as tissue labels of :data:`TISSUES`.

    Real fields of view often end in the face or neck: a sagittal T1 reaches the cervical spine, an axial slab's
    lowest slices cut the orbits, sinuses and jaw. Synthetic heads up to simulator 6 were a brain in shells of CSF,
    skull and scalp, so the only heads a network had seen cut through a face were the few real ones, and a real slab
    cut through the face read as wrap-around. This adds, in template (MNI) coordinates fitted to the subject's brain
    box and jittered per subject: eye globes (fluid) in orbital fat and bony orbits; air in the nasal cavity, the
    maxillary, ethmoid and sphenoid sinuses and the pharynx; a nose; the hard palate, teeth and mandible; the tongue;
    facial and neck muscle with fat (subcutaneous and between muscles); the cervical spine (vertebral bodies with
    marrow and discs) and the spinal cord in CSF. Contours are perturbed by smooth noise, so no two faces match.
    Voxels of the brain and its CSF, and of the skull shell (``dist`` < ``skull_mm``), keep their labels except where
    an air cavity of the skull base or an orbit reaches them.
    """
    shape = labels.shape
    zz, yy, xx = np.nonzero(brain[::2, ::2, ::2])
    # physical LPS of the brain box -> RAS, then a per-axis map from subject RAS to template RAS
    lo_idx = np.asarray([xx.min(), yy.min(), zz.min()], float) * 2
    hi_idx = np.asarray([xx.max(), yy.max(), zz.max()], float) * 2
    o = np.asarray(origin, float)
    sub_lo, sub_hi = o + lo_idx, o + hi_idx  # LPS
    sub_ras = [(-sub_hi[0], -sub_lo[0]), (-sub_hi[1], -sub_lo[1]), (sub_lo[2], sub_hi[2])]
    # the template's brain box is cut at its lowest plane, so z is mapped by the top and the scale of x and y
    scale = [(s[1] - s[0]) / (t[1] - t[0]) for s, t in zip(sub_ras, _TEMPLATE_BOX, strict=True)]
    scale[2] = float(np.mean(scale[:2]))
    anchor = [float(np.mean(sub_ras[0])), float(np.mean(sub_ras[1])), sub_ras[2][1]]
    t_anchor = [float(np.mean(_TEMPLATE_BOX[0])), float(np.mean(_TEMPLATE_BOX[1])), _TEMPLATE_BOX[2][1]]
    jit = rng.normal(0.0, [1.5, 4.0, 4.0])  # whole face and neck shifted a little per subject
    ax_x = (-(o[0] + np.arange(shape[2], dtype=np.float32)) - anchor[0]) / scale[0] + t_anchor[0] - jit[0]
    ax_y = (-(o[1] + np.arange(shape[1], dtype=np.float32)) - anchor[1]) / scale[1] + t_anchor[1] - jit[1]
    ax_z = ((o[2] + np.arange(shape[0], dtype=np.float32)) - anchor[2]) / scale[2] + t_anchor[2] - jit[2]
    axes = (ax_x[None, None, :].astype(np.float32), ax_y[None, :, None].astype(np.float32),
            ax_z[:, None, None].astype(np.float32))
    x, y, z = axes
    wob = 0.08 * _smooth_noise(rng, shape, 10.0)  # contour perturbation (fraction of a radius)

    def u(lo: float, hi: float) -> float:  # one size or position of this face, drawn
        return float(rng.uniform(lo, hi))

    # soft tissue of the face (front, below the frontal lobes) and of the neck (below the skull base)
    front = u(80, 92)
    # rounded cross-section (a superellipse from the ears to the skin of the face), narrower towards the chin
    chin = u(-125, -110)
    face_w = u(58, 70) * np.sqrt(np.clip(1.0 - ((z + 30.0) / (chin + 30.0)) ** 4, 0.0, 1.0))
    face_w = np.where(z > -30.0, face_w.max(), face_w)
    yc = 0.5 * (front - 10.0)
    ry = 0.5 * (front + 10.0)
    sq = (np.abs(x) / np.maximum(face_w, 1.0)) ** 2.5 + (np.abs(y - yc) / ry) ** 2.5
    face = (sq < 1.0 + wob) & (y > -10.0) & (z < -18.0) & (z > chin)
    nose = (np.abs(x) < 4.0 + 0.3 * (-20.0 - z)) & (y < front + 0.75 * (-20.0 - z)) & (z < -20.0) & (z > -62.0)
    nose &= (y < front + u(12, 22)) & (y > 0.0)
    neck_r = (u(48, 60), u(48, 58))
    neck = (np.hypot(x / neck_r[0], (y + u(22, 30)) / neck_r[1]) < 1.0 + wob) & (z < -50.0)
    region = face | nose | neck
    free = region & ~brain & (dist > skull_mm)
    fat_mix = _smooth_noise(rng, shape, 6.0) > u(0.5, 1.2)
    out = labels.copy()
    out[free] = 6
    out[free & fat_mix] = 7
    # subcutaneous fat under the skin of face and neck
    sub = sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(sitk.GetImageFromArray((region | (labels > 0))
                                                                                    .astype(np.uint8)),
                                                              insideIsPositive=True, squaredDistance=False))
    out[free & (sub < u(2.0, 7.0))] = 7

    def put(mask: np.ndarray, label: int, over_skull: bool = False) -> None:
        m = mask & ~brain & ((dist > 1.0) if over_skull else (dist > skull_mm))
        out[m] = label

    # cervical spine: vertebral bodies (bone, marrow core) with discs, behind the pharynx; canal with cord
    vy, vr = u(-24, -16), u(8, 11)
    body = (np.hypot(x / (vr * 1.2), (y - vy) / vr) < 1.0 + wob) & (z < -62.0)
    put(body, 4)
    period, phase = u(15, 19), u(0, 19)
    disc = body & (np.mod(z - phase, period) < u(3.5, 5.5))
    core = (np.hypot(x / (vr * 1.2), (y - vy) / vr) < 0.75) & (z < -64.0) & ~disc
    put(core, 5)
    put(disc, 6)
    cy = vy - vr - u(9, 12)
    ring = (np.hypot(x, y - cy) < u(12, 15)) & (z < -60.0)
    put(ring, 4)
    put((np.hypot(x, y - cy) < u(7, 9)) & (z < -60.0), 1, over_skull=True)
    put((np.hypot(x / 1.3, y - cy) < u(4, 5.5)) & (z < -60.0), 3, over_skull=True)
    # tongue and floor of the mouth, hard palate, teeth and mandible
    put(_ellipsoid((0.0, u(40, 50), u(-86, -78)), (u(20, 28), u(26, 34), u(11, 16)), axes) < 1.0 + wob, 6)
    palate_z = u(-72, -64)
    put((np.abs(z - palate_z) < u(2.0, 3.5)) & (np.abs(x) < 22.0) & (y > 5.0) & (y < front - 12.0), 4)
    arch = front - 8.0 - u(0.018, 0.026) * x ** 2
    jaw_z = palate_z - u(18, 26)
    teeth = (np.abs(y - arch + 5.0) < 5.0) & (np.abs(x) < 30.0) & (np.abs(z - palate_z + 8.0) < 8.0)
    put(teeth, 4)
    mand = (np.abs(y - arch + 3.0) < u(4.0, 6.0)) & (np.abs(x) < 52.0) & (z < jaw_z) & (z > jaw_z - u(22, 30))
    put(mand, 4)
    put(mand & (np.abs(y - arch + 3.0) < 2.0) & (z < jaw_z - 4.0), 5)
    ramus = (np.abs(np.abs(x) - u(44, 50)) < 4.0) & (y > -2.0) & (y < 18.0) & (z < -50.0) & (z > jaw_z - 10.0)
    put(ramus, 4)
    # air: pharynx, nasal cavity (with septum and turbinates), maxillary, ethmoid and sphenoid sinuses
    fluid = rng.random() < 0.15  # now and then a sinus is filled with fluid or mucosa
    air_label = 1 if fluid else 0
    put((np.hypot(x / u(9, 14), (y - u(2, 8)) / u(5, 8)) < 1.0 + wob) & (z < -48.0) & (z > -128.0), 0)
    nasal = (np.abs(x) < u(10, 15) - 0.15 * np.clip(-45.0 - z, 0.0, 30.0)) & (y > 15.0) & (y < front - 6.0)
    nasal &= (z < -32.0) & (z > palate_z + 3.0)
    turb = _smooth_noise(rng, shape, 3.0) > u(0.3, 0.8)
    put(nasal & ~turb & ~(np.abs(x) < 1.0), 0, over_skull=True)
    put(nasal & turb, 6, over_skull=True)
    for side in (-1.0, 1.0):
        mx = _ellipsoid((side * u(24, 30), u(38, 48), u(-60, -52)), (u(11, 15), u(14, 19), u(12, 17)), axes)
        put(mx < 1.15 + wob, 4, over_skull=True)
        put(mx < 1.0 + wob, air_label, over_skull=True)
    eth = (np.abs(x) < u(10, 14)) & (y > 30.0) & (y < 66.0) & (z < -24.0) & (z > -42.0)
    put(eth, 4, over_skull=True)
    put(eth & (_smooth_noise(rng, shape, 2.5) > -0.3), 0, over_skull=True)
    sph = _ellipsoid((0.0, u(8, 16), u(-48, -40)), (u(10, 15), u(9, 13), u(7, 10)), axes)
    put(sph < 1.15, 4, over_skull=True)
    put(sph < 1.0 + wob, air_label, over_skull=True)
    # orbits: bony cone, fat, eye globe (vitreous ~ CSF) and optic nerve
    for side in (-1.0, 1.0):
        ex, ey, ez, er = side * u(30, 36), u(52, 60), u(-40, -32), u(11, 12.5)
        orb = _ellipsoid((ex * 0.95, ey - 12.0, ez), (er + 6.0, er + 16.0, er + 4.0), axes)
        put((orb < 1.18) & (y < ey + 4.0), 4, over_skull=True)
        put(orb < 1.0, 7, over_skull=True)
        put(_ellipsoid((ex, ey, ez), (er, er, er), axes) < 1.0, 1, over_skull=True)
        put((np.hypot(x - ex * 0.7, z - ez) < 2.5) & (y < ey - er) & (y > ey - er - 25.0), 3, over_skull=True)
    return out
