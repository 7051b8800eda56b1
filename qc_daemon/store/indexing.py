"""Write indexed instances into the database: studies, scanners, protocols, series and instances.

Idempotent: an instance already recorded (same SOP Instance UID) is not counted again. A new instance for a series
that was already complete (or processed) reopens it: status back to ``receiving``, ``generation`` + 1, so it
completes and is processed again with everything it holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from qc_daemon.series.headers import InstanceRecord
from qc_daemon.series.identity import ScannerIdentity, normalise_protocol
from qc_daemon.store.models import Instance, Protocol, Quarantined, Scanner, Series, SeriesStatus, Study


@dataclass
class IndexResult:
    new_instances: int = 0
    duplicates: int = 0
    new_series: list[str] = field(default_factory=list)
    reopened_series: list[str] = field(default_factory=list)


def _get_or_create_scanner(session: Session, identity: ScannerIdentity, seen: datetime) -> Scanner:
    scanner = session.scalar(select(Scanner).where(Scanner.key == identity.key))
    if scanner is None:
        scanner = Scanner(
            key=identity.key,
            manufacturer=identity.manufacturer,
            model=identity.model,
            device_serial=identity.device_serial,
            station_name=identity.station_name,
            calling_ae=identity.calling_ae,
            first_seen=seen,
            last_seen=seen,
        )
        session.add(scanner)
        session.flush()
    else:
        scanner.last_seen = max(scanner.last_seen, seen)
        if identity.calling_ae:
            scanner.calling_ae = identity.calling_ae
    return scanner


def _get_or_create_protocol(session: Session, name: str) -> Protocol:
    protocol = session.scalar(select(Protocol).where(Protocol.name == name))
    if protocol is None:
        protocol = Protocol(name=name)
        session.add(protocol)
        session.flush()
    return protocol


def _get_or_create_study(session: Session, study_uid: str, study_date: str) -> Study | None:
    if not study_uid:
        return None
    study = session.scalar(select(Study).where(Study.study_uid == study_uid))
    if study is None:
        study = Study(study_uid=study_uid, study_date=study_date)
        session.add(study)
        session.flush()
    return study


def _new_series(session: Session, first: InstanceRecord, protocol_map: Mapping[str, str]) -> Series:
    identity = ScannerIdentity(
        manufacturer=first.manufacturer,
        model=first.manufacturer_model,
        device_serial=first.device_serial,
        station_name=first.station_name,
        calling_ae=first.calling_ae,
    )
    series = Series(
        series_uid=first.series_uid,
        study=_get_or_create_study(session, first.study_uid, first.study_date),
        scanner=_get_or_create_scanner(session, identity, first.received_at),
        protocol=_get_or_create_protocol(
            session, normalise_protocol(first.protocol_name, first.series_description, protocol_map)
        ),
        calling_ae=first.calling_ae,
        modality=first.modality,
        sop_class_uid=first.sop_class_uid,
        series_number=first.series_number,
        series_description=first.series_description,
        protocol_name=first.protocol_name,
        body_part=first.body_part,
        status=SeriesStatus.RECEIVING,
        first_received_at=first.received_at,
        last_received_at=first.received_at,
        instance_count=0,
    )
    session.add(series)
    session.flush()
    return series


def record_instances(
    session: Session, records: Sequence[InstanceRecord], protocol_map: Mapping[str, str] | None = None
) -> IndexResult:
    """Record a batch of instances in the current transaction."""
    result = IndexResult()
    by_series: dict[str, list[InstanceRecord]] = {}
    for record in records:
        by_series.setdefault(record.series_uid, []).append(record)
    for series_uid, group in by_series.items():
        uids = [r.sop_instance_uid for r in group]
        known = set(session.scalars(select(Instance.sop_instance_uid).where(Instance.sop_instance_uid.in_(uids))))
        fresh: dict[str, InstanceRecord] = {}
        for record in group:
            if record.sop_instance_uid in known or record.sop_instance_uid in fresh:
                result.duplicates += 1
            else:
                fresh[record.sop_instance_uid] = record
        if not fresh:
            continue
        series = session.scalar(select(Series).where(Series.series_uid == series_uid))
        if series is None:
            series = _new_series(session, group[0], protocol_map or {})
            result.new_series.append(series_uid)
        elif series.status != SeriesStatus.RECEIVING:
            series.status = SeriesStatus.RECEIVING
            series.generation += 1
            series.completed_at = None
            series.attempts = 0
            result.reopened_series.append(series_uid)
        for record in fresh.values():
            session.add(
                Instance(
                    series_id=series.id,
                    sop_instance_uid=record.sop_instance_uid,
                    sop_class_uid=record.sop_class_uid,
                    transfer_syntax_uid=record.transfer_syntax_uid,
                    instance_number=record.instance_number,
                    path=record.path,
                    size=record.size,
                    calling_ae=record.calling_ae,
                    received_at=record.received_at,
                )
            )
            series.last_received_at = max(series.last_received_at, record.received_at)
            series.first_received_at = min(series.first_received_at, record.received_at)
        session.flush()
        series.instance_count = (
            session.scalar(select(func.count(Instance.id)).where(Instance.series_id == series.id)) or 0
        )
        result.new_instances += len(fresh)
    return result


def known_instance_uids(session: Session, series_uid: str) -> set[str]:
    rows = session.scalars(
        select(Instance.sop_instance_uid)
        .join(Series, Series.id == Instance.series_id)
        .where(Series.series_uid == series_uid)
    )
    return set(rows)


def instance_counts(session: Session) -> dict[str, int]:
    """Series UID -> number of indexed instances, for every series (one query)."""
    rows = session.execute(
        select(Series.series_uid, func.count(Instance.id))
        .join(Instance, Instance.series_id == Series.id)
        .group_by(Series.series_uid)
    ).all()
    return {uid: int(n) for uid, n in rows}


def record_quarantine(
    session: Session,
    *,
    file_name: str,
    reason: str,
    calling_ae: str,
    sop_instance_uid: str,
    series_uid: str,
    size: int,
    received_at: datetime,
) -> None:
    if session.scalar(select(Quarantined.id).where(Quarantined.file_name == file_name)) is not None:
        return
    session.add(
        Quarantined(
            file_name=file_name,
            reason=reason,
            calling_ae=calling_ae,
            sop_instance_uid=sop_instance_uid,
            series_uid=series_uid,
            size=size,
            received_at=received_at,
        )
    )


def quarantined_names(session: Session, names: Iterable[str]) -> set[str]:
    return set(session.scalars(select(Quarantined.file_name).where(Quarantined.file_name.in_(list(names)))))
