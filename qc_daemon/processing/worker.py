"""The worker role: claim complete series from the database queue, convert, score, record.

Each worker is its own process (a crash in conversion never takes the listener down) and loads the model once.
A job whose series received new instances while it ran is discarded; the series completes again and is redone.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from qc_daemon.config import Settings
from qc_daemon.imaging.convert import ConversionRules
from qc_daemon.logs import series_logger
from qc_daemon.processing.outcome import SeriesOutcome
from qc_daemon.processing.pipeline import process_files, thresholds_for_site
from qc_daemon.scoring.model import QCModel
from qc_daemon.store.db import transaction
from qc_daemon.store.jobs import Job, claim_next
from qc_daemon.store.models import SeriesStatus
from qc_daemon.store.results import record_outcome

log = logging.getLogger(__name__)


def conversion_rules(settings: Settings) -> ConversionRules:
    return ConversionRules(
        min_slices=settings.min_slices,
        include={k: tuple(v) for k, v in settings.include_rules.items()},
        exclude={k: tuple(v) for k, v in settings.exclude_rules.items()},
    )


class Worker:
    def __init__(self, settings: Settings, factory: sessionmaker[Session], model: QCModel, worker_id: str) -> None:
        self.settings = settings
        self.factory = factory
        self.model = model
        self.worker_id = worker_id
        self.rules = conversion_rules(settings)

    def process(self, job: Job) -> SeriesOutcome:
        slog = series_logger(log, series_uid=job.series_uid, calling_ae=job.calling_ae, scanner=job.scanner_name)
        files = [self.settings.spool_dir / rel for rel in job.files]
        missing = [f for f in files if not f.exists()]
        if missing:
            slog.error("spooled files missing", extra={"missing": len(missing)})
        thresholds = thresholds_for_site(
            self.settings.threshold_overrides, job.scanner_key, job.station_name, job.calling_ae
        )
        try:
            outcome = process_files([f for f in files if f.exists()], self.model, self.rules, thresholds)
        except Exception as exc:  # a bug or an unexpected library error: record it, keep serving
            slog.exception("processing raised")
            outcome = SeriesOutcome(status=SeriesStatus.FAILED, error=f"processing error: {type(exc).__name__}: {exc}")
        return outcome

    def run_once(self) -> bool:
        """Claim and process one job; False when the queue was empty."""
        with transaction(self.factory) as session:
            job = claim_next(session, self.worker_id)
        if job is None:
            return False
        slog = series_logger(log, series_uid=job.series_uid, calling_ae=job.calling_ae, scanner=job.scanner_name)
        slog.info("processing series", extra={"instances": len(job.files), "attempt": job.attempts})
        started = time.perf_counter()
        outcome = self.process(job)
        with transaction(self.factory) as session:
            stored = record_outcome(session, job, self.worker_id, outcome)
        elapsed = round(time.perf_counter() - started, 3)
        if not stored:
            slog.info("result discarded: the series changed while it was processed; it will be redone")
        elif outcome.status == SeriesStatus.DONE:
            slog.info(
                "series scored",
                extra={
                    "rescan_score": outcome.rescan_score,
                    "flags": outcome.flags,
                    "volumes": len(outcome.volumes),
                    "seconds": elapsed,
                },
            )
        elif outcome.status == SeriesStatus.SKIPPED:
            slog.info("series skipped", extra={"reason": outcome.skip_reason, "seconds": elapsed})
        else:
            slog.error("series failed", extra={"error": outcome.error, "seconds": elapsed})
        return True

    def run(self, stop: threading.Event, poll_seconds: float = 0.2, heartbeat: Path | None = None) -> None:
        backoff = poll_seconds
        while not stop.is_set():
            if heartbeat is not None:
                heartbeat.touch()
            try:
                busy = self.run_once()
                backoff = poll_seconds
            except Exception as exc:  # database down: wait and retry, the job stays queued
                log.error("worker cannot reach the job queue", extra={"error": f"{type(exc).__name__}: {exc}"})
                busy = False
                backoff = min(backoff * 2, 30.0)
            if not busy:
                stop.wait(backoff)
