"""Every real DICOM series of shared/data converts to what manifest.json says."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from qc_daemon.imaging.convert import SeriesConversion, plan_series, read_header
from tests.conftest import shared_data_dir

MANIFEST: list[dict[str, Any]] = json.loads((shared_data_dir() / "manifest.json").read_text())
DICOM_ENTRIES = [e for e in MANIFEST if e["kind"] == "dicom"]
SIEMENS_MOSAICS = [e["path"] for e in DICOM_ENTRIES if (e.get("mosaic") or {}).get("vendor") == "Siemens"]

# manifest skip reason (its wording) -> how the node's reason starts
CATEGORIES = (
    ("too few slices", "too few slices"),
    ("not an image", "not an image"),
    ("phase image", "phase image"),
    ("trace", "derived"),
)


def _category(manifest_reason: str) -> str:
    for needle, ours in CATEGORIES:
        if needle in manifest_reason.lower():
            return ours
    raise AssertionError(f"no category for manifest reason {manifest_reason!r}")


def _ids(entries: list[dict[str, Any]]) -> list[str]:
    return [e["path"].split("/", 1)[1] for e in entries]


@pytest.mark.parametrize("entry", DICOM_ENTRIES, ids=_ids(DICOM_ENTRIES))
def test_series_converts_as_the_manifest_says(
    entry: dict[str, Any], converted: Callable[[str], SeriesConversion]
) -> None:
    conv = converted(entry["path"])
    assert conv.header.series_uid == entry["series_instance_uid"]
    assert len(conv.volumes) == entry["volumes"]
    scored = [v for v in conv.volumes if v.image is not None]
    skipped = [v for v in conv.volumes if v.image is None]
    assert len(scored) == entry["volumes_scored"]
    assert all(v.skip_reason is None for v in scored)
    assert [v.index for v in conv.volumes] == list(range(len(conv.volumes)))
    if entry["volumes"] == 0:
        assert conv.skip_reason is not None
        assert conv.skip_reason.startswith(_category(entry["skip_reason"]))
        return
    assert conv.skip_reason is None
    for vol in skipped:
        assert vol.skip_reason is not None
        assert vol.skip_reason.startswith(_category(entry["skip_reason"])), vol.skip_reason
    if entry["volumes_scored"] == 0:
        assert conv.final_skip_reason is not None
    for vol in conv.volumes:
        assert vol.n_slices == entry["slices"]
        assert len(vol.source) == (1 if entry.get("mosaic") else entry["slices"])
    for vol in scored:
        image = vol.image
        assert image is not None
        assert image.GetDimension() == 3
        assert list(image.GetSize()) == entry["volume_shape_xyz"]
        assert image.GetPixelID() != sitk.sitkFloat64
        assert np.allclose(image.GetSpacing(), entry["spacing_mm"], rtol=0.01), image.GetSpacing()
        direction = np.array(image.GetDirection()).reshape(3, 3)
        assert np.allclose(direction.T @ direction, np.eye(3), atol=1e-6)
        assert np.linalg.det(direction) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("entry", DICOM_ENTRIES, ids=_ids(DICOM_ENTRIES))
def test_read_header_matches_conversion(entry: dict[str, Any], shared_data: Path) -> None:
    files = sorted((shared_data / entry["path"]).glob("*.dcm"))
    header = read_header(files)
    assert header.series_uid == entry["series_instance_uid"]
    assert header.sop_class_uids == (entry["sop_class_uid"],)
    assert header.n_instances == entry["instances"]
    assert header.series_number == entry["series_number"]
    assert header.series_description == entry["series_description"]
    assert header.manufacturer_model == entry["manufacturer_model"]
    if entry["volumes"]:
        assert header.magnetic_field_strength == pytest.approx(entry["field_strength_t"])
    assert not [name for name in vars(header) if "patient" in name.lower()]


def _orientation(ds: pydicom.Dataset) -> np.ndarray:
    if "ImageOrientationPatient" in ds:
        return np.array(ds.ImageOrientationPatient, dtype=float)
    for groups in (ds.PerFrameFunctionalGroupsSequence[0], ds.SharedFunctionalGroupsSequence[0]):
        if "PlaneOrientationSequence" in groups:
            return np.array(groups.PlaneOrientationSequence[0].ImageOrientationPatient, dtype=float)
    raise AssertionError("no orientation")


@pytest.mark.parametrize("entry", DICOM_ENTRIES, ids=_ids(DICOM_ENTRIES))
def test_direction_matches_orientation(
    entry: dict[str, Any], shared_data: Path, converted: Callable[[str], SeriesConversion]
) -> None:
    conv = converted(entry["path"])
    folder = shared_data / entry["path"]
    for vol in conv.volumes:
        if vol.image is None:
            continue
        ds = pydicom.dcmread(folder / vol.source[0].split("#")[0], stop_before_pixels=True)
        iop = _orientation(ds)
        row, col = iop[:3] / np.linalg.norm(iop[:3]), iop[3:] / np.linalg.norm(iop[3:])
        direction = np.array(vol.image.GetDirection()).reshape(3, 3)
        assert np.allclose(direction[:, 0], row, atol=1e-4)
        assert np.allclose(direction[:, 1], col, atol=1e-4)
        assert np.allclose(direction[:, 2], np.cross(row, col), atol=1e-3)


def test_nine_syntaxes_decode_to_identical_volumes(converted: Callable[[str], SeriesConversion]) -> None:
    conv = converted("dicom/siemens_epi_ts_9syntaxes")
    arrays = [sitk.GetArrayFromImage(v.image) for v in conv.volumes]
    assert len(arrays) == 9
    assert arrays[0].any()
    for other in arrays[1:]:
        assert np.array_equal(arrays[0], other)
    geometries = {(v.image.GetOrigin(), v.image.GetSpacing(), v.image.GetDirection()) for v in conv.volumes}
    assert len(geometries) == 1
    assert len({v.label for v in conv.volumes}) == 9


def _ascconv_centres(ds: pydicom.Dataset, n: int) -> np.ndarray:
    text = ds[0x0029, 0x1020].value.decode("latin-1")
    centres = []
    for k in range(n):
        centre = []
        for axis in ("dSag", "dCor", "dTra"):
            match = re.search(rf"sSliceArray\.asSlice\[{k}\]\.sPosition\.{axis}\s*=\s*(\S+)", text)
            centre.append(float(match.group(1)) if match else 0.0)
        centres.append(centre)
    return np.array(centres)


@pytest.mark.parametrize("rel", SIEMENS_MOSAICS, ids=[p.split("/", 1)[1] for p in SIEMENS_MOSAICS])
def test_siemens_mosaic_geometry(rel: str, shared_data: Path, converted: Callable[[str], SeriesConversion]) -> None:
    """Slice centres equal the protocol's sSliceArray positions; slices are monotone along the normal."""
    conv = converted(rel)
    for vol in conv.volumes:
        image = vol.image
        assert image is not None
        ds = pydicom.dcmread(shared_data / rel / vol.source[0], stop_before_pixels=True)
        n = vol.n_slices
        nx, ny, _ = image.GetSize()
        centres = np.array([image.TransformContinuousIndexToPhysicalPoint((nx / 2, ny / 2, k)) for k in range(n)])
        expected = _ascconv_centres(ds, n)
        error = min(np.abs(centres - expected).max(), np.abs(centres[::-1] - expected).max())
        assert error < 0.05, f"{vol.label}: slice centres off by {error:.3f} mm"
        normal = np.array(image.GetDirection()).reshape(3, 3)[:, 2]
        steps = np.diff(centres @ normal)
        assert np.all(steps > 0)
        assert np.allclose(steps, image.GetSpacing()[2], rtol=1e-3)


def test_siemens_mosaic_tiles_are_slices(shared_data: Path, converted: Callable[[str], SeriesConversion]) -> None:
    """Slice k of the axial mosaic (normal along row x column) is tile k of the stored image."""
    rel = "dicom/siemens_epi_ax_mosaic"
    vol = converted(rel).volumes[0]
    mosaic = pydicom.dcmread(shared_data / rel / vol.source[0]).pixel_array
    slices = sitk.GetArrayFromImage(vol.image)
    tile = slices.shape[1]
    grid = mosaic.shape[1] // tile
    for k in (0, 17, slices.shape[0] - 1):
        r, c = divmod(k, grid)
        assert np.array_equal(slices[k], mosaic[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile])


def test_motion_volume_differs_from_first(converted: Callable[[str], SeriesConversion]) -> None:
    """Same geometry for both dynamics of a mosaic run; the pixels differ (volume 2 has real head motion)."""
    first, second = converted("dicom/siemens_epi_ax_mosaic").volumes
    assert first.label == "AcquisitionNumber=1" and second.label == "AcquisitionNumber=2"
    assert first.image.GetOrigin() == second.image.GetOrigin()
    assert not np.array_equal(sitk.GetArrayFromImage(first.image), sitk.GetArrayFromImage(second.image))


def test_uih_mosaic_slice_positions(shared_data: Path, converted: Callable[[str], SeriesConversion]) -> None:
    rel = "dicom/uih_dti_ax_mosaic"
    for vol in converted(rel).volumes[:3]:
        ds = pydicom.dcmread(shared_data / rel / vol.source[0], stop_before_pixels=True)
        positions = np.array([[float(x) for x in item.ImagePositionPatient] for item in ds[0x0065, 0x1051].value])
        image = vol.image
        got = np.array([image.TransformIndexToPhysicalPoint((0, 0, k)) for k in range(vol.n_slices)])
        assert np.abs(got - positions).max() < 1e-3
    labels = [v.label for v in converted(rel).volumes]
    assert labels[0].startswith("b=1.3 ") and all(label.startswith("b=928.3 g=(") for label in labels[1:])


def test_enhanced_fieldmap_frames_and_rescale(shared_data: Path, converted: Callable[[str], SeriesConversion]) -> None:
    """Each volume holds its frames ordered by InStackPositionNumber, rescaled with that frame's own slope."""
    rel = "dicom/philips_enh_fieldmap"
    conv = converted(rel)
    assert [v.label for v in conv.volumes] == ["TE=2.3 MAGNITUDE", "TE=4.6 MAGNITUDE", "TE=2.3 PHASE", "TE=4.6 PHASE"]
    assert [v.skip_reason for v in conv.volumes] == [None, None, "phase image", "phase image"]
    ds = pydicom.dcmread(shared_data / rel / "0001.dcm")
    frames = ds.pixel_array
    vol = conv.volumes[1]
    numbers = [int(s.split("#")[1]) - 1 for s in vol.source]
    per_frame = ds.PerFrameFunctionalGroupsSequence
    stack = [per_frame[i].FrameContentSequence[0].InStackPositionNumber for i in numbers]
    assert stack == sorted(stack) and len(set(stack)) == 53
    assert all(per_frame[i].MREchoSequence[0].EffectiveEchoTime == 4.6 for i in numbers)
    array = sitk.GetArrayFromImage(vol.image)
    for k in (0, 26, 52):
        transform = per_frame[numbers[k]].PixelValueTransformationSequence[0]
        expected = frames[numbers[k]] * float(transform.RescaleSlope) + float(transform.RescaleIntercept)
        assert np.allclose(array[k], expected, rtol=1e-5)
    origin = per_frame[numbers[0]].PlanePositionSequence[0].ImagePositionPatient
    assert np.allclose(vol.image.GetOrigin(), [float(x) for x in origin], atol=1e-4)


def test_enhanced_asl_source_groups(converted: Callable[[str], SeriesConversion]) -> None:
    conv = converted("dicom/philips_enh_asl_source")
    keys = [dict(v.split_key) for v in conv.volumes]
    assert [k["TemporalPositionIndex"] for k in keys] == ["1", "2", "3", "1", "2", "3"]
    assert [k["Private Label Type"] for k in keys] == ["CONTROL"] * 3 + ["LABEL"] * 3
    assert all(v.source[0].startswith("0001.dcm#") for v in conv.volumes)


def test_ge_fmri_volumes_from_repeating_positions(converted: Callable[[str], SeriesConversion]) -> None:
    conv = converted("dicom/ge_epi_fmri_phantom")
    assert [v.source[0] for v in conv.volumes] == ["0001.dcm", "0033.dcm", "0065.dcm"]
    origins = {v.image.GetOrigin() for v in conv.volumes}
    assert len(origins) == 1


def test_philips_t1_matches_simpleitk(shared_data: Path, converted: Callable[[str], SeriesConversion]) -> None:
    """The one series SimpleITK reads correctly unaided: same geometry and values (float32, not float64)."""
    rel = "dicom/philips_t1_mprage_3d_sag"
    image = converted(rel).volumes[0].image
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(shared_data / rel)))
    reference = reader.Execute()
    assert image.GetPixelID() == sitk.sitkFloat32
    assert np.allclose(image.GetOrigin(), reference.GetOrigin(), atol=1e-3)
    assert np.allclose(image.GetDirection(), reference.GetDirection(), atol=1e-5)
    assert np.allclose(image.GetSpacing(), reference.GetSpacing(), atol=1e-4)
    assert np.allclose(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(reference), atol=1e-2)


def test_philips_dwi_trace_is_the_skipped_volume(converted: Callable[[str], SeriesConversion]) -> None:
    conv = converted("dicom/philips_dwi_ax")
    skipped = [v for v in conv.volumes if v.image is None]
    assert [v.label for v in skipped] == ["b=2000 g=(0,0,0)"]
    assert skipped[0].skip_reason == "derived: Philips isotropic diffusion trace"
    assert conv.volumes[0].label == "b=0 g=(0,0,0)" and conv.volumes[0].image is not None
    assert not math.isnan(float(sitk.GetArrayViewFromImage(conv.volumes[0].image).mean()))


def test_plan_series_then_load_one_volume_at_a_time(
    shared_data: Path, converted: Callable[[str], SeriesConversion]
) -> None:
    rel = "dicom/philips_enh_fieldmap"
    planned = plan_series(sorted((shared_data / rel).glob("*.dcm")))
    full = converted(rel)
    assert [(p.label, p.skip_reason, p.source) for p in planned.volumes] == [
        (v.label, v.skip_reason, v.source) for v in full.volumes
    ]
    loaded = planned.volumes[1].load()
    assert loaded.image is not None and planned.volumes[2].load().image is None
    assert np.array_equal(sitk.GetArrayFromImage(loaded.image), sitk.GetArrayFromImage(full.volumes[1].image))
