"""read_nifti on the shared NIfTI volumes and on made-up 4-D / 2-D files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk

from qc_daemon.imaging.convert import ConversionError, read_nifti
from tests.conftest import shared_data_dir

NIFTI = [e for e in json.loads((shared_data_dir() / "manifest.json").read_text()) if e["kind"] == "nifti"]
SITK_TYPES = {"int16": sitk.sitkInt16, "uint8": sitk.sitkUInt8}


@pytest.mark.parametrize("entry", NIFTI, ids=[e["path"].split("/")[-1] for e in NIFTI])
def test_shared_nifti(entry: dict[str, Any], shared_data: Path) -> None:
    image = read_nifti(shared_data / entry["path"])
    assert list(image.GetSize()) == entry["shape"]
    assert np.allclose(image.GetSpacing(), entry["spacing_mm"], rtol=0.01)
    assert image.GetPixelID() == SITK_TYPES[entry["dtype"]]
    # nibabel's axis codes (where each axis points, RAS world) equal ITK's orientation letters (LPS world)
    assert sitk.DICOMOrientImageFilter_GetOrientationFromDirectionCosines(image.GetDirection()) == entry["axcodes"]


def test_single_time_point_4d_becomes_3d(tmp_path: Path) -> None:
    path = tmp_path / "one.nii.gz"
    sitk.WriteImage(sitk.Image([8, 9, 10, 1], sitk.sitkFloat64), str(path))
    image = read_nifti(path)
    assert image.GetSize() == (8, 9, 10) and image.GetPixelID() == sitk.sitkFloat32


def test_time_series_and_2d_are_refused(tmp_path: Path) -> None:
    four = tmp_path / "four.nii.gz"
    sitk.WriteImage(sitk.Image([8, 9, 10, 3], sitk.sitkInt16), str(four))
    with pytest.raises(ConversionError, match="3 volumes"):
        read_nifti(four)
    flat = tmp_path / "flat.nii.gz"
    sitk.WriteImage(sitk.Image([8, 9], sitk.sitkInt16), str(flat))
    with pytest.raises(ConversionError, match="2-D image"):
        read_nifti(flat)


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.nii.gz"
    path.write_bytes(b"not gzip")
    with pytest.raises(ConversionError, match=r"broken\.nii\.gz"):
        read_nifti(path)
