"""Enhanced (and Legacy Converted Enhanced) MR multi-frame files -> volume plans.

Frames are grouped by their DimensionIndexValues without the in-stack dimension (InStackPositionNumber, or
ImagePositionPatient where a maker uses it as the stack dimension), and additionally by FrameType and
ComplexImageComponent so magnitude and phase never share a volume. Without a DimensionIndexSequence the frames are
grouped by StackID, TemporalPositionIndex, EffectiveEchoTime, diffusion, FrameType and ComplexImageComponent.
Within a group frames are ordered by InStackPositionNumber; geometry comes from each frame's PlanePosition,
PlaneOrientation and PixelMeasures functional groups (per-frame, else shared).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from qc_daemon.imaging import values as v
from qc_daemon.imaging.diffusion import NO_DIFFUSION, Diffusion
from qc_daemon.imaging.errors import ConversionError
from qc_daemon.imaging.geometry import GeometryError, Orientation, Vec3, cluster_orientations, stack_geometry
from qc_daemon.imaging.headers import Instance
from qc_daemon.imaging.plan import FrameSource, VolumePlan, distinct_keys, make_label
from qc_daemon.imaging.rules import VolumeTraits
from qc_daemon.imaging.values import fmt_number, fmt_vector

IN_STACK_POINTERS = frozenset({Tag(0x0020, 0x9057), Tag(0x0020, 0x0032)})


@dataclass(frozen=True)
class Frame:
    index: int  # 0-based frame number in the file
    dimension_values: tuple[int, ...]
    in_stack: int | None
    position: Vec3 | None
    orientation: Orientation | None
    pixel_spacing: tuple[float, float] | None
    slice_spacing: float | None
    frame_type: tuple[str, ...]
    complex_component: str
    echo_time: float | None
    temporal_index: int | None
    stack_id: str
    diffusion: Diffusion
    slope: float
    intercept: float


@dataclass(frozen=True)
class Dimension:
    pointer: int
    group: int | None
    name: str


def _item(frame: Dataset | None, shared: Dataset | None, keyword: str) -> Dataset | None:
    return v.first_item(frame, keyword) or v.first_item(shared, keyword)


def _diffusion(item: Dataset | None) -> Diffusion:
    if item is None:
        return NO_DIFFUSION
    grad_item = v.first_item(item, "DiffusionGradientDirectionSequence")
    gradient = None
    if grad_item is not None:
        gradient = v.vector3(v.floats(v.get(grad_item, "DiffusionGradientOrientation")))
    return Diffusion(
        b_value=v.first_float(v.get(item, "DiffusionBValue")),
        gradient=gradient,
        directionality=v.text(v.get(item, "DiffusionDirectionality")).upper(),
    )


def _frames(ds: Dataset, n_frames: int) -> list[Frame]:
    shared = v.first_item(ds, "SharedFunctionalGroupsSequence")
    per_frame = v.get(ds, "PerFrameFunctionalGroupsSequence") or []
    if len(per_frame) != n_frames:
        raise ConversionError(f"{n_frames} frames but {len(per_frame)} per-frame functional groups")
    top_slope = v.first_float(v.get(ds, "RescaleSlope"))
    top_intercept = v.first_float(v.get(ds, "RescaleIntercept"))
    frames = []
    for index, fg in enumerate(per_frame):
        content = _item(fg, None, "FrameContentSequence")
        measures = _item(fg, shared, "PixelMeasuresSequence")
        frame_type = _item(fg, shared, "MRImageFrameTypeSequence")
        transform = _item(fg, shared, "PixelValueTransformationSequence")
        echo = _item(fg, shared, "MREchoSequence")
        position = _item(fg, shared, "PlanePositionSequence")
        orientation = _item(fg, shared, "PlaneOrientationSequence")
        spacing = v.floats(v.get(measures, "PixelSpacing")) if measures is not None else []
        slope = v.first_float(v.get(transform, "RescaleSlope")) if transform is not None else top_slope
        intercept = v.first_float(v.get(transform, "RescaleIntercept")) if transform is not None else top_intercept
        frames.append(
            Frame(
                index=index,
                dimension_values=tuple(int(x) for x in v.floats(v.get(content, "DimensionIndexValues")))
                if content is not None
                else (),
                in_stack=v.first_int(v.get(content, "InStackPositionNumber")) if content is not None else None,
                position=v.vector3(v.floats(v.get(position, "ImagePositionPatient"))) if position else None,
                orientation=v.vector6(v.floats(v.get(orientation, "ImageOrientationPatient"))) if orientation else None,
                pixel_spacing=(spacing[0], spacing[1]) if len(spacing) == 2 and min(spacing) > 0 else None,
                slice_spacing=(
                    v.first_float(v.get(measures, "SpacingBetweenSlices"))
                    or v.first_float(v.get(measures, "SliceThickness"))
                )
                if measures is not None
                else None,
                frame_type=v.strings(v.get(frame_type, "FrameType")) if frame_type is not None else (),
                complex_component=v.text(v.get(frame_type, "ComplexImageComponent")).upper()
                if frame_type is not None
                else "",
                echo_time=v.first_float(v.get(echo, "EffectiveEchoTime")) if echo is not None else None,
                temporal_index=v.first_int(v.get(content, "TemporalPositionIndex")) if content is not None else None,
                stack_id=v.text(v.get(content, "StackID")) if content is not None else "",
                diffusion=_diffusion(_item(fg, shared, "MRDiffusionSequence")),
                slope=1.0 if slope is None else slope,
                intercept=0.0 if intercept is None else intercept,
            )
        )
    return frames


def _dimensions(ds: Dataset) -> list[Dimension]:
    out = []
    for item in v.get(ds, "DimensionIndexSequence") or []:
        pointer = v.get(item, "DimensionIndexPointer")
        if pointer is None:
            continue
        group = v.get(item, "FunctionalGroupPointer")
        tag = Tag(pointer)
        name = keyword_for_tag(tag) or v.text(v.get(item, "DimensionDescriptionLabel")) or str(tag)
        out.append(Dimension(int(tag), None if group is None else int(Tag(group)), name))
    return out


def _dimension_value(fg: Dataset, shared: Dataset | None, dim: Dimension) -> str:
    """The value a dimension index points at, for labels (e.g. EffectiveEchoTime 4.6, Philips CONTROL/LABEL)."""
    holders: list[Dataset] = []
    if dim.group is not None:
        for ds in (fg, shared):
            if ds is not None and Tag(dim.group) in ds:
                seq = ds[Tag(dim.group)].value
                if seq:
                    holders.append(seq[0])
    for holder in holders:
        if isinstance(holder, Dataset) and Tag(dim.pointer) in holder:
            value = holder[Tag(dim.pointer)].value
            if isinstance(value, (int, float)):
                return fmt_number(float(value))
            return v.text(value) or "none"
    return ""


def _frame_fields(frame: Frame) -> dict[str, str]:
    d = frame.diffusion
    return {
        "StackID": frame.stack_id,
        "TemporalPositionIndex": "" if frame.temporal_index is None else str(frame.temporal_index),
        "EffectiveEchoTime": "" if frame.echo_time is None else fmt_number(round(frame.echo_time, 2)),
        "DiffusionBValue": "" if d.b_value is None else fmt_number(round(d.b_value, 1), 5),
        "DiffusionGradientOrientation": fmt_vector(d.gradient) if d.gradient else "",
        "FrameType": "\\".join(frame.frame_type),
        "ComplexImageComponent": frame.complex_component,
    }


_FALLBACK_FIELDS = (
    "StackID",
    "TemporalPositionIndex",
    "EffectiveEchoTime",
    "DiffusionBValue",
    "DiffusionGradientOrientation",
)
_ALWAYS_FIELDS = ("FrameType", "ComplexImageComponent")


def _group(frames: Sequence[Frame], dims: Sequence[Dimension]) -> dict[tuple[object, ...], list[Frame]]:
    keep = [k for k, d in enumerate(dims) if Tag(d.pointer) not in IN_STACK_POINTERS]
    clusters = cluster_orientations([f.orientation for f in frames])
    groups: dict[tuple[object, ...], list[Frame]] = defaultdict(list)
    usable = bool(dims) and all(len(f.dimension_values) == len(dims) for f in frames)
    for frame, cluster in zip(frames, clusters, strict=True):
        fields = _frame_fields(frame)
        base: tuple[object, ...] = (
            tuple(frame.dimension_values[k] for k in keep) if usable else tuple(fields[n] for n in _FALLBACK_FIELDS)
        )
        groups[(*base, *(fields[n] for n in _ALWAYS_FIELDS), cluster)].append(frame)
    return groups


def _order_in_stack(members: list[Frame]) -> tuple[list[list[Frame]], list[str]]:
    """Frames of one group in stack order; cut by occurrence when in-stack positions repeat."""
    if any(f.in_stack is None for f in members):
        return [members], []
    counts = Counter(f.in_stack for f in members)
    if max(counts.values()) == 1:
        return [sorted(members, key=lambda f: (f.in_stack or 0, f.index))], []
    seen: Counter[int | None] = Counter()
    parts: dict[int, list[Frame]] = defaultdict(list)
    for frame in members:
        parts[seen[frame.in_stack]].append(frame)
        seen[frame.in_stack] += 1
    ordered = [sorted(parts[k], key=lambda f: (f.in_stack or 0, f.index)) for k in sorted(parts)]
    return ordered, ["InStackPositionNumber repeats within one dimension group: frames split by occurrence"]


def plan_enhanced(inst: Instance, *, multiple_files: bool = False) -> list[VolumePlan]:
    """Volume plans of one multi-frame file, in frame order of their first frame."""
    ds = inst.dataset
    frames = _frames(ds, inst.frames)
    dims = _dimensions(ds)
    shared = v.first_item(ds, "SharedFunctionalGroupsSequence")
    per_frame = v.get(ds, "PerFrameFunctionalGroupsSequence") or []
    volumes: list[tuple[list[Frame], list[str]]] = []
    for members in _group(frames, dims).values():
        ordered, notes = _order_in_stack(members)
        volumes.extend((part, notes) for part in ordered)
    rows = []
    for part, _ in volumes:
        first = part[0]
        row = _frame_fields(first)
        for dim in dims:
            if Tag(dim.pointer) not in IN_STACK_POINTERS and dim.name not in row:
                row[dim.name] = _dimension_value(per_frame[first.index], shared, dim)
        if multiple_files:
            row["InstanceNumber"] = "" if inst.instance_number is None else str(inst.instance_number)
        rows.append(row)
    standard = (
        "StackID",
        "TemporalPositionIndex",
        "EffectiveEchoTime",
        "DiffusionBValue",
        "DiffusionGradientOrientation",
        "ComplexImageComponent",
    )
    extra = [d.name for d in dims if d.name not in standard] + ["FrameType", "InstanceNumber"]
    keys = distinct_keys(rows, standard, extra)
    if multiple_files and "InstanceNumber" not in keys:
        keys.append("InstanceNumber")
    plans = []
    for (part, notes), row in zip(volumes, rows, strict=True):
        plans.append(_plan(inst, part, {k: row.get(k, "") for k in keys}, notes))
    return sorted(plans, key=lambda p: p.order)


def _plan(inst: Instance, part: list[Frame], split_key: dict[str, str], notes: list[str]) -> VolumePlan:
    first = part[0]
    geometry = None
    error = None
    warnings = list(notes)
    ordered = part
    positions = [f.position for f in part]
    if first.orientation is None or first.pixel_spacing is None or any(p is None for p in positions):
        error = f"{inst.path.name}: frames without PlanePosition/PlaneOrientation/PixelMeasures"
    else:
        try:
            geometry = stack_geometry(
                [p for p in positions if p is not None],
                first.orientation,
                first.pixel_spacing,
                fallback_slice_spacing=first.slice_spacing,
            )
            order = list(geometry.order)
            if order not in (list(range(len(part))), list(range(len(part)))[::-1]):
                warnings.append("InStackPositionNumber order disagrees with the frame positions: positions used")
            ordered = [part[k] for k in order]
            warnings.extend(geometry.warnings)
        except GeometryError as exc:
            error = f"{inst.path.name}: {exc}"
    traits = VolumeTraits(
        image_type=first.frame_type or inst.image_type,
        complex_component=first.complex_component,
        diffusion=first.diffusion,
        derived_by_compression=inst.derived_by_compression,
    )
    return VolumePlan(
        label=make_label(split_key),
        split_key=split_key,
        source=FrameSource(
            inst.path,
            tuple(f.index for f in ordered),
            tuple(f.slope for f in ordered),
            tuple(f.intercept for f in ordered),
        ),
        n_slices=len(part),
        geometry=geometry,
        traits=traits,
        order=(*inst.order_key, min(f.index for f in part)),
        geometry_error=error,
        warnings=tuple(warnings),
    )
