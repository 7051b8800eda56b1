"""The one exception of the conversion stage."""

from __future__ import annotations


class ConversionError(Exception):
    """A series that cannot be converted (corrupt, unreadable, inconsistent).

    ``reason`` is one line, safe to store and show (no patient data): the worker records it and marks the series
    failed.
    """

    def __init__(self, reason: str) -> None:
        self.reason = " ".join(reason.split())
        super().__init__(self.reason)
