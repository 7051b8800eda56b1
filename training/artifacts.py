"""Artifact transforms: one small typed transform per artifact, applied where its physics lives.

Every transform has a ``severity`` in [0, 1] (0 = none: the transform is the identity) and draws its random
parameters once, at construction, from the generator it is given, so one transform object always does the same
thing. The acquisition simulator (:mod:`training.acquisition`) calls each transform at its stage:

====================  ===========  ==========================================================================
artifact              stage        where the physics lives
====================  ===========  ==========================================================================
``bias_field``        object       receive-coil sensitivity multiplies the object (fixed in the scanner frame)
``wrap``              fov          an encoded field of view smaller than the object along phase encoding
``motion``            pose         the object's rigid pose changes between k-space lines
``blur``              window       k-space truncation / apodisation of each pose's k-space
``ghosting``          kspace       line-to-line phase/amplitude errors along phase encoding
``spike``             kspace       a few corrupt k-space samples of very high amplitude
``noise``             noise        thermal noise: complex Gaussian in k-space (magnitude is Rician)
====================  ===========  ==========================================================================

K-space arrays are *centred* (DC in the middle, ``fftshift`` order; image arrays are never shifted) with axes
``(ss, pe, ro)``: slice/partition, phase encoding, readout. In a 2-D acquisition axis 0 is the slice index
(hybrid space: the slice direction is not Fourier-encoded). Transforms use the "forward" FFT normalisation:
an image-domain amplitude ``a`` is a k-space DC value ``a`` and a single k-space sample of value ``A`` is a
plane wave of amplitude ``A``.
"""

from __future__ import annotations

import math
from abc import ABC
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import scipy.fft as sfft

from qc_daemon.artifacts import ARTIFACTS
from training.types import ComplexArray, FloatArray

# Severity onsets: an artifact at severity 0.1 must stand out from the imperfections that clean images have (the
# simulator's "nuisance" levels in training.acquisition); severity 0 is always the identity.
MOTION_ONSET = 1.0  # voxels
# motion severity is what motion does to the image: the relative RMS change of the complex image against the same
# acquisition held still, ``MOTION_EFFECT_ONSET + MOTION_EFFECT_SLOPE * severity`` (0.1 -> 6.6 %, 0.4 -> 14 %,
# 1 -> 30 %); the simulator times the moves to reach it (training.acquisition.fit_motion_timing)
MOTION_EFFECT_ONSET = 0.04
MOTION_EFFECT_SLOPE = 0.26
WRAP_ONSET = 0.05  # share of the head's extent folded
BLUR_ONSET = 1.3  # point-spread widening factor
NOISE_ONSET = 0.04  # sigma / mean head intensity
BIAS_ONSET = 0.6  # log(brightest / darkest)


@dataclass
class KContext:
    """What a k-space transform may need to know about the acquisition."""

    mode: str  # "3d" or "2d"
    time: FloatArray  # acquisition time in [0, 1) of each (ss or slice, pe) line, centred index order
    mu: float  # mean foreground magnitude of the noise-free object (sets noise and spike amplitudes)
    n_transform: int  # number of k-space samples summed by the final inverse transform (noise scaling)


def _check_severity(severity: float) -> float:
    if not 0.0 <= severity <= 1.0:
        raise ValueError(f"severity must be in [0, 1], got {severity}")
    return float(severity)


class Artifact(ABC):
    """Base class: a named artifact with a severity in [0, 1]."""

    name: ClassVar[str]
    stage: ClassVar[str]
    severity: float

    @property
    def active(self) -> bool:
        return self.severity > 0.0


# ---------------------------------------------------------------------------------------------------- bias field
@dataclass
class BiasField(Artifact):
    """Smooth multiplicative intensity non-uniformity (receive-coil sensitivity, B1 inhomogeneity).

    Physics: the signal of each voxel is weighted by the coil's sensitivity, a smooth function of position that
    stays fixed in the scanner while the head moves. Modelled as ``exp(beta * g(x))`` where ``g`` is a random
    smooth field (low-order 3-D cosines, a linear gradient and a radial centre-bright or centre-dark term, as
    receive arrays and dielectric effects give) scaled to span [-0.5, 0.5] over the head, so the ratio of the
    brightest to the darkest part of the head is ``exp(beta)``. Every real image has some of this (uncorrected
    3 T arrays: up to ~1.4x, the simulator's clean "nuisance" level); the artifact is inhomogeneity beyond it.
    Severity: ``beta = BIAS_ONSET + 0.9 * severity`` for severity > 0 (0.1 -> 2.0x, 0.4 -> 2.6x, 1 -> 4.5x): the
    onset sits above the clean nuisance of every acquisition kind (at most beta 0.45), so a mild bias field is a
    visible one.
    """

    name: ClassVar[str] = "bias_field"
    stage: ClassVar[str] = "object"
    severity: float
    rng: np.random.Generator = field(repr=False, default_factory=np.random.default_rng)
    beta_override: float | None = None

    def __post_init__(self) -> None:
        self.severity = _check_severity(self.severity)
        r = self.rng
        self._freqs = r.uniform(0.2, 1.6, (4, 3)) * r.choice([-1, 1], (4, 3))
        self._phases = r.uniform(0, 2 * np.pi, 4)
        self._weights = r.normal(0, 1, 4)
        self._grad = r.normal(0, 1.0, 3)
        self._radial = float(r.normal(0, 1.5))
        self._cache: dict[tuple[int, ...], FloatArray] = {}

    @property
    def beta(self) -> float:
        if self.beta_override is not None:
            return self.beta_override
        return BIAS_ONSET + 0.9 * self.severity if self.severity > 0 else 0.0

    def field(self, shape: tuple[int, int, int], support: np.ndarray | None = None) -> FloatArray:
        """The multiplicative field on a grid of ``shape`` (coordinates normalised to [-1, 1]).

        The field is a sum of separable terms, evaluated by broadcasting; its normalisation over the head uses
        a subsample of the support.
        """
        def g_on(axes: list[np.ndarray]) -> FloatArray:
            g = np.zeros([len(a) for a in axes], np.float32)
            for f, p, w in zip(self._freqs, self._phases, self._weights, strict=True):
                cz = (np.float32(w) * np.cos(np.pi / 2 * f[0] * axes[0] + p)).astype(np.float32)[:, None, None]
                cy = np.cos(np.pi / 2 * f[1] * axes[1]).astype(np.float32)[None, :, None]
                cx = np.cos(np.pi / 2 * f[2] * axes[2]).astype(np.float32)[None, None, :]
                g += cz * cy * cx
            g += (self._grad[0] * axes[0]).astype(np.float32)[:, None, None]
            g += (self._grad[1] * axes[1]).astype(np.float32)[None, :, None]
            g += (self._grad[2] * axes[2]).astype(np.float32)[None, None, :]
            rad = (axes[0] ** 2)[:, None, None] + (axes[1] ** 2)[None, :, None] + (axes[2] ** 2)[None, None, :]
            g += np.float32(self._radial) * rad.astype(np.float32)
            return g

        axes = [np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape]
        step = 4
        g_small = g_on([a[::step] for a in axes])
        if support is not None and support.any():
            sub = support[::step, ::step, ::step]
            ref = g_small[sub] if sub.any() else g_small
        else:
            ref = g_small
        lo, hi = float(np.percentile(ref, 1)), float(np.percentile(ref, 99))
        g = g_on(axes)
        g -= np.float32((lo + hi) / 2)
        g *= np.float32(self.beta / max(hi - lo, 1e-6))
        out: FloatArray = np.exp(g, out=g)
        return out

    def apply_object(self, obj: FloatArray, support: np.ndarray | None = None) -> FloatArray:
        """Multiply by the field; the field is computed once per grid shape (the coil does not move)."""
        if self.beta == 0.0:
            return obj
        key = tuple(obj.shape)
        if key not in self._cache:
            self._cache[key] = self.field(obj.shape, support)  # type: ignore[arg-type]
        return (obj * self._cache[key]).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------- wrap
@dataclass
class Wrap(Artifact):
    """Wrap-around (fold-over, aliasing) from a field of view smaller than the object along phase encoding.

    Physics: phase encoding samples k-space at steps of 1/FOV; any signal outside the FOV has the same phase
    as signal one FOV away and is added there (aliased), so the part of the head outside the FOV folds onto
    the opposite side of the image. Modelled exactly in the object domain: the complex object is cut into
    FOV-long pieces along phase encoding and summed. Readout is oversampled on every scanner (no wrap) and a
    3-D slab's partition direction is left alone.
    Severity: the FOV is ``(1 - WRAP_ONSET - 0.3 * severity)`` times the head's extent along phase encoding
    (0.1 -> 8 %, 0.4 -> 17 %, 1 -> 35 % of the head folded), placed at a random offset (one or both sides fold);
    the onset keeps a mild fold-over distinguishable from a field of view that merely cuts the head.
    """

    name: ClassVar[str] = "wrap"
    stage: ClassVar[str] = "fov"
    severity: float
    rng: np.random.Generator = field(repr=False, default_factory=np.random.default_rng)

    def __post_init__(self) -> None:
        self.severity = _check_severity(self.severity)
        self._offset = float(self.rng.uniform(0.0, 1.0))

    def window(self, extent: tuple[int, int]) -> tuple[int, int] | None:
        """(start, length) of the encoded FOV in object rows, given the head's extent [a, b); None: no change."""
        if not self.active:
            return None
        a, b = extent
        length = max(8, round((b - a) * (1.0 - WRAP_ONSET - 0.3 * self.severity)))
        start = a + round((b - a - length) * self._offset)
        return start, length


def fold(obj: np.ndarray, start: int, length: int, axis: int = 1) -> np.ndarray:
    """Sum the object's rows ``start + m * length`` (all integers ``m``) along ``axis``: aliasing."""
    n = obj.shape[axis]
    shape = list(obj.shape)
    shape[axis] = length
    out = np.zeros(shape, dtype=obj.dtype)
    idx = np.arange(n)
    rel = (idx - start) % length
    for target in range(length):
        src = idx[rel == target]
        if src.size:
            sl = [slice(None)] * obj.ndim
            sl[axis] = target
            out[tuple(sl)] = np.take(obj, src, axis=axis).sum(axis=axis)
    return out


# -------------------------------------------------------------------------------------------------------- motion
@dataclass
class Segment:
    """One pose of the head during a time window of the acquisition."""

    t0: float
    t1: float
    rotation_deg: tuple[float, float, float]  # about the (ro, pe, ss) axes through the head centre
    translation_mm: tuple[float, float, float]  # along (ro, pe, ss)


@dataclass
class Motion(Artifact):
    """Rigid 3-D head motion during the acquisition (through-plane components included).

    Physics: each k-space line is acquired at its own time; if the head moves, lines acquired after the move
    encode the rotated/translated object, and the inconsistent k-space gives ghosts and blurring along phase
    encoding (3-D and multi-shot 2-D acquisitions) or slices displaced against each other (single-shot EPI).
    Modelled exactly: the object is resampled at every pose, each pose's k-space is computed, and each line is
    taken from the pose the head had at that line's acquisition time (a realistic order is given by the
    simulator: linear or centric 3-D, sequential 2-D, interleaved single-shot). The pose at the time the
    k-space centre is acquired is the reference (identity), so the image is aligned with it, as on a scanner.
    Severity: each event moves the head by ``MOTION_ONSET + 7 * severity`` voxels (in-plane spacing; at 80 mm from
    the centre for rotations; 0.1 -> 1.7, 0.4 -> 3.8, 1 -> 8 voxels), in a random direction, with 1 to 3 sudden
    events or a slow drift of 5 small steps. Below about a voxel motion leaves no visible trace, so the scale
    starts there. The amplitude alone does not say what the image shows, though: a move while the outer lines of
    k-space are acquired changes little, one near the centre changes much, and beyond a couple of voxels the
    phase errors of the moved lines saturate. So severity also sets the realised effect, ``target_effect`` (the
    relative RMS change of the image against the same acquisition held still), and the simulator moves the event
    times towards or away from the k-space centre until the motion makes that change
    (:func:`training.acquisition.fit_motion_timing`); ``motion_severity`` maps a realised change back to the
    severity scale. ``fit_effect=False`` (the default when ``times`` are given) keeps the event times.
    """

    name: ClassVar[str] = "motion"
    stage: ClassVar[str] = "pose"
    severity: float
    voxel_mm: float = 1.0
    rng: np.random.Generator = field(repr=False, default_factory=np.random.default_rng)
    kind: str | None = None  # "sudden" or "drift"; None: random
    times: tuple[float, ...] | None = None
    fit_effect: bool | None = None  # None: fit unless ``times`` were given

    @property
    def target_effect(self) -> float | None:
        """The relative RMS image change this severity stands for (``None``: keep the drawn event times)."""
        if not self.active or not self.fit_effect:
            return None
        return MOTION_EFFECT_ONSET + MOTION_EFFECT_SLOPE * self.severity

    def __post_init__(self) -> None:
        self.severity = _check_severity(self.severity)
        r = self.rng
        self.kind = self.kind or ("sudden" if r.random() < 0.7 else "drift")
        if self.fit_effect is None:
            self.fit_effect = self.times is None
        n = int(r.integers(1, 4)) if self.kind == "sudden" else 5
        if self.times is None:
            if self.kind == "sudden":
                self.times = tuple(sorted(float(t) for t in r.uniform(0.2, 0.8, n)))
            else:
                start = float(r.uniform(0.05, 0.5))
                self.times = tuple(float(t) for t in np.linspace(start, min(0.95, start + r.uniform(0.3, 0.6)), n))
        n = len(self.times)
        amp_mm = (MOTION_ONSET + 7.0 * self.severity) * self.voxel_mm if self.severity > 0 else 0.0
        step = 1.0 if self.kind == "sudden" else 1.0 / math.sqrt(n)
        self._moves = []
        for _ in range(n):
            rot_dir = r.normal(0, 1, 3)
            rot_dir /= np.linalg.norm(rot_dir)
            tr_dir = r.normal(0, 1, 3)
            tr_dir /= np.linalg.norm(tr_dir)
            split = r.uniform(0.2, 0.8)  # share of rotation vs translation
            rot_deg = np.degrees(amp_mm * split / 80.0) * r.uniform(0.6, 1.0) * step * rot_dir
            tr_mm = amp_mm * (1 - split) * r.uniform(0.6, 1.0) * step * tr_dir
            self._moves.append((rot_deg, tr_mm))

    def segments(self, t_centre: float) -> list[Segment]:
        """Poses over time, re-referenced so the pose at ``t_centre`` (k-space centre) is the identity."""
        assert self.times is not None
        bounds = [0.0, *self.times, 1.0]
        rot = np.zeros(3)
        tr = np.zeros(3)
        poses = [(rot.copy(), tr.copy())]
        for dr, dt in self._moves:
            rot = rot + dr  # small angles: rotation vectors add
            tr = tr + dt
            poses.append((rot.copy(), tr.copy()))
        if not self.active:
            poses = [(np.zeros(3), np.zeros(3)) for _ in poses]
        ref_i = max(i for i in range(len(bounds) - 1) if bounds[i] <= t_centre) if t_centre >= 0 else 0
        r0, t0 = poses[ref_i]
        return [
            Segment(bounds[i], bounds[i + 1], tuple(float(v) for v in p[0] - r0), tuple(float(v) for v in p[1] - t0))
            for i, p in enumerate(poses)
        ]


def motion_severity(effect: float) -> float:
    """The severity (in [0, 1]) of a realised motion effect (relative RMS image change); inverse of
    ``Motion.target_effect``."""
    return float(np.clip((effect - MOTION_EFFECT_ONSET) / MOTION_EFFECT_SLOPE, 0.0, 1.0))


def compose_motion(kspaces: list[ComplexArray], segments: list[Segment], time: FloatArray) -> ComplexArray:
    """Take each line from the pose the head had when the line was acquired (``time``: (ss, pe) in [0, 1))."""
    out = np.zeros_like(kspaces[0])
    for k, seg in zip(kspaces, segments, strict=True):
        m = (time >= seg.t0) & (time < seg.t1) if seg.t1 < 1.0 else (time >= seg.t0)
        out[m] = k[m]
    return out


# ---------------------------------------------------------------------------------------------------------- blur
@dataclass
class Blur(Artifact):
    """Loss of resolution: k-space truncation (or apodisation) beyond what the pixel grid suggests.

    Physics: the image is the inverse Fourier transform of the acquired k-space; acquiring (or keeping) only
    the central part of k-space, or weighting the periphery down (strong filters, T2 decay along an echo
    train), widens the point-spread function. Modelled as a window on each pose's k-space along one, two or
    three axes: a hard truncation with a short cosine taper (Gibbs ringing included) or a Gaussian.
    Severity: the kept k-space extent is ``1 / (BLUR_ONSET + 2.2 * severity)`` of the acquired one, i.e. the
    effective resolution is ``BLUR_ONSET + 2.2 * severity`` voxels (0.1 -> 1.5x, 0.4 -> 2.2x, 1 -> 3.5x): vendor
    filters and partial volume already widen a clean image's point-spread function by up to ~1.3x.
    """

    name: ClassVar[str] = "blur"
    stage: ClassVar[str] = "window"
    severity: float
    rng: np.random.Generator = field(repr=False, default_factory=np.random.default_rng)
    axes: tuple[int, ...] | None = None
    kind: str | None = None

    def __post_init__(self) -> None:
        self.severity = _check_severity(self.severity)
        r = self.rng
        if self.axes is None:
            u = r.random()
            self.axes = (0, 1, 2) if u < 0.45 else (1, 2) if u < 0.8 else (int(r.integers(1, 3)),)
        self.kind = self.kind or ("truncate" if r.random() < 0.65 else "gaussian")
        self._taper = float(r.uniform(0.0, 0.3))

    @property
    def keep(self) -> float:
        return 1.0 / (BLUR_ONSET + 2.2 * self.severity) if self.severity > 0 else 1.0

    def window_1d(self, n: int) -> FloatArray:
        k = (np.arange(n) - n // 2) / n  # cycles per voxel, centred order
        if self.kind == "gaussian":
            fwhm = 1.0 / self.keep  # voxels
            sigma_img = fwhm / 2.3548
            sigma_k = 1.0 / (2 * np.pi * sigma_img)
            w = np.exp(-0.5 * (k / sigma_k) ** 2) / np.exp(0.0)
            return w.astype(np.float32)
        half = 0.5 * self.keep
        a = np.abs(k)
        w = np.ones(n, np.float32)
        t0 = half * (1 - self._taper)
        ramp = (a > t0) & (a <= half)
        w[ramp] = 0.5 * (1 + np.cos(np.pi * (a[ramp] - t0) / max(half - t0, 1e-9)))
        w[a > half] = 0.0
        return w

    def apply_window(self, k: ComplexArray) -> ComplexArray:
        if not self.active:
            return k
        out = k
        assert self.axes is not None
        for ax in self.axes:
            w = self.window_1d(k.shape[ax])
            shape = [1, 1, 1]
            shape[ax] = -1
            out = out * w.reshape(shape)
        return out.astype(np.complex64)


# ------------------------------------------------------------------------------------------------------ ghosting
@dataclass
class Ghosting(Artifact):
    """Ghosts: shifted copies of the head along phase encoding from line-to-line inconsistencies.

    Physics: if every n-th phase-encoding line carries a different phase or amplitude (EPI odd/even echo
    misalignment -> N/2 "Nyquist" ghost; periodic pulsation, respiration, unstable gradients -> ghosts at
    FOV/n), the image is the true image plus copies shifted by FOV/n. Modelled on the composed k-space:
    ``nyquist``: odd lines get a phase error ``phi0 + phi1 * x`` (x along readout, the EPI echo shift);
    ``periodic``: lines are amplitude-modulated by ``1 + a cos(2 pi ky / n + theta)``.
    Clean EPI has faint N/2 ghosts and clean anatomical images faint flow ghosts (the simulator's nuisance
    level: up to 3.5 % and 1.2 %); the artifact is ghosting beyond that.
    Severity: the ghosts' amplitude relative to the head is ``0.04 + 0.31 * severity`` for severity > 0.
    """

    name: ClassVar[str] = "ghosting"
    stage: ClassVar[str] = "kspace"
    severity: float
    rng: np.random.Generator = field(repr=False, default_factory=np.random.default_rng)
    kind: str | None = None
    amplitude_override: float | None = None

    def __post_init__(self) -> None:
        self.severity = _check_severity(self.severity)
        r = self.rng
        self.kind = self.kind or ("nyquist" if r.random() < 0.5 else "periodic")
        self._period = int(r.integers(2, 9))
        self._theta = float(r.uniform(0, 2 * np.pi))
        self._linear_share = float(r.uniform(0.0, 0.6))
        self._sign = float(r.choice([-1.0, 1.0]))

    @property
    def amplitude(self) -> float:
        if self.amplitude_override is not None:
            return self.amplitude_override
        return 0.04 + 0.31 * self.severity if self.severity > 0 else 0.0

    def apply_kspace(self, k: ComplexArray, ctx: KContext | None = None) -> ComplexArray:
        g = self.amplitude
        if g <= 0:
            return k
        n_pe = k.shape[1]
        lines = np.arange(n_pe)
        if self.kind == "nyquist":
            phi = 2.0 * math.asin(min(g, 0.99)) * self._sign
            n_ro = k.shape[2]
            x = np.linspace(-1, 1, n_ro, dtype=np.float32)
            phase = (1 - self._linear_share) * phi + self._linear_share * phi * 1.5 * x  # (ro,)
            hybrid = sfft.ifft(np.fft.ifftshift(k, axes=2), axis=2, norm="forward")
            odd = (lines % 2 == 1)
            hybrid[:, odd, :] *= np.exp(1j * phase)[None, None, :].astype(np.complex64)
            return np.fft.fftshift(sfft.fft(hybrid, axis=2, norm="forward"), axes=2).astype(np.complex64)
        a = min(2.0 * g, 0.95) if self._period > 2 else min(g, 0.95)
        mod = 1.0 + a * np.cos(2 * np.pi * lines / self._period + self._theta)
        return (k * mod[None, :, None].astype(np.float32)).astype(np.complex64)


# --------------------------------------------------------------------------------------------------------- spike
@dataclass
class Spike(Artifact):
    """Spikes (herringbone / corduroy): a few corrupt k-space samples of very high amplitude.

    Physics: an electrical discharge (arcing, loose connection, RF interference) during readout adds a
    delta to a few k-space samples; each is a plane wave over the whole image (stripes whose direction and
    spacing depend on the sample's position). In a 2-D acquisition the burst hits the slices acquired at that
    moment (a contiguous share of them in acquisition time). Modelled as 1-3 samples (away from the centre)
    of value ``A exp(i theta)`` added to the composed k-space.
    Severity: the stripes' amplitude is ``0.4 * severity`` of the mean head intensity.
    """

    name: ClassVar[str] = "spike"
    stage: ClassVar[str] = "kspace"
    severity: float
    rng: np.random.Generator = field(repr=False, default_factory=np.random.default_rng)

    def __post_init__(self) -> None:
        self.severity = _check_severity(self.severity)
        r = self.rng
        n = int(r.integers(1, 4))
        # position as a fraction of the half-extent of k-space per axis (ss, pe, ro), signs random
        self._pos = [r.uniform(0.08, 0.85, 3) * r.choice([-1, 1], 3) for _ in range(n)]
        self._theta = r.uniform(0, 2 * np.pi, n)
        self._share = [float(r.uniform(0.5, 1.0)) for _ in range(n)]
        self._slice_share = float(r.uniform(0.15, 1.0))
        self._slice_start = float(r.uniform(0, 1))

    def apply_kspace(self, k: ComplexArray, ctx: KContext) -> ComplexArray:
        if not self.active:
            return k
        out = k.copy()
        amp = 0.4 * self.severity * ctx.mu
        n_ss, n_pe, n_ro = k.shape
        for pos, th, sh in zip(self._pos, self._theta, self._share, strict=True):
            ipe = int(np.clip(n_pe // 2 + round(pos[1] * n_pe / 2), 0, n_pe - 1))
            iro = int(np.clip(n_ro // 2 + round(pos[2] * n_ro / 2), 0, n_ro - 1))
            value = np.complex64(amp * sh * np.exp(1j * th))
            if ctx.mode == "3d":
                iss = int(np.clip(n_ss // 2 + round(pos[0] * n_ss / 2), 0, n_ss - 1))
                out[iss, ipe, iro] += value
            else:
                # slices whose line ipe was acquired within the burst window of acquisition time
                t = ctx.time[:, ipe]
                lo = self._slice_start * (1 - self._slice_share)
                hit = (t >= np.quantile(t, lo)) & (t <= np.quantile(t, min(1.0, lo + self._slice_share)))
                phases = np.exp(1j * np.linspace(0, 2 * np.pi * 3, n_ss) + 1j * th).astype(np.complex64)
                out[hit, ipe, iro] += (amp * sh * phases[hit]).astype(np.complex64)
        return out


# --------------------------------------------------------------------------------------------------------- noise
@dataclass
class Noise(Artifact):
    """Thermal noise: complex Gaussian noise added in k-space, so the magnitude image is Rician.

    Physics: receiver and body noise is white, Gaussian and independent in the real and imaginary channels of
    every k-space sample; after the inverse transform it is white complex Gaussian noise in the image, and the
    magnitude image has a Rician distribution (positive bias and a Rayleigh floor in the background - never
    negative values, the shortcut of Gaussian noise added to a magnitude image).
    Severity: image-domain noise ``sigma = NOISE_ONSET + 0.2 * severity ** 0.8`` times the mean head intensity
    (0.1 -> 0.07, 0.4 -> 0.14, 1 -> 0.24), on top of the acquisition's own (baseline) noise, which is at most
    0.04-0.045 of the mean head intensity on clean acquisitions (real clean series here: 0.002-0.03).
    """

    name: ClassVar[str] = "noise"
    stage: ClassVar[str] = "noise"
    severity: float
    rng: np.random.Generator = field(repr=False, default_factory=np.random.default_rng)
    sigma_rel_override: float | None = None

    def __post_init__(self) -> None:
        self.severity = _check_severity(self.severity)

    @property
    def sigma_rel(self) -> float:
        if self.sigma_rel_override is not None:
            return self.sigma_rel_override
        return NOISE_ONSET + 0.2 * self.severity ** 0.8 if self.severity > 0 else 0.0

    def apply_kspace(self, k: ComplexArray, ctx: KContext) -> ComplexArray:
        s = self.sigma_rel * ctx.mu
        if s <= 0:
            return k
        sk = np.float32(s / math.sqrt(ctx.n_transform))
        noise = self.rng.standard_normal(2 * k.size, dtype=np.float32).view(np.complex64).reshape(k.shape)
        noise *= sk
        return (k + noise).astype(np.complex64, copy=False)


ARTIFACT_TYPES: dict[str, type[Artifact]] = {
    cls.name: cls for cls in (Motion, Ghosting, Spike, Noise, BiasField, Blur, Wrap)
}
assert tuple(sorted(ARTIFACT_TYPES)) == tuple(sorted(ARTIFACTS)), "artifact names must match qc_daemon.artifacts"


def make_artifact(name: str, severity: float, rng: np.random.Generator, **kwargs: object) -> Artifact:
    """The transform for an artifact name (see :data:`qc_daemon.artifacts.ARTIFACTS`)."""
    cls = ARTIFACT_TYPES[name]
    return cls(severity=severity, rng=rng, **kwargs)  # type: ignore[call-arg]
