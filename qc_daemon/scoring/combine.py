"""Combine the scores of a series' volumes into the series score: the worst volume per artifact."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from qc_daemon.artifacts import ARTIFACTS


class _Scored(Protocol):
    @property
    def probabilities(self) -> dict[str, float]: ...

    @property
    def rescan_score(self) -> float: ...

    @property
    def flags(self) -> list[str]: ...

    @property
    def severity(self) -> dict[str, float] | None: ...


@dataclass(frozen=True)
class SeriesScore:
    """The series keeps the worst of its volumes: max probability per artifact, max rescan score."""

    probabilities: dict[str, float]
    rescan_score: float
    flags: list[str]
    severity: dict[str, float] | None
    n_volumes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def combine_volume_scores(scores: Sequence[_Scored]) -> SeriesScore:
    """Worst per artifact over the volumes; rescan = max; flags = union (in artifact order).

    Volumes that ended out of distribution should not be passed (they carry no flags and are recorded with
    their reason). Raises ``ValueError`` for an empty sequence.
    """
    if not scores:
        raise ValueError("no volume scores to combine")
    names = [a for a in ARTIFACTS if any(a in s.probabilities for s in scores)]
    probs = {a: max(float(s.probabilities.get(a, 0.0)) for s in scores) for a in names}
    flagged = {f for s in scores for f in s.flags}
    flags = [a for a in ARTIFACTS if a in flagged] + sorted(flagged - set(ARTIFACTS))
    sev_scores = [s.severity for s in scores if s.severity]
    severity = None
    if sev_scores:
        keys = [a for a in ARTIFACTS if any(a in s for s in sev_scores)]
        severity = {a: max(float(s.get(a, 0.0)) for s in sev_scores) for a in keys}
    return SeriesScore(probs, max(float(s.rescan_score) for s in scores), flags, severity, len(scores))
