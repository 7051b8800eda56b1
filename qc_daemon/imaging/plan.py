"""A volume before its pixels are read: which slices, in which order, with which geometry and traits.

The splitters (:mod:`classic`, :mod:`mosaic`, :mod:`enhanced`) produce :class:`VolumePlan` objects from headers
only; :mod:`pixels` reads one plan's pixel data; :mod:`convert` decides per plan whether to read it at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from qc_daemon.imaging.geometry import StackGeometry
from qc_daemon.imaging.rules import VolumeTraits

# label abbreviations of split-key names; "" shows the value alone ("TE=4.6 MAGNITUDE")
_SHORT_NAMES: Mapping[str, str] = {
    "DiffusionBValue": "b",
    "DiffusionGradientOrientation": "g",
    "EchoTime": "TE",
    "EffectiveEchoTime": "TE",
    "InversionTime": "TI",
    "ComplexImageComponent": "",
}


@dataclass(frozen=True)
class ClassicSource:
    """One file per slice, in slice order."""

    paths: tuple[Path, ...]
    rescaled: bool  # some file has a RescaleSlope/Intercept other than 1/0: read as float32


@dataclass(frozen=True)
class MosaicSource:
    """One file whose 2-D image is a grid of tiles; ``tiles`` are the tile indices (row-major) in slice order."""

    path: Path
    tile_rows: int
    tile_columns: int
    grid_columns: int
    tiles: tuple[int, ...]
    rescaled: bool


@dataclass(frozen=True)
class FrameSource:
    """Frames (0-based, in slice order) of one multi-frame file and each frame's rescale slope and intercept."""

    path: Path
    frames: tuple[int, ...]
    slopes: tuple[float, ...]
    intercepts: tuple[float, ...]

    @property
    def rescaled(self) -> bool:
        return any(s != 1.0 for s in self.slopes) or any(i != 0.0 for i in self.intercepts)


PixelSource = ClassicSource | MosaicSource | FrameSource


@dataclass(frozen=True)
class VolumePlan:
    label: str
    split_key: Mapping[str, str]
    source: PixelSource
    n_slices: int
    geometry: StackGeometry | None  # None: positions could not form a stack (``geometry_error`` says why)
    traits: VolumeTraits
    order: tuple[int | str, ...]  # sort key among the series' volumes (acquisition order)
    geometry_error: str | None = None
    warnings: tuple[str, ...] = field(default=())

    @property
    def source_names(self) -> tuple[str, ...]:
        src = self.source
        if isinstance(src, ClassicSource):
            return tuple(p.name for p in src.paths)
        if isinstance(src, FrameSource):
            return tuple(f"{src.path.name}#{frame + 1}" for frame in src.frames)
        return (src.path.name,)


def make_label(split_key: Mapping[str, str]) -> str:
    """``"b=1000 g=(0.7,0.7,0)"``, ``"TE=4.6 MAGNITUDE"``, ``"AcquisitionNumber=2"``; "single volume" when empty."""
    parts = []
    for name, value in split_key.items():
        short = _SHORT_NAMES.get(name, name)
        parts.append(f"{short}={value}" if short else value)
    return " ".join(parts) if parts else "single volume"


def varying_fields(rows: Sequence[Mapping[str, str]], names: Sequence[str]) -> list[str]:
    """The names (in ``names`` order) whose value is not the same in every row."""
    return [n for n in names if len({r.get(n, "") for r in rows}) > 1]


def distinct_keys(rows: Sequence[Mapping[str, str]], preferred: Sequence[str], extra: Sequence[str]) -> list[str]:
    """Varying ``preferred`` fields, plus ``extra`` fields (in order) while rows are still not told apart."""
    chosen = varying_fields(rows, preferred)
    for name in extra:
        if len({tuple(r.get(n, "") for n in chosen) for r in rows}) == len(rows):
            break
        if name in varying_fields(rows, [name]):
            chosen.append(name)
    return chosen
