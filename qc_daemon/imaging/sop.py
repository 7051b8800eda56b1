"""SOP classes the conversion cares about."""

from __future__ import annotations

from pydicom.uid import UID

MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4.1"
LEGACY_ENHANCED_MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4.4"
RAW_DATA = "1.2.840.10008.5.1.4.1.1.66"
_SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"

CLASSIC_IMAGE_CLASSES = frozenset({MR_IMAGE})
MULTIFRAME_IMAGE_CLASSES = frozenset({ENHANCED_MR_IMAGE, LEGACY_ENHANCED_MR_IMAGE})
IMAGE_CLASSES = CLASSIC_IMAGE_CLASSES | MULTIFRAME_IMAGE_CLASSES


def is_secondary_capture(uid: str) -> bool:
    return uid == _SECONDARY_CAPTURE_PREFIX or uid.startswith(_SECONDARY_CAPTURE_PREFIX + ".")


def name(uid: str) -> str:
    """Human name of a SOP class ("Raw Data Storage"), the UID itself when unknown."""
    if not uid:
        return "no SOP class"
    known = UID(uid).name
    return known if known and known != uid else uid


def describe(uid: str) -> str:
    """``"Raw Data Storage (1.2.840.10008.5.1.4.1.1.66)"``."""
    known = name(uid)
    return known if known in (uid, "no SOP class") else f"{known} ({uid})"
