"""Data sources: the IXI loader (folder and tar archives, real file naming), NIfTI folders, the split."""

from __future__ import annotations

import json
import tarfile
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from qc_daemon.imaging.preprocess import PreprocessSpec
from training.bank import BankConfig, VolumeFactory
from training.evaluate import trained_series
from training.sources import (
    SourceVolume,
    ixi_volumes,
    nibabel_to_sitk,
    nifti_volumes,
    prepare_source,
    shared_dicom_volumes,
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


def test_shared_dicom_series_as_training_heads(shared_data: Path) -> None:
    vols = shared_dicom_volumes(shared_data, ["philips_dwi_ax"])
    # the manifest: 17 volumes, the scanner's isotropic trace is derived and skipped, 16 are scored
    assert [v.name for v in vols] == [f"philips_dwi_ax#{i}" for i in range(16)]
    assert {v.subject for v in vols} == {"dicom:Achieva dStream"}
    first, last = vols[0].load(), vols[15].load()
    assert first.GetSize() == last.GetSize() == (80, 80, 40)
    assert true_resolution(first) == pytest.approx((3.0, 3.0, 3.0), abs=0.3)
    # b=0 is brighter than a b=2000 volume of the same slices
    assert float(sitk.GetArrayViewFromImage(first).mean()) > float(sitk.GetArrayViewFromImage(last).mean())
    with pytest.raises(ValueError, match="phantom"):
        shared_dicom_volumes(shared_data, ["ge_epi_fmri_phantom"])
    with pytest.raises(ValueError, match="not a DICOM series"):
        shared_dicom_volumes(shared_data, ["no_such_series"])


def test_trained_series_names_cover_dicom_volumes() -> None:
    names = ["t1w_uih_umr770_gre3d_sag_1mm.nii.gz", "philips_dwi_ax#0", "philips_dwi_ax#15"]
    assert trained_series(names) == {"t1w_uih_umr770_gre3d_sag_1mm.nii.gz", "philips_dwi_ax", "philips_dwi_ax#0",
                                     "philips_dwi_ax#15"}
    assert "philips_t1_mprage_3d_sag" not in trained_series(names)


def _constant_source(subject: str, name: str) -> SourceVolume:
    return SourceVolume(subject, name, "T1", lambda: sitk.Image(8, 8, 8, sitk.sitkFloat32))


def test_bank_draws_real_subjects_not_volumes() -> None:
    spec = PreprocessSpec().to_dict()
    cfg = BankConfig(n_volumes=10, seed=5, synthetic_subjects=[1], real_fraction=1.0, spec=spec)
    many = [_constant_source("dwi", f"dwi#{i}") for i in range(8)]
    real = [_constant_source("a", "a"), _constant_source("b", "b"), *many]
    factory = VolumeFactory(cfg, real)
    counts = Counter(real[factory.source_for(i)[1]].subject for i in range(0, 3000 * cfg.acquisitions_per_render,
                                                                            cfg.acquisitions_per_render))
    assert set(counts) == {"a", "b", "dwi"}
    assert all(850 <= n <= 1150 for n in counts.values()), counts  # a third each, not 8/10 for "dwi"
    assert len({factory.source_for(i)[1] for i in range(0, 3000 * cfg.acquisitions_per_render,
                                                        cfg.acquisitions_per_render)}) == 10

    # one volume per subject: the same draws as a plain draw over volumes (older runs reproduce)
    single = [_constant_source(str(i), str(i)) for i in range(3)]
    factory = VolumeFactory(cfg, single)
    for index in range(50):
        rng = np.random.default_rng([cfg.seed, index // cfg.acquisitions_per_render, 1])
        assert rng.random() < cfg.real_fraction
        assert factory.source_for(index) == ("real", int(rng.integers(0, 3)))


def test_validation_only_real_heads_stay_out_of_training(tmp_path: Path) -> None:
    from training.train import parse_args, real_sources

    folder = tmp_path / "nifti"
    folder.mkdir()
    for name in ("t1w_a.nii.gz", "t2w_b.nii.gz", "pdw_c.nii.gz"):
        _write_nifti(folder / name)
    # no --nifti-include: every file trains except the validation-only one
    args = parse_args(["--out", str(tmp_path / "run"), "--nifti", str(folder), "--val-nifti-include", "t2w_b"])
    train, val, desc = real_sources(args)
    assert sorted(v.name for v in train) == ["pdw_c.nii.gz", "t1w_a.nii.gz"]
    assert [v.name for v in val] == ["t2w_b.nii.gz"]
    assert desc["nifti_validation_only"] == ["t2w_b.nii.gz"]
    # one head named for both is a mistake, not a silent leak
    args = parse_args(["--out", str(tmp_path / "run"), "--nifti", str(folder), "--nifti-include", "t1w,t2w",
                       "--val-nifti-include", "t2w_b"])
    with pytest.raises(SystemExit, match=r"t2w_b\.nii\.gz"):
        real_sources(args)
    args = parse_args(["--out", str(tmp_path / "run"), "--val-dicom-include", "philips_dwi_ax"])
    with pytest.raises(SystemExit, match="need --dicom-shared"):
        real_sources(args)
