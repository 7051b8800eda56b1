"""What processing one series produced: plain data, written to the database by ``store.results``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from qc_daemon.store.models import SeriesStatus


@dataclass(frozen=True)
class VolumeOutcome:
    index: int
    label: str
    split_key: dict[str, str]
    scored: bool
    skip_reason: str | None = None
    n_slices: int = 0
    shape: list[int] | None = None
    spacing: list[float] | None = None
    probabilities: dict[str, float] | None = None
    rescan_score: float | None = None
    flags: list[str] = field(default_factory=list)
    severity: dict[str, float] | None = None
    driving_slices: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    out_of_distribution: str | None = None


@dataclass(frozen=True)
class SeriesOutcome:
    status: SeriesStatus
    volumes: list[VolumeOutcome] = field(default_factory=list)
    skip_reason: str | None = None
    error: str | None = None
    probabilities: dict[str, float] | None = None
    rescan_score: float | None = None
    flags: list[str] = field(default_factory=list)
    thresholds: dict[str, float] = field(default_factory=dict)
    model_name: str | None = None
    model_version: str | None = None
    provider: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
