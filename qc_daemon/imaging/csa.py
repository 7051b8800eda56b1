"""Siemens CSA headers: the binary image/series headers in ``(0029,xx10)`` / ``(0029,xx20)`` and the ASCCONV protocol.

Only what the conversion needs: named CSA elements as lists of strings, and ``sSliceArray`` values from the
protocol text. Pure functions over bytes; malformed input gives empty results, never an exception.
"""

from __future__ import annotations

import re
import struct

_MAX_TAGS = 1000
_MAX_ITEMS = 1000


def parse_csa(blob: bytes | None) -> dict[str, list[str]]:
    """CSA1 or CSA2 ("SV10") header -> {element name: item strings}. Empty dict when unreadable."""
    if not blob or len(blob) < 16:
        return {}
    try:
        return _parse(blob)
    except (struct.error, ValueError, UnicodeDecodeError):
        return {}


def _cstr(raw: bytes) -> str:
    return raw.split(b"\x00", 1)[0].decode("latin-1").strip()


def _parse(blob: bytes) -> dict[str, list[str]]:
    csa2 = blob[:4] == b"SV10"
    ptr = 8 if csa2 else 0
    n_tags, _check = struct.unpack_from("<2I", blob, ptr)
    ptr += 8
    if not 0 < n_tags <= _MAX_TAGS:
        return {}
    out: dict[str, list[str]] = {}
    first_n_items = 0
    for tag_no in range(n_tags):
        name_raw, vm, _vr, _syngodt, n_items, _last = struct.unpack_from("<64si4s3i", blob, ptr)
        ptr += 84
        if not 0 <= n_items <= _MAX_ITEMS:
            return out
        if tag_no == 1:
            first_n_items = n_items
        items: list[str] = []
        for _ in range(n_items):
            x0, x1, _x2, _x3 = struct.unpack_from("<4i", blob, ptr)
            ptr += 16
            length = x1 if csa2 else x0 - first_n_items
            if length < 0 or ptr + length > len(blob):
                return out
            items.append(_cstr(blob[ptr : ptr + length]))
            ptr += length + (-length % 4)
        limit = vm if vm > 0 else n_items
        out[_cstr(name_raw)] = [i for i in items[:limit] if i != ""]
    return out


def csa_floats(header: dict[str, list[str]], name: str) -> list[float]:
    out = []
    for item in header.get(name, []):
        try:
            out.append(float(item))
        except ValueError:
            return []
    return out


_ASCCONV = re.compile(rb"### ASCCONV BEGIN[^\n]*\n(.*?)### ASCCONV END", re.S)
_LINE = re.compile(r"^\s*([A-Za-z0-9_.\[\]]+)\s*=\s*(\S+)", re.M)


def ascconv(blob: bytes | None) -> dict[str, str]:
    """The ``key = value`` lines of the ASCCONV protocol embedded in a CSA series header."""
    if not blob:
        return {}
    match = _ASCCONV.search(blob)
    if match is None:
        return {}
    body = match.group(1).decode("latin-1", errors="replace")
    return {m.group(1): m.group(2) for m in _LINE.finditer(body)}


def slice_vector(protocol: dict[str, str], index: int, what: str) -> tuple[float, float, float] | None:
    """``sSliceArray.asSlice[index].<what>`` (``sPosition`` or ``sNormal``) in LPS; absent components are 0."""
    prefix = f"sSliceArray.asSlice[{index}].{what}."
    keys = [prefix + axis for axis in ("dSag", "dCor", "dTra")]
    if not any(k in protocol for k in keys):
        return None
    try:
        x, y, z = (float(protocol.get(k, "0")) for k in keys)
    except ValueError:
        return None
    return (x, y, z)
