"""Preamble and File Meta Information (group 0002) for a received dataset, encoded by hand.

pynetdicom's ``event.encoded_dataset()`` builds the file meta with pydicom datasets on every instance, about a tenth
of the receiver's CPU per instance. The group is small and fixed (PS3.10 7.1), so it is written directly here; the
tests read the result back with pydicom.
"""

from __future__ import annotations

import struct

_PREAMBLE = b"\0" * 128 + b"DICM"
_VERSION = struct.pack("<HH2sHL", 0x0002, 0x0001, b"OB", 0, 2) + b"\x00\x01"


def _element(element: int, vr: bytes, value: bytes, pad: bytes) -> bytes:
    if len(value) % 2:
        value += pad
    if len(value) > 0xFFFF:
        raise ValueError(f"(0002,{element:04X}) value too long")
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


def encode_file_meta(
    *,
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax_uid: str,
    implementation_class_uid: str,
    implementation_version_name: str = "",
    source_ae_title: str = "",
) -> bytes:
    """Return the 128-byte preamble, ``DICM`` and the explicit VR little endian group 0002."""
    source = source_ae_title.strip()
    body = b"".join(
        (
            _VERSION,
            _element(0x0002, b"UI", sop_class_uid.encode("ascii", "replace"), b"\0"),
            _element(0x0003, b"UI", sop_instance_uid.encode("ascii", "replace"), b"\0"),
            _element(0x0010, b"UI", transfer_syntax_uid.encode("ascii", "replace"), b"\0"),
            _element(0x0012, b"UI", implementation_class_uid.encode("ascii"), b"\0"),
            _element(0x0013, b"SH", implementation_version_name.encode("ascii"), b" ")
            if implementation_version_name
            else b"",
            _element(0x0016, b"AE", source.encode("ascii", "replace"), b" ") if source else b"",
        )
    )
    group_length = struct.pack("<HH2sHL", 0x0002, 0x0000, b"UL", 4, len(body))
    return _PREAMBLE + group_length + body
