"""Orthanc as a peer: its C-ECHO needs the Verification context, and it forwards a series to the receiver."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.ingest.receivers import Receivers, spooled
from tests.peers import Orthanc

pytestmark = pytest.mark.integration


def test_orthanc_echoes_and_forwards_a_series(
    make_receivers: Callable[..., Receivers], tmp_path: Path, shared_data: Path
) -> None:
    receivers = make_receivers()
    orthanc = Orthanc(tmp_path / "orthanc", modalities={"node": ["QCNODE", "127.0.0.1", receivers.port]})
    try:
        files = sorted((shared_data / "dicom" / "philips_epi_fmri_phantom").glob("*.dcm"))
        series_ids = {orthanc.post("/instances", f.read_bytes())["ParentSeries"] for f in files}
        assert len(series_ids) == 1
        assert orthanc.post("/modalities/node/echo", {}) == {}
        result = orthanc.post("/modalities/node/store", series_ids.pop())
        assert result["InstancesCount"] == len(files) and result["FailedInstancesCount"] == 0
    finally:
        orthanc.stop()
    events = spooled(receivers.events(expected=len(files)))
    assert len(events) == len(files) and {e.calling_ae for e in events} == {"ORTHANC"}
    assert len({e.series_uid for e in events}) == 1
