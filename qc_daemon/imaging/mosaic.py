"""Mosaic images (Siemens and UIH EPI): one 2-D image holding a whole volume as a grid of tiles.

Each mosaic instance is one volume. Tile layout and slice geometry:

* Siemens: slices = ``(0019,100A)`` NumberOfImagesInMosaic (else the CSA header's), grid = ceil(sqrt(slices)) tiles
  per side. ImagePositionPatient is the corner of the whole mosaic: the first slice's corner is moved by half the
  difference between mosaic and tile size along the row and column directions (dcm2niix's correction); the next
  slices follow along the CSA ``SliceNormalVector`` (else the protocol's ``sNormal``, else row x column) at
  SpacingBetweenSlices. The slice centres are checked against the protocol's ``sSliceArray`` when present.
* UIH: slices = ``(0065,1050)``, tile size ``(0065,1004)`` ("64*64"), per-slice ImagePositionPatient in the items of
  ``(0065,1051)`` (there is no top-level position).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from qc_daemon.imaging import csa
from qc_daemon.imaging import values as v
from qc_daemon.imaging.errors import ConversionError
from qc_daemon.imaging.geometry import GeometryError, Vec3, basis, stack_geometry
from qc_daemon.imaging.headers import Instance
from qc_daemon.imaging.plan import MosaicSource, VolumePlan, distinct_keys, make_label
from qc_daemon.imaging.rules import VolumeTraits
from qc_daemon.imaging.values import fmt_number, fmt_vector

SIEMENS_MR = "SIEMENS MR HEADER"
SIEMENS_CSA = "SIEMENS CSA HEADER"
UIH_PRIVATE = "Image Private Header"
CENTRE_TOLERANCE_MM = 1.0


@dataclass(frozen=True)
class MosaicLayout:
    slices: int
    tile_rows: int
    tile_columns: int
    grid_columns: int
    positions: tuple[Vec3, ...]  # top-left voxel centre of each tile, in tile order
    warnings: tuple[str, ...] = ()


def _siemens_slices(inst: Instance) -> int | None:
    n = v.first_int(v.private(inst.dataset, 0x0019, 0x0A, SIEMENS_MR))
    if n is None:
        image_csa = csa.parse_csa(v.private(inst.dataset, 0x0029, 0x10, SIEMENS_CSA))
        numbers = csa.csa_floats(image_csa, "NumberOfImagesInMosaic")
        n = int(numbers[0]) if numbers else None
    return n


def is_mosaic(inst: Instance) -> bool:
    """True for a Siemens MOSAIC or a UIH VFRAME/mosaic image (decided from the header only)."""
    maker = inst.manufacturer.upper()
    if maker.startswith("SIEMENS"):
        return "MOSAIC" in inst.image_type
    if maker.startswith("UIH") or "UNITED IMAGING" in maker:
        n = v.first_int(v.private(inst.dataset, 0x0065, 0x50, UIH_PRIVATE))
        return n is not None and n > 1 and v.private(inst.dataset, 0x0065, 0x51, UIH_PRIVATE) is not None
    return False


def _common(inst: Instance) -> tuple[tuple[float, ...], tuple[float, float]]:
    if inst.orientation is None or inst.pixel_spacing is None:
        raise ConversionError(f"{inst.path.name}: mosaic without ImageOrientationPatient/PixelSpacing")
    return inst.orientation, inst.pixel_spacing


def _siemens_layout(inst: Instance) -> MosaicLayout:
    n = _siemens_slices(inst)
    if n is None or n < 1:
        raise ConversionError(f"{inst.path.name}: Siemens mosaic without NumberOfImagesInMosaic")
    grid = math.ceil(math.sqrt(n))
    if inst.rows % grid or inst.columns % grid:
        raise ConversionError(f"{inst.path.name}: {inst.columns}x{inst.rows} mosaic does not divide into {grid}x{grid}")
    tile_rows, tile_cols = inst.rows // grid, inst.columns // grid
    orientation, (dy, dx) = _common(inst)
    if inst.position is None:
        raise ConversionError(f"{inst.path.name}: mosaic without ImagePositionPatient")
    row, col, cross = basis(orientation)
    warnings: list[str] = []
    image_csa = csa.parse_csa(v.private(inst.dataset, 0x0029, 0x10, SIEMENS_CSA))
    protocol = csa.ascconv(v.private(inst.dataset, 0x0029, 0x20, SIEMENS_CSA))
    normal_values = csa.csa_floats(image_csa, "SliceNormalVector")
    normal = np.asarray(normal_values, dtype=np.float64) if len(normal_values) == 3 else None
    if normal is None:
        from_protocol = csa.slice_vector(protocol, 0, "sNormal")
        normal = np.asarray(from_protocol, dtype=np.float64) if from_protocol else None
    if normal is None or abs(abs(float(np.dot(normal, cross))) - 1.0) > 0.01:
        warnings.append("no usable Siemens slice normal: slices assumed along row x column")
        normal = cross
    normal = normal / float(np.linalg.norm(normal))
    spacing = inst.spacing_between_slices or inst.slice_thickness
    if not spacing or spacing <= 0:
        raise ConversionError(f"{inst.path.name}: mosaic without SpacingBetweenSlices")
    corner = (
        np.asarray(inst.position, dtype=np.float64)
        + row * dx * (inst.columns - tile_cols) / 2.0
        + col * dy * (inst.rows - tile_rows) / 2.0
    )
    positions = [corner + k * spacing * normal for k in range(n)]
    centre_shift = row * dx * tile_cols / 2.0 + col * dy * tile_rows / 2.0
    worst = 0.0
    for k in (0, n - 1):
        expected = csa.slice_vector(protocol, k, "sPosition")
        if expected is not None:
            worst = max(worst, float(np.linalg.norm(positions[k] + centre_shift - np.asarray(expected))))
    if worst > CENTRE_TOLERANCE_MM:
        warnings.append(f"mosaic slice centres differ from the Siemens protocol by {fmt_number(worst)} mm")
    return MosaicLayout(
        slices=n,
        tile_rows=tile_rows,
        tile_columns=tile_cols,
        grid_columns=grid,
        positions=tuple((float(p[0]), float(p[1]), float(p[2])) for p in positions),
        warnings=tuple(warnings),
    )


def _uih_tile(inst: Instance, n: int) -> tuple[int, int]:
    text = v.text(v.private(inst.dataset, 0x0065, 0x04, UIH_PRIVATE)).replace("x", "*").replace("X", "*")
    parts = [p for p in text.split("*") if p.strip()]
    try:
        a, b = (int(float(p)) for p in parts)
    except ValueError:
        raise ConversionError(f"{inst.path.name}: UIH mosaic tile size {text!r} unreadable") from None
    for tile_rows, tile_cols in ((a, b), (b, a)):
        fits = tile_rows > 0 and tile_cols > 0 and inst.rows % tile_rows == 0 and inst.columns % tile_cols == 0
        if fits and (inst.rows // tile_rows) * (inst.columns // tile_cols) >= n:
            return tile_rows, tile_cols
    raise ConversionError(f"{inst.path.name}: UIH mosaic tile {text} does not fit {inst.columns}x{inst.rows}")


def _uih_layout(inst: Instance) -> MosaicLayout:
    n = v.first_int(v.private(inst.dataset, 0x0065, 0x50, UIH_PRIVATE)) or 0
    tile_rows, tile_cols = _uih_tile(inst, n)
    items = v.private(inst.dataset, 0x0065, 0x51, UIH_PRIVATE) or []
    positions = []
    for item in list(items)[:n]:
        pos = v.vector3(v.floats(v.get(item, "ImagePositionPatient")))
        if pos is None:
            break
        positions.append(pos)
    if len(positions) != n:
        raise ConversionError(f"{inst.path.name}: UIH mosaic has {len(positions)} slice positions for {n} slices")
    return MosaicLayout(n, tile_rows, tile_cols, inst.columns // tile_cols, tuple(positions))


def layout_of(inst: Instance) -> MosaicLayout:
    if inst.manufacturer.upper().startswith("SIEMENS"):
        return _siemens_layout(inst)
    return _uih_layout(inst)


_DESCRIPTIVE = ("DiffusionBValue", "DiffusionGradientOrientation", "EchoTime", "ImageType")
_DISAMBIGUATE = ("SeriesNumber", "InstanceNumber", "TemporalPositionIdentifier", "File")


def _describe(inst: Instance) -> dict[str, str]:
    d = inst.diffusion
    return {
        "AcquisitionNumber": "" if inst.acquisition_number is None else str(inst.acquisition_number),
        "DiffusionBValue": "" if d.b_value is None else fmt_number(round(d.b_value, 1), 5),
        "DiffusionGradientOrientation": fmt_vector(d.gradient) if d.gradient else "",
        "EchoTime": "" if inst.echo_time is None else fmt_number(round(inst.echo_time, 2)),
        "ImageType": "\\".join(inst.image_type),
        "SeriesNumber": "" if inst.series_number is None else str(inst.series_number),
        "InstanceNumber": "" if inst.instance_number is None else str(inst.instance_number),
        "TemporalPositionIdentifier": "" if inst.temporal_position is None else str(inst.temporal_position),
        "File": inst.path.name,
    }


def plan_mosaics(instances: Sequence[Instance]) -> list[VolumePlan]:
    """One plan per mosaic instance (``instances`` in instance order)."""
    rows = [_describe(i) for i in instances]
    keys = distinct_keys(rows, ("AcquisitionNumber", *_DESCRIPTIVE), _DISAMBIGUATE)
    plans = []
    for inst, row in zip(instances, rows, strict=True):
        layout = layout_of(inst)
        orientation, pixel_spacing = _common(inst)
        split_key = {k: row[k] for k in keys}
        try:
            geometry = stack_geometry(layout.positions, orientation, pixel_spacing)
        except GeometryError as exc:
            raise ConversionError(f"{inst.path.name}: mosaic geometry: {exc}") from exc
        plans.append(
            VolumePlan(
                label=make_label(split_key),
                split_key=split_key,
                source=MosaicSource(
                    inst.path,
                    layout.tile_rows,
                    layout.tile_columns,
                    layout.grid_columns,
                    geometry.order,
                    inst.rescaled,
                ),
                n_slices=layout.slices,
                geometry=geometry,
                traits=VolumeTraits(
                    image_type=inst.image_type,
                    complex_component=inst.complex_component,
                    diffusion=inst.diffusion,
                    derived_by_compression=inst.derived_by_compression,
                ),
                order=inst.order_key,
                warnings=layout.warnings + geometry.warnings,
            )
        )
    return plans
