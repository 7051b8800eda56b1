"""What the receiver does with each association and each C-STORE: policy, spooling, events, log lines.

The C-STORE handler is the hot path. It never decodes the dataset: it reads three UIDs from the encoded bytes
(:mod:`qc_daemon.ingest.header`), checks the disk reserve, writes file meta + received bytes into the spool (atomic,
durable) and only then answers. Logging is one INFO line per association accepted or rejected and one per
(association, series) when the association ends; failures are logged as they happen.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset

from qc_daemon.ingest.diskguard import DiskGuard
from qc_daemon.ingest.events import EventSink, QuarantinedFile, SpooledInstance
from qc_daemon.ingest.filemeta import encode_file_meta
from qc_daemon.ingest.header import HeaderError, read_identity
from qc_daemon.ingest.limits import ReceiverShared
from qc_daemon.ingest.options import ReceiverOptions
from qc_daemon.ingest.spool import Spool
from qc_daemon.logs import series_logger

LOGGER = logging.getLogger("qc_daemon.ingest")

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000
PROCESSING_FAILURE = 0xC001  # "cannot understand" range: we could not store it (I/O error)

# A-ASSOCIATE-RJ (result, source, diagnostic), PS3.8 9.3.4
_REJECT_CALLING_AE = (0x01, 0x01, 0x03)
_REJECT_CALLED_AE = (0x01, 0x01, 0x07)
_REJECT_LIMIT = (0x02, 0x03, 0x02)


@dataclass
class _SeriesStats:
    instances: int = 0
    bytes: int = 0
    duplicates: int = 0
    refused: int = 0
    quarantined: int = 0
    failed: int = 0


@dataclass
class AssociationState:
    """Per-association bookkeeping, attached to the pynetdicom association as ``qc_state``."""

    calling_ae: str
    called_ae: str
    peer: str
    started: float = field(default_factory=time.monotonic)
    slot_held: bool = False
    series: dict[str, _SeriesStats] = field(default_factory=dict)

    def stats(self, series_uid: str) -> _SeriesStats:
        found = self.series.get(series_uid)
        if found is None:
            found = self.series[series_uid] = _SeriesStats()
        return found


def _failure(status: int, comment: str) -> Dataset:
    """A failure status with an ErrorComment (LO: 64 printable characters, no backslash)."""
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = "".join(c if " " <= c <= "~" and c != "\\" else "?" for c in comment)[:64].strip()
    return ds


class IngestService:
    """The event handlers bound to the association server of one receiving process."""

    def __init__(
        self,
        options: ReceiverOptions,
        spool: Spool,
        guard: DiskGuard,
        events: EventSink,
        shared: ReceiverShared,
        index: int,
        *,
        implementation_class_uid: str,
        implementation_version_name: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.options = options
        self.spool = spool
        self.guard = guard
        self.events = events
        self.shared = shared
        self.index = index
        self._implementation = (implementation_class_uid, implementation_version_name)
        self._clock = clock
        self._allowed = frozenset(a.strip() for a in options.allowed_calling_aets)
        self._disk_low = False
        self._disk_lock = threading.Lock()
        self._event_errors = 0

    # --- association level
    def on_requested(self, event: Any) -> None:
        """EVT_REQUESTED: apply the AE title checks and the association limit before negotiation."""
        assoc = event.assoc
        rq = assoc.requestor.primitive
        calling = str(rq.calling_ae_title).strip()
        called = str(rq.called_ae_title).strip()
        info = assoc.requestor.address_info
        state = AssociationState(calling_ae=calling, called_ae=called, peer=f"{info.address}:{info.port}")
        assoc.qc_state = state
        reason = None
        rsd = None
        if self._allowed and calling not in self._allowed:
            reason, rsd = f"calling AE title {calling!r} not in allowed_calling_aets", _REJECT_CALLING_AE
        elif self.options.require_called_aet and called != self.options.ae_title:
            reason, rsd = f"called AE title {called!r} is not {self.options.ae_title!r}", _REJECT_CALLED_AE
        elif not self.shared.try_acquire(self.index):
            reason = f"max_associations ({self.shared.max_associations}) reached"
            rsd = _REJECT_LIMIT
        else:
            state.slot_held = True
            return
        LOGGER.warning(
            "association rejected: %s",
            reason,
            extra={"calling_ae": calling, "called_ae": called, "peer": state.peer, "reason": reason},
        )
        assoc.acse.send_reject(*rsd)
        assoc.kill()

    def on_accepted(self, event: Any) -> None:
        state: AssociationState | None = getattr(event.assoc, "qc_state", None)
        if state is None:
            return
        LOGGER.info(
            "association accepted",
            extra={
                "calling_ae": state.calling_ae,
                "called_ae": state.called_ae,
                "peer": state.peer,
                "contexts": len(event.assoc.accepted_contexts),
            },
        )

    def on_finished(self, assoc: Any) -> None:
        """Run when the association's thread ends: one summary line per series, release the slot."""
        state: AssociationState | None = getattr(assoc, "qc_state", None)
        if state is None:
            return
        if state.slot_held:
            state.slot_held = False
            self.shared.release(self.index)
        if assoc.is_rejected:
            return
        ended = "released" if assoc.is_released else "aborted" if assoc.is_aborted else "closed"
        seconds = round(time.monotonic() - state.started, 3)
        for series_uid, stats in state.series.items():
            log = series_logger(LOGGER, series_uid=series_uid, calling_ae=state.calling_ae)
            log.info(
                "series received",
                extra={
                    "peer": state.peer,
                    "ended": ended,
                    "seconds": seconds,
                    "instances": stats.instances,
                    "bytes": stats.bytes,
                    "duplicates": stats.duplicates,
                    "refused": stats.refused,
                    "quarantined": stats.quarantined,
                    "failed": stats.failed,
                },
            )
        if not state.series:
            LOGGER.debug(
                "association ended without instances",
                extra={"calling_ae": state.calling_ae, "peer": state.peer, "ended": ended},
            )

    # --- DIMSE
    def on_c_echo(self, event: Any) -> int:
        return SUCCESS

    def on_c_store(self, event: Any) -> int | Dataset:
        received_at = self._clock()
        assoc = event.assoc
        state: AssociationState = assoc.qc_state
        request = event.request
        transfer_syntax = str(event.context.transfer_syntax)  # the accepted syntax (a namedtuple field)
        command_instance = str(request.AffectedSOPInstanceUID or "")
        command_class = str(request.AffectedSOPClassUID or "")
        data = request.DataSet.getbuffer()
        try:
            return self._store(state, data, transfer_syntax, command_class, command_instance, received_at)
        finally:
            data.release()

    def _store(
        self,
        state: AssociationState,
        data: memoryview,
        transfer_syntax: str,
        command_class: str,
        command_instance: str,
        received_at: float,
    ) -> int | Dataset:
        try:
            ident = read_identity(data, transfer_syntax)
            problem = None if ident.series_uid else "no (0020,000E) SeriesInstanceUID in the dataset"
        except HeaderError as exc:
            ident = None
            problem = f"cannot parse the dataset: {exc}"
        if problem is not None or ident is None or ident.series_uid is None:
            return self._quarantine(
                state,
                data,
                problem or "unparseable",
                sop_instance=command_instance,
                sop_class=command_class,
                transfer_syntax=transfer_syntax,
                received_at=received_at,
            )

        series_uid = ident.series_uid
        sop_instance = ident.sop_instance_uid or command_instance
        sop_class = ident.sop_class_uid or command_class
        stats = state.stats(series_uid)
        log = series_logger(LOGGER, series_uid=series_uid, calling_ae=state.calling_ae)
        if ident.sop_instance_uid and command_instance and ident.sop_instance_uid != command_instance:
            log.warning(
                "SOP Instance UID in the dataset differs from the C-STORE request; the dataset's is used",
                extra={"sop_instance_uid": ident.sop_instance_uid, "request_sop_instance_uid": command_instance},
            )

        size = len(data)
        if not self._check_disk(size):
            stats.refused += 1
            return OUT_OF_RESOURCES

        header = encode_file_meta(
            sop_class_uid=sop_class,
            sop_instance_uid=sop_instance,
            transfer_syntax_uid=transfer_syntax,
            implementation_class_uid=self._implementation[0],
            implementation_version_name=self._implementation[1],
            source_ae_title=state.calling_ae,
        )
        try:
            path, duplicate = self.spool.write_str(series_uid, sop_instance, data, header=header)
        except OSError as exc:
            stats.failed += 1
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                log.error("disk full while writing an instance: %s", exc, extra={"sop_instance_uid": sop_instance})
                return OUT_OF_RESOURCES
            log.error("cannot write an instance to the spool: %s", exc, extra={"sop_instance_uid": sop_instance})
            return _failure(PROCESSING_FAILURE, f"cannot store: {exc.strerror or exc}")

        total = len(header) + size
        if duplicate:
            stats.duplicates += 1
        else:
            stats.instances += 1
            stats.bytes += total
            self.guard.consumed(total)
        self._emit(
            SpooledInstance(
                series_uid=series_uid,
                sop_instance_uid=sop_instance,
                sop_class_uid=sop_class,
                transfer_syntax_uid=transfer_syntax,
                path=path,
                size=total,
                calling_ae=state.calling_ae,
                called_ae=state.called_ae,
                peer=state.peer,
                received_at=received_at,
                duplicate=duplicate,
            )
        )
        return SUCCESS

    def _quarantine(
        self,
        state: AssociationState,
        data: memoryview,
        reason: str,
        *,
        sop_instance: str,
        sop_class: str,
        transfer_syntax: str,
        received_at: float,
    ) -> int | Dataset:
        stats = state.stats("")
        if not self._check_disk(len(data)):
            stats.refused += 1
            return OUT_OF_RESOURCES
        header = encode_file_meta(
            sop_class_uid=sop_class or "1.2.840.10008.5.1.4.1.1.7",
            sop_instance_uid=sop_instance or "0",
            transfer_syntax_uid=transfer_syntax,
            implementation_class_uid=self._implementation[0],
            implementation_version_name=self._implementation[1],
            source_ae_title=state.calling_ae,
        )
        try:
            path = self.spool.quarantine_bytes(
                header + bytes(data),
                reason,
                sop_instance_uid=sop_instance,
                sop_class_uid=sop_class,
                transfer_syntax_uid=transfer_syntax,
                calling_ae=state.calling_ae,
                called_ae=state.called_ae,
                peer=state.peer,
            )
        except OSError as exc:
            stats.failed += 1
            LOGGER.error(
                "cannot quarantine an unparseable dataset: %s (%s)",
                exc,
                reason,
                extra={"calling_ae": state.calling_ae, "sop_instance_uid": sop_instance},
            )
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                return OUT_OF_RESOURCES
            return _failure(PROCESSING_FAILURE, f"cannot store: {exc.strerror or exc}")
        stats.quarantined += 1
        LOGGER.warning(
            "dataset quarantined: %s",
            reason,
            extra={"calling_ae": state.calling_ae, "sop_instance_uid": sop_instance, "path": str(path)},
        )
        self._emit(
            QuarantinedFile(
                path=str(path),
                reason=reason,
                calling_ae=state.calling_ae,
                sop_instance_uid=sop_instance,
                series_uid="",
                size=len(data),
                received_at=received_at,
            )
        )
        return _failure(CANNOT_UNDERSTAND, reason)

    def _check_disk(self, size: int) -> bool:
        room = self.guard.has_room(size)
        if room != (not self._disk_low):
            with self._disk_lock:
                if room == self._disk_low:
                    self._disk_low = not room
                    free_mb = self.guard.free_bytes() // (1024 * 1024)
                    if room:
                        LOGGER.info("disk space above the reserve again: accepting", extra={"free_mb": free_mb})
                    else:
                        LOGGER.warning(
                            "disk space below the reserve: answering 0xA700 (out of resources) to C-STORE",
                            extra={"free_mb": free_mb, "disk_reserve_mb": self.options.disk_reserve_mb},
                        )
        return room

    def _emit(self, obj: SpooledInstance | QuarantinedFile) -> None:
        try:
            self.events.put(obj)
        except Exception as exc:  # the file is durable: the bookkeeper finds it when it reconciles the spool
            self._event_errors += 1
            if self._event_errors == 1 or self._event_errors % 1000 == 0:
                LOGGER.error("cannot queue an event for the bookkeeper: %s", exc, extra={"errors": self._event_errors})
