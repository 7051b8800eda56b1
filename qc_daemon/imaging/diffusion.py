"""Diffusion b-value and gradient direction of one image, wherever the maker put them.

Standard elements first for Philips (which fills them), the vendor's own elements first for GE, Siemens and UIH
(GE fills the standard b-value only on b > 0 images, so mixing sources would split b=0 volumes wrongly).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset

from qc_daemon.imaging import values as v

_GE_B_OFFSET = 1_000_000_000  # some GE software versions add 10^9 to the b-value in (0043,1039)


@dataclass(frozen=True)
class Diffusion:
    b_value: float | None
    gradient: tuple[float, float, float] | None
    directionality: str  # DiffusionDirectionality (ISOTROPIC marks a trace), "" when absent

    @property
    def is_weighted(self) -> bool:
        return self.b_value is not None and self.b_value > 0.5

    @property
    def zero_gradient(self) -> bool:
        return self.gradient is None or max(abs(c) for c in self.gradient) < 1e-6


NO_DIFFUSION = Diffusion(None, None, "")


def _ge(ds: Dataset) -> tuple[float | None, tuple[float, float, float] | None]:
    directions = v.first_float(v.private(ds, 0x0019, 0xE0, "GEMS_ACQU_01"))
    if directions is not None and directions <= 0:
        return None, None  # not a diffusion acquisition: (0043,1039) holds other numbers there
    b = v.first_float(v.private(ds, 0x0043, 0x39, "GEMS_PARM_01"), binary_format="<i")
    if b is not None and b >= _GE_B_OFFSET:
        b = b % _GE_B_OFFSET
    parts = [v.first_float(v.private(ds, 0x0019, e, "GEMS_ACQU_01")) for e in (0xBB, 0xBC, 0xBD)]
    gradient = None
    if all(p is not None for p in parts):
        gradient = (float(parts[0] or 0.0), float(parts[1] or 0.0), float(parts[2] or 0.0))
    return b, gradient


def _siemens(ds: Dataset) -> tuple[float | None, tuple[float, float, float] | None]:
    b = v.first_float(v.private(ds, 0x0019, 0x0C, "SIEMENS MR HEADER"), binary_format="<i")
    gradient = v.vector3(v.floats(v.private(ds, 0x0019, 0x0E, "SIEMENS MR HEADER")))
    return b, gradient


def _uih(ds: Dataset) -> tuple[float | None, tuple[float, float, float] | None]:
    b = v.first_float(v.private(ds, 0x0065, 0x09, "Image Private Header"))
    gradient = v.vector3(v.floats(v.private(ds, 0x0065, 0x37, "Image Private Header")))
    return b, gradient


def _standard(ds: Dataset) -> tuple[float | None, tuple[float, float, float] | None, str]:
    b = v.first_float(v.get(ds, "DiffusionBValue"))
    gradient = v.vector3(v.floats(v.get(ds, "DiffusionGradientOrientation")))
    directionality = v.text(v.get(ds, "DiffusionDirectionality")).upper()
    item = v.first_item(ds, "MRDiffusionSequence")
    if item is not None:
        if b is None:
            b = v.first_float(v.get(item, "DiffusionBValue"))
        directionality = directionality or v.text(v.get(item, "DiffusionDirectionality")).upper()
        if gradient is None:
            grad_item = v.first_item(item, "DiffusionGradientDirectionSequence")
            if grad_item is not None:
                gradient = v.vector3(v.floats(v.get(grad_item, "DiffusionGradientOrientation")))
    return b, gradient, directionality


def diffusion_of(ds: Dataset, manufacturer: str) -> Diffusion:
    """b-value, gradient and directionality of a classic image (or of one Enhanced MR frame's functional groups)."""
    b, gradient, directionality = _standard(ds)
    maker = manufacturer.upper()
    vendor: tuple[float | None, tuple[float, float, float] | None] = (None, None)
    if maker.startswith("GE"):
        vendor = _ge(ds)
    elif maker.startswith("SIEMENS"):
        vendor = _siemens(ds)
    elif maker.startswith("UIH") or "UNITED IMAGING" in maker:
        vendor = _uih(ds)
    if vendor[0] is not None:
        b, gradient = vendor[0], vendor[1] if vendor[1] is not None else gradient
    if b is None and gradient is None and not directionality:
        return NO_DIFFUSION
    return Diffusion(b, gradient, directionality)
