"""Series carrying artifacts made by the training package's simulator, sent with dcmtk, are flagged for them.

The head is a held-out subject (``chris_t1``: never used to train the shipped model); the artifacts come from
``training.artifacts`` at a clear (0.8) severity, through the acquisition simulator with one fixed random
acquisition plan, so the clean and the corrupted series differ only by the artifact.

"Flagged within the model's measured error rates": the model ships with its evaluation
(``models/<name>.metrics.json``, written by ``python -m training.evaluate``). The clean series must raise no flag;
every artifact series must score higher for its artifact than the clean series does; and an artifact must be
flagged wherever the evaluation measured a sensitivity of at least ``MUST_FLAG_SENSITIVITY`` in the severe band
(severity 0.7-1), so a miss there contradicts the model card.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk

from qc_daemon.artifacts import ARTIFACTS
from tests.dicomgen import write_series
from tests.integration.node import Node, final
from tests.models import shipped_evaluation
from tests.peers import dcmtk_env, storescu_cmd

pytestmark = pytest.mark.integration

SEVERITY = 0.8
MUST_FLAG_SENSITIVITY = 0.9


def measured_severe_sensitivity(model: Path) -> dict[str, float]:
    per_artifact = shipped_evaluation(model)["synthetic"]["per_artifact"]
    return {name: float(per_artifact[name]["severe"]["sensitivity"]) for name in ARTIFACTS}


def simulated_series(shared_data: Path, out: Path) -> dict[str, str]:
    """Write the clean series and one series per artifact; return {name: SeriesInstanceUID}."""
    from training.acquisition import plan_acquisition, simulate
    from training.artifacts import make_artifact

    head = sitk.ReadImage(str(shared_data / "nifti" / "t1w_niivue_chris_t1.nii.gz"), sitk.sitkFloat32)
    plan = plan_acquisition(head, np.random.default_rng(2026), kind="3d_anat")
    images = {"clean": simulate(head, plan).image}
    for i, name in enumerate(ARTIFACTS):
        artifact = make_artifact(name, SEVERITY, np.random.default_rng(100 + i))
        images[name] = simulate(head, plan, [artifact]).image
    scale = 3000.0 / float(np.percentile(sitk.GetArrayViewFromImage(images["clean"]), 99.5))
    uids = {}
    for name, image in images.items():
        uids[name] = write_series(image * scale, out / name, series_description=f"sim {name}", station="SIM")
    return uids


def test_simulated_artifacts_are_flagged(make_node: Callable[..., Node], shared_data: Path, tmp_path: Path) -> None:
    from tests.integration.test_node_scoring import model_path

    uids = simulated_series(shared_data, tmp_path / "sim")
    node = make_node("artifacts", model_path=model_path(), workers="1", series_quiet_seconds="1").start()
    proc = subprocess.run(
        storescu_cmd(node.dicom_port, [tmp_path / "sim"]), env=dcmtk_env(), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = node.wait_for(lambda rows: len(rows) == len(uids) and final(rows), timeout=900)
    by_uid: dict[str, dict[str, Any]] = {r["series_uid"]: r for r in rows}
    report = {
        name: (by_uid[uid]["status"], by_uid[uid]["flags"], round(by_uid[uid]["scores"].get(name, -1), 3))
        for name, uid in uids.items()
    }
    assert all(by_uid[uid]["status"] == "done" for uid in uids.values()), report
    clean = by_uid[uids["clean"]]
    assert clean["flags"] == [], report
    weaker = [name for name in ARTIFACTS if by_uid[uids[name]]["scores"][name] <= clean["scores"][name]]
    assert not weaker, (report, clean["scores"])
    sensitivity = measured_severe_sensitivity(Path(model_path()))
    missed = [name for name in ARTIFACTS if name not in by_uid[uids[name]]["flags"]]
    unexpected = [name for name in missed if sensitivity[name] >= MUST_FLAG_SENSITIVITY]
    assert not unexpected, (report, sensitivity)
