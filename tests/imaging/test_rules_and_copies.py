"""Skip rules, codecs and damaged files, on copies of 20 Philips T1 slices made in a tmp dir (dcmtk, pydicom)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from qc_daemon.imaging.convert import ConversionError, ConversionRules, convert_series

RAW_DATA = "dicom/philips_raw_data_object/0001.dcm"


def _dcmtk(*args: str | Path) -> None:
    tool = str(args[0])
    if shutil.which(tool) is None:
        pytest.skip(f"dcmtk {tool} not installed")
    subprocess.run([str(a) for a in args], check=True, capture_output=True, timeout=60)


def _modify(files: list[Path], assignment: str) -> None:
    _dcmtk("dcmodify", "-nb", "-m", assignment, *files)


def _set(files: list[Path], **values: object) -> None:
    for path in files:
        ds = pydicom.dcmread(path)
        for keyword, value in values.items():
            setattr(ds, keyword, value)
        ds.save_as(path)


def _array(files: list[Path]) -> np.ndarray:
    conv = convert_series(files)
    (vol,) = conv.volumes
    assert vol.image is not None, vol.skip_reason
    return sitk.GetArrayFromImage(vol.image)


def test_copy_converts_as_one_volume(t1_copy: list[Path]) -> None:
    conv = convert_series(t1_copy)
    (vol,) = conv.volumes
    assert vol.image is not None and vol.image.GetSize() == (256, 256, 20)
    assert vol.label == "single volume" and dict(vol.split_key) == {}
    assert conv.warnings == []


def test_derived_secondary_is_skipped(t1_copy: list[Path]) -> None:
    _modify(t1_copy, "(0008,0008)=DERIVED\\SECONDARY")
    conv = convert_series(t1_copy)
    assert conv.volumes == []
    assert conv.skip_reason == "derived: ImageType DERIVED\\SECONDARY"


def test_localizer_image_type_is_skipped(t1_copy: list[Path]) -> None:
    _modify(t1_copy, "(0008,0008)=ORIGINAL\\PRIMARY\\LOCALIZER")
    conv = convert_series(t1_copy)
    assert conv.volumes == [] and conv.skip_reason is not None
    assert conv.skip_reason.startswith("localizer")


@pytest.mark.parametrize("description", ["3-Plane Loc", "AAHScout", "SURVEY", "ax_loc", "Localizer"])
def test_localizer_description_is_skipped(t1_copy: list[Path], description: str) -> None:
    _set(t1_copy, SeriesDescription=description)
    conv = convert_series(t1_copy)
    assert conv.skip_reason is not None and conv.skip_reason.startswith("localizer: SeriesDescription")


def test_block_in_description_is_not_a_localizer(t1_copy: list[Path]) -> None:
    _set(t1_copy[:1], SeriesDescription="T2 BLOCK")
    assert convert_series(t1_copy).skip_reason is None


def test_ct_modality_is_skipped(t1_copy: list[Path]) -> None:
    _modify(t1_copy, "(0008,0060)=CT")
    conv = convert_series(t1_copy)
    assert conv.volumes == [] and conv.skip_reason == "not MR: CT"


def test_secondary_capture_sop_class_is_skipped(t1_copy: list[Path]) -> None:
    sc = "1.2.840.10008.5.1.4.1.1.7"
    for path in t1_copy:
        ds = pydicom.dcmread(path)
        ds.SOPClassUID = sc
        ds.file_meta.MediaStorageSOPClassUID = sc
        ds.save_as(path)
    conv = convert_series(t1_copy)
    assert conv.skip_reason == "secondary capture: Secondary Capture Image Storage"


def test_phase_volume_is_skipped(t1_copy: list[Path]) -> None:
    _modify(t1_copy, "(0008,0008)=ORIGINAL\\PRIMARY\\P\\ND")
    conv = convert_series(t1_copy)
    assert conv.skip_reason is None
    assert [v.skip_reason for v in conv.volumes] == ["phase image"]
    assert conv.final_skip_reason == "phase image"


def test_magnitude_and_phase_in_one_series_split(t1_copy: list[Path]) -> None:
    phase_copies = []
    for path in t1_copy:
        ds = pydicom.dcmread(path)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "P", "ND"]
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        out = path.with_name("p" + path.name)
        ds.save_as(out)
        phase_copies.append(out)
    conv = convert_series(t1_copy + phase_copies)
    assert len(conv.volumes) == 2
    reasons = sorted(str(v.skip_reason) for v in conv.volumes)
    assert reasons == ["None", "phase image"]
    assert {v.n_slices for v in conv.volumes} == {20}


def test_too_few_slices(t1_copy: list[Path]) -> None:
    conv = convert_series(t1_copy[:5])
    assert [v.skip_reason for v in conv.volumes] == ["too few slices: 5 < 10"]
    relaxed = convert_series(t1_copy[:5], ConversionRules(min_slices=5))
    assert relaxed.volumes[0].image is not None and relaxed.volumes[0].image.GetSize()[2] == 5


def test_include_and_exclude_rules(t1_copy: list[Path]) -> None:
    # the copies' SeriesDescription is "ADNI_Sag3D MPRAGE", ProtocolName "WIP ADNI_Sag3D MPRAGE"
    assert convert_series(t1_copy, ConversionRules(include={"SeriesDescription": ["mprage", "t1"]})).skip_reason is None
    not_included = convert_series(t1_copy, ConversionRules(include={"SeriesDescription": ["^t2"]}))
    assert not_included.volumes == []
    assert not_included.skip_reason == "not included by rules: SeriesDescription matches none of ['^t2']"
    both = ConversionRules(include={"SeriesDescription": ["mprage"], "ImageType": ["M_FFE"]})
    assert convert_series(t1_copy, both).skip_reason is None
    excluded = convert_series(t1_copy, ConversionRules(exclude={"ProtocolName": ["^WIP "]}))
    assert excluded.skip_reason == "excluded by rule: ProtocolName matches '^WIP '"


def test_rules_are_validated() -> None:
    with pytest.raises(ValueError, match="not a DICOM keyword"):
        ConversionRules(include={"SeriesDescriptionX": ["a"]})
    with pytest.raises(ValueError, match="bad regular expression"):
        ConversionRules(exclude={"SeriesDescription": ["("]})
    with pytest.raises(ValueError, match="min_slices"):
        ConversionRules(min_slices=0)
    rules = ConversionRules(include={"SeriesDescription": "t1"})  # a single string is one expression
    assert rules.include == {"SeriesDescription": ("t1",)}


def _encode(files: list[Path], tool: str, *options: str) -> list[Path]:
    out = []
    for path in files:
        target = path.with_name(f"{tool}_{path.name}")
        _dcmtk(tool, *options, path, target)
        out.append(target)
    return out


@pytest.mark.parametrize(
    ("tool", "options", "syntax"),
    [("dcmcjpls", (), "1.2.840.10008.1.2.4.80"), ("dcmcrle", (), "1.2.840.10008.1.2.5")],
    ids=["jpeg-ls", "rle"],
)
def test_lossless_copies_decode_identically(
    t1_copy: list[Path], tool: str, options: tuple[str, ...], syntax: str
) -> None:
    encoded = _encode(t1_copy, tool, *options)
    assert pydicom.dcmread(encoded[0], stop_before_pixels=True).file_meta.TransferSyntaxUID == syntax
    assert np.array_equal(_array(encoded), _array(t1_copy))


def test_lossy_jpeg_copy_decodes_close_to_original(t1_copy: list[Path]) -> None:
    encoded = _encode(t1_copy, "dcmcjpeg", "+ee")  # lossy extended sequential (12-bit)
    assert pydicom.dcmread(encoded[0], stop_before_pixels=True).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.51"
    conv = convert_series(encoded)  # dcmtk marks lossy copies DERIVED (code 113040): still the acquisition
    assert conv.skip_reason is None and conv.volumes[0].skip_reason is None
    assert conv.warnings == ["20 of 20 image instance(s) lossy compressed: scores may reflect compression"]
    original, lossy = _array(t1_copy).astype(np.float64), _array(encoded).astype(np.float64)
    assert original.shape == lossy.shape
    assert np.corrcoef(original.ravel(), lossy.ravel())[0, 1] > 0.999


def test_non_image_instance_beside_images_is_ignored(t1_copy: list[Path], shared_data: Path) -> None:
    raw = pydicom.dcmread(shared_data / RAW_DATA)
    raw.SeriesInstanceUID = pydicom.dcmread(t1_copy[0], stop_before_pixels=True).SeriesInstanceUID
    raw_path = t1_copy[0].with_name("raw.dcm")
    raw.save_as(raw_path)
    conv = convert_series([*t1_copy, raw_path])
    assert conv.skip_reason is None and conv.volumes[0].image is not None
    assert conv.warnings == ["ignored 1 non-image instance(s): Raw Data Storage (1.2.840.10008.5.1.4.1.1.66)"]
    assert "1.2.840.10008.5.1.4.1.1.66" in conv.header.sop_class_uids


def test_garbage_file_raises(t1_copy: list[Path]) -> None:
    t1_copy[3].write_bytes(b"\x00" * 128 + b"DICM" + bytes(range(256)) * 8)
    with pytest.raises(ConversionError, match=r"^0079\.dcm: (unreadable DICOM header|not a DICOM instance)"):
        convert_series(t1_copy)


def test_not_dicom_raises(tmp_path: Path) -> None:
    path = tmp_path / "notes.dcm"
    path.write_text("not a DICOM file at all\n" * 20)
    with pytest.raises(ConversionError, match=r"notes\.dcm"):
        convert_series([path])


def test_empty_file_list_raises() -> None:
    with pytest.raises(ConversionError, match="no files"):
        convert_series([])


def test_truncated_file_raises(t1_copy: list[Path]) -> None:
    data = t1_copy[5].read_bytes()
    t1_copy[5].write_bytes(data[: len(data) - 50_000])
    with pytest.raises(ConversionError, match=r"0081\.dcm: file truncated: pixel data needs 131072 bytes"):
        convert_series(t1_copy)


def test_truncated_compressed_file_raises(t1_copy: list[Path]) -> None:
    encoded = _encode(t1_copy, "dcmcjpls")
    data = encoded[2].read_bytes()
    encoded[2].write_bytes(data[: len(data) // 2])
    with pytest.raises(ConversionError, match="not terminated"):
        convert_series(encoded)


def test_truncated_header_raises(t1_copy: list[Path]) -> None:
    data = t1_copy[0].read_bytes()
    t1_copy[0].write_bytes(data[:1500])
    with pytest.raises(ConversionError) as info:
        convert_series(t1_copy)
    assert info.value.reason.startswith("0076.dcm: ")
    assert "\n" not in info.value.reason


def test_corrupt_compressed_stream_raises(t1_copy: list[Path]) -> None:
    encoded = _encode(t1_copy[:12], "dcmcjpeg", "+ee")
    ds = pydicom.dcmread(encoded[4])
    frames = list(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1))
    broken = frames[0][:20] + b"\x00" * (len(frames[0]) - 20)
    ds.PixelData = pydicom.encaps.encapsulate([broken])
    ds.save_as(encoded[4])
    with pytest.raises(ConversionError, match="cannot decode pixel data"):
        convert_series(encoded)


def test_missing_position_raises(t1_copy: list[Path]) -> None:
    ds = pydicom.dcmread(t1_copy[7])
    del ds.ImagePositionPatient
    ds.save_as(t1_copy[7])
    with pytest.raises(ConversionError, match="no ImagePositionPatient"):
        convert_series(t1_copy)
