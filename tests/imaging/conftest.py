"""Fixtures of the imaging tests: conversions of the shared series, computed once per session."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from qc_daemon.imaging.convert import SeriesConversion, convert_series

T1_FOLDER = "dicom/philips_t1_mprage_3d_sag"
T1_SUBSET = range(76, 96)  # 20 central slices of the Philips T1 (0076.dcm ... 0095.dcm)


@pytest.fixture(scope="session")
def converted(shared_data: Path) -> Callable[[str], SeriesConversion]:
    """``converted("dicom/<folder>")``: the conversion of a shared series, cached for the session."""
    cache: dict[str, SeriesConversion] = {}

    def get(rel: str) -> SeriesConversion:
        if rel not in cache:
            cache[rel] = convert_series(sorted((shared_data / rel).glob("*.dcm")))
        return cache[rel]

    return get


@pytest.fixture(scope="session")
def t1_subset_source(shared_data: Path) -> list[Path]:
    return [shared_data / T1_FOLDER / f"{k:04d}.dcm" for k in T1_SUBSET]


@pytest.fixture
def t1_copy(t1_subset_source: list[Path], tmp_path: Path) -> list[Path]:
    """A writable copy of 20 slices of the Philips T1 in this test's tmp dir (never inside the repository)."""
    out = tmp_path / "t1"
    out.mkdir()
    files = []
    for src in t1_subset_source:
        dst = out / src.name
        shutil.copyfile(src, dst)
        dst.chmod(0o644)
        files.append(dst)
    return files


def dicom_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.dcm"))
