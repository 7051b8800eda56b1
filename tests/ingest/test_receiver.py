"""The receiver against real dcmtk peers: every shared file, parallel associations, policies, failures, restarts."""

from __future__ import annotations

import collections
import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from qc_daemon.ingest.limits import ReceiverShared
from qc_daemon.ingest.scp import heartbeat_path
from qc_daemon.ingest.spool import Spool
from tests.ingest.receivers import (
    Receivers,
    dataset_part,
    make_copies,
    make_options,
    quarantined,
    split_file,
    spool_files,
    spooled,
)
from tests.peers import dcmsend, dcmtk_env, echoscu, free_port, require_tool, storescu_cmd

pytestmark = pytest.mark.integration

ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"
RAW_DATA = "1.2.840.10008.5.1.4.1.1.66"
Manifest = list[dict[str, Any]]
UNCOMPRESSED = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}


def storescu(port: int, paths: list[Path], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        storescu_cmd(port, paths, **kw), env=dcmtk_env(), capture_output=True, text=True, timeout=120
    )


def dicom_entries(manifest: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in manifest if e["kind"] == "dicom"]


def same_header(a: Path, b: Path) -> bool:
    return bool(pydicom.dcmread(a, stop_before_pixels=True) == pydicom.dcmread(b, stop_before_pixels=True))


def check_spooled_like_sources(
    receivers: Receivers, sources: list[Path], calling_ae: str, byte_exact: bool = False, header_every: int = 1
) -> None:
    """Every source file is in the spool once, in its own transfer syntax, with the same elements.

    dcmtk senders re-encode what they read (sequence lengths, byte order of uncompressed data), so only
    ``byte_exact`` senders (the node's own sender streams the file's bytes) are compared byte for byte; the others
    element by element up to the pixel data, for one file in ``header_every``.
    """
    events = spooled(receivers.events(expected=len(sources)))
    assert len(events) == len(sources)
    assert not any(e.duplicate for e in events)
    by_uid = {e.sop_instance_uid: e for e in events}
    assert len(by_uid) == len(sources)
    files = spool_files(receivers.options)
    assert len(files) == len(sources)
    for n, source in enumerate(sources):
        source_meta, source_data = split_file(source)
        event = by_uid[source_meta.MediaStorageSOPInstanceUID]
        assert event.sop_class_uid == source_meta.MediaStorageSOPClassUID
        assert event.calling_ae == calling_ae and event.called_ae == "QCNODE"
        assert event.peer.startswith("127.0.0.1:")
        path = Path(event.path)
        assert path.is_absolute() and path.stat().st_size == event.size
        assert path.parent.name == event.series_uid
        meta, data = split_file(path)
        syntax, source_syntax = str(meta.TransferSyntaxUID), str(source_meta.TransferSyntaxUID)
        assert syntax == event.transfer_syntax_uid
        assert meta.MediaStorageSOPInstanceUID == event.sop_instance_uid
        assert meta.SourceApplicationEntityTitle == calling_ae
        if byte_exact:
            assert syntax == source_syntax
            assert data == source_data, source  # stored exactly as received
        else:  # dcmtk may send an uncompressed file in another uncompressed syntax
            assert syntax == source_syntax or syntax in UNCOMPRESSED
            if n % header_every == 0:
                assert same_header(path, source), source


def check_series(events: list[Any], manifest: list[dict[str, Any]], shared_data: Path) -> None:
    """Each event's series is its folder's series (manifest), and every series has its exact instance count."""
    by_folder = {str(shared_data / e["path"]): e["series_instance_uid"] for e in dicom_entries(manifest)}
    by_uid = {e.sop_instance_uid: e for e in spooled(events)}
    for path in sorted((shared_data / "dicom").rglob("*.dcm")):
        meta, _ = split_file(path)
        assert by_uid[meta.MediaStorageSOPInstanceUID].series_uid == by_folder[str(path.parent)], path
    counts = collections.Counter(e.series_uid for e in spooled(events))
    assert counts == {e["series_instance_uid"]: e["instances"] for e in dicom_entries(manifest)}


def test_echo_heartbeat_and_log_lines(make_receivers: Callable[..., Receivers]) -> None:
    receivers = make_receivers()
    assert echoscu(receivers.port).returncode == 0
    beat = heartbeat_path(receivers.options.run_dir, 0)
    assert json.loads(beat.read_text())["pid"] == receivers.procs[0].pid
    first = beat.stat().st_mtime
    time.sleep(1.2)
    assert beat.stat().st_mtime > first  # touched every heartbeat_seconds
    assert echoscu(receivers.port).returncode == 0
    receivers.stop()
    assert not beat.exists()  # removed on a clean stop
    logs = receivers.logs()
    assert any(r["msg"] == "receiver listening" and r["port"] == receivers.port for r in logs)
    accepted = [r for r in logs if r["msg"] == "association accepted"]
    assert len(accepted) == 2 and accepted[0]["calling_ae"] == "ECHOSCU"
    assert all(r["role"] == "receiver-0" for r in logs)


def test_every_shared_file_over_one_association(
    make_receivers: Callable[..., Receivers], shared_data: Path, shared_files: list[Path], manifest: Manifest
) -> None:
    receivers = make_receivers()
    proc = dcmsend(receivers.port, [shared_data / "dicom"], calling="MODALITY1")
    assert proc.returncode == 0, proc.stderr
    check_spooled_like_sources(receivers, shared_files, "MODALITY1", header_every=7)
    events = spooled(receivers.events())
    check_series(events, manifest, shared_data)
    counts = collections.Counter(e.series_uid for e in events)
    assert len({e.transfer_syntax_uid for e in events}) >= 5  # every compressed syntax as sent, uncompressed ones
    assert {e.sop_class_uid for e in events} >= {ENHANCED_MR, RAW_DATA}

    receivers.stop()
    logs = receivers.logs()
    summaries = [r for r in logs if r["msg"] == "series received"]
    assert len(summaries) == 16  # one line per (association, series), none per instance
    assert {r["series_uid"]: r["instances"] for r in summaries} == counts
    assert all(r["calling_ae"] == "MODALITY1" and r["ended"] == "released" for r in summaries)
    assert sum(r["bytes"] for r in summaries) == sum(e.size for e in events)
    info = [r for r in logs if r["level"] == "INFO" and r["msg"] not in ("receiver listening", "receiver stopped")]
    assert len(info) == 1 + 16  # the association accepted, then the summaries
    names = {str(pydicom.dcmread(f, stop_before_pixels=True).get("PatientName", "")) for f in shared_files[::25]}
    text = "\n".join(json.dumps(r) for r in logs)
    assert not [n for n in names if len(n) > 3 and n in text], "patient names must not be logged"


def test_every_shared_file_byte_exact_with_the_node_sender(
    make_receivers: Callable[..., Receivers], shared_data: Path, shared_files: list[Path], manifest: Manifest
) -> None:
    """The node's sender streams each file in its own syntax: all seven syntaxes arrive, stored byte for byte."""
    from qc_daemon.ingest.sender import send_paths

    receivers = make_receivers()
    report = send_paths([shared_data / "dicom"], "127.0.0.1", receivers.port, "QCNODE", progress=False)
    assert (report.sent, report.failed, report.skipped) == (len(shared_files), [], [])
    check_spooled_like_sources(receivers, shared_files, "QCSEND", byte_exact=True)
    check_series(receivers.events(), manifest, shared_data)
    assert len({e.transfer_syntax_uid for e in spooled(receivers.events())}) == 7


def test_parallel_associations_over_two_processes(
    make_receivers: Callable[..., Receivers], shared_data: Path, shared_files: list[Path], manifest: Manifest
) -> None:
    receivers = make_receivers(processes=2)
    folders = sorted(p for p in (shared_data / "dicom").iterdir() if p.is_dir())
    groups = [folders[i::4] for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda g: dcmsend(receivers.port, g, calling=f"MOD{len(g)}"), groups))
    assert all(r.returncode == 0 for r in results), [r.stderr[-500:] for r in results]
    events = spooled(receivers.events(expected=len(shared_files)))
    assert len(events) == len(shared_files) and not any(e.duplicate for e in events)
    check_series(events, manifest, shared_data)
    assert len(spool_files(receivers.options)) == len(shared_files)


def test_enhanced_mr_and_raw_data_with_storescu(
    make_receivers: Callable[..., Receivers], shared_data: Path
) -> None:
    receivers = make_receivers()
    sources = sorted((shared_data / "dicom").glob("philips_enh_*/*.dcm"))
    sources += sorted((shared_data / "dicom" / "philips_raw_data_object").glob("*.dcm"))
    assert len(sources) == 4
    proc = storescu(receivers.port, sources, calling="PHILIPS")
    assert proc.returncode == 0, proc.stderr
    check_spooled_like_sources(receivers, sources, "PHILIPS")
    events = spooled(receivers.events())
    assert sorted(e.sop_class_uid for e in events) == [ENHANCED_MR] * 3 + [RAW_DATA]
    for event in events:
        if event.sop_class_uid == ENHANCED_MR:
            frames = int(pydicom.dcmread(event.path, stop_before_pixels=True).NumberOfFrames)
            assert frames in (40, 240, 212)


def test_many_small_pdus(make_receivers: Callable[..., Receivers], shared_data: Path) -> None:
    """A 4 KiB maximum PDU: every command and data set arrives in many fragments."""
    receivers = make_receivers(max_pdu_size=4096)
    sources = sorted((shared_data / "dicom" / "philips_enh_asl_perfusion").glob("*.dcm"))
    sources += sorted((shared_data / "dicom" / "ge_dwi_2slice_phantom").glob("*.dcm"))
    proc = storescu(receivers.port, sources)
    assert proc.returncode == 0, proc.stderr
    check_spooled_like_sources(receivers, sources, "STORESCU")


def test_calling_and_called_ae_checks(make_receivers: Callable[..., Receivers], shared_data: Path) -> None:
    receivers = make_receivers(allowed_calling_aets=("GOODAE",), require_called_aet=True)
    one = sorted((shared_data / "dicom" / "ge_dwi_2slice_phantom").glob("*.dcm"))[:1]
    bad = echoscu(receivers.port, calling="BADAE")
    assert bad.returncode != 0 and "Rejected" in bad.stdout + bad.stderr
    assert storescu(receivers.port, one, calling="BADAE").returncode != 0
    assert echoscu(receivers.port, calling="GOODAE", called="ELSEWHERE").returncode != 0
    assert echoscu(receivers.port, calling="GOODAE").returncode == 0
    assert storescu(receivers.port, one, calling="GOODAE").returncode == 0
    assert len(spooled(receivers.events(expected=1))) == 1
    receivers.stop()
    rejected = [r for r in receivers.logs() if r["msg"].startswith("association rejected")]
    assert {r["calling_ae"] for r in rejected} == {"BADAE", "GOODAE"}
    assert sum("not in allowed_calling_aets" in r["reason"] for r in rejected) == 2
    assert any("ELSEWHERE" in r["reason"] and r["level"] == "WARNING" for r in rejected)


def test_duplicate_instance_is_idempotent(
    make_receivers: Callable[..., Receivers], shared_data: Path, tmp_path: Path
) -> None:
    receivers = make_receivers()
    source = sorted((shared_data / "dicom" / "ge_dwi_2slice_phantom").glob("*.dcm"))[0]
    changed = tmp_path / "changed.dcm"
    shutil.copy(source, changed)
    changed.chmod(0o644)
    subprocess.run([require_tool("dcmodify"), "-nb", "-m", "(0008,103E)=CHANGED COPY", str(changed)], check=True)
    assert storescu(receivers.port, [source]).returncode == 0
    assert storescu(receivers.port, [changed, source]).returncode == 0
    events = spooled(receivers.events(expected=3))
    assert [e.duplicate for e in events] == [False, True, True]
    assert len({e.path for e in events}) == 1
    files = spool_files(receivers.options)
    assert len(files) == 1
    kept = pydicom.dcmread(files[0], stop_before_pixels=True).SeriesDescription
    assert kept == pydicom.dcmread(source, stop_before_pixels=True).SeriesDescription != "CHANGED COPY"
    receivers.stop()
    summaries = [r for r in receivers.logs() if r["msg"] == "series received"]
    assert [(r["instances"], r["duplicates"]) for r in summaries] == [(1, 0), (0, 2)]


def test_disk_reserve_answers_out_of_resources(
    make_receivers: Callable[..., Receivers], shared_data: Path, tmp_path: Path
) -> None:
    root = tmp_path / "full"
    receivers = make_receivers(root=root, disk_reserve_mb=10**9)  # a petabyte reserve: never enough space
    sources = sorted((shared_data / "dicom" / "ge_dwi_2slice_phantom").glob("*.dcm"))[:3]
    proc = storescu(receivers.port, sources)
    output = (proc.stdout + proc.stderr).lower()
    assert "a700" in output or "out of resources" in output or "outofresources" in output, output
    assert echoscu(receivers.port).returncode == 0  # still answering C-ECHO
    assert spool_files(receivers.options) == []
    assert receivers.events(timeout=0.5) == []
    receivers.stop()
    logs = receivers.logs()
    assert any(r["level"] == "WARNING" and "below the reserve" in r["msg"] for r in logs)
    assert any(r["msg"] == "series received" and r["refused"] >= 1 and r["instances"] == 0 for r in logs)

    # once the reserve is lowered (restart with a new setting), it accepts again
    again = make_receivers(root=root, disk_reserve_mb=1)
    assert storescu(again.port, sources).returncode == 0
    assert len(spooled(again.events(expected=3))) == 3


def crafted_file(path: Path, dataset: bytes, sop_instance: str) -> Path:
    from pydicom.dataset import FileMetaDataset
    from pydicom.filewriter import write_file_meta_info
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    with open(path, "wb") as fp:
        fp.write(b"\0" * 128 + b"DICM")
        write_file_meta_info(fp, meta)  # type: ignore[arg-type]
        fp.write(dataset)
    return path


def test_unparseable_datasets_are_quarantined(
    make_receivers: Callable[..., Receivers], shared_data: Path, tmp_path: Path
) -> None:
    from qc_daemon.ingest.sender import send_paths

    receivers = make_receivers()
    good = sorted((shared_data / "dicom" / "ge_dwi_2slice_phantom").glob("*.dcm"))[0]
    whole, _ = dataset_part(good)
    no_series = pydicom.dcmread(good)
    del no_series.SeriesInstanceUID
    no_series_path = tmp_path / "crafted" / "2-no-series.dcm"
    no_series_path.parent.mkdir()
    no_series.save_as(no_series_path, enforce_file_format=True)
    crafted_file(tmp_path / "crafted" / "1-garbage.dcm", b"\x08\x00\x16\x00\xff\xfegarbage" * 10, "1.2.3.1")
    series_at = whole.index(b"\x20\x00\x0e\x00")
    crafted_file(tmp_path / "crafted" / "3-truncated.dcm", whole[: series_at - 5], "1.2.3.3")
    shutil.copy(good, tmp_path / "crafted" / "4-good.dcm")

    report = send_paths([tmp_path / "crafted"], "127.0.0.1", receivers.port, "QCNODE", progress=False)
    assert report.sent == 1
    assert sorted((Path(f.path).name, f.status) for f in report.failed) == [
        ("1-garbage.dcm", 0xC000),
        ("2-no-series.dcm", 0xC000),
        ("3-truncated.dcm", 0xC000),
    ]
    assert all("\\" not in f.reason for f in report.failed)  # a single-valued ErrorComment
    assert any(f.reason.endswith("no (0020,000E) SeriesInstanceUID in the dataset") for f in report.failed)

    # dcmtk sees the same failure status, and the receiver keeps serving
    proc = storescu(receivers.port, [no_series_path])
    assert "cannotunderstand" in (proc.stdout + proc.stderr).lower()  # 0xC000
    assert echoscu(receivers.port).returncode == 0
    assert storescu(receivers.port, [good]).returncode == 0  # a duplicate by now: still success

    events = receivers.events(expected=6)
    assert len(quarantined(events)) == 4 and len(spooled(events)) == 2
    reasons = sorted(q.reason for q in quarantined(events))
    assert sum("cannot parse" in r for r in reasons) == 2
    assert sum(r.startswith("no (0020,000E) SeriesInstanceUID") for r in reasons) == 2
    for q in quarantined(events):
        record = json.loads(Path(q.path).with_suffix(".json").read_text())
        assert record["reason"] == q.reason and record["calling_ae"] in ("QCSEND", "STORESCU")
        assert Path(q.path).stat().st_size > q.size  # file meta + the bytes received
    assert len(spool_files(receivers.options)) == 1
    receivers.stop()
    assert sum(r["msg"].startswith("dataset quarantined") for r in receivers.logs()) == 4


def test_kill_9_keeps_every_acknowledged_instance(
    make_receivers: Callable[..., Receivers], shared_data: Path, tmp_path: Path
) -> None:
    sources = make_copies(
        sorted((shared_data / "dicom" / "philips_t1_mprage_3d_sag").glob("*.dcm")), tmp_path / "copies", 240
    )
    root = tmp_path / "node"
    receivers = make_receivers(root=root)
    sender = subprocess.Popen(
        storescu_cmd(receivers.port, sources), env=dcmtk_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 60
    while len(spool_files(receivers.options)) < 60 and time.monotonic() < deadline:
        time.sleep(0.01)
    receivers.kill9()
    output = sender.communicate(timeout=60)[0]
    assert sender.returncode != 0  # the receiver died under it
    acked: list[str] = []
    current = None
    for line in output.splitlines():
        if m := re.search(r"Sending file: (\S+)", line):
            current = m.group(1)
        elif "Received Store Response (Success)" in line and current:
            acked.append(current)
    assert 50 <= len(acked) < len(sources)
    spool = Spool(root / "spool", root / "quarantine")
    stored = {sop: path for _, sop, path in spool.iter_instances()}
    for name in acked:  # everything acknowledged is there, complete
        source = pydicom.dcmread(name)
        assert pydicom.dcmread(stored[source.SOPInstanceUID]).PixelData == source.PixelData
    assert len(acked) <= len(stored) <= len(acked) + 1  # at most the one being answered when killed
    for path in stored.values():  # nothing half-written is visible
        assert pydicom.dcmread(path).PixelData
    spool.clean_tmp()
    assert list(spool.tmp_dir.iterdir()) == []

    again = make_receivers(root=root)
    proc = storescu(again.port, sources)
    assert proc.returncode == 0, proc.stdout[-1000:]
    events = spooled(again.events(expected=len(sources)))
    assert sum(e.duplicate for e in events) == len(stored)
    assert len(spool_files(again.options)) == len(sources)


def associate(port: int, calling: str = "HOLDER") -> Any:
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    ae.acse_timeout = 10
    return ae.associate("127.0.0.1", port, ae_title="QCNODE")


def test_max_associations_hold_across_processes(tmp_path: Path) -> None:
    shared = ReceiverShared(max_associations=2, processes=2)
    ports = [free_port(), free_port()]  # one port each: which process gets a connection is then known
    options = make_options(tmp_path / "node", max_associations=2)
    with Receivers(options, shared=shared, ports=ports) as receivers:
        held = [associate(ports[0]), associate(ports[0])]
        assert all(a.is_established for a in held)
        refused = associate(ports[1])
        assert refused.is_rejected
        rj = refused.acceptor.primitive
        assert (rj.result, rj.result_source, rj.diagnostic) == (0x02, 0x03, 0x02)  # transient, local limit
        assert echoscu(ports[1]).returncode != 0
        assert shared.active() == 2
        held[0].release()
        deadline = time.monotonic() + 10
        while shared.active() > 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert echoscu(ports[1]).returncode == 0
        held[1].release()
    assert any("max_associations (2) reached" in r.get("reason", "") for r in receivers.logs())


def test_processes_share_one_port(make_receivers: Callable[..., Receivers]) -> None:
    receivers = make_receivers(processes=3, max_associations=5)
    held = [associate(receivers.port) for _ in range(5)]
    assert all(a.is_established for a in held)
    assert receivers.shared.active() == 5
    assert associate(receivers.port).is_rejected
    for assoc in held:
        assoc.release()
    deadline = time.monotonic() + 10
    while receivers.shared.active() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert receivers.shared.active() == 0
    assert echoscu(receivers.port).returncode == 0
