"""``QCModel`` on the shipped model (``models/*.onnx``) and the series combination."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import SimpleITK as sitk

from qc_daemon.artifacts import ARTIFACTS, RESCAN_SCORE
from qc_daemon.imaging.preprocess import PreprocessSpec
from qc_daemon.scoring.model import METADATA_KEY, QCModel, VolumeScore, combine_volume_scores
from tests.models import shipped_evaluation

REPO = Path(__file__).resolve().parents[2]


def shipped_model_path() -> Path:
    models = sorted((REPO / "models").glob("*.onnx"))
    assert len(models) == 1, f"expected exactly one shipped model in models/, found {models}"
    return models[0]


@pytest.fixture(scope="module")
def model() -> QCModel:
    return QCModel.load(shipped_model_path())


@pytest.fixture(scope="module")
def mprage(shared_data: Path) -> sitk.Image:
    from training.realdata import read_series

    return read_series(shared_data / "dicom" / "philips_t1_mprage_3d_sag")[0]


def test_shipped_model_is_one_small_file() -> None:
    path = shipped_model_path()
    assert path.stat().st_size < 8 * 1024 * 1024
    assert not path.with_name(path.name + ".data").exists()
    onnx.checker.check_model(onnx.load(str(path)))


def test_shipped_model_comes_with_its_evaluation(model: QCModel) -> None:
    """The model card's numbers and the node tests' expectations come from this file, made for this model."""
    path = shipped_model_path()
    metrics = shipped_evaluation(path)
    assert (metrics["model"], metrics["version"]) == (model.metadata.name, model.metadata.version)
    per_artifact = metrics["synthetic"]["per_artifact"]
    assert set(per_artifact) == set(ARTIFACTS)
    for entry in per_artifact.values():
        assert {"mild", "moderate", "severe"} <= set(entry) and 0.0 <= entry["far_clean"] <= 1.0
    assert (REPO / "models" / "README.md").read_text().count(path.name) >= 1


def test_metadata(model: QCModel) -> None:
    meta = model.metadata
    assert meta.name and re.fullmatch(r"\d+\.\d+\.\d+", meta.version)
    assert meta.artifacts == ARTIFACTS
    assert set(meta.thresholds) == {*ARTIFACTS, RESCAN_SCORE}
    assert all(0.0 < t < 1.0 for t in meta.thresholds.values())
    assert isinstance(meta.input_spec, PreprocessSpec)
    assert re.fullmatch(r"[0-9a-f]{64}", meta.training_data_hash)
    real = meta.training_data["real_training_volumes"]
    assert real and not any("chris" in n for n in real), "the shipped model is trained on BSD volumes only"
    assert meta.ood.embedding_mean and np.isfinite(meta.ood.embedding_threshold)
    assert model.providers == ["CPUExecutionProvider"]


def test_scores_are_probabilities_and_json(model: QCModel, mprage: sitk.Image) -> None:
    s = model.score_volume(mprage)
    assert s.out_of_distribution is None
    assert set(s.probabilities) == set(ARTIFACTS)
    assert all(0.0 <= p <= 1.0 for p in s.probabilities.values())
    assert 0.0 <= s.rescan_score <= 1.0
    assert s.severity is not None and set(s.severity) == set(ARTIFACTS)
    assert set(s.timings) >= {"preprocess_s", "infer_s"}
    assert len(s.driving_slices) == len(ARTIFACTS)
    for d in s.driving_slices:
        assert d["plane"] in ("axial", "coronal", "sagittal") and d["artifact"] in ARTIFACTS
        assert 0 <= d["index"] < max(mprage.GetSize()) and 0.0 <= d["score"] <= 1.0
    json.loads(json.dumps(s.to_dict()))


def test_scoring_is_deterministic_and_pixel_type_agnostic(model: QCModel, mprage: sitk.Image) -> None:
    a = model.score_volume(mprage)
    b = model.score_volume(mprage)
    c = model.score_volume(sitk.Cast(mprage, sitk.sitkFloat32))  # SimpleITK gives Philips data as float64
    assert a.probabilities == b.probabilities == c.probabilities
    assert a.rescan_score == b.rescan_score == c.rescan_score


def test_clean_real_t1_raises_no_flag(model: QCModel, mprage: sitk.Image) -> None:
    """The held-out Philips MPRAGE is a clean, in-distribution scan (never used in training)."""
    assert model.score_volume(mprage).flags == []


def test_real_head_motion_scores_worse(model: QCModel, shared_data: Path) -> None:
    """Volume 2 of the Siemens EPI series has real head motion: its motion score is higher than volume 1's."""
    from training.realdata import read_series

    worse = 0
    names = ["siemens_epi_ax_mosaic", "siemens_epi_cor_mosaic", "siemens_epi_sag_mosaic",
             "siemens_epi_mb_jpeg_lossless", "siemens_epi_mb_jpeg2000"]
    for name in names:
        v1, v2 = read_series(shared_data / "dicom" / name)
        worse += model.score_volume(v2).probabilities["motion"] > model.score_volume(v1).probabilities["motion"]
    assert worse >= 4, f"volume 2 scored worse on motion in {worse} of 5 series"


def test_threshold_overrides(model: QCModel, mprage: sitk.Image) -> None:
    low = model.score_volume(mprage, {"motion": 0.0, "noise": 0.0})
    assert {"motion", "noise"} <= set(low.flags)
    high = model.score_volume(mprage, {a: 1.01 for a in ARTIFACTS})
    assert high.flags == []
    assert model.thresholds({"not_an_artifact": 0.3}) == model.metadata.thresholds


def _image(arr: np.ndarray, spacing: tuple[float, ...] = (1.0, 1.0, 1.0)) -> sitk.Image:
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    return img


def test_out_of_distribution_gate_rules(model: QCModel) -> None:
    two_d = sitk.Image([64, 64], sitk.sitkFloat32)
    assert "3-D" in (model.score_volume(two_d).out_of_distribution or "")
    thin = _image(np.ones((5, 64, 64), np.float32))
    assert "too few slices" in (model.score_volume(thin).out_of_distribution or "")
    constant = _image(np.zeros((40, 64, 64), np.float32))
    assert "constant" in (model.score_volume(constant).out_of_distribution or "")
    rng = np.random.default_rng(0)
    signed = _image(rng.normal(0, 100, (40, 64, 64)).astype(np.float32), (3.0, 3.0, 3.0))
    res = model.score_volume(signed)
    assert "signed" in (res.out_of_distribution or "") and res.flags == []


def test_unknown_objects_end_with_a_reason_not_a_flag(model: QCModel) -> None:
    """A block of uniform noise is no head: the embedding gate says so and no artifact is flagged."""
    rng = np.random.default_rng(1)
    noise = _image(rng.random((60, 128, 128)).astype(np.float32))
    res = model.score_volume(noise)
    assert res.out_of_distribution is not None and res.flags == []


def _score(probs: dict[str, float], rescan: float, flags: list[str]) -> VolumeScore:
    return VolumeScore(probs, rescan, flags, {a: probs[a] for a in probs}, [], {"preprocess_s": 0.0})


def test_combine_volume_scores_takes_the_worst() -> None:
    a = _score({x: 0.1 for x in ARTIFACTS} | {"motion": 0.9}, 0.8, ["motion"])
    b = _score({x: 0.2 for x in ARTIFACTS} | {"noise": 0.7}, 0.3, ["noise"])
    s = combine_volume_scores([a, b])
    assert s.probabilities["motion"] == 0.9 and s.probabilities["noise"] == 0.7
    assert s.probabilities["blur"] == 0.2
    assert s.rescan_score == 0.8
    assert s.flags == ["motion", "noise"]
    assert s.n_volumes == 2
    assert s.severity is not None and s.severity["motion"] == 0.9
    json.dumps(s.to_dict())
    with pytest.raises(ValueError):
        combine_volume_scores([])


def _fields(obj: Any) -> set[str]:
    return set(obj.__dataclass_fields__)


def test_volume_score_contract() -> None:
    assert _fields(VolumeScore) == {"probabilities", "rescan_score", "flags", "severity", "driving_slices",
                                    "timings", "out_of_distribution"}
    props = {p.key for p in onnx.load(str(shipped_model_path())).metadata_props}
    assert METADATA_KEY in props
