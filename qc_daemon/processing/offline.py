"""``qc-daemon score``: score files without a running node (back-filling, debugging).

A path may be a NIfTI file, a DICOM file, a folder of one series, or a folder tree of many series; DICOM files are
grouped by SeriesInstanceUID and each group goes through the same pipeline as in the node.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pydicom
from pydicom.errors import InvalidDicomError
from tqdm import tqdm

from qc_daemon.imaging.convert import ConversionRules, read_nifti
from qc_daemon.processing.outcome import SeriesOutcome, VolumeOutcome
from qc_daemon.processing.pipeline import ConvertClock, process_files, score_volumes
from qc_daemon.scoring.model import QCModel
from qc_daemon.store.models import SeriesStatus

log = logging.getLogger(__name__)
NIFTI_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd")


def _is_volume_file(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def _walk(paths: Sequence[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        elif path.is_file():
            yield path
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")


def group_inputs(paths: Sequence[Path]) -> tuple[list[Path], dict[str, list[Path]], list[Path]]:
    """(volume files, DICOM files by series UID, files that are neither)."""
    volumes: list[Path] = []
    series: dict[str, list[Path]] = defaultdict(list)
    other: list[Path] = []
    for path in _walk(paths):
        if _is_volume_file(path):
            volumes.append(path)
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
            uid = str(ds.get("SeriesInstanceUID", "") or "")
        except (InvalidDicomError, OSError, ValueError, EOFError):
            uid = ""
        if uid:
            series[uid].append(path)
        else:
            other.append(path)
    return volumes, dict(series), other


def score_volume_file(path: Path, model: QCModel, thresholds: Mapping[str, float] | None = None) -> SeriesOutcome:
    from qc_daemon.imaging.convert import ConvertedVolume

    started = time.perf_counter()
    try:
        image = read_nifti(path)
    except Exception as exc:
        return SeriesOutcome(status=SeriesStatus.FAILED, error=f"cannot read {path.name}: {exc}")
    volume = ConvertedVolume(
        index=0,
        label=path.name,
        split_key={},
        image=image,
        skip_reason=None,
        n_slices=int(image.GetSize()[2]) if image.GetDimension() >= 3 else 1,
        source=(path.name,),
    )
    return score_volumes([volume], model, thresholds, clock=ConvertClock(time.perf_counter() - started))


def outcome_to_dict(outcome: SeriesOutcome) -> dict[str, Any]:
    data: dict[str, Any] = {
        "status": outcome.status.value,
        "scores": outcome.probabilities or {},
        "flags": outcome.flags,
        "rescan_score": outcome.rescan_score,
        "model_name": outcome.model_name,
        "model_version": outcome.model_version,
        "provider": outcome.provider,
        "timings": outcome.timings,
        "volumes": [_volume_dict(v) for v in outcome.volumes],
    }
    if outcome.skip_reason:
        data["skip_reason"] = outcome.skip_reason
    if outcome.error:
        data["error"] = outcome.error
    if outcome.warnings:
        data["warnings"] = outcome.warnings
    return data


def _volume_dict(volume: VolumeOutcome) -> dict[str, Any]:
    data = asdict(volume)
    data["scores"] = data.pop("probabilities") or {}
    data["status"] = "scored" if data.pop("scored") else "skipped"
    return data


def score_paths(
    paths: Sequence[Path],
    model: QCModel,
    rules: ConversionRules,
    thresholds: Mapping[str, float] | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    volumes, series, other = group_inputs(paths)
    results: list[dict[str, Any]] = []
    jobs: list[tuple[str, Path | None, list[Path]]] = [("volume", v, []) for v in volumes]
    jobs += [(uid, None, files) for uid, files in sorted(series.items())]
    bar = tqdm(jobs, desc="scoring", unit="series", disable=not progress or len(jobs) < 2)
    for key, volume_path, files in bar:
        if volume_path is not None:
            outcome = score_volume_file(volume_path, model, thresholds)
            entry = {"path": str(volume_path), "series_uid": None, **outcome_to_dict(outcome)}
        else:
            outcome = process_files(files, model, rules, thresholds)
            common = Path(*_common_parts(files))
            entry = {"path": str(common), "series_uid": key, "instances": len(files), **outcome_to_dict(outcome)}
        results.append(entry)
    for path in other:
        results.append(
            {"path": str(path), "series_uid": None, "status": "skipped", "skip_reason": "not DICOM or NIfTI"}
        )
    return results


def _common_parts(files: Sequence[Path]) -> tuple[str, ...]:
    parts = [f.parent.parts for f in files]
    common: list[str] = []
    for level in zip(*parts, strict=False):
        if all(p == level[0] for p in level):
            common.append(level[0])
        else:
            break
    return tuple(common) or (".",)
