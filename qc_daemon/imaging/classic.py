"""Classic (one slice per file) MR images -> volume plans.

1. Instances are grouped by the header fields that separate volumes, each used only when it varies within the
   series: orientation (with a tolerance), matrix, pixel spacing, ImageType, complex component, GE image kind, echo
   and inversion time, diffusion b-value and gradient (vendor-aware), TemporalPositionIdentifier, Philips ASL label.
2. A group whose slice positions repeat is cut again: by AcquisitionNumber when that separates the repeats cleanly,
   else by occurrence in instance order (GE fMRI: positions repeat every N instances, no temporal tag).
3. Each volume is ordered along the slice normal and its geometry computed from the positions.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence

from qc_daemon.imaging.geometry import GeometryError, cluster_orientations, position_key, stack_geometry
from qc_daemon.imaging.headers import Instance
from qc_daemon.imaging.plan import ClassicSource, VolumePlan, make_label
from qc_daemon.imaging.rules import VolumeTraits
from qc_daemon.imaging.values import fmt_number, fmt_vector


def _opt(value: float | None, fmt: Callable[[float], str] = fmt_number) -> str:
    return "" if value is None else fmt(value)


_FIELDS: tuple[tuple[str, Callable[[Instance], str]], ...] = (
    ("Matrix", lambda i: f"{i.columns}x{i.rows}"),
    ("PixelSpacing", lambda i: fmt_vector(i.pixel_spacing) if i.pixel_spacing else ""),
    ("ImageType", lambda i: "\\".join(i.image_type)),
    ("ComplexImageComponent", lambda i: i.complex_component),
    ("GEImageKind", lambda i: "" if i.ge_image_kind is None else str(i.ge_image_kind)),
    ("EchoTime", lambda i: _opt(i.echo_time, lambda x: fmt_number(round(x, 2)))),
    ("InversionTime", lambda i: _opt(i.inversion_time, lambda x: fmt_number(round(x, 1)))),
    ("DiffusionBValue", lambda i: _opt(i.diffusion.b_value, lambda x: fmt_number(round(x, 1), 5))),
    ("DiffusionGradientOrientation", lambda i: fmt_vector(i.diffusion.gradient) if i.diffusion.gradient else ""),
    ("TemporalPositionIdentifier", lambda i: "" if i.temporal_position is None else str(i.temporal_position)),
    ("PhilipsLabelType", lambda i: i.philips_label_type),
)


def _fields_of(instances: Sequence[Instance]) -> list[dict[str, str]]:
    clusters = cluster_orientations([i.orientation for i in instances])
    rows = []
    for inst, cluster in zip(instances, clusters, strict=True):
        row = {name: get(inst) for name, get in _FIELDS}
        row["ImageOrientationPatient"] = (
            f"{fmt_vector(inst.orientation, 2)}#{cluster}" if inst.orientation is not None else "none"
        )
        rows.append(row)
    return rows


def _split_repeats(members: list[Instance]) -> list[tuple[dict[str, str], list[Instance], int | None]]:
    """Cut a group whose positions repeat into volumes; (extra split key, members, expected slices)."""
    keys = [position_key(i.position) if i.position is not None else None for i in members]
    if len(set(keys)) == len(keys):
        return [({}, members, None)]
    acq = [i.acquisition_number for i in members]
    if None not in acq and len(set(acq)) > 1:
        by_acq: dict[int | None, list[int]] = defaultdict(list)
        for position, number in enumerate(acq):
            by_acq[number].append(position)
        if all(len({keys[j] for j in indices}) == len(indices) for indices in by_acq.values()):
            ordered = sorted(by_acq.items(), key=lambda kv: members[kv[1][0]].order_key)
            return [({"AcquisitionNumber": str(a)}, [members[j] for j in indices], None) for a, indices in ordered]
    seen: Counter[tuple[float, ...] | None] = Counter()
    repeats: dict[int, list[Instance]] = defaultdict(list)
    for inst, key in zip(members, keys, strict=True):
        repeats[seen[key]].append(inst)
        seen[key] += 1
    expected = max(len(v) for v in repeats.values())
    return [({"Repetition": str(k + 1)}, repeats[k], expected) for k in sorted(repeats)]


def _plan(split_key: dict[str, str], members: list[Instance], expected: int | None) -> VolumePlan:
    first = members[0]
    traits = VolumeTraits(
        image_type=first.image_type,
        complex_component=first.complex_component,
        ge_image_kind=first.ge_image_kind,
        diffusion=first.diffusion,
        philips_direction=first.philips_direction,
        expected_slices=expected,
        derived_by_compression=all(i.derived_by_compression for i in members),
    )
    ordered = members
    geometry = None
    error = None
    positions = [i.position for i in members]
    if first.orientation is None or first.pixel_spacing is None or any(p is None for p in positions):
        error = f"{first.path.name}: no ImagePositionPatient/ImageOrientationPatient/PixelSpacing"
    else:
        try:
            geometry = stack_geometry(
                [p for p in positions if p is not None],
                first.orientation,
                first.pixel_spacing,
                fallback_slice_spacing=first.spacing_between_slices or first.slice_thickness,
            )
            ordered = [members[k] for k in geometry.order]
        except GeometryError as exc:
            error = f"{first.path.name}: {exc}"
    return VolumePlan(
        label=make_label(split_key),
        split_key=split_key,
        source=ClassicSource(tuple(i.path for i in ordered), any(i.rescaled for i in members)),
        n_slices=len(members),
        geometry=geometry,
        traits=traits,
        order=min(i.order_key for i in members),
        geometry_error=error,
        warnings=geometry.warnings if geometry else (),
    )


def plan_classic(instances: Sequence[Instance]) -> list[VolumePlan]:
    """Volume plans of classic single-frame images (``instances`` in instance order), in acquisition order."""
    if not instances:
        return []
    rows = _fields_of(instances)
    names = ["ImageOrientationPatient"] + [name for name, _ in _FIELDS]
    active = [n for n in names if len({r[n] for r in rows}) > 1]
    groups: dict[tuple[str, ...], list[Instance]] = defaultdict(list)
    for inst, row in zip(instances, rows, strict=True):
        groups[tuple(row[n] for n in active)].append(inst)
    plans = []
    for key, members in groups.items():
        base = {n: value for n, value in zip(active, key, strict=True)}
        if "ImageOrientationPatient" in base:
            base["ImageOrientationPatient"] = base["ImageOrientationPatient"].split("#", 1)[0]
        for extra, volume, expected in _split_repeats(members):
            plans.append(_plan({**base, **extra}, volume, expected))
    return sorted(plans, key=lambda p: p.order)
