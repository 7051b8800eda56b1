"""One receiving process: the C-STORE / C-ECHO SCP on the DICOM port, feeding the spool and the event queue.

``qc-daemon serve`` starts ``receiver_processes`` of these (``multiprocessing`` ``spawn``); they share the port with
``SO_REUSEPORT`` (the kernel spreads new connections over them), share the association limit through
:class:`~qc_daemon.ingest.limits.ReceiverShared`, and each writes a heartbeat file ``run/receiver-<index>.alive``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from qc_daemon.ingest import fastpath
from qc_daemon.ingest.diskguard import DiskGuard
from qc_daemon.ingest.events import EventSink
from qc_daemon.ingest.handler import IngestService
from qc_daemon.ingest.limits import ReceiverShared, make_receiver_shared
from qc_daemon.ingest.options import ReceiverOptions
from qc_daemon.ingest.sink import DeferredSink
from qc_daemon.ingest.spool import Spool
from qc_daemon.logs import configure_logging, set_role

LOGGER = logging.getLogger("qc_daemon.ingest")

# Handing the GIL over every 5 ms (CPython's default) adds up to 5 ms to each C-STORE round trip when another
# association's thread is busy; the receiver's threads mostly wait on sockets, so switch more often.
_SWITCH_INTERVAL = 0.0005

__all__ = ["ReceiverOptions", "ReceiverShared", "heartbeat_path", "make_receiver_shared", "run_receiver"]


def heartbeat_path(run_dir: Path, index: int) -> Path:
    """The file receiver ``index`` touches every ``heartbeat_seconds`` while its listener is up."""
    return Path(run_dir) / f"receiver-{index}.alive"


def build_ae(options: ReceiverOptions) -> AE:
    """The application entity of a receiving process (call :func:`fastpath.configure_pynetdicom` first)."""
    ae = AE(ae_title=options.ae_title)
    ae.add_supported_context(Verification)
    ae.maximum_pdu_size = options.max_pdu_size
    ae.maximum_associations = max(options.max_associations, 1)  # the real limit is ReceiverShared, across processes
    ae.network_timeout = options.network_timeout
    ae.dimse_timeout = options.dimse_timeout
    ae.acse_timeout = options.acse_timeout
    return ae


def run_receiver(
    options: ReceiverOptions,
    events: EventSink,
    index: int,
    shared: ReceiverShared | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Receive until ``stop`` is set or SIGTERM arrives (blocking; one receiving process).

    ``events.put`` is called once per :class:`~qc_daemon.ingest.events.SpooledInstance` or
    :class:`~qc_daemon.ingest.events.QuarantinedFile`. ``shared`` comes from :func:`make_receiver_shared` when several
    processes receive; without it this process enforces ``max_associations`` alone.
    """
    set_role(f"receiver-{index}")
    if not logging.getLogger().handlers:
        configure_logging(options.log_level, options.log_format, role=f"receiver-{index}")
    stop = stop or threading.Event()
    shared = shared or ReceiverShared(options.max_associations, index + 1, shared=False)
    shared.reset(index)
    fastpath.configure_pynetdicom()
    sys.setswitchinterval(_SWITCH_INTERVAL)

    spool = Spool(options.spool_dir, options.quarantine_dir, fsync=options.fsync)
    guard = DiskGuard(spool.spool_dir, options.disk_reserve_mb * 1024 * 1024)
    ae = build_ae(options)
    sink = DeferredSink(events)
    service = IngestService(
        options,
        spool,
        guard,
        sink,
        shared,
        index,
        implementation_class_uid=str(ae.implementation_class_uid),
        implementation_version_name=str(ae.implementation_version_name or ""),
    )
    handlers = [
        (evt.EVT_REQUESTED, service.on_requested),
        (evt.EVT_ACCEPTED, service.on_accepted),
        (evt.EVT_C_ECHO, service.on_c_echo),
        (evt.EVT_C_STORE, service.on_c_store),
    ]
    with _stop_on_signals(stop):
        try:
            server = fastpath.start_server(
                ae,
                (options.bind_address, options.dicom_port),
                ssl_context=options.ssl_context(),
                evt_handlers=handlers,
                on_association_finish=service.on_finished,
            )
        except OSError as exc:
            LOGGER.error(
                "cannot listen on %s:%s: %s",
                options.bind_address,
                options.dicom_port,
                exc,
                extra={"index": index, "port": options.dicom_port},
            )
            sink.close()
            raise
        LOGGER.info(
            "receiver listening",
            extra={
                "index": index,
                "ae_title": options.ae_title,
                "address": options.bind_address,
                "port": options.dicom_port,
                "tls": options.tls_enabled,
                "max_pdu_size": options.max_pdu_size,
                "fsync": options.fsync,
            },
        )
        try:
            _heartbeat_until(stop, server, options, index)
        finally:
            _shutdown(server, options.drain_seconds)
            sink.close()
            with contextlib.suppress(FileNotFoundError):
                heartbeat_path(options.run_dir, index).unlink()
            LOGGER.info("receiver stopped", extra={"index": index})


def _heartbeat_until(
    stop: threading.Event, server: ThreadedAssociationServer, options: ReceiverOptions, index: int
) -> None:
    path = heartbeat_path(options.run_dir, index)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"pid": os.getpid(), "port": options.dicom_port, "ae_title": options.ae_title, "started": time.time()}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path)
    listener = getattr(server, "serve_thread", None)
    while not stop.wait(options.heartbeat_seconds):
        if listener is not None and not listener.is_alive():
            LOGGER.error("the listener thread died; stopping this receiver", extra={"index": index})
            return
        try:
            os.utime(path)
        except FileNotFoundError:
            tmp.write_text(json.dumps(record))
            os.replace(tmp, path)


def _shutdown(server: ThreadedAssociationServer, drain_seconds: float) -> None:
    """Stop accepting, let running associations finish for up to ``drain_seconds``, then abort the rest."""
    server.shutdown()
    deadline = time.monotonic() + drain_seconds
    while server.active_associations and time.monotonic() < deadline:
        time.sleep(0.05)
    for assoc in server.active_associations:
        with contextlib.suppress(Exception):
            assoc.abort()


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM (and SIGINT) set ``stop`` while receiving, when running in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous: dict[signal.Signals, Any] = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous[signum] = signal.signal(signum, on_signal)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
