"""The partial header reader and the hand-written file meta, against pydicom on real and crafted datasets."""

from __future__ import annotations

import io
import zlib
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

from qc_daemon.ingest.filemeta import encode_file_meta
from qc_daemon.ingest.header import HeaderError, read_identity


def split_file(path: Path) -> tuple[bytes, str]:
    raw = path.read_bytes()
    fp = io.BytesIO(raw)
    read_preamble(fp, False)
    meta = _read_file_meta_info(fp)
    return raw[fp.tell() :], str(meta.TransferSyntaxUID)


def test_every_shared_file_in_every_transfer_syntax(shared_data: Path) -> None:
    files = sorted((shared_data / "dicom").rglob("*.dcm"))
    assert len(files) == 1027
    syntaxes = set()
    for path in files:
        data, syntax = split_file(path)
        syntaxes.add(syntax)
        ident = read_identity(data, syntax)
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert (ident.series_uid, ident.sop_instance_uid, ident.sop_class_uid) == (
            ds.SeriesInstanceUID,
            ds.SOPInstanceUID,
            ds.SOPClassUID,
        ), path
    assert len(syntaxes) == 7  # explicit/implicit LE, explicit BE, RLE, JPEG lossless, JPEG-LS, JPEG 2000


def sample_dataset() -> Dataset:
    """Sequences of defined and undefined length (nested) before the series UID, private elements, pixel data."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "MR"
    inner = Dataset()
    inner.ReferencedSOPInstanceUID = generate_uid()
    inner.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    item = Dataset()
    item.ReferencedSOPInstanceUID = generate_uid()
    item.ReferencedImageSequence = Sequence([inner, inner])
    ds.ReferencedImageSequence = Sequence([item])
    ds.add_new(0x00091010, "LO", "private value")
    ds.PatientName = "ANON"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Rows = 2
    ds.Columns = 2
    ds.BitsAllocated = 16
    ds.PixelData = b"\0" * 8
    return ds


def encode(ds: Dataset, syntax: str, undefined_lengths: bool) -> bytes:
    fp = pydicom.filebase.DicomBytesIO()
    fp.is_implicit_VR = syntax == ImplicitVRLittleEndian
    fp.is_little_endian = syntax != ExplicitVRBigEndian
    if undefined_lengths:
        for elem in ds.iterall():
            if elem.VR == "SQ":
                elem.is_undefined_length = True
                for item in elem.value:
                    item.is_undefined_length_sequence_item = True
    write_dataset(fp, ds)
    return fp.getvalue()


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian])
@pytest.mark.parametrize("undefined_lengths", [False, True])
def test_crafted_encodings(syntax: str, undefined_lengths: bool) -> None:
    ds = sample_dataset()
    ident = read_identity(encode(ds, syntax, undefined_lengths), syntax)
    assert (ident.series_uid, ident.sop_instance_uid, ident.sop_class_uid) == (
        ds.SeriesInstanceUID,
        ds.SOPInstanceUID,
        ds.SOPClassUID,
    )


def test_deflated() -> None:
    ds = sample_dataset()
    ds.add_new(0x00111010, "OB", b"\x01\x02" * 300_000)  # large, before (0020,000E): several inflate steps
    plain = encode(ds, ExplicitVRLittleEndian, True)
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = packer.compress(plain) + packer.flush()
    ident = read_identity(deflated, DeflatedExplicitVRLittleEndian)
    assert ident.series_uid == ds.SeriesInstanceUID
    with pytest.raises(HeaderError):
        read_identity(b"\xff\x00garbage", DeflatedExplicitVRLittleEndian)


def test_undefined_length_un_holds_implicit_content() -> None:
    ds = sample_dataset()
    plain = encode(ds, ExplicitVRLittleEndian, True)
    # Re-label the (undefined-length, explicit) sequence as UN: its items must then be read as implicit VR
    sq = plain.index(b"\x08\x00\x40\x11SQ")
    only_sequence = Dataset()
    only_sequence.ReferencedImageSequence = ds.ReferencedImageSequence
    implicit_items = encode(only_sequence, ImplicitVRLittleEndian, True)[8:]
    crafted = plain[:sq] + b"\x08\x00\x40\x11UN\0\0\xff\xff\xff\xff" + implicit_items
    rest = encode(ds, ExplicitVRLittleEndian, True)
    tail = rest[rest.index(b"\x09\x00\x10\x10") :]
    assert read_identity(crafted + tail, ExplicitVRLittleEndian).series_uid == ds.SeriesInstanceUID


def test_missing_series_uid_and_garbage() -> None:
    ds = sample_dataset()
    del ds.SeriesInstanceUID
    assert read_identity(encode(ds, ExplicitVRLittleEndian, False), ExplicitVRLittleEndian).series_uid is None
    with pytest.raises(HeaderError):
        read_identity(b"this is not a DICOM data set at all....", ExplicitVRLittleEndian)
    full = encode(sample_dataset(), ExplicitVRLittleEndian, True)
    cut = full[: full.index(b"\x20\x00\x0d\x00") + 2]  # truncated inside the header of (0020,000D)
    with pytest.raises(HeaderError):
        read_identity(cut, ExplicitVRLittleEndian)
    assert read_identity(b"", ExplicitVRLittleEndian).series_uid is None


def test_file_meta_reads_back_with_pydicom() -> None:
    ds = sample_dataset()
    body = encode(ds, ExplicitVRLittleEndian, False)
    header = encode_file_meta(
        sop_class_uid=ds.SOPClassUID,
        sop_instance_uid=ds.SOPInstanceUID,
        transfer_syntax_uid=ExplicitVRLittleEndian,
        implementation_class_uid="1.2.826.0.1.3680043.9.3811.3.0.4",
        implementation_version_name="PYNETDICOM_304",
        source_ae_title="MODALITY",
    )
    read = pydicom.dcmread(io.BytesIO(header + body))
    meta: FileMetaDataset = read.file_meta
    assert meta.MediaStorageSOPClassUID == ds.SOPClassUID
    assert meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert meta.ImplementationVersionName == "PYNETDICOM_304"
    assert meta.SourceApplicationEntityTitle == "MODALITY"
    assert meta.FileMetaInformationGroupLength == len(header) - 132 - 12
    assert read.SeriesInstanceUID == ds.SeriesInstanceUID
