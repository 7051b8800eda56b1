"""The conversion stage: the DICOM files of one series -> 3-D volumes to score, or recorded skip reasons.

``convert_series`` reads every header (pydicom, no pixels), decides whole-series skips, splits the images into
volumes (classic slices, Siemens/UIH mosaics, Enhanced MR frames), decides per volume whether it is scored, and only
then decodes the pixels of the volumes to score, one volume at a time. Geometry (origin, spacing, direction, LPS)
always comes from the headers.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import pydicom
import SimpleITK

from qc_daemon.imaging import sop
from qc_daemon.imaging.classic import plan_classic
from qc_daemon.imaging.enhanced import plan_enhanced
from qc_daemon.imaging.errors import ConversionError
from qc_daemon.imaging.headers import Instance, SeriesHeader, read_instance, read_instances, series_header
from qc_daemon.imaging.mosaic import is_mosaic, plan_mosaics
from qc_daemon.imaging.nifti import read_nifti
from qc_daemon.imaging.pixels import read_volume
from qc_daemon.imaging.plan import VolumePlan
from qc_daemon.imaging.rules import (
    ConversionRules,
    non_image_reason,
    series_skip_reason,
    volume_skip_reason,
)

__all__ = [
    "ConversionError",
    "ConversionRules",
    "ConvertedVolume",
    "PlannedSeries",
    "PlannedVolume",
    "SeriesConversion",
    "SeriesHeader",
    "convert_series",
    "plan_series",
    "read_header",
    "read_nifti",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConvertedVolume:
    index: int  # 0-based, stable (acquisition) order
    label: str  # human readable split key: "AcquisitionNumber=2", "b=1000 g=(0.7,0.7,0)", "TE=4.6 MAGNITUDE"
    split_key: Mapping[str, str]  # the header fields that separate it from the series' other volumes
    image: SimpleITK.Image | None  # 3-D, LPS geometry from the headers; None when skipped
    skip_reason: str | None  # "phase image", "derived: Philips isotropic diffusion trace", "too few slices: 2 < 10"
    n_slices: int
    source: tuple[str, ...]  # file names in slice order ("file.dcm#frame" for multi-frame files, frames from 1)


@dataclass(frozen=True)
class SeriesConversion:
    header: SeriesHeader
    volumes: list[ConvertedVolume]
    skip_reason: str | None  # whole-series skip ("not an image: ...", "not MR: CT", "localizer: ..."); no volumes
    warnings: list[str]

    @property
    def scored_volumes(self) -> list[ConvertedVolume]:
        return [v for v in self.volumes if v.image is not None]

    @property
    def final_skip_reason(self) -> str | None:
        """Why nothing of the series is scored: its own reason, or its volumes' reasons when all are skipped."""
        if self.skip_reason is not None:
            return self.skip_reason
        if not self.volumes:
            return "no volumes"
        if self.scored_volumes:
            return None
        reasons = list(dict.fromkeys(v.skip_reason or "" for v in self.volumes))
        return "; ".join(reasons)


def _file_meta_class(path: Path) -> tuple[str, str] | None:
    try:
        meta = pydicom.filereader.read_file_meta_info(path)
    except Exception:  # no or damaged file meta: the caller reads the full header instead
        return None
    sop_class = str(meta.get("MediaStorageSOPClassUID", "") or "")
    syntax = str(meta.get("TransferSyntaxUID", "") or "")
    return (sop_class, syntax) if sop_class else None


def read_header(files: Sequence[Path]) -> SeriesHeader:
    """Identity of a series from headers only: one full header, the file meta of the others."""
    paths = [Path(f) for f in files]
    if not paths:
        raise ConversionError("no files")
    metas = [_file_meta_class(p) for p in paths]
    classes = {m[0] for m in metas if m is not None}
    syntaxes = {m[1] for m in metas if m is not None and m[1]}
    first = next((p for p, m in zip(paths, metas, strict=True) if m and m[0] in sop.IMAGE_CLASSES), paths[0])
    instance = read_instance(first)
    extra = [read_instance(p) for p, m in zip(paths, metas, strict=True) if m is None and p != first]
    for inst in (instance, *extra):
        classes.add(inst.sop_class_uid)
        if inst.transfer_syntax_uid:
            syntaxes.add(inst.transfer_syntax_uid)
    return dataclasses.replace(
        series_header([instance]),
        sop_class_uids=tuple(sorted(classes)),
        transfer_syntax_uids=tuple(sorted(syntaxes)),
        n_instances=len(paths),
    )


def _plan_volumes(images: Sequence[Instance]) -> list[VolumePlan]:
    """Split image instances into volume plans (headers only), in acquisition order."""
    multiframe = [i for i in images if i.is_multiframe]
    mosaics = [i for i in images if not i.is_multiframe and is_mosaic(i)]
    mosaic_ids = {id(i) for i in mosaics}
    classic = [i for i in images if not i.is_multiframe and id(i) not in mosaic_ids]
    plans = plan_classic(classic) + plan_mosaics(mosaics)
    for inst in multiframe:
        plans.extend(plan_enhanced(inst, multiple_files=len(multiframe) > 1))
    return sorted(plans, key=lambda p: p.order)


def _pixel_problems(images: Sequence[Instance]) -> None:
    problems = [f"{i.path.name}: {i.pixel_problem}" for i in images if i.pixel_problem]
    if problems:
        more = f" (and {len(problems) - 1} more files)" if len(problems) > 1 else ""
        raise ConversionError(problems[0] + more)


@dataclass(frozen=True)
class PlannedVolume:
    """A volume decided from headers only; :meth:`load` decodes its pixels (nothing for a skipped volume)."""

    index: int
    label: str
    split_key: Mapping[str, str]
    skip_reason: str | None
    n_slices: int
    source: tuple[str, ...]
    plan: VolumePlan = field(repr=False)

    def load(self) -> ConvertedVolume:
        image = read_volume(self.plan) if self.skip_reason is None else None
        return ConvertedVolume(
            index=self.index,
            label=self.label,
            split_key=self.split_key,
            image=image,
            skip_reason=self.skip_reason,
            n_slices=self.n_slices,
            source=self.source,
        )


@dataclass(frozen=True)
class PlannedSeries:
    """:func:`convert_series` before any pixel is decoded: lets a caller load and score one volume at a time."""

    header: SeriesHeader
    volumes: list[PlannedVolume]
    skip_reason: str | None
    warnings: list[str]


def plan_series(files: Sequence[Path], rules: ConversionRules = ConversionRules()) -> PlannedSeries:  # noqa: B008
    """Headers only: series skip, volumes and their skip reasons. Raises :class:`ConversionError` like convert."""
    instances = read_instances(files)
    header = series_header(instances)
    warnings: list[str] = []
    series_uids = {i.series_uid for i in instances}
    if len(series_uids) > 1:
        warnings.append(f"files of {len(series_uids)} SeriesInstanceUIDs converted together")
    images = [i for i in instances if i.is_image]
    others = [i for i in instances if not i.is_image]
    if not images:
        return PlannedSeries(header, [], non_image_reason(instances), warnings)
    if others:
        kinds = ", ".join(sorted({sop.describe(i.sop_class_uid) for i in others}))
        warnings.append(f"ignored {len(others)} non-image instance(s): {kinds}")
    series_skip = series_skip_reason(images, rules)
    if series_skip is not None:
        return PlannedSeries(header, [], series_skip, warnings)
    _pixel_problems(images)
    lossy = sum(i.lossy for i in images)
    if lossy:
        warnings.append(f"{lossy} of {len(images)} image instance(s) lossy compressed: scores may reflect compression")
    volumes = []
    for index, plan in enumerate(_plan_volumes(images)):
        skip = volume_skip_reason(plan.traits, plan.n_slices, rules)
        if skip is None:
            if plan.geometry_error is not None:
                raise ConversionError(plan.geometry_error)
            warnings.extend(f"volume {index} ({plan.label}): {w}" for w in plan.warnings)
        volumes.append(
            PlannedVolume(
                index=index,
                label=plan.label,
                split_key=MappingProxyType(dict(plan.split_key)),
                skip_reason=skip,
                n_slices=plan.n_slices,
                source=plan.source_names,
                plan=plan,
            )
        )
    return PlannedSeries(header, volumes, None, warnings)


def convert_series(files: Sequence[Path], rules: ConversionRules = ConversionRules()) -> SeriesConversion:  # noqa: B008
    """Convert the DICOM files of one series. Raises :class:`ConversionError` on a corrupt or unreadable series."""
    planned = plan_series(files, rules)
    uid = planned.header.series_uid
    if planned.skip_reason is not None:
        log.info("series %s skipped: %s", uid, planned.skip_reason)
        return SeriesConversion(planned.header, [], planned.skip_reason, planned.warnings)
    volumes = [volume.load() for volume in planned.volumes]
    scored = sum(v.image is not None for v in volumes)
    log.info("series %s: %d volume(s), %d to score", uid, len(volumes), scored)
    for w in planned.warnings:
        log.warning("series %s: %s", uid, w)
    return SeriesConversion(planned.header, volumes, None, planned.warnings)
