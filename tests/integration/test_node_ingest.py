"""The node receives: real peers (dcmtk, Orthanc) send the real shared series to ``qc-daemon serve``.

Workers are off in these tests (``workers=0``) so that series stop at ``complete``: what is checked here is
receiving, indexing and completion, not scoring.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import generate_uid

from tests.integration.node import Node
from tests.peers import Orthanc, dcmsend, dcmtk_env, echoscu, storescu_cmd

pytestmark = pytest.mark.integration


def by_uid(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["series_uid"]: r for r in rows}


def expect_all(node: Node, series: list[dict[str, Any]], status: str = "complete") -> dict[str, dict[str, Any]]:
    expected = {e["series_instance_uid"]: e["instances"] for e in series}

    def ok(rows: list[dict[str, Any]]) -> bool:
        got = by_uid(rows)
        return all(
            uid in got and got[uid]["instance_count"] == n and got[uid]["status"] == status
            for uid, n in expected.items()
        )

    rows = node.wait_for(ok, timeout=180)
    return by_uid(rows)


def test_every_shared_series_over_one_association(
    make_node: Callable[..., Node], dicom_series: list[dict[str, Any]], shared_data: Path
) -> None:
    node = make_node(workers="0").start()
    assert echoscu(node.dicom_port).returncode == 0
    proc = dcmsend(node.dicom_port, [shared_data / "dicom"], calling="MODALITY1")
    assert proc.returncode == 0, proc.stderr
    got = expect_all(node, dicom_series)
    cli = by_uid(node.series())  # the command line reads the same database
    for entry in dicom_series:
        row = cli[entry["series_instance_uid"]]
        assert row["instance_count"] == entry["instances"], entry["path"]
        assert row["modality"] == "MR" or entry["sop_class_uid"] != "1.2.840.10008.5.1.4.1.1.4"
        assert {
            "series_uid",
            "study_uid",
            "scanner",
            "protocol",
            "status",
            "first_received_at",
            "last_received_at",
            "completed_at",
        } <= set(row)
    assert len(got) == len(dicom_series)
    spooled = sum(1 for _ in (node.data_dir / "spool").rglob("*.dcm"))
    assert spooled == sum(e["instances"] for e in dicom_series) == 1027
    lines = [ln for ln in node.log_lines() if ln.get("msg") == "series complete"]
    assert all(ln.get("series_uid") and "calling_ae" in ln for ln in lines) and len(lines) == len(dicom_series)


def test_every_shared_series_over_parallel_associations(
    make_node: Callable[..., Node], dicom_series: list[dict[str, Any]]
) -> None:
    node = make_node(workers="0").start()
    folders = [e["folder"] for e in dicom_series]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda f: dcmsend(node.dicom_port, [f], calling=f"MOD{hash(f) % 97}"), folders))
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results if r.returncode]
    expect_all(node, dicom_series)


def test_enhanced_mr_multiframe(make_node: Callable[..., Node], dicom_series: list[dict[str, Any]]) -> None:
    node = make_node(workers="0").start()
    enhanced = [e for e in dicom_series if e["sop_class_uid"] == "1.2.840.10008.5.1.4.1.1.4.1"]
    assert len(enhanced) == 3
    proc = dcmsend(node.dicom_port, [e["folder"] for e in enhanced])
    assert proc.returncode == 0, proc.stderr
    got = expect_all(node, enhanced)
    for e in enhanced:
        spooled = next((node.data_dir / "spool" / e["series_instance_uid"]).glob("*.dcm"))
        original = next(e["folder"].glob("*.dcm"))
        assert spooled.read_bytes()[132:].endswith(original.read_bytes()[-4096:])  # stored as received
        assert got[e["series_instance_uid"]]["instance_count"] == 1


def test_rejected_calling_ae(make_node: Callable[..., Node], dicom_series: list[dict[str, Any]]) -> None:
    node = make_node(workers="0", allowed_calling_aets="GOODAE").start()
    assert echoscu(node.dicom_port, calling="BADAE").returncode != 0
    bad = dcmsend(node.dicom_port, [dicom_series[0]["folder"]], calling="BADAE")
    assert bad.returncode != 0
    assert echoscu(node.dicom_port, calling="GOODAE").returncode == 0
    time.sleep(1)
    assert node.series() == []
    rejected = [ln for ln in node.log_lines() if "BADAE" in str(ln.get("calling_ae", "")) and ln["level"] == "WARNING"]
    assert rejected, "no log line for the rejected association"


def test_duplicate_instance_is_counted_once(make_node: Callable[..., Node], shared_data: Path) -> None:
    node = make_node(workers="0").start()
    one = shared_data / "dicom" / "philips_t1_mprage_3d_sag" / "0001.dcm"
    for _ in range(3):
        assert dcmsend(node.dicom_port, [one]).returncode == 0
    rows = node.wait_for(lambda rows: len(rows) == 1 and rows[0]["status"] == "complete")
    assert rows[0]["instance_count"] == 1
    assert len(list((node.data_dir / "spool").rglob("*.dcm"))) == 1


def test_full_disk_answers_out_of_resources_and_recovers(
    make_node: Callable[..., Node], shared_data: Path, tmp_path: Path
) -> None:
    free_mb = shutil.disk_usage(tmp_path).free // (1024 * 1024)
    node = make_node("full", workers="0", disk_reserve_mb=str(free_mb + 10_000)).start(wait=False)
    deadline = time.monotonic() + 60
    status, health = 0, {}
    while time.monotonic() < deadline:
        try:
            status, health = node.http("/healthz")
            if health.get("checks", {}).get("receivers_alive"):
                break
        except OSError:
            pass
        time.sleep(0.3)
    assert status == 503 and any("disk below reserve" in p for p in health["problems"]), health
    assert echoscu(node.dicom_port).returncode == 0  # still answers C-ECHO
    series = shared_data / "dicom" / "philips_epi_fmri_phantom"
    proc = subprocess.run(
        storescu_cmd(node.dicom_port, [series]), env=dcmtk_env(), capture_output=True, text=True, timeout=60
    )
    assert "Refused: OutOfResources" in proc.stdout + proc.stderr  # 0xA700
    assert not list((node.data_dir / "spool").rglob("*.dcm"))
    node.stop()
    # Space "returns" (the reserve is lowered): the same node data accepts again.
    node2 = Node(node.data_dir, workers="0", disk_reserve_mb="1", dicom_port=node.dicom_port)
    node2.start()
    try:
        assert dcmsend(node2.dicom_port, [series]).returncode == 0
        node2.wait_for(lambda rows: len(rows) == 1 and rows[0]["instance_count"] == 27)
    finally:
        node2.stop()


def _copy_with_new_uids(src: Path, dst: Path, count: int) -> list[str]:
    """``count`` instances of one new series made from the Philips T1 (new Series/SOP Instance UIDs)."""
    dst.mkdir(parents=True)
    series_uid = generate_uid()
    sops = []
    files = sorted(src.glob("*.dcm"))
    for i in range(count):
        ds = pydicom.dcmread(files[i % len(files)])
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i + 1
        ds.save_as(dst / f"{i:05d}.dcm")
        sops.append(str(ds.SOPInstanceUID))
    return sops


def acknowledged_files(storescu_output: str) -> list[str]:
    """Files that ``storescu -v`` saw acknowledged with success (each "Sending file" line, then its response)."""
    acked: list[str] = []
    current = ""
    for line in storescu_output.splitlines():
        if line.startswith("I: Sending file: "):
            current = line.removeprefix("I: Sending file: ").strip()
        elif "Received Store Response (Success)" in line and current:
            acked.append(current)
            current = ""
    return acked


def test_kill_9_mid_transfer_loses_nothing_acknowledged(
    make_node: Callable[..., Node], shared_data: Path, tmp_path: Path
) -> None:
    src = shared_data / "dicom" / "philips_t1_mprage_3d_sag"
    sops = _copy_with_new_uids(src, tmp_path / "big", 400)
    node = make_node("crash", workers="0").start()
    sender = subprocess.Popen(
        storescu_cmd(node.dicom_port, [tmp_path / "big"]),
        env=dcmtk_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    spool = node.data_dir / "spool"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(spool.rglob("*.dcm"))) < 100:
        time.sleep(0.05)
    node.kill9()
    out, _ = sender.communicate(timeout=60)
    acked_files = acknowledged_files(out)
    acknowledged = len(acked_files)
    assert 100 <= acknowledged < 400, f"kill did not land mid-transfer ({acknowledged} acknowledged)"
    # Restart on the same data: every acknowledged instance is there, and the series completes.
    node2 = Node(node.data_dir, workers="0")
    node2.start()
    try:
        rows = node2.wait_for(lambda rows: len(rows) == 1 and rows[0]["status"] == "complete", timeout=120)
        assert rows[0]["instance_count"] >= acknowledged
        stored = {p.stem for p in spool.rglob("*.dcm")}
        acked_uids = {sops[int(Path(name).stem)] for name in acked_files}
        assert acked_uids <= stored
        with sqlite3.connect(node.data_dir / "qc.db") as conn:
            indexed = {row[0] for row in conn.execute("SELECT sop_instance_uid FROM instances")}
        assert acked_uids <= indexed
        assert not list((spool / ".tmp").glob("*")), "temporary files of the unfinished transfer remain"
    finally:
        node2.stop()


def _garbage_file(path: Path) -> Path:
    """A file whose meta header is valid but whose dataset is garbage: what a broken sender puts on the wire."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.filewriter import write_file_meta_info

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    with open(path, "wb") as fh:
        fh.write(b"\0" * 128 + b"DICM")
        write_file_meta_info(fh, meta, enforce_standard=True)
        fh.write(b"\x08\x00garbage!" * 64)
    return path


def test_garbage_and_truncated_datasets_are_quarantined(
    make_node: Callable[..., Node], shared_data: Path, tmp_path: Path
) -> None:
    from pynetdicom import AE, _config
    from pynetdicom.sop_class import MRImageStorage

    node = make_node("bad", workers="0").start()
    good = shared_data / "dicom" / "philips_t1_mprage_3d_sag" / "0002.dcm"
    ds = pydicom.dcmread(good)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PixelData = ds.PixelData[:1000]  # truncated pixel data: it parses, but is not a whole image
    truncated = tmp_path / "truncated.dcm"
    ds.save_as(truncated)
    garbage = _garbage_file(tmp_path / "garbage.dcm")

    ae = AE(ae_title="BADSCU")
    ae.add_requested_context(MRImageStorage, "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title="QCNODE")
    assert assoc.is_established
    _config.STORE_SEND_CHUNKED_DATASET = True  # send the file's bytes as they are
    try:
        truncated_status = assoc.send_c_store(truncated)
        garbage_status = assoc.send_c_store(garbage)
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = False
        assoc.release()
    assert truncated_status.Status == 0x0000  # it parses: the bookkeeper finds the damage afterwards
    assert 0xC000 <= garbage_status.Status <= 0xCFFF
    deadline = time.monotonic() + 30
    quarantine = node.data_dir / "quarantine"
    while time.monotonic() < deadline and len(list(quarantine.glob("*.json"))) < 2:
        time.sleep(0.2)
    reasons = [p.read_text() for p in quarantine.glob("*.json")]
    assert len(reasons) == 2, reasons
    assert any("truncated pixel data" in r for r in reasons)
    deadline = time.monotonic() + 30
    listed: list[dict[str, Any]] = []
    while time.monotonic() < deadline and len(listed) < 2:
        _, listed = node.http("/api/quarantine")
        time.sleep(0.2)
    assert len(listed) == 2 and all(q["reason"] for q in listed)
    # still serving
    assert echoscu(node.dicom_port).returncode == 0
    assert dcmsend(node.dicom_port, [good]).returncode == 0
    node.wait_for(lambda rows: any(r["instance_count"] == 1 for r in rows))


def test_orthanc_echoes_and_forwards_a_series(
    make_node: Callable[..., Node], shared_data: Path, tmp_path: Path, dicom_series: list[dict[str, Any]]
) -> None:
    node = make_node("fromorthanc", workers="0").start()
    orthanc = Orthanc(tmp_path / "orthanc", modalities={"qc": ["QCNODE", "127.0.0.1", node.dicom_port]})
    try:
        assert orthanc.post("/modalities/qc/echo", {}) == {}  # Orthanc answers HTTP 500 when the echo fails
        entry = next(e for e in dicom_series if e["path"].endswith("ge_epi_fmri_phantom"))
        for f in sorted(entry["folder"].glob("*.dcm")):
            orthanc.post("/instances", f.read_bytes())
        series_ids = orthanc.get("/series")
        assert len(series_ids) == 1
        orthanc.post("/modalities/qc/store", series_ids[0])
        rows = node.wait_for(lambda rows: len(rows) == 1 and rows[0]["status"] == "complete")
        assert rows[0]["instance_count"] == entry["instances"] == 96
        assert rows[0]["calling_ae"] == "ORTHANC"
    finally:
        orthanc.stop()
