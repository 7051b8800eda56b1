"""What a receiver tells the bookkeeper, one object per received dataset (picklable; sent through a queue)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


class EventSink(Protocol):
    """Where events go: a ``multiprocessing.Queue`` satisfies it, so does a list-like test double."""

    def put(self, obj: Any, /) -> None: ...


@dataclass(frozen=True, slots=True)
class SpooledInstance:
    """An instance acknowledged with success and present in the spool."""

    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    path: str  # absolute final path in the spool
    size: int
    calling_ae: str
    called_ae: str
    peer: str  # "host:port" of the sender
    received_at: float  # time.time()
    # Same SOP Instance UID already in the spool: the first copy is kept, success is answered, count it once.
    duplicate: bool


@dataclass(frozen=True, slots=True)
class QuarantinedFile:
    """A dataset that was not spooled (unparseable, no SeriesInstanceUID) and is kept in the quarantine folder."""

    path: str
    reason: str
    calling_ae: str
    sop_instance_uid: str
    series_uid: str
    size: int
    received_at: float
