"""Write a 3-D volume as a classic MR Image Storage series (one file per slice), for tests and benchmarks.

The geometry is whatever the SimpleITK image says (origin, spacing, direction); pixels are stored as 16-bit
signed integers, Explicit VR Little Endian. Nothing identifying: the patient is "QC^TEST".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid


def write_series(
    image: sitk.Image,
    out_dir: Path,
    *,
    series_description: str = "T1 3D",
    protocol_name: str | None = None,
    manufacturer: str = "QCTEST",
    model: str = "Synthetic",
    station: str = "SIM1",
    series_uid: str | None = None,
    study_uid: str | None = None,
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "M", "ND"),
    extra: dict[str, object] | None = None,
) -> str:
    """Write ``image`` to ``out_dir/0001.dcm...``; return the SeriesInstanceUID."""
    out_dir.mkdir(parents=True, exist_ok=True)
    array = sitk.GetArrayFromImage(image)  # z, y, x
    if array.ndim != 3:
        raise ValueError("a 3-D image is needed")
    array = np.clip(np.rint(array), -32768, 32767).astype(np.int16)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    spacing = image.GetSpacing()
    row_dir = direction[:, 0]
    col_dir = direction[:, 1]
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    frame_uid = generate_uid()
    for k in range(array.shape[0]):
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.Modality = "MR"
        ds.ImageType = list(image_type)
        ds.Manufacturer = manufacturer
        ds.ManufacturerModelName = model
        ds.StationName = station
        ds.DeviceSerialNumber = "0001"
        ds.PatientName = "QC^TEST"
        ds.PatientID = "QCTEST"
        ds.StudyDate = "20261101"
        ds.SeriesDate = "20261101"
        ds.SeriesNumber = 1
        ds.InstanceNumber = k + 1
        ds.SeriesDescription = series_description
        ds.ProtocolName = protocol_name or series_description
        ds.BodyPartExamined = "BRAIN"
        ds.MagneticFieldStrength = 3
        ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*row_dir, *col_dir)]
        ds.PixelSpacing = [f"{spacing[1]:.6f}", f"{spacing[0]:.6f}"]
        ds.SliceThickness = f"{spacing[2]:.6f}"
        ds.SpacingBetweenSlices = f"{spacing[2]:.6f}"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = int(array.shape[1]), int(array.shape[2])
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = 0
        ds.RescaleSlope = 1
        for key, value in (extra or {}).items():
            setattr(ds, key, value)
        ds.PixelData = array[k].tobytes()
        pydicom.dcmwrite(out_dir / f"{k + 1:04d}.dcm", ds, enforce_file_format=True)
    return str(series_uid)
