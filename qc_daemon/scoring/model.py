"""The daemon side of the model: load the ONNX file once, score volumes (ONNX Runtime, no torch).

One ``.onnx`` file is the whole model: its ``metadata_props`` hold (key ``qc_model``) a JSON document with the
model's name and version, the artifact names in output order, the threshold per artifact and for the rescan
score, the input specification (the preprocessing parameters, shared with training through
``qc_daemon.imaging.preprocess``), the out-of-distribution gate and a description and hash of the training data.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import SimpleITK as sitk

from qc_daemon.artifacts import ARTIFACTS, RESCAN_SCORE
from qc_daemon.imaging.preprocess import PreparedVolume, PreprocessSpec, prepare
from qc_daemon.scoring.combine import SeriesScore, combine_volume_scores

log = logging.getLogger(__name__)

METADATA_KEY = "qc_model"
OUTPUTS = ("probabilities", "rescan", "severity", "slice_probabilities", "embedding")

__all__ = [
    "METADATA_KEY",
    "ModelMetadata",
    "OODGate",
    "QCModel",
    "SeriesScore",
    "VolumeScore",
    "combine_volume_scores",
]


@dataclass(frozen=True)
class OODGate:
    """Rules and statistics that decide a volume is unlike anything the model was trained on."""

    embedding_mean: tuple[float, ...] = ()
    embedding_std: tuple[float, ...] = ()
    embedding_threshold: float = math.inf
    min_slices: int = 10
    min_inplane: int = 32
    max_negative_fraction: float = 0.02
    min_extent_mm: float = 50.0
    max_spacing_mm: float = 10.0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> OODGate:
        return cls(
            embedding_mean=tuple(float(v) for v in d.get("embedding_mean", ())),
            embedding_std=tuple(float(v) for v in d.get("embedding_std", ())),
            embedding_threshold=float(d.get("embedding_threshold", math.inf)),
            min_slices=int(d.get("min_slices", 10)),
            min_inplane=int(d.get("min_inplane", 32)),
            max_negative_fraction=float(d.get("max_negative_fraction", 0.02)),
            min_extent_mm=float(d.get("min_extent_mm", 50.0)),
            max_spacing_mm=float(d.get("max_spacing_mm", 10.0)),
        )

    def distance(self, embedding: np.ndarray) -> float:
        """Root-mean-square z-score of the volume embedding against the training statistics."""
        if not self.embedding_mean:
            return 0.0
        mean = np.asarray(self.embedding_mean, dtype=np.float64)
        std = np.asarray(self.embedding_std, dtype=np.float64)
        return float(np.sqrt(np.mean(((embedding.astype(np.float64) - mean) / std) ** 2)))

    def image_reason(self, image: sitk.Image) -> str | None:
        """Reasons visible from the geometry alone (before preprocessing)."""
        if image.GetDimension() != 3:
            return f"not a 3-D volume ({image.GetDimension()}-D image)"
        size = image.GetSize()
        spacing = image.GetSpacing()
        if min(size) < self.min_slices:
            return f"too few slices ({min(size)} < {self.min_slices})"
        if sorted(size)[1] < self.min_inplane:
            return f"matrix too small ({size[0]}x{size[1]}x{size[2]})"
        if max(spacing) > self.max_spacing_mm:
            return f"voxels too coarse ({max(spacing):.1f} mm > {self.max_spacing_mm} mm)"
        return None

    def stats_reason(self, stats: Mapping[str, float]) -> str | None:
        """Reasons visible from the intensity statistics of the preprocessing."""
        if stats.get("finite_fraction", 1.0) < 0.99:
            return "non-finite voxel values"
        if stats.get("scale", 0.0) <= 0:
            return "empty or constant image"
        neg = stats.get("negative_fraction", 0.0)
        if neg > self.max_negative_fraction:
            return f"signed image ({neg:.0%} negative voxels: a phase, subtraction or parameter map?)"
        extent = max(stats.get("extent_s_mm", 0.0), stats.get("extent_p_mm", 0.0), stats.get("extent_l_mm", 0.0))
        if extent < self.min_extent_mm:
            return f"object too small for a head ({extent:.0f} mm)"
        return None


@dataclass(frozen=True)
class ModelMetadata:
    """What the model file says about itself (``metadata_props['qc_model']``)."""

    name: str
    version: str
    artifacts: tuple[str, ...]
    thresholds: dict[str, float]  # per artifact and RESCAN_SCORE
    input_spec: PreprocessSpec
    training_data: dict[str, Any]
    training_data_hash: str
    ood: OODGate
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, text: str) -> ModelMetadata:
        d = json.loads(text)
        artifacts = tuple(str(a) for a in d["artifacts"])
        if artifacts != ARTIFACTS:
            raise ValueError(f"model artifacts {artifacts} differ from qc_daemon.artifacts.ARTIFACTS {ARTIFACTS}")
        thresholds = {str(k): float(v) for k, v in d["thresholds"].items()}
        missing = [a for a in (*ARTIFACTS, RESCAN_SCORE) if a not in thresholds]
        if missing:
            raise ValueError(f"model metadata lacks thresholds for {missing}")
        return cls(
            name=str(d["name"]),
            version=str(d["version"]),
            artifacts=artifacts,
            thresholds=thresholds,
            input_spec=PreprocessSpec.from_dict(d["input"]["preprocess"]),
            training_data=dict(d.get("training_data", {})),
            training_data_hash=str(d.get("training_data_hash", "")),
            ood=OODGate.from_dict(d.get("ood", {})),
            raw=d,
        )


@dataclass(frozen=True)
class VolumeScore:
    """The model's verdict on one volume (JSON-serialisable with :meth:`to_dict`)."""

    probabilities: dict[str, float]
    rescan_score: float
    flags: list[str]
    severity: dict[str, float] | None
    driving_slices: list[dict[str, Any]]
    timings: dict[str, float]
    out_of_distribution: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class QCModel:
    """An ONNX Runtime session plus the model's metadata; ``score_volume`` is deterministic."""

    def __init__(self, session: ort.InferenceSession, metadata: ModelMetadata, path: Path | None = None) -> None:
        self.session = session
        self.metadata = metadata
        self.path = path
        self.providers: list[str] = list(session.get_providers())
        self._inputs = [i.name for i in session.get_inputs()]

    @classmethod
    def load(
        cls,
        path: Path,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        intra_op_threads: int = 2,
        inter_op_threads: int = 1,
    ) -> QCModel:
        """Load the model file; ``providers`` in order of preference (unavailable ones are left out)."""
        path = Path(path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(intra_op_threads)
        opts.inter_op_num_threads = int(inter_op_threads)
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.use_deterministic_compute = True
        opts.log_severity_level = 3
        available = set(ort.get_available_providers())
        wanted = [p for p in providers if p in available] or ["CPUExecutionProvider"]
        if len(wanted) < len(providers):
            log.warning(
                "onnxruntime providers not available, left out",
                extra={"wanted": list(providers), "available": sorted(available)},
            )
        session = ort.InferenceSession(str(path), sess_options=opts, providers=wanted)
        props = session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in props:
            raise ValueError(f"{path} has no '{METADATA_KEY}' metadata: not a qc_daemon model")
        metadata = ModelMetadata.from_json(props[METADATA_KEY])
        model = cls(session, metadata, path)
        log.info(
            "model loaded", extra={"model": metadata.name, "version": metadata.version, "providers": model.providers}
        )
        return model

    def thresholds(self, overrides: Mapping[str, float] | None = None) -> dict[str, float]:
        """The model's thresholds with per-site overrides applied (unknown names are ignored, with a warning)."""
        out = dict(self.metadata.thresholds)
        for key, value in (overrides or {}).items():
            if key in out:
                out[key] = float(value)
            else:
                log.warning("threshold override for an unknown artifact ignored", extra={"artifact": key})
        return out

    def infer(self, prepared: PreparedVolume) -> dict[str, np.ndarray]:
        """Raw model outputs for a prepared volume."""
        feeds = {self._inputs[0]: prepared.slices, self._inputs[1]: prepared.side}
        outs = self.session.run(list(OUTPUTS), feeds)
        return {name: np.asarray(o) for name, o in zip(OUTPUTS, outs, strict=True)}

    def score_volume(self, image: sitk.Image, threshold_overrides: Mapping[str, float] | None = None) -> VolumeScore:
        """Score one 3-D volume (any pixel type, orientation and spacing)."""
        thresholds = self.thresholds(threshold_overrides)
        gate = self.metadata.ood
        started = time.perf_counter()
        reason = gate.image_reason(image)
        if reason is not None:
            return self._unscored(reason, {"preprocess_s": round(time.perf_counter() - started, 4), "infer_s": 0.0})
        try:
            prepared = prepare(image, self.metadata.input_spec)
        except (RuntimeError, ValueError) as exc:  # SimpleITK raises RuntimeError on unusable geometry
            log.warning("volume could not be preprocessed", extra={"error": str(exc)})
            return self._unscored(
                f"cannot be preprocessed: {exc}"[:200],
                {"preprocess_s": round(time.perf_counter() - started, 4), "infer_s": 0.0},
            )
        t_pre = time.perf_counter() - started
        reason = gate.stats_reason(prepared.stats)
        if reason is not None:
            return self._unscored(reason, {"preprocess_s": round(t_pre, 4), "infer_s": 0.0})
        t0 = time.perf_counter()
        out = self.infer(prepared)
        t_inf = time.perf_counter() - t0
        probs = {a: float(p) for a, p in zip(ARTIFACTS, out["probabilities"].tolist(), strict=True)}
        rescan = float(out["rescan"].reshape(-1)[0])
        severity = {a: round(float(s), 4) for a, s in zip(ARTIFACTS, out["severity"].tolist(), strict=True)}
        distance = gate.distance(out["embedding"])
        if distance > gate.embedding_threshold:
            reason = f"unlike the training data (embedding distance {distance:.2f} > {gate.embedding_threshold:.2f})"
        flags = [] if reason else [a for a in ARTIFACTS if probs[a] >= thresholds[a]]
        return VolumeScore(
            probabilities={a: round(p, 6) for a, p in probs.items()},
            rescan_score=round(rescan, 6),
            flags=flags,
            severity=severity,
            driving_slices=self._driving(prepared, out["slice_probabilities"]),
            timings={
                "preprocess_s": round(t_pre, 4),
                "infer_s": round(t_inf, 4),
                "embedding_distance": round(distance, 4),
            },
            out_of_distribution=reason,
        )

    def _driving(self, prepared: PreparedVolume, slice_probs: np.ndarray) -> list[dict[str, Any]]:
        """Per artifact, the slice with the highest slice-level probability (sorted by that probability)."""
        out: list[dict[str, Any]] = []
        for j, name in enumerate(ARTIFACTS):
            i = int(np.argmax(slice_probs[:, j]))
            pos = prepared.positions[i]
            out.append(
                {
                    "artifact": name,
                    "plane": pos.plane,
                    "index": pos.index,
                    "position_mm": pos.position_mm,
                    "score": round(float(slice_probs[i, j]), 4),
                }
            )
        out.sort(key=lambda d: -float(d["score"]))
        return out

    @staticmethod
    def _unscored(reason: str, timings: dict[str, float]) -> VolumeScore:
        return VolumeScore(
            probabilities={a: 0.0 for a in ARTIFACTS},
            rescan_score=0.0,
            flags=[],
            severity=None,
            driving_slices=[],
            timings=timings,
            out_of_distribution=reason,
        )
