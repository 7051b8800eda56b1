"""Entry points of the node's processes, one per role; each runs in its own process started by the supervisor.

Every role configures its own logging, dies with the supervisor (PR_SET_PDEATHSIG), stops cleanly on SIGTERM and
writes a heartbeat file under ``<data_dir>/run`` that the health check reads.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import signal
import threading
from pathlib import Path
from typing import Any

from qc_daemon.config import Settings
from qc_daemon.logs import configure_logging

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1
REPO_ROOT = Path(__file__).resolve().parents[1]


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when the supervisor dies (even by ``kill -9``)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:  # not Linux: the supervisor's process group is still stopped by the service manager
        pass


def _stop_on_sigterm() -> threading.Event:
    stop = threading.Event()

    def _handler(_signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the supervisor, which stops us in order
    return stop


def _start(settings: Settings, role: str) -> threading.Event:
    die_with_parent()
    configure_logging(settings.log_level, settings.log_format, role=role)
    return _stop_on_sigterm()


def heartbeat_path(settings: Settings, role: str) -> Path:
    return settings.run_dir / f"{role}.alive"


def _heartbeat(path: Path, stop: threading.Event, every: float = 2.0) -> None:
    def beat() -> None:
        while not stop.is_set():
            path.touch()
            stop.wait(every)

    threading.Thread(target=beat, name="heartbeat", daemon=True).start()


def default_model_path() -> Path | None:
    """The model shipped in ``models/`` beside the package (the newest .onnx when there are several)."""
    candidates = sorted((REPO_ROOT / "models").glob("*.onnx"), key=lambda p: p.stat().st_mtime)
    return candidates[-1] if candidates else None


def receiver_main(settings: Settings, index: int, events: Any, shared: Any) -> None:
    from qc_daemon.ingest.scp import ReceiverOptions, run_receiver

    stop = _start(settings, f"receiver-{index}")
    run_receiver(ReceiverOptions.from_settings(settings), events, index, shared, stop)


def bookkeeper_main(settings: Settings, events: Any) -> None:
    from qc_daemon.ingest.spool import Spool
    from qc_daemon.series.bookkeeper import Bookkeeper
    from qc_daemon.store.db import make_engine, make_session_factory

    stop = _start(settings, "bookkeeper")
    _heartbeat(heartbeat_path(settings, "bookkeeper"), stop)
    engine = make_engine(settings.resolved_database_url)
    keeper = Bookkeeper(
        settings,
        make_session_factory(engine),
        Spool(settings.spool_dir, settings.quarantine_dir, fsync=settings.fsync),
    )
    keeper.reconcile(requeue_jobs=False)
    keeper.run(events, stop)


def worker_main(settings: Settings, index: int) -> None:
    from qc_daemon.processing.worker import Worker
    from qc_daemon.scoring.model import QCModel
    from qc_daemon.store.db import make_engine, make_session_factory

    role = f"worker-{index}"
    stop = _start(settings, role)
    model_path = settings.model_path or default_model_path()
    if model_path is None:
        log.error("no model: set model_path or ship one in models/; the worker waits")
        stop.wait()
        return
    model = QCModel.load(
        model_path,
        providers=settings.ort_providers,
        intra_op_threads=settings.ort_intra_op_threads,
        inter_op_threads=settings.ort_inter_op_threads,
    )
    log.info(
        "model loaded",
        extra={
            "model": model.metadata.name,
            "model_version": model.metadata.version,
            "providers_requested": settings.ort_providers,
            "providers_used": model.providers,
        },
    )
    engine = make_engine(settings.resolved_database_url)
    worker = Worker(settings, make_session_factory(engine), model, worker_id=role)
    worker.run(stop, heartbeat=heartbeat_path(settings, role))


def web_main(settings: Settings) -> None:
    import uvicorn

    from qc_daemon.web.app import create_app

    stop = _start(settings, "web")
    _heartbeat(heartbeat_path(settings, "web"), stop)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        lifespan="on",
    )
    # uvicorn handles SIGTERM itself (graceful shutdown) while it serves.
    uvicorn.Server(config).run()
