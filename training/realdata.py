"""Read the real DICOM series of ``shared/data`` into 3-D volumes (evaluation, and training heads).

The node's converter, ``qc_daemon.imaging.convert.convert_series``, is used when it is importable (it is the
reference); the small readers here (mosaics, Enhanced MR frames, diffusion groups) are a fallback that knows the
series of ``shared/data`` well enough to give every volume the README says must be scored.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import SimpleITK as sitk


@dataclass(frozen=True)
class RealVolume:
    """One volume to score, with what the manifest says about it."""

    series: str  # folder name under dicom/ or NIfTI file name
    index: int  # volume index within the series (0-based)
    image: sitk.Image
    subject: str  # "human" or "phantom"
    contrast: str
    in_false_alarm_rate: bool  # False for phantoms and the ASL perfusion map
    note: str = ""


def _stack(slices: Sequence[tuple[np.ndarray, np.ndarray]], iop: Sequence[float], spacing: Sequence[float],
           slice_gap: float | None = None) -> sitk.Image:
    """Build a 3-D image from (position, 2-D pixels) pairs of one orientation."""
    row = np.asarray(iop[:3], dtype=float)
    col = np.asarray(iop[3:], dtype=float)
    normal = np.cross(row, col)
    order = sorted(range(len(slices)), key=lambda i: float(np.dot(slices[i][0], normal)))
    arr = np.stack([slices[i][1] for i in order]).astype(np.float32)
    pos = [slices[i][0] for i in order]
    if slice_gap is None:
        d = np.diff([float(np.dot(p, normal)) for p in pos])
        slice_gap = float(np.median(d)) if len(d) else 1.0
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((float(spacing[1]), float(spacing[0]), float(slice_gap)))
    img.SetOrigin(tuple(float(v) for v in pos[0]))
    direction = np.stack([row, col, normal], axis=1)
    img.SetDirection(tuple(float(v) for v in direction.ravel()))
    return img


def _rescaled(ds: Any, arr: np.ndarray) -> np.ndarray:
    slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
    inter = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
    return arr.astype(np.float64) * slope + inter


def _demosaic(ds: Any, n_slices: int, tile: int, spacing_z: float) -> sitk.Image:
    arr = _rescaled(ds, ds.pixel_array)
    per_row = arr.shape[1] // tile
    tiles = []
    for i in range(n_slices):
        r, c = divmod(i, per_row)
        tiles.append(arr[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile])
    iop = [float(v) for v in ds.ImageOrientationPatient]
    row, col = np.asarray(iop[:3]), np.asarray(iop[3:])
    normal = np.cross(row, col)
    ps = [float(v) for v in ds.PixelSpacing]
    if "ImagePositionPatient" in ds:
        # Siemens: the mosaic position is that of the whole grid; move it to the first tile's corner.
        big = np.asarray([float(v) for v in ds.ImagePositionPatient])
        shift = (arr.shape[1] - tile) / 2 * ps[1] * row + (arr.shape[0] - tile) / 2 * ps[0] * col
        origin = big + shift
    else:
        origin = np.zeros(3)
    slices = [(origin + i * spacing_z * normal, t) for i, t in enumerate(tiles)]
    return _stack(slices, iop, ps, slice_gap=spacing_z)


def _classic_groups(folder: Path, key: str) -> list[list[Any]]:
    files = sorted(folder.glob("*.dcm"))
    dss = [pydicom.dcmread(f) for f in files]
    dss.sort(key=lambda d: (int(getattr(d, "InstanceNumber", 0) or 0)))
    if key == "instances32":
        return [dss[i:i + 32] for i in range(0, len(dss), 32)]
    groups: dict[Any, list[Any]] = defaultdict(list)
    for d in dss:
        if key == "diffusion":
            b = float(d.get((0x0018, 0x9087)).value) if (0x0018, 0x9087) in d else 0.0
            g = tuple(round(float(v), 4) for v in d.get((0x0018, 0x9089)).value) if (0x0018, 0x9089) in d else ()
            if b > 0 and all(abs(v) < 1e-6 for v in g):
                continue  # scanner-made isotropic trace: derived
            groups[(b, g)].append(d)
        else:
            groups[0].append(d)
    return list(groups.values())


def _classic_volume(dss: Sequence[Any]) -> sitk.Image:
    iop = [float(v) for v in dss[0].ImageOrientationPatient]
    slices = [(np.asarray([float(v) for v in d.ImagePositionPatient]), _rescaled(d, d.pixel_array)) for d in dss]
    return _stack(slices, iop, [float(v) for v in dss[0].PixelSpacing])


def _enhanced_volumes(path: Path) -> list[sitk.Image]:
    ds = pydicom.dcmread(path)
    frames = ds.pixel_array
    dims = [d.DimensionIndexPointer for d in ds.DimensionIndexSequence]
    instack = dims.index(pydicom.tag.Tag(0x0020, 0x9057))
    shared = ds.SharedFunctionalGroupsSequence[0]
    groups: dict[tuple[int, ...], list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
    iop: list[float] = []
    ps: list[float] = []
    for i, f in enumerate(ds.PerFrameFunctionalGroupsSequence):
        ftype = f.MRImageFrameTypeSequence[0] if "MRImageFrameTypeSequence" in f else None
        comp = str(getattr(ftype, "ComplexImageComponent", "MAGNITUDE")) if ftype is not None else "MAGNITUDE"
        if comp == "PHASE":
            continue
        idx = list(f.FrameContentSequence[0].DimensionIndexValues)
        key = tuple(v for j, v in enumerate(idx) if j != instack)
        pos = np.asarray([float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient])
        orient = (f if "PlaneOrientationSequence" in f else shared).PlaneOrientationSequence[0]
        iop = [float(v) for v in orient.ImageOrientationPatient]
        pm = f.PixelMeasuresSequence[0] if "PixelMeasuresSequence" in f else shared.PixelMeasuresSequence[0]
        ps = [float(v) for v in pm.PixelSpacing]
        pvt = f.PixelValueTransformationSequence[0] if "PixelValueTransformationSequence" in f else None
        slope = float(getattr(pvt, "RescaleSlope", 1.0)) if pvt is not None else 1.0
        inter = float(getattr(pvt, "RescaleIntercept", 0.0)) if pvt is not None else 0.0
        groups[key].append((pos, frames[i].astype(np.float64) * slope + inter))
    return [_stack(v, iop, ps) for _, v in sorted(groups.items())]


def _convert_series_or_none(folder: Path) -> list[sitk.Image] | None:
    """The daemon's own converter (the reference): the volumes it keeps for scoring; None if unavailable."""
    try:
        from qc_daemon.imaging.convert import convert_series
    except ImportError:
        return None
    result = convert_series(sorted(folder.glob("*.dcm")))
    return [v.image for v in result.volumes if v.image is not None]


def read_series(folder: Path, prefer_converter: bool = True) -> list[sitk.Image]:
    """The scorable volumes of one ``shared/data/dicom`` series, in acquisition order.

    Uses ``qc_daemon.imaging.convert.convert_series`` when it exists (what the node scores), else the small
    readers of this module.
    """
    if prefer_converter:
        converted = _convert_series_or_none(folder)
        if converted is not None:
            return converted
    name = folder.name
    if name.startswith("siemens_epi"):
        out = []
        for f in sorted(folder.glob("*.dcm")):
            ds = pydicom.dcmread(f)
            n = int(ds[0x0019, 0x100A].value)
            tile = ds.Rows // math.ceil(math.sqrt(n))
            out.append(_demosaic(ds, n, tile, float(ds.SpacingBetweenSlices)))
        return out
    if name.startswith("uih_dti"):
        out = []
        for f in sorted(folder.glob("*.dcm")):
            ds = pydicom.dcmread(f)
            n = int(float(ds[0x0065, 0x1050].value))
            tile = int(str(ds[0x0065, 0x1004].value).split("*")[0])
            out.append(_demosaic(ds, n, tile, float(ds.SpacingBetweenSlices)))
        return out
    if name.startswith("philips_enh"):
        return _enhanced_volumes(sorted(folder.glob("*.dcm"))[0])
    if name == "philips_t1_mprage_3d_sag":
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames([str(p) for p in sorted(folder.glob("*.dcm"))])
        return [reader.Execute()]
    if name == "ge_epi_fmri_phantom":
        return [_classic_volume(g) for g in _classic_groups(folder, "instances32")]
    if name == "philips_dwi_ax":
        return [_classic_volume(g) for g in _classic_groups(folder, "diffusion")]
    raise ValueError(f"no reader for {name}")


def iter_real_volumes(shared: Path, nifti: bool = True, dicom: bool = True,
                      exclude: Sequence[str] = ()) -> Iterator[RealVolume]:
    """Every volume of ``shared/data`` that must end with scores (manifest ``volumes_scored`` > 0)."""
    manifest = json.loads((shared / "manifest.json").read_text())
    for entry in manifest:
        path = str(entry["path"])
        name = Path(path).name
        if any(e in name for e in exclude):
            continue
        if entry["kind"] == "nifti" and nifti:
            img = sitk.ReadImage(str(shared / path))
            yield RealVolume(name, 0, img, "human", str(entry.get("contrast", "")), True)
        elif entry["kind"] == "dicom" and dicom and int(entry.get("volumes_scored") or 0) > 0:
            subject = str(entry.get("subject", "human"))
            contrast = str(entry.get("contrast", ""))
            in_far = subject == "human" and "perfusion" not in name
            for i, img in enumerate(read_series(shared / path)):
                yield RealVolume(name, i, img, subject, contrast, in_far)
