"""Write a series' processing outcome: volumes, scores and the series summary, in one transaction."""

from __future__ import annotations

from sqlalchemy import delete
from sqlalchemy.orm import Session

from qc_daemon.processing.outcome import SeriesOutcome
from qc_daemon.store.jobs import Job, still_current
from qc_daemon.store.models import Score, Series, Volume, VolumeStatus, utcnow


def record_outcome(session: Session, job: Job, worker_id: str, outcome: SeriesOutcome) -> bool:
    """Store ``outcome`` unless the series changed since the job was claimed; return whether it was stored."""
    if not still_current(session, job.series_id, job.generation, worker_id):
        return False
    series = session.get(Series, job.series_id)
    assert series is not None
    session.execute(delete(Score).where(Score.series_id == series.id))
    session.execute(delete(Volume).where(Volume.series_id == series.id))
    session.flush()
    now = utcnow()
    for vol in outcome.volumes:
        row = Volume(
            series_id=series.id,
            index=vol.index,
            label=vol.label,
            split_key=dict(vol.split_key),
            status=VolumeStatus.SCORED if vol.scored else VolumeStatus.SKIPPED,
            skip_reason=vol.skip_reason,
            n_slices=vol.n_slices,
            shape=vol.shape,
            spacing=vol.spacing,
            rescan_score=vol.rescan_score,
            probabilities=vol.probabilities,
            flags=list(vol.flags),
            severity=vol.severity,
            driving_slices=list(vol.driving_slices),
            timings=dict(vol.timings),
            out_of_distribution=vol.out_of_distribution,
        )
        session.add(row)
        session.flush()
        for artifact, probability in (vol.probabilities or {}).items():
            session.add(
                Score(
                    series_id=series.id,
                    volume_id=row.id,
                    artifact=artifact,
                    probability=probability,
                    threshold=outcome.thresholds.get(artifact),
                    flagged=artifact in vol.flags,
                    created_at=now,
                )
            )
    for artifact, probability in (outcome.probabilities or {}).items():
        session.add(
            Score(
                series_id=series.id,
                volume_id=None,
                artifact=artifact,
                probability=probability,
                threshold=outcome.thresholds.get(artifact),
                flagged=artifact in outcome.flags,
                created_at=now,
            )
        )
    series.status = outcome.status
    series.skip_reason = outcome.skip_reason
    series.error = outcome.error
    series.scores = dict(outcome.probabilities) if outcome.probabilities is not None else None
    series.rescan_score = outcome.rescan_score
    series.flags = list(outcome.flags)
    series.model_name = outcome.model_name
    series.model_version = outcome.model_version
    series.provider = outcome.provider
    series.timings = dict(outcome.timings)
    series.finished_at = now
    series.worker = None
    return True
