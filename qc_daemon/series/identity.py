"""Who acquired a series and with which protocol: pure functions over header values.

A scanner is identified by Manufacturer, ManufacturerModelName, DeviceSerialNumber and StationName; the calling AE
title only stands in when the headers say nothing. Protocol names are normalised so that the same protocol sent by
two consoles (case, spacing, vendor prefixes such as ``WIP``) groups together; an optional mapping table from the
configuration renames them further.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_SPACES = re.compile(r"[\s_]+")
# Vendor decorations that say nothing about the protocol itself.
_PREFIXES = re.compile(r"^(?:wip|research|prov|dev|tmp|sms|cmrr)[\s_:-]+", re.IGNORECASE)
_SUFFIX_NUMBERS = re.compile(r"[\s_-]+(?:\d{1,3}|copy|\(\d+\))$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class ScannerIdentity:
    manufacturer: str
    model: str
    device_serial: str
    station_name: str
    calling_ae: str

    @property
    def key(self) -> str:
        """Stable key: the headers when they identify the device, else the calling AE title."""
        parts: tuple[str, ...] = (self.manufacturer, self.model, self.device_serial, self.station_name)
        if not (self.device_serial or self.station_name or self.model):
            parts += ("ae=" + self.calling_ae,)
        return "|".join(_clean(p).upper() for p in parts)

    @property
    def display_name(self) -> str:
        parts = [p for p in (self.manufacturer, self.model, self.station_name or self.device_serial) if p]
        return " ".join(parts) or self.calling_ae or "unknown"


def _clean(value: str) -> str:
    return " ".join(value.split())


def normalise_protocol(
    protocol_name: str,
    series_description: str = "",
    mapping: Mapping[str, str] | None = None,
) -> str:
    """Canonical protocol name: ProtocolName (else SeriesDescription), lower case, single spaces, no vendor prefix.

    ``mapping`` keys are normalised names or regular expressions (full match) and map to the canonical name.
    """
    raw = protocol_name.strip() or series_description.strip()
    name = _SPACES.sub(" ", raw).strip().lower()
    previous = None
    while previous != name:
        previous = name
        name = _PREFIXES.sub("", name).strip()
    name = _SUFFIX_NUMBERS.sub("", name).strip() or name
    if mapping:
        for pattern, target in mapping.items():
            key = _SPACES.sub(" ", pattern).strip().lower()
            if key == name:
                return target
        for pattern, target in mapping.items():
            try:
                if re.fullmatch(pattern, name, flags=re.IGNORECASE):
                    return target
            except re.error:
                continue
    return name or "unknown"
