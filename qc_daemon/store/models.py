"""The database schema (SQLAlchemy 2 typed ORM).

No patient names, IDs or birth dates are stored: a series is identified by its UIDs, scanner and protocol.
Changes to this file need an Alembic migration in ``store/migrations/versions``.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class SeriesStatus(enum.StrEnum):
    RECEIVING = "receiving"
    COMPLETE = "complete"
    PROCESSING = "processing"
    DONE = "done"
    SKIPPED = "skipped"
    FAILED = "failed"


FINAL_STATUSES = frozenset({SeriesStatus.DONE, SeriesStatus.SKIPPED, SeriesStatus.FAILED})


class VolumeStatus(enum.StrEnum):
    SCORED = "scored"
    SKIPPED = "skipped"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[Any]: JSON}


class Scanner(Base):
    __tablename__ = "scanners"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(255), unique=True)
    manufacturer: Mapped[str] = mapped_column(String(128), default="")
    model: Mapped[str] = mapped_column(String(128), default="")
    device_serial: Mapped[str] = mapped_column(String(128), default="")
    station_name: Mapped[str] = mapped_column(String(128), default="")
    calling_ae: Mapped[str] = mapped_column(String(16), default="")
    first_seen: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(default=utcnow)

    @property
    def display_name(self) -> str:
        parts = [p for p in (self.manufacturer, self.model, self.station_name or self.device_serial) if p]
        return " ".join(parts) or self.calling_ae or "unknown"


class Protocol(Base):
    __tablename__ = "protocols"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    first_seen: Mapped[datetime] = mapped_column(default=utcnow)


class Study(Base):
    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_uid: Mapped[str] = mapped_column(String(64), unique=True)
    study_date: Mapped[str] = mapped_column(String(8), default="")
    first_seen: Mapped[datetime] = mapped_column(default=utcnow)


class Series(Base):
    __tablename__ = "series"

    id: Mapped[int] = mapped_column(primary_key=True)
    series_uid: Mapped[str] = mapped_column(String(64), unique=True)
    study_id: Mapped[int | None] = mapped_column(ForeignKey("studies.id"))
    scanner_id: Mapped[int | None] = mapped_column(ForeignKey("scanners.id"))
    protocol_id: Mapped[int | None] = mapped_column(ForeignKey("protocols.id"))
    calling_ae: Mapped[str] = mapped_column(String(16), default="")
    modality: Mapped[str] = mapped_column(String(16), default="")
    sop_class_uid: Mapped[str] = mapped_column(String(64), default="")
    series_number: Mapped[int | None] = mapped_column(Integer)
    series_description: Mapped[str] = mapped_column(String(255), default="")
    protocol_name: Mapped[str] = mapped_column(String(255), default="")
    body_part: Mapped[str] = mapped_column(String(64), default="")
    instance_count: Mapped[int] = mapped_column(default=0)

    status: Mapped[SeriesStatus] = mapped_column(
        Enum(SeriesStatus, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e]),
        default=SeriesStatus.RECEIVING,
    )
    generation: Mapped[int] = mapped_column(default=1)
    attempts: Mapped[int] = mapped_column(default=0)
    worker: Mapped[str | None] = mapped_column(String(64))

    first_received_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_received_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    skip_reason: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)

    rescan_score: Mapped[float | None] = mapped_column(Float)
    scores: Mapped[dict[str, Any] | None]
    flags: Mapped[list[Any] | None]
    model_name: Mapped[str | None] = mapped_column(String(128))
    model_version: Mapped[str | None] = mapped_column(String(64))
    provider: Mapped[str | None] = mapped_column(String(64))
    timings: Mapped[dict[str, Any] | None]

    study: Mapped[Study | None] = relationship()
    scanner: Mapped[Scanner | None] = relationship()
    protocol: Mapped[Protocol | None] = relationship()
    volumes: Mapped[list[Volume]] = relationship(
        back_populates="series", cascade="all, delete-orphan", order_by="Volume.index"
    )

    __table_args__ = (
        Index("ix_series_status_completed", "status", "completed_at"),
        Index("ix_series_last_received", "last_received_at"),
        Index("ix_series_scanner_protocol", "scanner_id", "protocol_id"),
    )


class Instance(Base):
    __tablename__ = "instances"

    id: Mapped[int] = mapped_column(primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64), default="")
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64), default="")
    instance_number: Mapped[int | None] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(String(512))
    size: Mapped[int] = mapped_column(default=0)
    calling_ae: Mapped[str] = mapped_column(String(16), default="")
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class Volume(Base):
    __tablename__ = "volumes"

    id: Mapped[int] = mapped_column(primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    label: Mapped[str] = mapped_column(String(255), default="")
    split_key: Mapped[dict[str, Any] | None]
    status: Mapped[VolumeStatus] = mapped_column(
        Enum(VolumeStatus, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e])
    )
    skip_reason: Mapped[str | None] = mapped_column(Text)
    n_slices: Mapped[int] = mapped_column(default=0)
    shape: Mapped[list[Any] | None]
    spacing: Mapped[list[Any] | None]
    rescan_score: Mapped[float | None] = mapped_column(Float)
    probabilities: Mapped[dict[str, Any] | None]
    flags: Mapped[list[Any] | None]
    severity: Mapped[dict[str, Any] | None]
    driving_slices: Mapped[list[Any] | None]
    timings: Mapped[dict[str, Any] | None]
    out_of_distribution: Mapped[str | None] = mapped_column(Text)

    series: Mapped[Series] = relationship(back_populates="volumes")

    __table_args__ = (UniqueConstraint("series_id", "index"),)


class Score(Base):
    """One probability per artifact per series (volume_id NULL) or volume: the table statistics query."""

    __tablename__ = "scores"

    id: Mapped[int] = mapped_column(primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"), index=True)
    volume_id: Mapped[int | None] = mapped_column(ForeignKey("volumes.id", ondelete="CASCADE"))
    artifact: Mapped[str] = mapped_column(String(32))
    probability: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float | None] = mapped_column(Float)
    flagged: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_scores_artifact_created", "artifact", "created_at"),)


class Alert(Base):
    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    level: Mapped[str] = mapped_column(String(16), default="warning")
    artifacts: Mapped[list[Any] | None]
    message: Mapped[str] = mapped_column(Text, default="")
    acknowledged_at: Mapped[datetime | None]
    acknowledged_by: Mapped[str | None] = mapped_column(String(128))


class Feedback(Base):
    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"), index=True)
    volume_id: Mapped[int | None] = mapped_column(ForeignKey("volumes.id", ondelete="SET NULL"))
    artifact: Mapped[str | None] = mapped_column(String(32))
    verdict: Mapped[str] = mapped_column(String(32))
    comment: Mapped[str] = mapped_column(Text, default="")
    author: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Quarantined(Base):
    __tablename__ = "quarantine"

    id: Mapped[int] = mapped_column(primary_key=True)
    file_name: Mapped[str] = mapped_column(String(512), unique=True)
    reason: Mapped[str] = mapped_column(Text)
    calling_ae: Mapped[str] = mapped_column(String(16), default="")
    sop_instance_uid: Mapped[str] = mapped_column(String(64), default="")
    series_uid: Mapped[str] = mapped_column(String(64), default="")
    size: Mapped[int] = mapped_column(default=0)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
