"""Which series and volumes are scored: the configurable rules and the built-in skips.

Series level (the whole series is skipped, no volume is read): no image instance (Raw Data Storage...), secondary
capture, modality other than MR, include/exclude rules, localizer/scout, every image DERIVED or SECONDARY.
Volume level (after splitting): phase image, derived (ImageType/FrameType DERIVED, isotropic diffusion trace),
localizer, incomplete dynamic, too few slices. Pure functions over header records.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset

from qc_daemon.imaging import sop
from qc_daemon.imaging import values as v
from qc_daemon.imaging.diffusion import Diffusion
from qc_daemon.imaging.headers import Instance

LOCALIZER_DESCRIPTION = re.compile(
    r"survey|scout|locali[sz]er|(?<![a-z])loc(?![a-z])|3[-_ ]?plane|tri[-_ ]?pilot", re.IGNORECASE
)
_PHASE_VALUES = frozenset({"P", "PHASE", "PHASE MAP"})
GE_PHASE_KIND = 1


@dataclass(frozen=True)
class ConversionRules:
    """Which series are scored.

    ``include`` / ``exclude`` map a DICOM keyword (``SeriesDescription``, ``ProtocolName``, ``ImageType``...) of the
    series' first image header to regular expressions, searched case-insensitively in the value (multi-values joined
    with ``\\``, an absent element is ""). When ``include`` is not empty a series must match, for every key, at least
    one of its expressions. Any match of an ``exclude`` expression skips the series. The built-in skips (module doc)
    always apply.
    """

    min_slices: int = 10
    include: Mapping[str, Sequence[str]] = field(default_factory=dict)
    exclude: Mapping[str, Sequence[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.min_slices < 1:
            raise ValueError("min_slices must be at least 1")
        for name, table in (("include", self.include), ("exclude", self.exclude)):
            frozen: dict[str, tuple[str, ...]] = {}
            for keyword, patterns in table.items():
                if tag_for_keyword(keyword) is None:
                    raise ValueError(f"{name}: {keyword!r} is not a DICOM keyword")
                items = (patterns,) if isinstance(patterns, str) else tuple(patterns)
                for pattern in items:
                    try:
                        re.compile(pattern)
                    except re.error as exc:
                        raise ValueError(f"{name}: bad regular expression {pattern!r} for {keyword}: {exc}") from exc
                frozen[keyword] = items
            object.__setattr__(self, name, frozen)


def _header_value(ds: Dataset, keyword: str) -> str:
    return v.text(v.get(ds, keyword))


def rule_skip_reason(ds: Dataset, rules: ConversionRules) -> str | None:
    """Reason an include/exclude rule skips the series whose first image header is ``ds`` (None: not skipped)."""
    for keyword, patterns in rules.exclude.items():
        value = _header_value(ds, keyword)
        for pattern in patterns:
            if re.search(pattern, value, re.IGNORECASE):
                return f"excluded by rule: {keyword} matches {pattern!r}"
    for keyword, patterns in rules.include.items():
        value = _header_value(ds, keyword)
        if not any(re.search(p, value, re.IGNORECASE) for p in patterns):
            return f"not included by rules: {keyword} matches none of {list(patterns)!r}"
    return None


def _image_type_skip(image_type: Sequence[str], derived_by_compression: bool = False) -> str | None:
    """Localizer / derived / secondary from ImageType (FrameType). Lossy compression alone is no derivation."""
    joined = "\\".join(image_type)
    if "LOCALIZER" in image_type:
        return f"localizer: ImageType {joined}"
    if image_type and image_type[0] == "DERIVED" and not derived_by_compression:
        return f"derived: ImageType {joined}"
    if len(image_type) > 1 and image_type[1] == "SECONDARY":
        return f"secondary: ImageType {joined}"
    return None


def non_image_reason(instances: Sequence[Instance]) -> str:
    """Skip reason of a series without a single MR image instance."""
    classes = sorted({i.sop_class_uid for i in instances})
    secondary = [c for c in classes if sop.is_secondary_capture(c)]
    if secondary:
        return f"secondary capture: {sop.name(secondary[0])}"
    modalities = sorted({i.modality for i in instances if i.modality and i.modality != "MR"})
    if modalities:
        return f"not MR: {', '.join(modalities)}"
    return "not an image: " + ", ".join(sop.describe(c) for c in classes)


def series_skip_reason(images: Sequence[Instance], rules: ConversionRules) -> str | None:
    """Whole-series skip for a series that has image instances (``images``, in instance order)."""
    modalities = sorted({i.modality or "no modality" for i in images if i.modality != "MR"})
    if modalities:
        return f"not MR: {', '.join(modalities)}"
    first = images[0].dataset
    reason = rule_skip_reason(first, rules)
    if reason:
        return reason
    for keyword in ("SeriesDescription", "ProtocolName"):
        value = _header_value(first, keyword)
        if LOCALIZER_DESCRIPTION.search(value):
            return f"localizer: {keyword} {value!r}"
    reasons = {_image_type_skip(i.image_type, i.derived_by_compression) for i in images}
    if len(reasons) == 1:
        only = reasons.pop()
        if only is not None:
            return only
    return None


@dataclass(frozen=True)
class VolumeTraits:
    """What decides, besides the slice count, whether one volume is scored."""

    image_type: tuple[str, ...]  # ImageType, or the FrameType of an Enhanced MR frame
    complex_component: str = ""
    ge_image_kind: int | None = None
    diffusion: Diffusion | None = None
    philips_direction: str = ""
    expected_slices: int | None = None  # slices of a complete volume when this one may be incomplete
    derived_by_compression: bool = False  # ImageType DERIVED only because of lossy compression


def is_phase(traits: VolumeTraits) -> bool:
    values = traits.image_type[2:4]
    return (
        any(t in _PHASE_VALUES for t in values)
        or traits.complex_component == "PHASE"
        or traits.ge_image_kind == GE_PHASE_KIND
    )


def trace_reason(traits: VolumeTraits) -> str | None:
    d = traits.diffusion
    if d is None:
        return None
    if d.directionality == "ISOTROPIC" and d.is_weighted:
        return "derived: isotropic diffusion trace"
    if traits.philips_direction == "I" and d.is_weighted and d.zero_gradient:
        return "derived: Philips isotropic diffusion trace"
    return None


def volume_skip_reason(traits: VolumeTraits, n_slices: int, rules: ConversionRules) -> str | None:
    if is_phase(traits):
        return "phase image"
    reason = _image_type_skip(traits.image_type, traits.derived_by_compression) or trace_reason(traits)
    if reason:
        return reason
    if traits.expected_slices is not None and n_slices < traits.expected_slices:
        return f"incomplete volume: {n_slices} of {traits.expected_slices} slices"
    if n_slices < rules.min_slices:
        return f"too few slices: {n_slices} < {rules.min_slices}"
    return None
