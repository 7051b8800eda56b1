"""``qc-daemon score``: offline scoring of NIfTI files and DICOM folders, without a running node."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.integration.node import REPO
from tests.integration.test_node_scoring import model_path


def score(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qc_daemon", "score", "--quiet", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_score_nifti_volumes(shared_data: Path) -> None:
    files = sorted((shared_data / "nifti").glob("*.nii.gz"))
    assert len(files) == 4
    proc = score("--json", "--model", model_path(), *map(str, files))
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert [r["path"] for r in results] == [str(f) for f in files]
    for r in results:
        assert r["status"] == "done", r
        assert len(r["volumes"]) == 1 and r["volumes"][0]["status"] == "scored"
        assert set(r["scores"]) == {"motion", "ghosting", "spike", "noise", "bias_field", "blur", "wrap"}


def test_score_a_folder_tree_groups_series(shared_data: Path) -> None:
    root = shared_data / "dicom"
    proc = score(
        "--json", "--model", model_path(), str(root / "philips_enh_fieldmap"), str(root / "ge_dwi_2slice_phantom")
    )
    assert proc.returncode == 0, proc.stderr
    results = {Path(r["path"]).name: r for r in json.loads(proc.stdout)}
    assert results["ge_dwi_2slice_phantom"]["status"] == "skipped"
    assert "too few slices" in results["ge_dwi_2slice_phantom"]["skip_reason"]
    field = results["philips_enh_fieldmap"]
    assert field["status"] == "done" and [v["status"] for v in field["volumes"]].count("scored") == 2


def test_score_errors_are_one_line(tmp_path: Path) -> None:
    proc = score("--model", model_path(), str(tmp_path / "missing"))
    assert proc.returncode == 1 and proc.stderr.strip().count("\n") == 0 and "no such file" in proc.stderr
    proc = score("--model", str(tmp_path / "none.onnx"), str(tmp_path))
    assert proc.returncode == 1 and "model not found" in proc.stderr and "Traceback" not in proc.stderr
