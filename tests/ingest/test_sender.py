"""The C-STORE sender (``send_paths``) against dcmtk storescp: every file, parallel associations, failures."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pydicom
import pytest

from qc_daemon.ingest.sender import send_paths
from tests.peers import dcmtk_env, echoscu, free_port, require_tool

pytestmark = pytest.mark.integration
UNCOMPRESSED = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}


@contextmanager
def storescp(out: Path, *options: str) -> Iterator[int]:
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cmd = [require_tool("storescp"), "--fork", "-od", str(out), "-aet", "STORESCP", *options, str(port)]
    proc = subprocess.Popen(cmd, env=dcmtk_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while echoscu(port, called="STORESCP").returncode != 0:
            assert time.monotonic() < deadline, "storescp did not start"
            time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("associations", [1, 3])
def test_every_shared_file_to_storescp(
    tmp_path: Path, shared_data: Path, shared_files: list[Path], associations: int
) -> None:
    out = tmp_path / "received"
    with storescp(out, "+xa") as port:  # +xa: storescp accepts every transfer syntax
        report = send_paths(
            [shared_data / "dicom"], "127.0.0.1", port, "STORESCP", progress=False, associations=associations
        )
    assert (report.sent, report.warnings, report.failed, report.skipped) == (len(shared_files), 0, [], [])
    received = sorted(out.iterdir())
    assert len(received) == len(shared_files)
    got = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in received}
    assert got == {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in shared_files}


def test_failures_are_reported_and_sending_goes_on(tmp_path: Path, shared_data: Path) -> None:
    """storescp without +xa accepts only uncompressed syntaxes: compressed files fail, the others are sent."""
    folder = shared_data / "dicom" / "siemens_epi_ts_9syntaxes"
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "README.txt").write_text("not DICOM")
    syntaxes = {p: str(pydicom.dcmread(p).file_meta.TransferSyntaxUID) for p in folder.glob("*.dcm")}
    out = tmp_path / "received"
    with storescp(out) as port:
        report = send_paths([folder, tmp_path / "notes"], "127.0.0.1", port, "STORESCP", progress=False)
    uncompressed = sorted(str(p) for p, ts in syntaxes.items() if ts in UNCOMPRESSED)
    compressed = sorted(str(p) for p, ts in syntaxes.items() if ts not in UNCOMPRESSED)
    assert report.sent == len(uncompressed) == 3
    assert sorted(f.path for f in report.failed) == compressed
    assert all("no presentation context" in f.reason and f.status is None for f in report.failed)
    assert report.skipped == [str(tmp_path / "notes" / "README.txt")]
    assert not report.ok
    assert len(list(out.iterdir())) == 3


def test_unreachable_peer_fails_every_file(tmp_path: Path, shared_data: Path) -> None:
    files = sorted((shared_data / "dicom" / "siemens_epi_ax_mosaic").glob("*.dcm"))
    report = send_paths(files, "127.0.0.1", free_port(), "NOBODY", progress=False)
    assert report.sent == 0 and len(report.failed) == len(files)
    assert all(f.reason == "cannot associate with the peer" for f in report.failed)


def test_a_lost_response_is_sent_again_once(tmp_path: Path, shared_data: Path) -> None:
    """A peer that does not answer within the DIMSE timeout: that file is sent again on a new association, once."""
    import threading

    from pynetdicom import AE, AllStoragePresentationContexts, evt

    files = sorted((shared_data / "dicom" / "ge_epi_fmri_phantom").glob("*.dcm"))[:5]
    uids = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files]
    slow_once, slow_always = uids[1], uids[3]
    seen: list[str] = []
    release = threading.Event()

    def handle_store(event: evt.Event) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        seen.append(uid)
        if uid == slow_always or (uid == slow_once and seen.count(uid) == 1):
            release.wait(3.0)  # longer than the sender's DIMSE timeout: the response comes too late
        return 0x0000

    ae = AE(ae_title="SLOWSCP")
    ae.supported_contexts = AllStoragePresentationContexts
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, handle_store)])
    try:
        report = send_paths(files, "127.0.0.1", port, "SLOWSCP", progress=False, dimse_timeout=1.0)
    finally:
        release.set()
        server.shutdown()
    assert seen.count(slow_once) == 2 and seen.count(slow_always) == 2  # each lost response: one more try
    assert all(seen.count(u) == 1 for u in uids if u not in (slow_once, slow_always))
    assert report.sent == 4 and [f.path for f in report.failed] == [str(files[3])]
    assert report.failed[0].reason.startswith("no response")
