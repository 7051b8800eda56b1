"""The few header values the receiver needs, read without decoding the dataset.

:func:`read_identity` walks the encoded elements of a received dataset (as ``event.encoded_dataset(include_meta=False)``
gives them, in the negotiated transfer syntax) and stops as soon as (0020,000E) SeriesInstanceUID is passed. Values
are only sliced for the three UIDs; sequences before the series UID are skipped by walking their items. Pixel data
(7FE0,0010) comes later, so compressed transfer syntaxes read the same as Explicit VR Little Endian. Deflated transfer
syntaxes are inflated only as far as needed.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
DEFLATED_TRANSFER_SYNTAXES = frozenset({"1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.95"})

_SOP_CLASS = 0x00080016
_SOP_INSTANCE = 0x00080018
_SERIES = 0x0020000E
_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQUENCE_END = 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_SHORT_VRS = frozenset(
    {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"PN", b"SH", b"SL", b"SS",
     b"ST", b"TM", b"UI", b"UL", b"US"}
)  # fmt: skip
_MAX_NESTING = 16
_INFLATE_STEP = 64 * 1024
_INFLATE_LIMIT = 64 * 1024 * 1024


class HeaderError(ValueError):
    """The dataset cannot be walked up to its SeriesInstanceUID (truncated, garbage, bad lengths)."""


class _NeedMore(Exception):
    """Internal: the buffer ended before the walk finished."""


@dataclass(frozen=True, slots=True)
class DatasetIdentity:
    """UIDs found in the dataset itself; ``None`` where the element is absent or empty."""

    series_uid: str | None
    sop_instance_uid: str | None
    sop_class_uid: str | None


def read_identity(data: bytes | bytearray | memoryview, transfer_syntax: str) -> DatasetIdentity:
    """Return the SeriesInstanceUID, SOPInstanceUID and SOPClassUID of an encoded dataset.

    Raises :class:`HeaderError` when the bytes cannot be walked (the caller quarantines the dataset). A dataset that
    is well formed but has no SeriesInstanceUID returns ``series_uid=None``.
    """
    if transfer_syntax in DEFLATED_TRANSFER_SYNTAXES:
        return _read_deflated(data)
    implicit = transfer_syntax == IMPLICIT_VR_LITTLE_ENDIAN
    little = transfer_syntax != EXPLICIT_VR_BIG_ENDIAN
    try:
        return _Walker(memoryview(data), implicit, little).identity()
    except _NeedMore:
        raise HeaderError("dataset ends before (0020,000E) SeriesInstanceUID could be reached") from None


def _read_deflated(data: bytes | bytearray | memoryview) -> DatasetIdentity:
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    source = memoryview(data)
    inflated = bytearray()
    try:
        while True:
            inflated += inflater.decompress(source, _INFLATE_STEP)
            source = memoryview(inflater.unconsumed_tail)
            finished = inflater.eof or not source
            try:
                return _Walker(memoryview(bytes(inflated)), False, True).identity()
            except _NeedMore:
                if finished or len(inflated) > _INFLATE_LIMIT:
                    raise HeaderError("deflated dataset ends before (0020,000E) SeriesInstanceUID") from None
    except zlib.error as exc:
        raise HeaderError(f"deflated dataset cannot be inflated: {exc}") from None


def _clean_uid(raw: memoryview) -> str | None:
    try:
        text = bytes(raw).decode("ascii")
    except UnicodeDecodeError:
        raise HeaderError("UID value is not ASCII") from None
    text = text.rstrip("\0 ").strip()
    return text or None


class _Walker:
    """Walks encoded elements; ``_NeedMore`` when the buffer ends, ``HeaderError`` on malformed input."""

    __slots__ = ("_data", "_end", "_explicit", "_implicit", "_implicit_fmt", "_little", "_tag_fmt", "_u16", "_u32")

    def __init__(self, data: memoryview, implicit: bool, little: bool) -> None:
        self._data = data
        self._end = len(data)
        self._implicit = implicit
        self._little = little
        prefix = "<" if little else ">"
        self._tag_fmt = struct.Struct(prefix + "HH")
        self._u16 = struct.Struct(prefix + "H")
        self._u32 = struct.Struct(prefix + "L")
        self._explicit = struct.Struct(prefix + "HH2sH")
        self._implicit_fmt = struct.Struct(prefix + "HHL")

    def identity(self) -> DatasetIdentity:
        """Walk the top-level elements up to (0020,000E); the common case is inlined (it runs per instance)."""
        data = self._data
        end = self._end
        implicit = self._implicit
        unpack_explicit = self._explicit.unpack_from
        unpack_implicit = self._implicit_fmt.unpack_from
        u32 = self._u32.unpack_from
        series = instance = sop_class = None
        pos = 0
        while pos < end:
            if pos + 8 > end:
                raise _NeedMore
            if implicit:
                group, element, length = unpack_implicit(data, pos)
                value_pos = pos + 8
                vr = b""
                inner_implicit = True
            else:
                group, element, vr, length = unpack_explicit(data, pos)
                if vr in _SHORT_VRS:
                    value_pos = pos + 8
                elif vr in _LONG_VRS:
                    if pos + 12 > end:
                        raise _NeedMore
                    length = u32(data, pos + 8)[0]
                    value_pos = pos + 12
                elif vr[0:1].isupper() and vr[1:2].isupper():  # a VR from a newer standard: assume 2-byte length
                    value_pos = pos + 8
                else:
                    raise HeaderError(
                        f"invalid VR 0x{bytes(vr).hex().upper()} in element ({group:04X},{element:04X}) at byte {pos}"
                    )
                inner_implicit = vr == b"UN"  # an undefined-length UN holds implicit VR LE content (PS3.5 6.2.2)
            tag = (group << 16) | element
            if tag > _SERIES:
                break
            if length == _UNDEFINED:
                if group == 0xFFFE:
                    raise HeaderError(f"item tag ({group:04X},{element:04X}) at the top level, byte {pos}")
                pos = self._skip_undefined(value_pos, vr, inner_implicit, 0)
                continue
            next_pos = value_pos + length
            if next_pos > end:
                raise _NeedMore
            if tag == _SERIES:
                series = _clean_uid(data[value_pos:next_pos])
                break
            if tag == _SOP_INSTANCE:
                instance = _clean_uid(data[value_pos:next_pos])
            elif tag == _SOP_CLASS:
                sop_class = _clean_uid(data[value_pos:next_pos])
            pos = next_pos
        return DatasetIdentity(series, instance, sop_class)

    def _header(self, pos: int, implicit: bool) -> tuple[int, int, int, bytes, bool]:
        """Decode one element header at ``pos``: (tag, value position, length, VR, implicit inside)."""
        data = self._data
        if pos + 8 > self._end:
            raise _NeedMore
        group, element = self._tag_fmt.unpack_from(data, pos)
        tag = (group << 16) | element
        if group == 0xFFFE or implicit:
            return tag, pos + 8, self._u32.unpack_from(data, pos + 4)[0], b"", implicit
        vr = bytes(data[pos + 4 : pos + 6])
        if not (65 <= vr[0] <= 90 and 65 <= vr[1] <= 90):  # two upper-case letters
            raise HeaderError(f"invalid VR 0x{vr.hex().upper()} in element ({group:04X},{element:04X}) at byte {pos}")
        if vr in _LONG_VRS:
            if pos + 12 > self._end:
                raise _NeedMore
            length = self._u32.unpack_from(data, pos + 8)[0]
            # An undefined-length UN holds implicit VR little endian content (PS3.5 6.2.2)
            return tag, pos + 12, length, vr, vr == b"UN" and length == _UNDEFINED
        return tag, pos + 8, self._u16.unpack_from(data, pos + 6)[0], vr, False

    def _skip_undefined(self, pos: int, vr: bytes, implicit: bool, depth: int) -> int:
        """Skip an undefined-length value (a sequence, or encapsulated fragments) starting at ``pos``."""
        if depth > _MAX_NESTING:
            raise HeaderError("sequences nested too deeply")
        while True:
            tag, value_pos, length, _, _ = self._header(pos, True)
            if tag == _SEQUENCE_END:
                return value_pos
            if tag != _ITEM:
                raise HeaderError(f"expected an item tag in an undefined-length value at byte {pos}, got {tag:08X}")
            if length == _UNDEFINED:
                pos = self._skip_item(value_pos, implicit, depth + 1)
            else:
                pos = value_pos + length
                if pos > self._end:
                    raise _NeedMore

    def _skip_item(self, pos: int, implicit: bool, depth: int) -> int:
        """Skip the elements of an undefined-length item up to and including its delimiter."""
        while True:
            tag, value_pos, length, vr, inner_implicit = self._header(pos, implicit)
            if tag == _ITEM_END:
                return value_pos
            if length == _UNDEFINED:
                pos = self._skip_undefined(value_pos, vr, inner_implicit, depth)
            else:
                pos = value_pos + length
                if pos > self._end:
                    raise _NeedMore
