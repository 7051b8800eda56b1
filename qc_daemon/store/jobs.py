"""The persisted job queue: a series' status column is its job state.

``receiving`` -> (quiet period) -> ``complete`` -> (claimed by a worker) -> ``processing`` -> ``done`` / ``skipped``
/ ``failed``. Claims are a conditional UPDATE, so two workers never take the same series on SQLite or PostgreSQL.
``generation`` guards results: a worker's results are written only if no instance arrived while it worked.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from qc_daemon.store.models import Instance, Scanner, Series, SeriesStatus, utcnow


@dataclass(frozen=True, slots=True)
class Job:
    series_id: int
    series_uid: str
    generation: int
    attempts: int
    calling_ae: str
    scanner_key: str
    scanner_name: str
    station_name: str
    files: tuple[str, ...]  # relative to the spool directory, in instance number order


@dataclass(frozen=True, slots=True)
class CompletedSeries:
    series_uid: str
    calling_ae: str
    instance_count: int


def complete_quiet_series(session: Session, quiet_seconds: float, now: datetime | None = None) -> list[CompletedSeries]:
    """Mark ``complete`` every receiving series silent for ``quiet_seconds``; return them."""
    now = now or utcnow()
    cutoff = now - timedelta(seconds=quiet_seconds)
    rows = session.execute(
        select(Series.id, Series.series_uid, Series.calling_ae, Series.instance_count).where(
            Series.status == SeriesStatus.RECEIVING, Series.last_received_at <= cutoff
        )
    ).all()
    done: list[CompletedSeries] = []
    for series_id, uid, calling_ae, count in rows:
        changed = session.execute(
            update(Series)
            .where(Series.id == series_id, Series.status == SeriesStatus.RECEIVING, Series.last_received_at <= cutoff)
            .values(status=SeriesStatus.COMPLETE, completed_at=now)
        ).rowcount  # type: ignore[attr-defined]
        if changed:
            done.append(CompletedSeries(uid, calling_ae, count))
    return done


def claim_next(session: Session, worker_id: str) -> Job | None:
    """Take the oldest complete series for ``worker_id``; None when the queue is empty."""
    while True:
        candidate = session.execute(
            select(Series.id)
            .where(Series.status == SeriesStatus.COMPLETE)
            .order_by(Series.completed_at, Series.id)
            .limit(1)
        ).scalar()
        if candidate is None:
            return None
        claimed = session.execute(
            update(Series)
            .where(Series.id == candidate, Series.status == SeriesStatus.COMPLETE)
            .values(
                status=SeriesStatus.PROCESSING,
                worker=worker_id,
                attempts=Series.attempts + 1,
                started_at=utcnow(),
            )
        ).rowcount  # type: ignore[attr-defined]
        if claimed:
            break
    series = session.get(Series, candidate)
    assert series is not None
    session.refresh(series)
    scanner: Scanner | None = series.scanner
    files = session.scalars(
        select(Instance.path).where(Instance.series_id == series.id).order_by(Instance.instance_number, Instance.id)
    ).all()
    return Job(
        series_id=series.id,
        series_uid=series.series_uid,
        generation=series.generation,
        attempts=series.attempts,
        calling_ae=series.calling_ae,
        scanner_key=scanner.key if scanner else "",
        scanner_name=scanner.display_name if scanner else "",
        station_name=scanner.station_name if scanner else "",
        files=tuple(files),
    )


def requeue_processing(
    session: Session, max_attempts: int, worker_id: str | None = None, reason: str = "worker stopped"
) -> tuple[list[str], list[str]]:
    """Put jobs of a dead worker (or every job, at start) back in the queue; fail those out of attempts.

    Returns (requeued series UIDs, failed series UIDs).
    """
    query = select(Series).where(Series.status == SeriesStatus.PROCESSING)
    if worker_id is not None:
        query = query.where(Series.worker == worker_id)
    requeued: list[str] = []
    failed: list[str] = []
    for series in session.scalars(query):
        if series.attempts >= max_attempts:
            series.status = SeriesStatus.FAILED
            series.error = f"{reason} during processing; gave up after {series.attempts} attempts"
            series.finished_at = utcnow()
            failed.append(series.series_uid)
        else:
            series.status = SeriesStatus.COMPLETE
            series.completed_at = series.completed_at or utcnow()
            requeued.append(series.series_uid)
        series.worker = None
    return requeued, failed


def stuck_jobs(session: Session, timeout_seconds: float) -> list[tuple[str, str]]:
    """(series UID, worker id) of jobs processing for longer than ``timeout_seconds``."""
    cutoff = utcnow() - timedelta(seconds=timeout_seconds)
    rows = session.execute(
        select(Series.series_uid, Series.worker).where(
            Series.status == SeriesStatus.PROCESSING, Series.started_at < cutoff
        )
    ).all()
    return [(uid, worker or "") for uid, worker in rows]


def still_current(session: Session, series_id: int, generation: int, worker_id: str) -> bool:
    """True while the job is still ours and no instance has arrived since it was claimed."""
    row = session.execute(
        select(Series.status, Series.generation, Series.worker).where(Series.id == series_id)
    ).one_or_none()
    return row is not None and row[0] == SeriesStatus.PROCESSING and row[1] == generation and row[2] == worker_id
