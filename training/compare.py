"""Compare a candidate model's evaluation with the shipped model's, by a rule written down before the evaluation.

``python -m training.compare models/qc-v4.metrics.json runs/NAME/eval/metrics.json [limits]``

Both files are written by ``python -m training.evaluate``. The real-data rules count only the clean real series that
are held out from *both* models (``in_far`` in both files: used neither for training nor for choosing thresholds), so
two models trained on different real heads are judged on the same series. The rules:

1. real clean series and volumes flagged: at most ``--max-series`` / ``--max-volumes`` (default: the baseline's);
   the volumes with real head motion (volume 2 of the Siemens two-volume series) are not clean and do not count;
2. real motion ranking: the moving volume scores above the still one in at least ``--min-motion-rank`` of the
   Siemens series (default: the baseline's; ``--min-motion-rank 0`` reports the ranking without a veto);
3. clean false-alarm rate of every artifact on the held-out synthetic test set at most ``--max-far`` (default: the
   baseline's worst);
4. moderate-severity ROC AUC of no artifact more than ``--max-auc-loss`` below the baseline's (default 0.02);
5. what the candidate was made for, when given: ``--require-gain ARTIFACT:BAND:DELTA`` (repeatable), that band's
   ROC AUC at least ``DELTA`` above the baseline's (``motion:mild:0.05``);
6. the manifest's outcomes: every real volume the evaluation scores is one ``shared/data/manifest.json`` says the
   node must score, so at most ``--max-ood`` of them (default 0) may end "out of distribution" (counted over all of
   them, used for training or not: the node has to score them all).

Exit status 0 when the candidate passes every rule, 1 when it breaks one. Synthetic metrics compare directly only
when both evaluations used the same test cases (same ``training.evaluate`` options and seed).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.evaluate import SIEMENS_REAL_MOTION, has_real_motion


@dataclass(frozen=True)
class RuleResult:
    rule: str
    baseline: str
    candidate: str
    limit: str
    passed: bool


@dataclass(frozen=True)
class RealCount:
    series: int
    flagged_series: tuple[str, ...]
    volumes: int
    flagged_volumes: tuple[str, ...]


def common_series(baseline: Mapping[str, Any], candidate: Mapping[str, Any]) -> set[str]:
    """Series counted in the real false-alarm figures of both evaluations."""
    def held(m: Mapping[str, Any]) -> set[str]:
        return {v["series"] for v in m["real"]["volumes"] if v["in_far"]}
    return held(baseline) & held(candidate)


def real_count(metrics: Mapping[str, Any], series: set[str]) -> RealCount:
    rows = [v for v in metrics["real"]["volumes"] if v["series"] in series
            and not has_real_motion(v["series"], v["index"])]
    flagged = [v for v in rows if v["flags"]]
    return RealCount(
        series=len({v["series"] for v in rows}),
        flagged_series=tuple(sorted({v["series"] for v in flagged})),
        volumes=len(rows),
        flagged_volumes=tuple(f"{v['series']}#{v['index']}: {', '.join(v['flags'])}" for v in flagged),
    )


def out_of_distribution(metrics: Mapping[str, Any]) -> list[str]:
    """The real volumes (all of which the manifest says to score) that the model's gate ends as unlike its data."""
    return [f"{v['series']}#{v['index']}: {v['ood']}" for v in metrics["real"]["volumes"] if v.get("ood")]


def _far(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {a: float(p["far_clean"]) for a, p in metrics["synthetic"]["per_artifact"].items()}


def _moderate_auc(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {a: float(p["moderate"]["auc"]) for a, p in metrics["synthetic"]["per_artifact"].items()}


def compare(baseline: Mapping[str, Any], candidate: Mapping[str, Any], max_series: int | None = None,
            max_volumes: int | None = None, min_motion_rank: int | None = None, max_far: float | None = None,
            max_auc_loss: float = 0.02, gains: Sequence[Gain] = (), max_ood: int = 0) -> list[RuleResult]:
    """The rules (module docstring); a limit left ``None`` is the baseline's own figure."""
    series = common_series(baseline, candidate)
    b, c = real_count(baseline, series), real_count(candidate, series)
    lim_series = len(b.flagged_series) if max_series is None else max_series
    lim_volumes = len(b.flagged_volumes) if max_volumes is None else max_volumes
    results = [
        RuleResult("real clean series flagged", f"{len(b.flagged_series)} of {b.series}",
                   f"{len(c.flagged_series)} of {c.series}", f"<= {lim_series}", len(c.flagged_series) <= lim_series),
        RuleResult("real clean volumes flagged", f"{len(b.flagged_volumes)} of {b.volumes}",
                   f"{len(c.flagged_volumes)} of {c.volumes}", f"<= {lim_volumes}",
                   len(c.flagged_volumes) <= lim_volumes),
    ]
    b_ood, c_ood = len(out_of_distribution(baseline)), len(out_of_distribution(candidate))
    n_real = len(candidate["real"]["volumes"])
    results.append(RuleResult("real volumes to score ended out of distribution", f"{b_ood} of "
                              f"{len(baseline['real']['volumes'])}", f"{c_ood} of {n_real}", f"<= {max_ood}",
                              c_ood <= max_ood))
    b_rank, c_rank = int(baseline["real"]["siemens_vol2_worse"]), int(candidate["real"]["siemens_vol2_worse"])
    lim_rank = b_rank if min_motion_rank is None else min_motion_rank
    n_motion = len(SIEMENS_REAL_MOTION)
    results.append(RuleResult("real motion ranked", f"{b_rank} of {n_motion}", f"{c_rank} of {n_motion}",
                              f">= {lim_rank}", c_rank >= lim_rank))
    b_far, c_far = _far(baseline), _far(candidate)
    lim_far = max(b_far.values()) if max_far is None else max_far
    worst = max(c_far, key=lambda a: c_far[a])
    results.append(RuleResult("worst synthetic clean false-alarm rate", f"{max(b_far.values()):.1%}",
                              f"{c_far[worst]:.1%} ({worst})", f"<= {lim_far:.1%}", c_far[worst] <= lim_far + 1e-9))
    b_auc, c_auc = _moderate_auc(baseline), _moderate_auc(candidate)
    for a in b_auc:
        results.append(RuleResult(f"moderate AUC {a}", f"{b_auc[a]:.3f}", f"{c_auc[a]:.3f}",
                                  f">= {b_auc[a] - max_auc_loss:.3f}", c_auc[a] >= b_auc[a] - max_auc_loss - 1e-9))
    for g in gains:
        b_g = float(baseline["synthetic"]["per_artifact"][g.artifact][g.band]["auc"])
        c_g = float(candidate["synthetic"]["per_artifact"][g.artifact][g.band]["auc"])
        results.append(RuleResult(f"{g.band} AUC {g.artifact} gain", f"{b_g:.3f}", f"{c_g:.3f}",
                                  f">= {b_g + g.delta:.3f}", c_g >= b_g + g.delta - 1e-9))
    return results


@dataclass(frozen=True)
class Gain:
    artifact: str
    band: str
    delta: float

    @classmethod
    def parse(cls, text: str) -> Gain:
        """``ARTIFACT:BAND:DELTA``, e.g. ``motion:mild:0.05``."""
        try:
            artifact, band, delta = text.split(":")
            return cls(artifact, band, float(delta))
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"expected ARTIFACT:BAND:DELTA, got {text!r}") from e


def motion_pairs(baseline: Mapping[str, Any], candidate: Mapping[str, Any]) -> list[str]:
    """The real-motion ranking behind rule 2, pair by pair: motion probability of the still and the moving volume.

    The rule counts a pair as ranked when the moving volume scores higher by any amount; the margins show how
    much of a ranking rests on differences smaller than the scores' own spread.
    """
    lines = ["| Siemens series | baseline still | baseline moving | candidate still | candidate moving |",
             "|---|---|---|---|---|"]
    b_pairs = baseline["real"].get("siemens_motion_vol1_vs_vol2", {})
    c_pairs = candidate["real"].get("siemens_motion_vol1_vs_vol2", {})

    def cell(pairs: Mapping[str, Mapping[str, float]], series: str, key: str) -> str:
        value = pairs.get(series, {}).get(key)
        return "-" if value is None else f"{value:.3f}"

    for series in SIEMENS_REAL_MOTION:
        if series in b_pairs or series in c_pairs:
            lines.append(f"| {series} | {cell(b_pairs, series, 'vol1')} | {cell(b_pairs, series, 'vol2')} | "
                         f"{cell(c_pairs, series, 'vol1')} | {cell(c_pairs, series, 'vol2')} |")
    return lines if len(lines) > 2 else []


def report(results: Sequence[RuleResult], baseline: Mapping[str, Any], candidate: Mapping[str, Any]) -> str:
    series = common_series(baseline, candidate)
    lines = ["| rule | baseline | candidate | limit | |", "|---|---|---|---|---|"]
    lines += [f"| {r.rule} | {r.baseline} | {r.candidate} | {r.limit} | {'pass' if r.passed else 'FAIL'} |"
              for r in results]
    lines += ["", f"Real clean series held out from both ({len(series)}): {', '.join(sorted(series))}"]
    for name, m in (("baseline", baseline), ("candidate", candidate)):
        lines.append(f"Flagged by the {name}: {'; '.join(real_count(m, series).flagged_volumes) or 'none'}")
    for name, m in (("baseline", baseline), ("candidate", candidate)):
        lines.append(f"Out of distribution for the {name}: {'; '.join(out_of_distribution(m)) or 'none'}")
    pairs = motion_pairs(baseline, candidate)
    if pairs:
        lines += ["", *pairs]
    verdict = "passes every rule" if all(r.passed for r in results) else (
        "breaks " + ", ".join(r.rule for r in results if not r.passed))
    lines += ["", f"Candidate {candidate.get('model', '?')} {candidate.get('version', '')}: {verdict}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("baseline", type=Path, help="metrics.json of the shipped model")
    p.add_argument("candidate", type=Path, help="metrics.json of the candidate")
    p.add_argument("--max-series", type=int)
    p.add_argument("--max-volumes", type=int)
    p.add_argument("--min-motion-rank", type=int, help="default: the baseline's ranking; 0 reports it only")
    p.add_argument("--max-far", type=float)
    p.add_argument("--max-auc-loss", type=float, default=0.02)
    p.add_argument("--max-ood", type=int, default=0,
                   help="real volumes the manifest says to score that may end out of distribution (default 0)")
    p.add_argument("--require-gain", type=Gain.parse, action="append", default=[], metavar="ARTIFACT:BAND:DELTA",
                   help="the candidate's AUC in that band at least DELTA above the baseline's")
    args = p.parse_args(argv)
    baseline = json.loads(args.baseline.read_text())
    candidate = json.loads(args.candidate.read_text())
    results = compare(baseline, candidate, args.max_series, args.max_volumes, args.min_motion_rank, args.max_far,
                      args.max_auc_loss, args.require_gain, args.max_ood)
    print(report(results, baseline, candidate))
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
