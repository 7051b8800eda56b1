"""Data sources: the IXI loader (folder and tar archives, real file naming), NIfTI folders, the split."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from training.sources import (
    ixi_volumes,
    nibabel_to_sitk,
    nifti_volumes,
    prepare_source,
    subject_split,
    true_resolution,
    write_split,
)

IXI_FILES = [
    "IXI012-HH-1211-T1.nii.gz",
    "IXI012-HH-1211-T2.nii.gz",
    "IXI013-HH-1212-T1.nii.gz",
    "IXI002-Guys-0828-T1.nii.gz",
    "IXI002-Guys-0828-PD.nii.gz",
    "IXI035-IOP-0873-T2.nii.gz",
]


def _write_nifti(path: Path, shape: tuple[int, int, int] = (10, 12, 8), zooms: tuple[float, ...] = (0.94, 0.94, 1.2),
                 value: float = 1.0) -> None:
    data = (np.arange(np.prod(shape)).reshape(shape) % 7 * value).astype(np.int16)
    affine = np.diag([*zooms, 1.0])
    nib.save(nib.Nifti1Image(data, affine), str(path))


@pytest.fixture()
def ixi_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "IXI"
    folder.mkdir()
    for name in IXI_FILES:
        _write_nifti(folder / name)
    (folder / "README.txt").write_text("not a volume")
    (folder / "IXI999-HH-0000-MRA.nii.gz").write_bytes(b"")  # another modality: ignored
    return folder


def test_ixi_folder_all_sites(ixi_folder: Path) -> None:
    vols = ixi_volumes(ixi_folder)
    assert sorted(v.name for v in vols) == sorted(IXI_FILES)
    by_name = {v.name: v for v in vols}
    v = by_name["IXI012-HH-1211-T1.nii.gz"]
    assert (v.subject, v.site, v.contrast) == ("IXI012", "HH", "T1")
    img = v.load()
    assert img.GetSize() == (10, 12, 8)
    assert img.GetSpacing() == pytest.approx((0.94, 0.94, 1.2), abs=1e-4)


def test_ixi_site_and_contrast_filter(ixi_folder: Path) -> None:
    hh = ixi_volumes(ixi_folder, sites=["HH"])
    assert {v.site for v in hh} == {"HH"} and len(hh) == 3
    t1 = ixi_volumes(ixi_folder, contrasts=("T1",))
    assert {v.contrast for v in t1} == {"T1"} and len(t1) == 3


def test_ixi_tar_archives(tmp_path: Path, ixi_folder: Path) -> None:
    archive = tmp_path / "IXI-T1.tar"
    with tarfile.open(archive, "w") as tf:
        for name in IXI_FILES:
            if name.endswith("T1.nii.gz"):
                tf.add(ixi_folder / name, arcname=name)
    vols = ixi_volumes(archive)
    assert sorted(v.name for v in vols) == sorted(n for n in IXI_FILES if n.endswith("T1.nii.gz"))
    img = vols[0].load()
    assert img.GetSize() == (10, 12, 8)
    ref = sitk.ReadImage(str(ixi_folder / vols[0].name))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img), sitk.GetArrayFromImage(ref).astype(np.float32))
    assert img.GetSpacing() == pytest.approx(ref.GetSpacing(), abs=1e-5)
    assert img.GetDirection() == pytest.approx(ref.GetDirection(), abs=1e-6)
    # a folder holding the archives is read too; the site filter applies to archive members
    only_guys = ixi_volumes(tmp_path, sites=["Guys"])
    assert {v.site for v in only_guys} == {"Guys"}


def test_ixi_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        ixi_volumes(tmp_path / "nope")


def test_split_is_deterministic_per_subject_and_seed() -> None:
    ids = [f"IXI{i:03d}" for i in range(600)]
    a = [subject_split(s, 0) for s in ids]
    assert a == [subject_split(s, 0) for s in ids]
    assert a != [subject_split(s, 1) for s in ids]
    counts = {k: a.count(k) for k in ("train", "val", "test")}
    assert 0.74 < counts["train"] / 600 < 0.86
    assert counts["val"] > 30 and counts["test"] > 30


def test_split_is_per_subject_and_written(tmp_path: Path, ixi_folder: Path) -> None:
    vols = ixi_volumes(ixi_folder)
    split = write_split(tmp_path / "split.json", vols, seed=0)
    saved = json.loads((tmp_path / "split.json").read_text())
    assert saved["seed"] == 0
    assert saved["volumes"] == split
    s012 = [k for k, names in split.items() if any(n.startswith("IXI012") for n in names)]
    assert len(s012) == 1  # T1 and T2 of one subject never straddle splits
    reordered = write_split(tmp_path / "again.json", list(reversed(vols)), seed=0)
    assert {k: sorted(v) for k, v in reordered.items()} == {k: sorted(v) for k, v in split.items()}
    again = write_split(tmp_path / "again.json", vols, seed=0)
    assert again == split


def test_nifti_folder_include_and_subjects(tmp_path: Path) -> None:
    for name in ("t1w_a.nii.gz", "t2w_b.nii.gz", "pdw_a.nii.gz"):
        _write_nifti(tmp_path / name)
    vols = nifti_volumes(tmp_path, include=["t1w", "pdw"], subjects={"_a": "person-a"})
    assert sorted(v.name for v in vols) == ["pdw_a.nii.gz", "t1w_a.nii.gz"]
    assert {v.subject for v in vols} == {"person-a"}
    assert {v.contrast for v in vols} == {"T1", "PD"}


def test_nibabel_geometry_matches_simpleitk(tmp_path: Path) -> None:
    path = tmp_path / "x.nii.gz"
    data = np.random.default_rng(0).random((6, 7, 5)).astype(np.float32)
    affine = np.array([[0, 0, 2.0, 10], [-1.0, 0, 0, 20], [0, 1.5, 0, -5], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(data, affine), str(path))
    ours = nibabel_to_sitk(nib.load(str(path)))
    ref = sitk.ReadImage(str(path))
    assert ours.GetSpacing() == pytest.approx(ref.GetSpacing(), abs=1e-5)
    assert ours.GetDirection() == pytest.approx(ref.GetDirection(), abs=1e-5)
    assert ours.GetOrigin() == pytest.approx(ref.GetOrigin(), abs=1e-4)
    np.testing.assert_allclose(sitk.GetArrayFromImage(ours), sitk.GetArrayFromImage(ref), rtol=1e-6)


def test_prepare_source_normalises_and_keeps_resolution(tmp_path: Path) -> None:
    path = tmp_path / "thick.nii.gz"
    _write_nifti(path, shape=(20, 20, 10), zooms=(1.0, 1.0, 3.0), value=100.0)
    img, res = prepare_source(sitk.ReadImage(str(path)))
    arr = sitk.GetArrayFromImage(img)
    assert arr.min() >= 0 and 0.9 < np.percentile(arr[arr > 0], 99) < 1.1
    assert res == pytest.approx((1.0, 1.0, 3.0))
    assert true_resolution(img) == pytest.approx((1.0, 1.0, 3.0))
