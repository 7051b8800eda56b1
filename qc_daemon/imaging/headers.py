"""Reading DICOM headers (pydicom, never the pixels) into plain records.

:func:`read_instance` reads one file's header and checks, without decoding, that its pixel data is all there;
:func:`series_header` builds the identity record the database stores. No patient name, ID or birth date is ever
copied out of a dataset here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from qc_daemon.imaging import sop
from qc_daemon.imaging import values as v
from qc_daemon.imaging.diffusion import Diffusion, diffusion_of
from qc_daemon.imaging.errors import ConversionError
from qc_daemon.imaging.geometry import Orientation, Vec3

log = logging.getLogger(__name__)

DEFLATED = "1.2.840.10008.1.2.1.99"
_PIXEL_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}
_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN"}
_SEQ_DELIMITER_LE = b"\xfe\xff\xdd\xe0"
_SEQ_DELIMITER_BE = b"\xff\xfe\xe0\xdd"
_TAIL_BYTES = 65536


@dataclass(frozen=True)
class SeriesHeader:
    """Identity of a series for the database. No patient name, ID or birth date."""

    series_uid: str
    study_uid: str
    modality: str
    manufacturer: str
    manufacturer_model: str
    device_serial: str
    station_name: str
    protocol_name: str
    series_description: str
    series_number: int | None
    body_part: str
    image_type: tuple[str, ...]
    sop_class_uids: tuple[str, ...]
    study_date: str
    series_date: str
    magnetic_field_strength: float | None
    institution_name: str = ""
    software_versions: str = ""
    study_description: str = ""
    series_time: str = ""
    sequence_name: str = ""
    mr_acquisition_type: str = ""
    repetition_time: float | None = None
    echo_time: float | None = None
    slice_thickness: float | None = None
    transfer_syntax_uids: tuple[str, ...] = ()
    n_instances: int = 0

    @classmethod
    def empty(cls) -> SeriesHeader:
        """A header with nothing known (a volume scored from a NIfTI file has no DICOM identity)."""
        return cls(
            series_uid="",
            study_uid="",
            modality="",
            manufacturer="",
            manufacturer_model="",
            device_serial="",
            station_name="",
            protocol_name="",
            series_description="",
            series_number=None,
            body_part="",
            image_type=(),
            sop_class_uids=(),
            study_date="",
            series_date="",
            magnetic_field_strength=None,
        )


@dataclass(frozen=True, eq=False)
class Instance:
    """What the conversion needs from one file's header. ``dataset`` is the header (no pixel data)."""

    path: Path
    dataset: Dataset = field(repr=False)
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    series_uid: str
    modality: str
    manufacturer: str
    image_type: tuple[str, ...]
    instance_number: int | None
    acquisition_number: int | None
    series_number: int | None
    rows: int
    columns: int
    frames: int
    position: Vec3 | None
    orientation: Orientation | None
    pixel_spacing: tuple[float, float] | None
    spacing_between_slices: float | None
    slice_thickness: float | None
    rescaled: bool
    echo_time: float | None
    inversion_time: float | None
    temporal_position: int | None
    diffusion: Diffusion
    complex_component: str
    ge_image_kind: int | None  # GE (0043,102F): 0 magnitude, 1 phase, 2 real, 3 imaginary
    philips_direction: str  # Philips (2001,1004): I isotropic, M/P/S/O directions
    philips_label_type: str  # Philips (2005,1429): CONTROL / LABEL (ASL)
    pixel_problem: str | None  # why the pixel data cannot be complete, found without decoding it
    lossy: bool  # LossyImageCompression 01: compressed with loss at some point
    derived_by_compression: bool  # DERIVED only because of lossy compression (DICOM code 113040), not of content

    @property
    def is_image(self) -> bool:
        return self.sop_class_uid in sop.IMAGE_CLASSES

    @property
    def is_multiframe(self) -> bool:
        return self.sop_class_uid in sop.MULTIFRAME_IMAGE_CLASSES

    @property
    def order_key(self) -> tuple[int, int, str]:
        big = 1 << 40
        number = self.instance_number if self.instance_number is not None else big
        acq = self.acquisition_number if self.acquisition_number is not None else big
        return (number, acq, self.path.name)


def _open_header(fp: BinaryIO, path: Path) -> Dataset:
    try:
        return pydicom.dcmread(fp, stop_before_pixels=True)
    except InvalidDicomError:
        fp.seek(0)
        ds = pydicom.dcmread(fp, stop_before_pixels=True, force=True)
        if not v.text(v.get(ds, "SOPClassUID")):
            raise ConversionError(f"{path.name}: not a DICOM file") from None
        return ds


def _pixel_problem(fp: BinaryIO, ds: Dataset, file_size: int) -> str | None:
    """Check the pixel data element that follows the header at ``fp``'s position, without reading it."""
    start = fp.tell()
    head = fp.read(12)
    if len(head) < 8:
        return "no pixel data"
    implicit, little = ds.original_encoding
    byteorder: Literal["little", "big"] = "little" if little is not False else "big"
    tag = (int.from_bytes(head[0:2], byteorder) << 16) | int.from_bytes(head[2:4], byteorder)
    if tag not in _PIXEL_TAGS:
        return None
    if implicit:
        length, header_len = int.from_bytes(head[4:8], byteorder), 8
    elif head[4:6] in _LONG_VRS:
        if len(head) < 12:
            return "file ends inside the pixel data element"
        length, header_len = int.from_bytes(head[8:12], byteorder), 12
    else:
        length, header_len = int.from_bytes(head[6:8], byteorder), 8
    if length == 0xFFFFFFFF:
        fp.seek(max(start, file_size - _TAIL_BYTES))
        delimiter = _SEQ_DELIMITER_LE if byteorder == "little" else _SEQ_DELIMITER_BE
        if delimiter not in fp.read():
            return "encapsulated pixel data is not terminated (truncated file)"
        return None
    rows = v.first_int(v.get(ds, "Rows")) or 0
    columns = v.first_int(v.get(ds, "Columns")) or 0
    frames = v.first_int(v.get(ds, "NumberOfFrames")) or 1
    samples = v.first_int(v.get(ds, "SamplesPerPixel")) or 1
    bits = v.first_int(v.get(ds, "BitsAllocated")) or 16
    pixels = rows * columns * frames * samples
    needed = (pixels + 7) // 8 if bits == 1 else pixels * (bits // 8)
    if length < needed:
        return f"pixel data holds {length} bytes, the image needs {needed}"
    present = file_size - start - header_len
    if present < needed:
        return f"file truncated: pixel data needs {needed} bytes, {max(present, 0)} present"
    return None


def _transfer_syntax(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    return v.text(meta.get("TransferSyntaxUID")) if meta is not None else ""


def read_instance(path: Path) -> Instance:
    """Header of one file. Raises :class:`ConversionError` when it is not readable DICOM."""
    path = Path(path)
    try:
        file_size = os.path.getsize(path)
        with path.open("rb") as fp:
            ds = _open_header(fp, path)
            transfer_syntax = _transfer_syntax(ds)
            sop_class = v.text(v.get(ds, "SOPClassUID"))
            if not sop_class:
                raise ConversionError(f"{path.name}: not a DICOM instance (no SOPClassUID)")
            problem = None
            if sop_class in sop.IMAGE_CLASSES and transfer_syntax != DEFLATED:
                problem = _pixel_problem(fp, ds, file_size)
    except ConversionError:
        raise
    except Exception as exc:  # pydicom raises many types on damaged files; all mean "unreadable"
        raise ConversionError(f"{path.name}: unreadable DICOM header ({type(exc).__name__}: {exc})") from exc
    return _instance_from(path, ds, sop_class, transfer_syntax, problem)


def _instance_from(path: Path, ds: Dataset, sop_class: str, transfer_syntax: str, problem: str | None) -> Instance:
    manufacturer = v.text(v.get(ds, "Manufacturer"))
    maker = manufacturer.upper()
    is_ge, is_philips = maker.startswith("GE"), maker.startswith("PHILIPS")
    spacing = v.floats(v.get(ds, "PixelSpacing"))
    slope = v.first_float(v.get(ds, "RescaleSlope"))
    intercept = v.first_float(v.get(ds, "RescaleIntercept"))
    return Instance(
        path=path,
        dataset=ds,
        sop_class_uid=sop_class,
        sop_instance_uid=v.text(v.get(ds, "SOPInstanceUID")),
        transfer_syntax_uid=transfer_syntax,
        series_uid=v.text(v.get(ds, "SeriesInstanceUID")),
        modality=v.text(v.get(ds, "Modality")).upper(),
        manufacturer=manufacturer,
        image_type=v.strings(v.get(ds, "ImageType")),
        instance_number=v.first_int(v.get(ds, "InstanceNumber")),
        acquisition_number=v.first_int(v.get(ds, "AcquisitionNumber")),
        series_number=v.first_int(v.get(ds, "SeriesNumber")),
        rows=v.first_int(v.get(ds, "Rows")) or 0,
        columns=v.first_int(v.get(ds, "Columns")) or 0,
        frames=v.first_int(v.get(ds, "NumberOfFrames")) or 1,
        position=v.vector3(v.floats(v.get(ds, "ImagePositionPatient"))),
        orientation=v.vector6(v.floats(v.get(ds, "ImageOrientationPatient"))),
        pixel_spacing=(spacing[0], spacing[1]) if len(spacing) == 2 and min(spacing) > 0 else None,
        spacing_between_slices=v.first_float(v.get(ds, "SpacingBetweenSlices")),
        slice_thickness=v.first_float(v.get(ds, "SliceThickness")),
        rescaled=(slope is not None and slope != 1.0) or (intercept is not None and intercept != 0.0),
        echo_time=v.first_float(v.get(ds, "EchoTime")),
        inversion_time=v.first_float(v.get(ds, "InversionTime")),
        temporal_position=v.first_int(v.get(ds, "TemporalPositionIdentifier")),
        diffusion=diffusion_of(ds, manufacturer),
        complex_component=v.text(v.get(ds, "ComplexImageComponent")).upper(),
        ge_image_kind=v.first_int(v.private(ds, 0x0043, 0x2F, "GEMS_PARM_01")) if is_ge else None,
        philips_direction=v.text(v.private(ds, 0x2001, 0x04, "Philips Imaging DD 001")).upper() if is_philips else "",
        philips_label_type=(
            v.text(v.private(ds, 0x2005, 0x29, "Philips MR Imaging DD 005")).upper() if is_philips else ""
        ),
        pixel_problem=problem,
        lossy=_lossy(ds),
        derived_by_compression=_derived_by_compression_only(ds),
    )


LOSSY_COMPRESSION_CODE = "113040"


def _lossy(ds: Dataset) -> bool:
    return v.text(v.get(ds, "LossyImageCompression")) == "01"


def _derived_by_compression_only(ds: Dataset) -> bool:
    """The image is DERIVED only because it was lossy compressed (what dcmtk and PACS write), not processed."""
    if not _lossy(ds):
        return False
    codes = [v.text(v.get(item, "CodeValue")) for item in v.get(ds, "DerivationCodeSequence") or []]
    if codes:
        return all(code == LOSSY_COMPRESSION_CODE for code in codes)
    return "compress" in v.text(v.get(ds, "DerivationDescription")).lower()


def read_instances(files: Sequence[Path]) -> list[Instance]:
    """Headers of all files, in (InstanceNumber, AcquisitionNumber, file name) order."""
    if not files:
        raise ConversionError("no files")
    instances = [read_instance(Path(f)) for f in files]
    return sorted(instances, key=lambda i: i.order_key)


def _representative(instances: Sequence[Instance]) -> Instance:
    images = [i for i in instances if i.is_image]
    return (images or list(instances))[0]


def series_header(instances: Sequence[Instance]) -> SeriesHeader:
    """Identity record built from the first image instance (first instance when there is no image)."""
    if not instances:
        raise ConversionError("no files")
    ds = _representative(instances).dataset
    return SeriesHeader(
        series_uid=v.text(v.get(ds, "SeriesInstanceUID")),
        study_uid=v.text(v.get(ds, "StudyInstanceUID")),
        modality=v.text(v.get(ds, "Modality")).upper(),
        manufacturer=v.text(v.get(ds, "Manufacturer")),
        manufacturer_model=v.text(v.get(ds, "ManufacturerModelName")),
        device_serial=v.text(v.get(ds, "DeviceSerialNumber")),
        station_name=v.text(v.get(ds, "StationName")),
        protocol_name=v.text(v.get(ds, "ProtocolName")),
        series_description=v.text(v.get(ds, "SeriesDescription")),
        series_number=v.first_int(v.get(ds, "SeriesNumber")),
        body_part=v.text(v.get(ds, "BodyPartExamined")),
        image_type=v.strings(v.get(ds, "ImageType")),
        sop_class_uids=tuple(sorted({i.sop_class_uid for i in instances})),
        study_date=v.text(v.get(ds, "StudyDate")),
        series_date=v.text(v.get(ds, "SeriesDate")),
        magnetic_field_strength=v.first_float(v.get(ds, "MagneticFieldStrength")),
        institution_name=v.text(v.get(ds, "InstitutionName")),
        software_versions=v.text(v.get(ds, "SoftwareVersions")),
        study_description=v.text(v.get(ds, "StudyDescription")),
        series_time=v.text(v.get(ds, "SeriesTime")),
        sequence_name=v.text(v.get(ds, "SequenceName")) or v.text(v.get(ds, "PulseSequenceName")),
        mr_acquisition_type=v.text(v.get(ds, "MRAcquisitionType")),
        repetition_time=v.first_float(v.get(ds, "RepetitionTime")),
        echo_time=v.first_float(v.get(ds, "EchoTime")),
        slice_thickness=v.first_float(v.get(ds, "SliceThickness")),
        transfer_syntax_uids=tuple(sorted({i.transfer_syntax_uid for i in instances if i.transfer_syntax_uid})),
        n_instances=len(instances),
    )
