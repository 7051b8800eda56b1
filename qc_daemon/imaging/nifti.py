"""Reading a single NIfTI (or other ITK-readable) volume for ``qc-daemon score file.nii.gz``."""

from __future__ import annotations

from pathlib import Path

import SimpleITK as sitk

from qc_daemon.imaging.errors import ConversionError


def read_nifti(path: Path) -> sitk.Image:
    """One 3-D scalar volume, geometry in LPS (ITK converts from NIfTI's RAS), float64 cast to float32.

    A 4-D file with a single time point is reduced to 3-D; more time points, 2-D or vector images raise
    :class:`ConversionError`.
    """
    path = Path(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        last = [line for line in str(exc).splitlines() if line.strip()]
        raise ConversionError(f"{path.name}: unreadable image ({last[-1].strip() if last else exc})") from exc
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ConversionError(f"{path.name}: not a scalar image ({image.GetNumberOfComponentsPerPixel()} components)")
    size = image.GetSize()
    if image.GetDimension() == 4:
        if size[3] != 1:
            raise ConversionError(f"{path.name}: 4-D image with {size[3]} volumes, one expected")
        image = sitk.Extract(image, [size[0], size[1], size[2], 0], [0, 0, 0, 0])
    if image.GetDimension() != 3:
        raise ConversionError(f"{path.name}: {image.GetDimension()}-D image, 3-D expected")
    if image.GetPixelID() == sitk.sitkFloat64:
        image = sitk.Cast(image, sitk.sitkFloat32)
    return image
