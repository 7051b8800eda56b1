"""The node scores: every real series sent with dcmtk ends as ``shared/data/README.md`` says.

These tests run the whole node with one worker and the shipped model (``models/``), or the model named by
``QC_TEST_MODEL`` (to try a candidate model before it ships).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from qc_daemon.roles import default_model_path
from tests.integration.node import Node, final
from tests.peers import dcmsend, dcmtk_env, require_tool, storescu_cmd

pytestmark = pytest.mark.integration

SKIP_CATEGORY = {
    "ge_dwi_2slice_phantom": "too few slices",
    "philips_epi_fmri_phantom": "too few slices",
    "philips_raw_data_object": "not an image",
}


def model_path() -> str:
    path = os.environ.get("QC_TEST_MODEL") or str(default_model_path() or "")
    if not path or not Path(path).is_file():
        raise RuntimeError("no model: ship one in models/ or set QC_TEST_MODEL")
    return path


@pytest.fixture
def scoring_node(make_node: Callable[..., Node]) -> Callable[..., Node]:
    def start(name: str = "scoring", **settings: Any) -> Node:
        settings.setdefault("workers", "1")
        settings.setdefault("series_quiet_seconds", "1")
        return make_node(name, model_path=model_path(), **settings).start()

    return start


def by_uid(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["series_uid"]: r for r in rows}


def test_every_real_series_ends_as_the_readme_says(
    scoring_node: Callable[..., Node], dicom_series: list[dict[str, Any]], shared_data: Path
) -> None:
    node = scoring_node()
    proc = dcmsend(node.dicom_port, [shared_data / "dicom"], calling="MRSCANNER")
    assert proc.returncode == 0, proc.stderr
    node.wait_for(lambda rows: len(rows) == len(dicom_series) and final(rows), timeout=600)
    for entry in dicom_series:
        name = entry["path"].split("/")[-1]
        uid = entry["series_instance_uid"]
        proc = node.cli("series", "show", uid, "--json")
        assert proc.returncode == 0, proc.stderr
        series = json.loads(proc.stdout)
        assert series["instance_count"] == entry["instances"], name
        volumes = series["volumes"]
        if entry["expected"] == "skip":
            assert series["status"] == "skipped", (name, series.get("error"))
            assert SKIP_CATEGORY[name] in series["skip_reason"], (name, series["skip_reason"])
            assert not series["flags"]
            continue
        assert series["status"] == "done", (name, series.get("error"), series.get("skip_reason"))
        assert len(volumes) == entry["volumes"], name
        scored = [v for v in volumes if v["status"] == "scored"]
        assert len(scored) == entry["volumes_scored"], (name, [v["skip_reason"] for v in volumes])
        for v in scored:
            assert set(v["scores"]) == set(series["scores"]) and 0.0 <= v["rescan_score"] <= 1.0
        # the series keeps the worst volume
        for artifact, p in series["scores"].items():
            assert p == pytest.approx(max(v["scores"][artifact] for v in scored)), (name, artifact)
        assert series["model_version"] and series["provider"] == "CPUExecutionProvider"
        assert {"convert_s", "preprocess_s", "infer_s"} <= set(series["timings"])
    # the same volume stored nine times in seven transfer syntaxes scores nine times the same
    nine = next(e for e in dicom_series if e["path"].endswith("siemens_epi_ts_9syntaxes"))
    vols = node.http(f"/api/series/{nine['series_instance_uid']}")[1]["volumes"]
    assert len({tuple(sorted(v["scores"].items())) for v in vols}) == 1
    # skipped volumes carry their reasons
    field = next(e for e in dicom_series if e["path"].endswith("philips_enh_fieldmap"))
    reasons = Counter(v["skip_reason"] for v in node.http(f"/api/series/{field['series_instance_uid']}")[1]["volumes"])
    assert reasons[None] == 2 and reasons["phase image"] == 2
    # every line about a series names it
    for line in node.log_lines():
        if line.get("msg") in ("series scored", "series skipped", "processing series"):
            assert line["series_uid"] and "calling_ae" in line and "scanner" in line


def _compress(tool: str, args: list[str], src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for f in sorted(src.glob("*.dcm")):
        subprocess.run([require_tool(tool), *args, str(f), str(dst / f.name)], check=True, capture_output=True)
    return dst


def test_lossless_compressed_copies_score_like_the_original(
    scoring_node: Callable[..., Node], shared_data: Path, tmp_path: Path
) -> None:
    ge = shared_data / "dicom" / "ge_epi_fmri_phantom"
    t1 = shared_data / "dicom" / "philips_t1_mprage_3d_sag"
    # Each copy keeps the original's SeriesInstanceUID, so each goes to its own node.
    copies = {
        "jpeg-lossless": (_compress("dcmcjpeg", ["+e1", "+un"], t1, tmp_path / "jpl"), ["-xs"]),
        "jpeg-ls": (_compress("dcmcjpls", ["+el", "+un"], ge, tmp_path / "jls"), ["-xt"]),
        "rle": (_compress("dcmcrle", [], t1, tmp_path / "rle"), ["-xr"]),
    }
    originals: dict[Path, dict[str, Any]] = {}
    for src in (ge, t1):
        node = scoring_node(f"orig-{src.name}")
        assert dcmsend(node.dicom_port, [src]).returncode == 0
        rows = node.wait_for(lambda rows: len(rows) == 1 and final(rows), timeout=300)
        originals[src] = rows[0]
        node.stop()
    for name, (folder, flag) in copies.items():
        node = scoring_node(f"copy-{name}")
        cmd = storescu_cmd(node.dicom_port, [folder])
        cmd.insert(1, flag[0])  # propose the compressed syntax
        proc = subprocess.run(cmd, env=dcmtk_env(), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        rows = node.wait_for(lambda rows: len(rows) == 1 and final(rows), timeout=300)
        original = originals[ge if name == "jpeg-ls" else t1]
        assert rows[0]["status"] == original["status"] == "done", (name, rows[0].get("error"))
        assert rows[0]["instance_count"] == original["instance_count"]
        assert rows[0]["scores"] == pytest.approx(original["scores"], abs=1e-5), name
        node.stop()


def _worker_pid(node: Node) -> int:
    pids = [
        ln["child_pid"]
        for ln in node.log_lines()
        if ln.get("msg") == "process started" and ln.get("child") == "worker-0"
    ]
    return int(pids[-1])


def test_corrupt_series_fails_with_reason_and_the_worker_goes_on(
    scoring_node: Callable[..., Node], shared_data: Path, tmp_path: Path
) -> None:
    import pydicom
    from pydicom.encaps import encapsulate, generate_frames

    t1 = sorted((shared_data / "dicom" / "philips_t1_mprage_3d_sag").glob("*.dcm"))[60:80]
    src = tmp_path / "t1"
    src.mkdir()
    for f in t1:
        (src / f.name).write_bytes(f.read_bytes())
    bad = _compress("dcmcjpls", ["+el"], src, tmp_path / "bad")
    victim = sorted(bad.glob("*.dcm"))[7]
    ds = pydicom.dcmread(victim)
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([frame[:20] + b"\x00" * (len(frame) - 20)])  # header kept, coded data zeroed
    ds.save_as(victim)
    node = scoring_node("corrupt")
    cmd = storescu_cmd(node.dicom_port, [bad])
    cmd.insert(1, "-xt")
    proc = subprocess.run(cmd, env=dcmtk_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert dcmsend(node.dicom_port, [shared_data / "dicom" / "siemens_epi_sag_mosaic"]).returncode == 0
    rows = node.wait_for(lambda rows: len(rows) == 2 and final(rows), timeout=300)
    got = {r["instance_count"]: r for r in rows}
    assert got[20]["status"] == "failed", got[20]
    assert got[20]["error"].startswith("conversion failed: cannot decode pixel data"), got[20]["error"]
    assert got[2]["status"] in ("done", "skipped")  # the worker went on


def test_worker_death_is_retried_then_failed(scoring_node: Callable[..., Node], shared_data: Path) -> None:
    node = scoring_node("crash", max_job_attempts="2")
    assert dcmsend(node.dicom_port, [shared_data / "dicom" / "philips_dwi_ax"]).returncode == 0
    killed = 0
    deadline = time.monotonic() + 300
    while killed < 2 and time.monotonic() < deadline:
        # Freeze the worker, then read the status: a job "processing" while its only worker is stopped cannot finish
        # before the kill (the worker records its own result), so each kill is a death during the job, never a kill
        # of an idle worker that had just finished it.
        pid = _worker_pid(node)
        try:
            os.kill(pid, signal.SIGSTOP)
        except ProcessLookupError:  # the supervisor has not logged its replacement yet
            time.sleep(0.05)
            continue
        status = node.http("/api/series")[1]
        if status and status[0]["status"] == "processing":
            os.kill(pid, signal.SIGKILL)
            killed += 1
            while node.http("/api/series")[1][0]["status"] == "processing" and time.monotonic() < deadline:
                time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGCONT)
            time.sleep(0.1)  # let it run most of the time; a job lasts longer than this, so a frozen read meets it
    assert killed == 2
    rows = node.wait_for(lambda rows: final(rows), timeout=60)
    assert rows[0]["status"] == "failed" and "worker process died" in rows[0]["error"], rows[0]
    # the replaced worker serves the next series
    assert dcmsend(node.dicom_port, [shared_data / "dicom" / "ge_epi_fmri_phantom"]).returncode == 0
    node.wait_for(lambda rows: len(rows) == 2 and final(rows))


def test_site_threshold_override_and_flagged_listing(
    scoring_node: Callable[..., Node], shared_data: Path
) -> None:
    # A threshold of 0 for one calling AE flags every series it sends; other senders keep the model's thresholds.
    node = scoring_node("override", threshold_overrides={"STRICTAE": {"noise": 0.0}})
    t1 = shared_data / "dicom" / "philips_t1_mprage_3d_sag"
    assert dcmsend(node.dicom_port, [t1], calling="STRICTAE").returncode == 0
    rows = node.wait_for(lambda rows: len(rows) == 1 and final(rows), timeout=300)
    assert rows[0]["status"] == "done" and "noise" in rows[0]["flags"]
    flagged = json.loads(node.cli("series", "list", "--json", "--flagged").stdout)
    assert [r["series_uid"] for r in flagged] == [rows[0]["series_uid"]]
    assert node.http("/api/series?flagged=true")[1][0]["series_uid"] == rows[0]["series_uid"]
