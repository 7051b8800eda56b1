"""Turning pydicom element values (standard, private, possibly undecoded ``UN`` bytes) into plain Python values.

Pure functions: no I/O. Every getter returns ``None`` (or an empty value) when an element is absent, empty or
malformed, because a QC node must cope with whatever headers scanners and anonymisers produce.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence
from typing import Any

from pydicom.dataset import Dataset
from pydicom.tag import BaseTag, Tag


def _is_sequence_value(value: Any) -> bool:
    return isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue"


def _bytes_to_text(value: bytes) -> str | None:
    try:
        text = value.decode("ascii").strip("\x00 ")
    except UnicodeDecodeError:
        return None
    return text if text.isprintable() else None


def floats(value: Any, *, binary_format: str = "<d") -> list[float]:
    """Numbers in ``value``: number, multi-value, backslash string, or raw bytes (text, else ``binary_format``)."""
    if value is None:
        return []
    if isinstance(value, bytes):
        decoded = _bytes_to_text(value)
        numbers = floats(decoded) if decoded else []
        if numbers:
            return numbers
        size = struct.calcsize(binary_format)
        if size == 0 or len(value) % size:
            return []
        count = len(value) // size
        return [float(v) for v in struct.unpack(binary_format[0] + binary_format[1:] * count, value)]
    if isinstance(value, str):
        out: list[float] = []
        for part in value.split("\\"):
            part = part.strip()
            if not part:
                continue
            try:
                out.append(float(part))
            except ValueError:
                return []
        return out
    if _is_sequence_value(value):
        out = []
        for item in value:
            out.extend(floats(item, binary_format=binary_format))
        return out
    try:
        number = float(value)
    except (TypeError, ValueError):
        return []
    return [number] if math.isfinite(number) else []


def first_float(value: Any, *, binary_format: str = "<d") -> float | None:
    numbers = floats(value, binary_format=binary_format)
    return numbers[0] if numbers else None


def first_int(value: Any) -> int | None:
    number = first_float(value, binary_format="<H")
    if number is None:
        return None
    return round(number)


def text(value: Any) -> str:
    """A single string: multi-values joined with backslashes, bytes decoded when they are text."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return _bytes_to_text(value) or ""
    if _is_sequence_value(value):
        return "\\".join(text(v) for v in value)
    return str(value).strip()


def strings(value: Any) -> tuple[str, ...]:
    """A multi-valued code string (ImageType, FrameType) as a tuple of upper-case stripped values."""
    joined = text(value)
    if not joined:
        return ()
    return tuple(part.strip().upper() for part in joined.split("\\"))


def element_value(ds: Dataset, tag: int | tuple[int, int] | BaseTag) -> Any:
    """The value of a tag of ``ds`` (``None`` when absent)."""
    elem = ds.get(Tag(tag))
    return None if elem is None else elem.value


def get(ds: Dataset, keyword: str) -> Any:
    """The value of a standard keyword (``None`` when absent or when pydicom cannot convert it)."""
    try:
        return ds.get(keyword)
    except (ValueError, TypeError, OverflowError):
        return None


def private(ds: Dataset, group: int, element: int, creator: str) -> Any:
    """Value of private element ``(group, xx<element>)`` in the block reserved by ``creator`` (None when absent).

    ``element`` is the low byte (e.g. ``0x0A`` for Siemens ``(0019,100A)``); the block is found through its private
    creator, so the value is right wherever the scanner placed the block.
    """
    try:
        return ds.get_private_item(group, element, creator).value
    except (KeyError, ValueError):
        return None


def first_item(ds: Dataset | None, keyword: str) -> Dataset | None:
    """First item of a sequence element, or None."""
    if ds is None:
        return None
    seq = get(ds, keyword)
    if not seq:
        return None
    item = seq[0]
    return item if isinstance(item, Dataset) else None


def vector3(values: Sequence[float] | None) -> tuple[float, float, float] | None:
    if values is None or len(values) != 3:
        return None
    return (float(values[0]), float(values[1]), float(values[2]))


def vector6(values: Sequence[float] | None) -> tuple[float, float, float, float, float, float] | None:
    if values is None or len(values) != 6:
        return None
    a, b, c, d, e, f = (float(v) for v in values)
    return (a, b, c, d, e, f)


def fmt_number(value: float, digits: int = 4) -> str:
    """Compact number for labels: ``2000``, ``4.6``, ``928.3``, never ``-0``."""
    if value == 0:
        return "0"
    out = f"{value:.{digits}g}"
    return "0" if out in ("-0", "0") else out


def fmt_vector(values: Iterable[float], decimals: int = 3) -> str:
    parts = []
    for v in values:
        r = round(float(v), decimals)
        parts.append("0" if r == 0 else f"{r:g}")
    return "(" + ",".join(parts) + ")"
