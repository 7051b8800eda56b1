"""Prometheus metrics, computed from the database and run files at scrape time.

Reading the shared state (rather than counting in one process) gives the same numbers whichever process serves
the scrape and survives restarts. Labels are scanners, protocols, statuses and artifact names: never patients.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from qc_daemon.config import Settings
from qc_daemon.store.models import (
    Instance,
    Quarantined,
    Scanner,
    Score,
    Series,
    SeriesStatus,
    Volume,
    VolumeStatus,
)
from qc_daemon.web.health import HEARTBEAT_STALE_SECONDS


class NodeCollector(Collector):
    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self.sessions = sessions

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        up = GaugeMetricFamily("qc_database_up", "1 when the database answered this scrape")
        try:
            yield from self._from_database()
            up.add_metric([], 1)
        except Exception:
            up.add_metric([], 0)
        yield up
        now = time.time()
        alive = GaugeMetricFamily("qc_receivers_alive", "Receiving processes with a fresh heartbeat")
        alive.add_metric(
            [],
            sum(
                1
                for p in self.settings.run_dir.glob("receiver-*.alive")
                if now - p.stat().st_mtime < HEARTBEAT_STALE_SECONDS
            ),
        )
        yield alive
        try:
            usage = shutil.disk_usage(self.settings.spool_dir)
            disk = GaugeMetricFamily("qc_spool_free_bytes", "Free bytes on the spool's filesystem")
            disk.add_metric([], usage.free)
            yield disk
        except OSError:
            pass

    def _from_database(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        with self.sessions() as session:
            series = GaugeMetricFamily("qc_series", "Series by processing status", labels=["status"])
            for status, n in session.execute(select(Series.status, func.count(Series.id)).group_by(Series.status)):
                series.add_metric([status.value], n)
            yield series
            instances = CounterMetricFamily("qc_instances_received", "Instances received and indexed")
            instances.add_metric([], session.scalar(select(func.count(Instance.id))) or 0)
            yield instances
            quarantined = CounterMetricFamily("qc_quarantined", "Datasets moved to quarantine")
            quarantined.add_metric([], session.scalar(select(func.count(Quarantined.id))) or 0)
            yield quarantined
            flagged = CounterMetricFamily(
                "qc_series_flagged", "Scored series with the artifact over threshold", labels=["artifact", "scanner"]
            )
            rows = session.execute(
                select(Score.artifact, Scanner.key, func.count(Score.id))
                .join(Series, Series.id == Score.series_id)
                .join(Scanner, Scanner.id == Series.scanner_id, isouter=True)
                .where(Score.volume_id.is_(None), Score.flagged.is_(True))
                .group_by(Score.artifact, Scanner.key)
            )
            for artifact, scanner, n in rows:
                flagged.add_metric([artifact, scanner or ""], n)
            yield flagged
            yield skips_by_category(session, Series, "Series skipped, by reason (category)")
            yield skips_by_category(session, Volume, "Volumes not scored, by reason (category)")


def skips_by_category(session: Session, table: type[Series] | type[Volume], documentation: str) -> CounterMetricFamily:
    """``qc_<table>_skipped``: the table's skipped rows counted by reason category (bounded label values)."""
    skipped = SeriesStatus.SKIPPED if table is Series else VolumeStatus.SKIPPED
    counts: Counter[str] = Counter()
    for reason, n in session.execute(
        select(table.skip_reason, func.count(table.id)).where(table.status == skipped).group_by(table.skip_reason)
    ):
        counts[reason_category(reason or "")] += n
    family = CounterMetricFamily(f"qc_{table.__tablename__}_skipped", documentation, labels=["reason"])
    for key, n in sorted(counts.items()):
        family.add_metric([key], n)
    return family


def reason_category(reason: str) -> str:
    """A skip reason without its details: "too few slices: 2 < 10" -> "too few slices" (bounded label values)."""
    reason = reason.removeprefix("all volumes skipped: ")
    head = reason.split(":", 1)[0].split("(", 1)[0].strip().lower()
    return head or "unknown"
