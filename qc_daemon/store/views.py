"""Read models for the command line and the HTTP API: series as JSON-friendly dictionaries."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, exists, func, select
from sqlalchemy.orm import Session, selectinload

from qc_daemon.store.models import Quarantined, Score, Series, SeriesStatus, Volume


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def volume_to_dict(volume: Volume) -> dict[str, Any]:
    return {
        "index": volume.index,
        "label": volume.label,
        "split_key": volume.split_key or {},
        "status": volume.status.value,
        "skip_reason": volume.skip_reason,
        "n_slices": volume.n_slices,
        "shape": volume.shape,
        "spacing": volume.spacing,
        "scores": volume.probabilities or {},
        "rescan_score": volume.rescan_score,
        "flags": volume.flags or [],
        "severity": volume.severity,
        "driving_slices": volume.driving_slices or [],
        "timings": volume.timings or {},
        "out_of_distribution": volume.out_of_distribution,
    }


def series_to_dict(series: Series, with_volumes: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "series_uid": series.series_uid,
        "study_uid": series.study.study_uid if series.study else None,
        "scanner": series.scanner.display_name if series.scanner else None,
        "scanner_key": series.scanner.key if series.scanner else None,
        "protocol": series.protocol.name if series.protocol else None,
        "modality": series.modality,
        "series_number": series.series_number,
        "series_description": series.series_description,
        "calling_ae": series.calling_ae,
        "instance_count": series.instance_count,
        "status": series.status.value,
        "attempts": series.attempts,
        "first_received_at": _iso(series.first_received_at),
        "last_received_at": _iso(series.last_received_at),
        "completed_at": _iso(series.completed_at),
        "started_at": _iso(series.started_at),
        "finished_at": _iso(series.finished_at),
        "scores": series.scores or {},
        "flags": series.flags or [],
        "rescan_score": series.rescan_score,
        "model_name": series.model_name,
        "model_version": series.model_version,
        "provider": series.provider,
        "timings": series.timings or {},
    }
    if series.skip_reason:
        data["skip_reason"] = series.skip_reason
    if series.error:
        data["error"] = series.error
    if with_volumes:
        data["volumes"] = [volume_to_dict(v) for v in series.volumes]
    return data


def _series_query(flagged: bool = False, status: Sequence[str] | None = None) -> Select[Series]:
    query = select(Series).options(
        selectinload(Series.study), selectinload(Series.scanner), selectinload(Series.protocol)
    )
    if status:
        query = query.where(Series.status.in_([SeriesStatus(s) for s in status]))
    if flagged:
        query = query.where(
            exists(select(Score.id).where(Score.series_id == Series.id, Score.volume_id.is_(None), Score.flagged))
        )
    return query


def list_series(
    session: Session,
    *,
    flagged: bool = False,
    status: Sequence[str] | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> list[dict[str, Any]]:
    query = _series_query(flagged, status).order_by(Series.last_received_at.desc(), Series.id.desc())
    if limit is not None:
        query = query.limit(limit)
    if offset:
        query = query.offset(offset)
    rows = session.scalars(query).all()
    return [series_to_dict(s) for s in rows]


def get_series(session: Session, series_uid: str) -> dict[str, Any] | None:
    series = session.scalar(
        select(Series)
        .where(Series.series_uid == series_uid)
        .options(
            selectinload(Series.study),
            selectinload(Series.scanner),
            selectinload(Series.protocol),
            selectinload(Series.volumes),
        )
    )
    return series_to_dict(series, with_volumes=True) if series else None


def list_quarantine(session: Session, limit: int = 100) -> list[dict[str, Any]]:
    rows = session.scalars(select(Quarantined).order_by(Quarantined.received_at.desc()).limit(limit)).all()
    return [
        {
            "file_name": q.file_name,
            "reason": q.reason,
            "calling_ae": q.calling_ae,
            "sop_instance_uid": q.sop_instance_uid,
            "series_uid": q.series_uid,
            "size": q.size,
            "received_at": _iso(q.received_at),
        }
        for q in rows
    ]


def status_counts(session: Session) -> dict[str, int]:
    rows = session.execute(select(Series.status, func.count(Series.id)).group_by(Series.status)).all()
    counts = {s.value: 0 for s in SeriesStatus}
    counts.update({status.value: int(n) for status, n in rows})
    return counts
