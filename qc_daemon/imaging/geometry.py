"""Slice-stack geometry from header positions: pure numpy, no I/O.

Conventions (LPS, as DICOM and ITK): the row direction (first three ImageOrientationPatient values) is the ITK x axis,
the column direction y, and the slice axis z is ``row x column``. Slices are always ordered ascending along that
normal, so every direction matrix is a proper rotation. The slice spacing comes from the positions projected on the
normal (never from SliceThickness).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from qc_daemon.imaging.values import fmt_number

FloatArray = npt.NDArray[np.float64]
Vec3 = tuple[float, float, float]
Orientation = tuple[float, float, float, float, float, float]

ORIENTATION_TOLERANCE = 1e-3  # per direction-cosine component; GE differs in the 8th decimal within one stack
SPACING_TOLERANCE = 0.05  # relative spread of slice gaps tolerated before a warning
POSITION_DECIMALS = 2  # mm; positions equal after rounding are "the same slice position"


class GeometryError(ValueError):
    """Positions that cannot form a stack (duplicates, missing orientation)."""


@dataclass(frozen=True)
class StackGeometry:
    origin: Vec3
    spacing: Vec3  # x (column spacing), y (row spacing), z (slice spacing)
    direction: tuple[float, ...]  # 9 values, row-major 3x3 whose columns are row, column and slice directions
    order: tuple[int, ...]  # the input slices, ascending along the normal
    warnings: tuple[str, ...] = ()

    @property
    def normal(self) -> Vec3:
        d = self.direction
        return (d[2], d[5], d[8])


def basis(orientation: Sequence[float]) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Orthonormal (row, column, normal) from six direction cosines (Gram-Schmidt on the column direction)."""
    iop = np.asarray(orientation, dtype=np.float64)
    if iop.shape != (6,):
        raise GeometryError("ImageOrientationPatient must hold 6 values")
    row, col = iop[:3], iop[3:]
    row_norm = float(np.linalg.norm(row))
    if row_norm < 1e-6:
        raise GeometryError("degenerate ImageOrientationPatient")
    row = row / row_norm
    col = col - float(np.dot(col, row)) * row
    col_norm = float(np.linalg.norm(col))
    if col_norm < 1e-6:
        raise GeometryError("degenerate ImageOrientationPatient")
    col = col / col_norm
    return row, col, np.cross(row, col)


def same_orientation(a: Sequence[float], b: Sequence[float], tol: float = ORIENTATION_TOLERANCE) -> bool:
    return bool(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))) <= tol)


def cluster_orientations(orientations: Sequence[Orientation | None]) -> list[int]:
    """Cluster index per entry (first-seen order); orientations within the tolerance share a cluster, None is -1."""
    centres: list[Orientation] = []
    out: list[int] = []
    for o in orientations:
        if o is None:
            out.append(-1)
            continue
        for k, c in enumerate(centres):
            if same_orientation(o, c):
                out.append(k)
                break
        else:
            centres.append(o)
            out.append(len(centres) - 1)
    return out


def position_key(position: Sequence[float]) -> tuple[float, ...]:
    return tuple(round(float(p), POSITION_DECIMALS) + 0.0 for p in position)


def stack_geometry(
    positions: Sequence[Sequence[float]],
    orientation: Sequence[float],
    pixel_spacing: Sequence[float],
    *,
    fallback_slice_spacing: float | None = None,
) -> StackGeometry:
    """Geometry of a stack of slices given each slice's top-left voxel centre (ImagePositionPatient).

    ``pixel_spacing`` is DICOM order (row spacing, column spacing). ``fallback_slice_spacing`` is used only for a
    single slice. Raises :class:`GeometryError` on duplicate positions.
    """
    row, col, normal = basis(orientation)
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    n = pos.shape[0]
    if n == 0:
        raise GeometryError("no slices")
    proj = pos @ normal
    order = np.argsort(proj, kind="stable")
    pos, proj = pos[order], proj[order]
    warnings: list[str] = []
    if n == 1:
        dz = float(fallback_slice_spacing) if fallback_slice_spacing and fallback_slice_spacing > 0 else 1.0
    else:
        gaps = np.diff(proj)
        if float(np.min(gaps)) < 10.0**-POSITION_DECIMALS:
            raise GeometryError("two slices at the same position")
        dz = float(proj[-1] - proj[0]) / (n - 1)
        spread = float(np.max(gaps) - np.min(gaps))
        if spread > SPACING_TOLERANCE * dz:
            warnings.append(
                f"non-uniform slice spacing: gaps {fmt_number(float(np.min(gaps)))} to "
                f"{fmt_number(float(np.max(gaps)))} mm (mean {fmt_number(dz)} mm used)"
            )
        offsets = (pos - pos[0]) - np.outer(proj - proj[0], normal)
        max_offset = float(np.max(np.linalg.norm(offsets, axis=1)))
        if max_offset > 0.5 * float(min(pixel_spacing)):
            warnings.append(f"slices shifted in-plane along the stack (up to {fmt_number(max_offset)} mm)")
    direction = np.column_stack([row, col, normal])
    return StackGeometry(
        origin=(float(pos[0, 0]), float(pos[0, 1]), float(pos[0, 2])),
        spacing=(float(pixel_spacing[1]), float(pixel_spacing[0]), dz),
        direction=tuple(float(x) for x in direction.ravel()),
        order=tuple(int(i) for i in order),
        warnings=tuple(warnings),
    )
