"""Read and check the header of one spooled instance (outside the C-STORE hot path).

The receiver only made sure a SeriesInstanceUID could be found. Here the header is parsed, the pixel data checked
for completeness, the identity fields kept (never patient names or IDs), and a dataset that is truncated or
inconsistent raises :class:`InvalidInstance` with a reason, so that the bookkeeper can quarantine it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import UID

from qc_daemon.imaging.errors import ConversionError
from qc_daemon.imaging.headers import read_instance as read_header


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


def read_instance(path: Path, spool_dir: Path, calling_ae: str, received_at: datetime | None = None) -> InstanceRecord:
    """Parse a spooled file's header, check its pixel data is whole, and return its record.

    Raises :class:`InvalidInstance` with the reason. The parsing and the pixel-data check are the conversion
    stage's own (:func:`qc_daemon.imaging.headers.read_instance`), so a file indexed here is one it can read.
    """
    try:
        inst = read_header(path)
    except ConversionError as exc:
        raise InvalidInstance(exc.reason) from None
    except OSError as exc:
        raise InvalidInstance(f"cannot read file: {exc.strerror}") from None
    if inst.pixel_problem:
        raise InvalidInstance(f"truncated pixel data: {inst.pixel_problem}")
    ds = inst.dataset
    meta = getattr(ds, "file_meta", None)
    # The receiver records the calling AE in the file meta: reconciliation after a crash gets it back from there.
    calling_ae = calling_ae or str(getattr(meta, "SourceApplicationEntityTitle", "") or "").strip()
    sop_uid = inst.sop_instance_uid or str(getattr(meta, "MediaStorageSOPInstanceUID", "") or "")
    for name, value in (
        ("SeriesInstanceUID", inst.series_uid),
        ("SOPInstanceUID", sop_uid),
        ("SOPClassUID", inst.sop_class_uid),
    ):
        if not value:
            raise InvalidInstance(f"missing {name}")
        if not UID(value).is_valid:
            raise InvalidInstance(f"invalid {name}: {value[:70]!r}")
    if received_at is None:
        received_at = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    return InstanceRecord(
        series_uid=inst.series_uid,
        sop_instance_uid=sop_uid,
        sop_class_uid=inst.sop_class_uid,
        transfer_syntax_uid=inst.transfer_syntax_uid,
        study_uid=_text(ds, "StudyInstanceUID"),
        study_date=_text(ds, "StudyDate")[:8],
        modality=inst.modality,
        manufacturer=inst.manufacturer,
        manufacturer_model=_text(ds, "ManufacturerModelName"),
        device_serial=_text(ds, "DeviceSerialNumber"),
        station_name=_text(ds, "StationName"),
        protocol_name=_text(ds, "ProtocolName"),
        series_description=_text(ds, "SeriesDescription"),
        series_number=inst.series_number,
        instance_number=inst.instance_number,
        body_part=_text(ds, "BodyPartExamined"),
        path=str(path.relative_to(spool_dir)),
        size=path.stat().st_size,
        calling_ae=calling_ae,
        received_at=received_at,
    )
