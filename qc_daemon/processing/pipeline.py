"""Convert and score one series: files in, :class:`SeriesOutcome` out (no database, no side effects).

Used by the worker role and by ``qc-daemon score`` alike, so both give the same answer for the same files.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import SimpleITK as sitk

from qc_daemon.imaging.convert import ConversionError, ConversionRules, ConvertedVolume, PlannedVolume, plan_series
from qc_daemon.processing.outcome import SeriesOutcome, VolumeOutcome
from qc_daemon.scoring.model import QCModel, VolumeScore, combine_volume_scores
from qc_daemon.store.models import SeriesStatus

log = logging.getLogger(__name__)


def thresholds_for_site(overrides: Mapping[str, Mapping[str, float]], *site_keys: str) -> dict[str, float]:
    """Per-site threshold overrides: ``'*'`` first, then each matching site key (station, AE, scanner key)."""
    merged: dict[str, float] = dict(overrides.get("*", {}))
    for key in site_keys:
        if key and key in overrides:
            merged.update(overrides[key])
    return merged


def _summarise_skips(reasons: Sequence[str]) -> str:
    counts = Counter(reasons)
    parts = [f"{reason} ({n} volume{'s' if n > 1 else ''})" if n > 1 else reason for reason, n in counts.items()]
    return "all volumes skipped: " + "; ".join(parts)


def _volume_outcome(
    index: int, label: str, split_key: Mapping[str, str], image: sitk.Image, score: VolumeScore
) -> VolumeOutcome:
    ood = score.out_of_distribution
    return VolumeOutcome(
        index=index,
        label=label,
        split_key=dict(split_key),
        scored=ood is None,
        skip_reason=f"out of distribution: {ood}" if ood else None,
        n_slices=int(image.GetSize()[2]),
        shape=[int(v) for v in image.GetSize()],
        spacing=[round(float(v), 4) for v in image.GetSpacing()],
        probabilities=dict(score.probabilities),
        rescan_score=score.rescan_score,
        flags=list(score.flags) if ood is None else [],
        severity=dict(score.severity) if score.severity else None,
        driving_slices=list(score.driving_slices),
        timings=dict(score.timings),
        out_of_distribution=ood,
    )


class ConvertClock:
    """Accumulates the time spent decoding volumes (conversion) while they are scored one at a time."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds

    def timed_loads(self, planned: Sequence[PlannedVolume]) -> Iterator[ConvertedVolume]:
        for volume in planned:
            started = time.perf_counter()
            loaded = volume.load()
            self.seconds += time.perf_counter() - started
            yield loaded


def score_volumes(
    volumes: Iterable[ConvertedVolume],
    model: QCModel,
    thresholds: Mapping[str, float] | None = None,
    warnings: Sequence[str] = (),
    clock: ConvertClock | None = None,
) -> SeriesOutcome:
    """Score every volume conversion kept (one at a time when ``volumes`` is lazy); the series keeps the worst."""
    meta = model.metadata
    provider = model.providers[0] if model.providers else None
    clock = clock or ConvertClock()
    outcomes: list[VolumeOutcome] = []
    scores: list[VolumeScore] = []
    for vol in volumes:
        if vol.image is None:
            outcomes.append(
                VolumeOutcome(
                    index=vol.index,
                    label=vol.label,
                    split_key=dict(vol.split_key),
                    scored=False,
                    skip_reason=vol.skip_reason or "skipped",
                    n_slices=vol.n_slices,
                )
            )
            continue
        score = model.score_volume(vol.image, thresholds)
        outcome = _volume_outcome(vol.index, vol.label, vol.split_key, vol.image, score)
        outcomes.append(outcome)
        if outcome.scored:
            scores.append(score)
    timings = {
        "convert_s": round(clock.seconds, 4),
        "preprocess_s": round(sum(v.timings.get("preprocess_s", 0.0) for v in outcomes), 4),
        "infer_s": round(sum(v.timings.get("infer_s", 0.0) for v in outcomes), 4),
    }
    effective = model.thresholds(thresholds)
    if not scores:
        reasons = [v.skip_reason or "skipped" for v in outcomes] or ["no volumes"]
        status, skip_reason, combined = SeriesStatus.SKIPPED, _summarise_skips(reasons), None
    else:
        status, skip_reason, combined = SeriesStatus.DONE, None, combine_volume_scores(scores)
    return SeriesOutcome(
        status=status,
        volumes=outcomes,
        skip_reason=skip_reason,
        probabilities=dict(combined.probabilities) if combined else None,
        rescan_score=combined.rescan_score if combined else None,
        flags=list(combined.flags) if combined else [],
        thresholds=effective,
        timings=timings,
        warnings=list(warnings),
        model_name=meta.name,
        model_version=meta.version,
        provider=provider,
    )


def process_files(
    files: Sequence[Path],
    model: QCModel,
    rules: ConversionRules,
    thresholds: Mapping[str, float] | None = None,
) -> SeriesOutcome:
    """Plan the series from its headers, then decode and score one volume at a time (memory stays at one volume).

    A conversion error (unreadable header, corrupt pixel data) makes the series ``failed`` with its reason.
    """
    started = time.perf_counter()
    try:
        planned = plan_series(files, rules)
        clock = ConvertClock(time.perf_counter() - started)
        if planned.skip_reason:
            return SeriesOutcome(
                status=SeriesStatus.SKIPPED,
                skip_reason=planned.skip_reason,
                warnings=list(planned.warnings),
                timings={"convert_s": round(clock.seconds, 4)},
            )
        outcome = score_volumes(clock.timed_loads(planned.volumes), model, thresholds, planned.warnings, clock)
    except ConversionError as exc:
        return SeriesOutcome(status=SeriesStatus.FAILED, error=f"conversion failed: {exc}")
    outcome.timings["total_s"] = round(time.perf_counter() - started, 4)
    return outcome
