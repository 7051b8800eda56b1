"""C-STORE SCU for back-filling: send DICOM files (folders walked) to a storage SCP such as this node.

Each file is sent as stored (its dataset bytes read from disk, never re-encoded) in its own transfer syntax; for
every SOP class the uncompressed syntaxes are proposed as well, so an uncompressed file whose exact syntax the peer
refuses is converted by pynetdicom. A compressed file whose syntax the peer refuses fails (nothing here transcodes
pixel data). Failures are collected with their status and sending goes on; a lost association is re-established.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, _config, evt
from pynetdicom.dsutils import split_dataset
from pynetdicom.presentation import build_context
from tqdm import tqdm

LOGGER = logging.getLogger("qc_daemon.ingest.sender")

_UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian)
_MAX_CONTEXTS = 128
_DIRECTORY_SOP_CLASS = "1.2.840.10008.1.3.10"  # DICOMDIR: not an instance to store
_WARNING_STATUSES = frozenset({0x0001, 0x0107, 0x0116, 0xB000, 0xB006, 0xB007})
_CONNECT_ATTEMPTS = 3


@dataclass(frozen=True)
class SendFailure:
    path: str
    status: int | None  # the peer's status, None when no response (no context, no association, local error)
    reason: str


@dataclass
class SendReport:
    """The outcome of :func:`send_paths`."""

    sent: int = 0  # answered with success or a warning status
    warnings: int = 0  # of ``sent``, answered with a warning status
    failed: list[SendFailure] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # not DICOM files (no file meta), DICOMDIR
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass(frozen=True)
class _File:
    path: Path
    sop_class: str
    sop_instance: str
    transfer_syntax: str


def _walk(paths: Iterable[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file()))
        else:
            found.append(path)
    return found


def _inspect(path: Path) -> _File | None:
    """File meta of a DICOM file, or None when it is not a storable DICOM file."""
    try:
        meta, _ = split_dataset(path)
    except Exception:
        return None
    sop_class = str(meta.get("MediaStorageSOPClassUID", "") or "")
    sop_instance = str(meta.get("MediaStorageSOPInstanceUID", "") or "")
    transfer_syntax = str(meta.get("TransferSyntaxUID", "") or "")
    if not (sop_class and sop_instance and transfer_syntax) or sop_class == _DIRECTORY_SOP_CLASS:
        return None
    return _File(path, sop_class, sop_instance, transfer_syntax)


def _contexts_for(files: Sequence[_File]) -> list[tuple[str, list[str]]]:
    """One context per (SOP class, own syntax) plus one uncompressed context per SOP class."""
    contexts: dict[tuple[str, tuple[str, ...]], None] = {}
    for f in files:
        contexts[(f.sop_class, (f.transfer_syntax,))] = None
    for sop_class in dict.fromkeys(f.sop_class for f in files):
        contexts[(sop_class, tuple(_UNCOMPRESSED))] = None
    return [(sop, list(ts)) for sop, ts in contexts]


def _batches(files: Sequence[_File]) -> list[list[_File]]:
    """Split files (in order) so that each association proposes at most 128 presentation contexts."""
    batches: list[list[_File]] = []
    current: list[_File] = []
    pairs: set[tuple[str, str]] = set()
    classes: set[str] = set()
    for f in files:
        new_pairs = len(pairs) + ((f.sop_class, f.transfer_syntax) not in pairs)
        new_classes = len(classes) + (f.sop_class not in classes)
        if current and new_pairs + new_classes > _MAX_CONTEXTS:
            batches.append(current)
            current, pairs, classes = [], set(), set()
        current.append(f)
        pairs.add((f.sop_class, f.transfer_syntax))
        classes.add(f.sop_class)
    if current:
        batches.append(current)
    return batches


def _no_delay(event: Any) -> None:
    """Disable Nagle: a small command PDU followed by the data set otherwise waits for a delayed ACK (40 ms)."""
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _keep_responses_for_the_sender(assoc: Any) -> None:
    """Close a race in pynetdicom's requestor: a C-STORE response its reactor thread takes goes back to the queue.

    ``send_c_store`` pauses the association's reactor before waiting for the response, but the pause handshake
    (``_reactor_checkpoint`` / ``_is_paused``) can pass while the reactor is between its wait and its next
    ``dimse.get_msg``; the reactor then takes the response, drops it as "Received unexpected C-STORE service message",
    and ``send_c_store`` waits out the DIMSE timeout and aborts (seen here in about 1 run in 3 of 1,027 files).
    A sender serves no requests, so anything the reactor takes that is not a request is put back for
    ``send_c_store`` (pynetdicom 3.0.4, pinned; ``Association._serve_request`` is hash-checked with the fast path).
    """
    serve = assoc._serve_request

    def serve_or_put_back(msg: Any, context_id: int) -> None:
        if msg.is_valid_request:
            serve(msg, context_id)
        else:
            assoc.dimse.msg_queue.put((context_id, msg))

    assoc._serve_request = serve_or_put_back


class _Sender:
    """Sends a list of files over one association at a time, reconnecting when it is lost."""

    def __init__(
        self,
        host: str,
        port: int,
        called_aet: str,
        calling_aet: str,
        report: SendReport,
        lock: threading.Lock,
        bar: Any,
        dimse_timeout: float = 120.0,
    ) -> None:
        self.host, self.port, self.called_aet = host, port, called_aet
        self.dimse_timeout = dimse_timeout
        self.calling_aet = calling_aet
        self.report, self.lock, self.bar = report, lock, bar

    def _fail(self, f: _File, status: int | None, reason: str) -> None:
        LOGGER.warning(
            "C-STORE failed: %s",
            reason,
            extra={"sop_instance_uid": f.sop_instance, "status": None if status is None else f"0x{status:04X}"},
        )
        with self.lock:
            self.report.failed.append(SendFailure(str(f.path), status, reason))
            self.bar.update(1)

    def _ok(self, warning: bool) -> None:
        with self.lock:
            self.report.sent += 1
            self.report.warnings += int(warning)
            self.bar.update(1)

    def run(self, files: Sequence[_File]) -> None:
        for batch in _batches(files):
            self._send_batch(batch)

    def _associate(self, files: Sequence[_File]) -> Any:
        ae = AE(ae_title=self.calling_aet)
        ae.acse_timeout = 30
        ae.dimse_timeout = self.dimse_timeout
        ae.network_timeout = 120
        ae.requested_contexts = [build_context(sop, ts) for sop, ts in _contexts_for(files)]
        assoc = ae.associate(
            self.host, self.port, ae_title=self.called_aet, evt_handlers=[(evt.EVT_CONN_OPEN, _no_delay)]
        )
        _keep_responses_for_the_sender(assoc)
        return assoc

    def _send_batch(self, files: Sequence[_File]) -> None:
        pending = list(files)
        retried: set[Path] = set()
        failures_to_connect = 0
        while pending:
            assoc = self._associate(pending)
            if not assoc.is_established:
                failures_to_connect += 1
                if failures_to_connect >= _CONNECT_ATTEMPTS:
                    reason = "association rejected" if assoc.is_rejected else "cannot associate with the peer"
                    for f in pending:
                        self._fail(f, None, reason)
                    return
                time.sleep(0.5 * failures_to_connect)
                continue
            failures_to_connect = 0
            accepted = {(str(cx.abstract_syntax), str(cx.transfer_syntax[0])) for cx in assoc.accepted_contexts}
            try:
                while pending and assoc.is_established:
                    f = pending.pop(0)
                    if not self._send_one(assoc, accepted, f, may_retry=f.path not in retried):
                        # no response: the association is gone; C-STORE is idempotent, so send it once more
                        retried.add(f.path)
                        pending.insert(0, f)
            finally:
                if assoc.is_established:
                    assoc.release()

    def _send_one(self, assoc: Any, accepted: set[tuple[str, str]], f: _File, may_retry: bool = False) -> bool:
        """Send one file and record its outcome; False (nothing recorded) when it got no response and may retry.

        No response means the association was aborted or the DIMSE timeout expired; pynetdicom's SCU also loses a
        response now and then to a race between its reactor thread and ``send_c_store`` (logged as "Received
        unexpected C-STORE service message"), after which it waits out the DIMSE timeout and aborts.
        """
        try:
            if (f.sop_class, f.transfer_syntax) in accepted:
                status_ds = assoc.send_c_store(f.path)  # bytes as stored (chunked mode, see send_paths)
            elif f.transfer_syntax in _UNCOMPRESSED and any(
                sop == f.sop_class and ts in _UNCOMPRESSED for sop, ts in accepted
            ):
                status_ds = assoc.send_c_store(dcmread(f.path))  # pynetdicom converts between uncompressed syntaxes
            else:
                self._fail(f, None, f"peer accepted no presentation context for {f.sop_class} in {f.transfer_syntax}")
                return True
        except Exception as exc:  # unreadable file, encoding error: this file fails, the others go on
            self._fail(f, None, f"{type(exc).__name__}: {exc}")
            return True
        status = getattr(status_ds, "Status", None) if status_ds is not None else None
        if status is None and may_retry:
            LOGGER.warning("C-STORE got no response: sending again", extra={"sop_instance_uid": f.sop_instance})
            return False
        if status is None:
            self._fail(f, None, "no response (association aborted or DIMSE timeout)")
        elif status == 0x0000 or status in _WARNING_STATUSES:
            self._ok(status != 0x0000)
        else:
            comment = getattr(status_ds, "ErrorComment", "") or ""
            self._fail(f, int(status), f"status 0x{int(status):04X}" + (f": {comment}" if comment else ""))
        return True


def send_paths(
    paths: Sequence[Path],
    host: str,
    port: int,
    called_aet: str,
    calling_aet: str = "QCSEND",
    progress: bool = True,
    associations: int = 1,
    dimse_timeout: float = 120.0,
) -> SendReport:
    """Send every DICOM file under ``paths`` (files or folders, walked recursively) with C-STORE.

    ``associations`` > 1 sends contiguous shares of the file list over that many parallel associations. Returns a
    :class:`SendReport`; never raises for a file that fails. While it runs, pynetdicom's process-wide
    ``STORE_SEND_CHUNKED_DATASET`` is on (datasets are streamed from the files, not decoded).
    """
    started = time.monotonic()
    report = SendReport()
    files: list[_File] = []
    for path in _walk(paths):
        inspected = _inspect(path)
        if inspected is None:
            report.skipped.append(str(path))
        else:
            files.append(inspected)
    lock = threading.Lock()
    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        with tqdm(total=len(files), disable=not progress, unit="file", desc=f"C-STORE to {called_aet}") as bar:
            count = max(1, min(associations, len(files)))
            share = -(-len(files) // count) if files else 0
            workers = [
                threading.Thread(
                    target=_Sender(host, port, called_aet, calling_aet, report, lock, bar, dimse_timeout).run,
                    args=(files[i * share : (i + 1) * share],),
                    name=f"qc-send-{i}",
                )
                for i in range(count)
            ]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous
    report.seconds = time.monotonic() - started
    LOGGER.info(
        "send finished",
        extra={
            "sent": report.sent,
            "warnings": report.warnings,
            "failed": len(report.failed),
            "skipped": len(report.skipped),
            "seconds": round(report.seconds, 3),
            "called_ae": called_aet,
        },
    )
    return report
