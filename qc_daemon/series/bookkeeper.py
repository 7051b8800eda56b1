"""The bookkeeper role: index what the receivers spooled, and complete series after their quiet period.

It is the only writer of instances, series identity and quarantine rows, so the receivers never touch the
database. At start (before any receiver runs) :meth:`Bookkeeper.reconcile` brings the database up to date with the
spool: every instance acknowledged before a crash is indexed, and jobs left ``processing`` go back to the queue.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.orm import Session, sessionmaker

from qc_daemon.config import Settings
from qc_daemon.ingest.events import QuarantinedFile, SpooledInstance
from qc_daemon.ingest.spool import Spool
from qc_daemon.logs import series_logger
from qc_daemon.series.headers import InstanceRecord, InvalidInstance, read_instance
from qc_daemon.store.db import transaction
from qc_daemon.store.indexing import (
    instance_counts,
    known_instance_uids,
    quarantined_names,
    record_instances,
    record_quarantine,
)
from qc_daemon.store.jobs import complete_quiet_series, requeue_processing

log = logging.getLogger(__name__)

Event = SpooledInstance | QuarantinedFile


class EventSource(Protocol):
    def get(self, block: bool = True, timeout: float | None = None) -> Event: ...


@dataclass(frozen=True)
class ReconcileReport:
    temp_files_removed: int
    instances_indexed: int
    quarantined: int
    requeued: list[str]
    failed: list[str]


class Bookkeeper:
    def __init__(self, settings: Settings, factory: sessionmaker[Session], spool: Spool) -> None:
        self.settings = settings
        self.factory = factory
        self.spool = spool

    # --- indexing
    def _read(self, path: Path, calling_ae: str, received_at: datetime, sop_uid: str) -> InstanceRecord | None:
        if not path.exists():  # already quarantined by an earlier, interrupted attempt
            log.warning("spooled file is gone", extra={"series_uid": path.parent.name, "calling_ae": calling_ae})
            return None
        try:
            return read_instance(path, self.spool.spool_dir, calling_ae, received_at)
        except InvalidInstance as exc:
            reason = str(exc)
            size = path.stat().st_size if path.exists() else 0
            target = self.spool.move_to_quarantine(path, reason, calling_ae=calling_ae, sop_instance_uid=sop_uid)
            with transaction(self.factory) as session:
                record_quarantine(
                    session,
                    file_name=target.name,
                    reason=reason,
                    calling_ae=calling_ae,
                    sop_instance_uid=sop_uid,
                    series_uid=path.parent.name,
                    size=size,
                    received_at=received_at,
                )
            log.warning(
                "instance quarantined",
                extra={"series_uid": path.parent.name, "calling_ae": calling_ae, "reason": reason, "file": target.name},
            )
            return None

    def handle(self, events: Sequence[Event]) -> int:
        """Index a batch of receiver events; return the number of new instances."""
        records: list[InstanceRecord] = []
        quarantined: list[QuarantinedFile] = []
        for event in events:
            if isinstance(event, QuarantinedFile):
                quarantined.append(event)
                continue
            if event.duplicate:
                continue
            received = datetime.fromtimestamp(event.received_at, UTC)
            record = self._read(Path(event.path), event.calling_ae, received, event.sop_instance_uid)
            if record is not None:
                records.append(record)
        for q in quarantined:
            with transaction(self.factory) as session:
                record_quarantine(
                    session,
                    file_name=Path(q.path).name,
                    reason=q.reason,
                    calling_ae=q.calling_ae,
                    sop_instance_uid=q.sop_instance_uid,
                    series_uid=q.series_uid,
                    size=q.size,
                    received_at=datetime.fromtimestamp(q.received_at, UTC),
                )
        return self._record(records)

    def _record(self, records: Sequence[InstanceRecord]) -> int:
        if not records:
            return 0
        with transaction(self.factory) as session:
            result = record_instances(session, records, self.settings.protocol_map)
        by_series: dict[str, InstanceRecord] = {r.series_uid: r for r in records}
        for uid in result.new_series:
            first = by_series[uid]
            series_logger(log, series_uid=uid, calling_ae=first.calling_ae, scanner=first.station_name).info(
                "series receiving", extra={"modality": first.modality, "sop_class_uid": first.sop_class_uid}
            )
        for uid in result.reopened_series:
            first = by_series[uid]
            series_logger(log, series_uid=uid, calling_ae=first.calling_ae, scanner=first.station_name).info(
                "series reopened by new instances after completion"
            )
        return result.new_instances

    # --- completion
    def complete_due(self) -> int:
        with transaction(self.factory) as session:
            completed = complete_quiet_series(session, self.settings.series_quiet_seconds)
        for item in completed:
            series_logger(log, series_uid=item.series_uid, calling_ae=item.calling_ae).info(
                "series complete", extra={"instances": item.instance_count}
            )
        return len(completed)

    # --- reconciliation: the spool is the truth, the database catches up
    def _index_missing(self, series_dirs: Iterable[Path]) -> tuple[int, int]:
        """Index the files of ``series_dirs`` that the database lacks; return (indexed, quarantined)."""
        with self.factory() as session:
            counts = instance_counts(session)
        indexed = quarantined = 0
        for folder in series_dirs:
            files = sorted(folder.glob("*.dcm"))
            if len(files) <= counts.get(folder.name, 0):
                continue  # every spooled file of this series is indexed already
            with self.factory() as session:
                known = known_instance_uids(session, folder.name)
            missing = [f for f in files if f.stem not in known]
            records: list[InstanceRecord] = []
            for path in missing:
                try:
                    received = datetime.fromtimestamp(path.stat().st_mtime, UTC)
                except FileNotFoundError:
                    continue
                record = self._read(path, "", received, path.stem)
                if record is None:
                    quarantined += 1
                else:
                    records.append(record)
            for start in range(0, len(records), 500):
                indexed += self._record(records[start : start + 500])
            if missing:
                series_logger(log, series_uid=folder.name).info(
                    "reconciled spooled instances missing from the database", extra={"instances": len(missing)}
                )
        return indexed, quarantined

    def _series_dirs(self, modified_between: tuple[float, float] | None = None) -> list[Path]:
        found = []
        with os.scandir(self.spool.spool_dir) as entries:
            for entry in entries:
                if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                    continue
                if modified_between is not None:
                    try:
                        mtime = entry.stat(follow_symlinks=False).st_mtime
                    except FileNotFoundError:
                        continue
                    if not modified_between[0] <= mtime < modified_between[1]:
                        continue
                found.append(Path(entry.path))
        return found

    def _reconcile_quarantine(self, since: float = 0.0) -> int:
        """Record quarantined files whose database row is missing (their event was lost); return how many."""
        reasons: dict[str, dict[str, Any]] = {}
        for path in self.spool.quarantine_dir.glob("*.json"):
            try:
                if path.stat().st_mtime < since:
                    continue
                reasons[path.with_suffix(".dcm").name] = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
        if not reasons:
            return 0
        added = 0
        with transaction(self.factory) as session:
            known = quarantined_names(session, reasons)
            for name, info in reasons.items():
                if name in known:
                    continue
                record_quarantine(
                    session,
                    file_name=name,
                    reason=str(info.get("reason", "")),
                    calling_ae=str(info.get("calling_ae", "")),
                    sop_instance_uid=str(info.get("sop_instance_uid", "")),
                    series_uid=str(info.get("series_uid", "")),
                    size=int(info.get("size", 0) or 0),
                    received_at=datetime.fromtimestamp(float(info.get("quarantined_at", 0) or 0), UTC),
                )
                added += 1
        return added

    def reconcile(self, requeue_jobs: bool = True) -> ReconcileReport:
        """Make the database agree with the spool after a stop or a crash.

        ``requeue_jobs`` puts every ``processing`` job back in the queue: only right for a start with no worker
        running (the supervisor does it itself before it starts workers).
        """
        removed = self.spool.clean_tmp()
        indexed, quarantined = self._index_missing(self._series_dirs())
        quarantined += self._reconcile_quarantine()
        requeued: list[str] = []
        failed: list[str] = []
        if requeue_jobs:
            requeued, failed = requeue_all(self.factory, self.settings.max_job_attempts)
        report = ReconcileReport(removed, indexed, quarantined, requeued, failed)
        log.info(
            "reconciled spool and database",
            extra={
                "temp_files_removed": removed,
                "instances_indexed": indexed,
                "quarantined": quarantined,
                "jobs_requeued": len(requeued),
                "jobs_failed": len(failed),
            },
        )
        return report

    def rescan(self, since: float, settle_seconds: float = 5.0) -> int:
        """Index files of series folders changed since ``since`` whose events never came (a receiver killed
        between writing and reporting); folders changed in the last ``settle_seconds`` wait for their events."""
        now = time.time()
        indexed, _ = self._index_missing(self._series_dirs((since, now - settle_seconds)))
        self._reconcile_quarantine(since)
        if indexed:
            log.warning("indexed spooled instances whose events were lost", extra={"instances": indexed})
        return indexed

    # --- the role's loop
    def run(
        self, events: EventSource, stop: threading.Event, tick_seconds: float = 0.25, rescan_seconds: float = 30.0
    ) -> None:
        """Index events as they come and complete quiet series; a database outage is retried, never dropped.

        Every ``rescan_seconds`` the series folders changed since the last rescan are checked against the database,
        so an instance whose event was lost (its receiver killed after the write) is still indexed.
        """
        next_tick = 0.0
        rescanned_to = time.time() - 60.0
        next_rescan = time.time() + rescan_seconds
        pending: list[Event] = []
        backoff = tick_seconds
        while not stop.is_set():
            if not pending:
                pending = _drain(events, timeout=tick_seconds, limit=256)
            if pending:
                try:
                    self.handle(pending)
                    pending = []
                    backoff = tick_seconds
                except Exception as exc:
                    log.error(
                        "indexing failed; retrying (the files are safe in the spool)",
                        extra={"error": f"{type(exc).__name__}: {exc}", "pending": len(pending), "retry_s": backoff},
                    )
                    stop.wait(backoff)
                    backoff = min(backoff * 2, 30.0)
                    continue
            if time.time() >= next_rescan:
                try:
                    self.rescan(since=rescanned_to)
                    rescanned_to = time.time() - 5.0 - 1.0  # overlap the settle window
                except Exception:
                    log.exception("rescanning the spool failed; will retry")
                next_rescan = time.time() + rescan_seconds
            now = time.monotonic()
            if now >= next_tick:
                next_tick = now + tick_seconds
                try:
                    self.complete_due()
                except Exception:
                    log.exception("completing series failed; will retry")
        self._drain_on_stop(events, pending)
        log.info("bookkeeper stopped")

    def _drain_on_stop(self, events: EventSource, pending: list[Event], budget_s: float = 5.0) -> None:
        """Index what the receivers already queued before stopping (the rest is found again at start)."""
        deadline = time.monotonic() + budget_s
        while time.monotonic() < deadline:
            pending = pending + _drain(events, timeout=0.2, limit=256)
            if not pending:
                return
            try:
                self.handle(pending)
            except Exception:
                log.warning("could not index the last events; they are reconciled at the next start")
                return
            pending = []


def requeue_all(factory: sessionmaker[Session], max_attempts: int) -> tuple[list[str], list[str]]:
    """At start, with no worker running: every ``processing`` job goes back to the queue (or fails)."""
    with transaction(factory) as session:
        requeued, failed = requeue_processing(session, max_attempts, reason="node stopped (restart)")
    for uid in requeued:
        series_logger(log, series_uid=uid).info("job requeued after restart")
    for uid in failed:
        series_logger(log, series_uid=uid).error("job failed: out of attempts after restarts")
    return requeued, failed


def _drain(events: EventSource, timeout: float, limit: int) -> list[Event]:
    batch: list[Event] = []
    try:
        batch.append(events.get(timeout=timeout))
    except queue.Empty:
        return batch
    except (EOFError, OSError):
        time.sleep(timeout)
        return batch
    while len(batch) < limit:
        try:
            batch.append(events.get(block=False))
        except (queue.Empty, EOFError, OSError):
            break
    return batch
