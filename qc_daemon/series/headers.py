"""Read and check the header of one spooled instance (outside the C-STORE hot path).

The receiver only made sure a SeriesInstanceUID could be found. Here the whole dataset is parsed, the identity
fields are kept (never patient names or IDs), and a dataset that is truncated or inconsistent raises
:class:`InvalidInstance` with a reason, so that the bookkeeper can quarantine it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

NATIVE_SYNTAXES = frozenset(
    {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"}
)


class InvalidInstance(Exception):
    """The spooled file is not a usable DICOM dataset; the message is the reason recorded in quarantine."""


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """What the database keeps about one instance and the series it belongs to."""

    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    study_uid: str
    study_date: str
    modality: str
    manufacturer: str
    manufacturer_model: str
    device_serial: str
    station_name: str
    protocol_name: str
    series_description: str
    series_number: int | None
    instance_number: int | None
    body_part: str
    path: str  # relative to the spool directory
    size: int
    calling_ae: str
    received_at: datetime


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    if value is None:
        return ""
    return " ".join(str(value).split())


def _int(ds: Dataset, keyword: str) -> int | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _check_pixel_data(ds: Dataset, transfer_syntax: str) -> None:
    if "Rows" not in ds or "Columns" not in ds:
        return  # not an image (raw data, structured report, presentation state...)
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise InvalidInstance("truncated dataset: image attributes present but no pixel data")
    if "PixelData" not in ds or transfer_syntax not in NATIVE_SYNTAXES:
        return
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        expected = int(ds.Rows) * int(ds.Columns) * frames * int(ds.get("SamplesPerPixel", 1) or 1)
        expected = expected * int(ds.BitsAllocated) // 8
    except (TypeError, ValueError, AttributeError) as exc:
        raise InvalidInstance(f"inconsistent image attributes: {exc}") from None
    got = len(ds.PixelData)
    if got < expected:
        raise InvalidInstance(f"truncated pixel data: {got} of {expected} bytes")


def read_instance(path: Path, spool_dir: Path, calling_ae: str, received_at: datetime | None = None) -> InstanceRecord:
    """Parse a spooled file completely and return its record, or raise :class:`InvalidInstance`."""
    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, EOFError, ValueError, KeyError, OSError, TypeError, AttributeError) as exc:
        raise InvalidInstance(f"cannot parse dataset: {type(exc).__name__}: {exc}") from None
    meta = getattr(ds, "file_meta", None)
    # The receiver records the calling AE in the file meta: reconciliation after a crash gets it back from there.
    calling_ae = calling_ae or str(getattr(meta, "SourceApplicationEntityTitle", "") or "").strip()
    transfer_syntax = str(getattr(meta, "TransferSyntaxUID", "") or "")
    series_uid = _text(ds, "SeriesInstanceUID")
    sop_uid = _text(ds, "SOPInstanceUID") or str(getattr(meta, "MediaStorageSOPInstanceUID", "") or "")
    sop_class = _text(ds, "SOPClassUID") or str(getattr(meta, "MediaStorageSOPClassUID", "") or "")
    for name, value in (("SeriesInstanceUID", series_uid), ("SOPInstanceUID", sop_uid), ("SOPClassUID", sop_class)):
        if not value:
            raise InvalidInstance(f"missing {name}")
        if not UID(value).is_valid:
            raise InvalidInstance(f"invalid {name}: {value[:70]!r}")
    try:
        _check_pixel_data(ds, transfer_syntax)
    except InvalidInstance:
        raise
    except Exception as exc:  # pydicom raises many types on damaged values
        raise InvalidInstance(f"damaged pixel data: {type(exc).__name__}: {exc}") from None
    if received_at is None:
        received_at = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    return InstanceRecord(
        series_uid=series_uid,
        sop_instance_uid=sop_uid,
        sop_class_uid=sop_class,
        transfer_syntax_uid=transfer_syntax,
        study_uid=_text(ds, "StudyInstanceUID"),
        study_date=_text(ds, "StudyDate")[:8],
        modality=_text(ds, "Modality"),
        manufacturer=_text(ds, "Manufacturer"),
        manufacturer_model=_text(ds, "ManufacturerModelName"),
        device_serial=_text(ds, "DeviceSerialNumber"),
        station_name=_text(ds, "StationName"),
        protocol_name=_text(ds, "ProtocolName"),
        series_description=_text(ds, "SeriesDescription"),
        series_number=_int(ds, "SeriesNumber"),
        instance_number=_int(ds, "InstanceNumber"),
        body_part=_text(ds, "BodyPartExamined"),
        path=str(path.relative_to(spool_dir)),
        size=path.stat().st_size,
        calling_ae=calling_ae,
        received_at=received_at,
    )
