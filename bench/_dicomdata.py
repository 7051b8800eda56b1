"""Benchmark data: copies of a real MR series with new UIDs (never written into the repository)."""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

DEFAULT_SOURCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "dicom" / "philips_t1_mprage_3d_sag"


def make_mr_instances(out_dir: Path, count: int, series: int, source: Path = DEFAULT_SOURCE) -> list[list[Path]]:
    """Write ``count`` instances (cycling over ``source``'s files) split into ``series`` new series.

    Returns the files of each series. Each file gets a new SOPInstanceUID and its series' new SeriesInstanceUID;
    nothing else changes (the Philips T1 files are 256x256 16-bit, about 137 KiB each).
    """
    sources = sorted(source.glob("*.dcm"))
    if not sources:
        raise FileNotFoundError(f"no .dcm files in {source}")
    out_dir.mkdir(parents=True, exist_ok=True)
    series_uids = [generate_uid() for _ in range(series)]
    per_series = -(-count // series)
    groups: list[list[Path]] = [[] for _ in range(series)]
    templates = [pydicom.dcmread(path) for path in sources[: min(len(sources), count)]]
    for i in range(count):
        ds = templates[i % len(templates)]
        group = i // per_series
        ds.SeriesInstanceUID = series_uids[group]
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        path = out_dir / f"s{group}" / f"{i:05d}.dcm"
        path.parent.mkdir(exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        groups[group].append(path)
    return groups
