"""Reading the pixel data of one planned volume into a 3-D SimpleITK image with the planned geometry.

Classic slices and mosaics are decoded by SimpleITK/GDCM (every transfer syntax the node accepts); Enhanced MR frames
by pydicom + pylibjpeg, one volume's frames at a time, with each frame's own rescale slope and intercept (GDCM would
apply the first frame's to all). Rescaled data is read as float32, never kept as float64; unscaled data keeps its
stored integer type.
"""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk
from pydicom.pixels.utils import iter_pixels

from qc_daemon.imaging.errors import ConversionError
from qc_daemon.imaging.plan import ClassicSource, FrameSource, MosaicSource, VolumePlan

log = logging.getLogger(__name__)


def _short(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in reversed(lines):
        if "ERROR:" in line:
            return line.split("ERROR:", 1)[1].strip()
    return lines[-1] if lines else type(exc).__name__


def _read_classic(src: ClassicSource) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(p) for p in src.paths])
    if src.rescaled:
        reader.SetOutputPixelType(sitk.sitkFloat32)
    image: sitk.Image = reader.Execute()
    return image


def _read_mosaic(src: MosaicSource) -> npt.NDArray[np.generic]:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(src.path))
    if src.rescaled:
        reader.SetOutputPixelType(sitk.sitkFloat32)
    mosaic = sitk.GetArrayFromImage(reader.Execute())
    if mosaic.ndim == 3 and mosaic.shape[0] == 1:
        mosaic = mosaic[0]
    if mosaic.ndim != 2:
        raise ConversionError(f"{src.path.name}: mosaic is not a 2-D image ({mosaic.shape})")
    rows, cols = mosaic.shape
    if rows % src.tile_rows or cols % src.tile_columns or cols // src.tile_columns != src.grid_columns:
        raise ConversionError(f"{src.path.name}: {cols}x{rows} image does not hold the planned mosaic grid")
    grid_rows = rows // src.tile_rows
    grid = mosaic.reshape(grid_rows, src.tile_rows, src.grid_columns, src.tile_columns)
    tiles = grid.swapaxes(1, 2).reshape(-1, src.tile_rows, src.tile_columns)
    if max(src.tiles) >= tiles.shape[0]:
        raise ConversionError(f"{src.path.name}: mosaic has {tiles.shape[0]} tiles, {max(src.tiles) + 1} needed")
    return np.ascontiguousarray(tiles[list(src.tiles)])


def _read_frames(src: FrameSource) -> npt.NDArray[np.generic]:
    frames = np.stack(list(iter_pixels(src.path, indices=list(src.frames))))
    if frames.ndim != 3:
        raise ConversionError(f"{src.path.name}: frames are not single-channel 2-D images ({frames.shape})")
    if not src.rescaled:
        return frames
    slopes = np.asarray(src.slopes, dtype=np.float32)[:, None, None]
    intercepts = np.asarray(src.intercepts, dtype=np.float32)[:, None, None]
    out: npt.NDArray[np.float32] = frames.astype(np.float32) * slopes + intercepts
    return out


def read_volume(plan: VolumePlan) -> sitk.Image:
    """Decode one volume and set its origin, spacing and direction from the plan (LPS)."""
    if plan.geometry is None:
        raise ConversionError(plan.geometry_error or f"{plan.label}: no geometry")
    src = plan.source
    try:
        if isinstance(src, ClassicSource):
            image = _read_classic(src)
        elif isinstance(src, MosaicSource):
            image = sitk.GetImageFromArray(_read_mosaic(src))
        else:
            image = sitk.GetImageFromArray(_read_frames(src))
    except ConversionError:
        raise
    except (RuntimeError, ValueError, OSError, NotImplementedError) as exc:
        first = plan.source_names[0] if plan.source_names else "?"
        raise ConversionError(f"cannot decode pixel data ({first}, volume {plan.label}): {_short(exc)}") from exc
    if image.GetPixelID() == sitk.sitkFloat64:
        image = sitk.Cast(image, sitk.sitkFloat32)
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise ConversionError(f"volume {plan.label}: decoded image is not a 3-D scalar image")
    if image.GetSize()[2] != plan.n_slices:
        raise ConversionError(f"volume {plan.label}: decoded {image.GetSize()[2]} slices, planned {plan.n_slices}")
    g = plan.geometry
    image.SetOrigin(g.origin)
    image.SetSpacing(g.spacing)
    image.SetDirection(g.direction)
    log.debug("read volume %s: size %s, pixel type %s", plan.label, image.GetSize(), image.GetPixelIDTypeAsString())
    return image
