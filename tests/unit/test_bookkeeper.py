"""The bookkeeper: events to database rows, quarantine of damaged files, reconciliation with the spool."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import select

from qc_daemon.config import load_settings
from qc_daemon.ingest.events import QuarantinedFile, SpooledInstance
from qc_daemon.ingest.spool import Spool
from qc_daemon.series.bookkeeper import Bookkeeper
from qc_daemon.store.db import make_engine, make_session_factory, transaction, upgrade
from qc_daemon.store.jobs import claim_next, complete_quiet_series
from qc_daemon.store.models import Instance, Quarantined, Series, SeriesStatus


@pytest.fixture
def keeper(tmp_path: Path, db_url: str) -> Bookkeeper:
    settings = load_settings(environ={"QC_DATA_DIR": str(tmp_path / "data"), "QC_DATABASE_URL": db_url})
    engine = make_engine(db_url)
    upgrade(engine)
    for d in (settings.spool_dir, settings.quarantine_dir):
        d.mkdir(parents=True)
    return Bookkeeper(settings, make_session_factory(engine), Spool(settings.spool_dir, settings.quarantine_dir))


def spool_file(keeper: Bookkeeper, src: Path, sop: str | None = None, truncate: bool = False) -> SpooledInstance:
    ds = pydicom.dcmread(src)
    if sop:
        ds.SOPInstanceUID = sop
        ds.file_meta.MediaStorageSOPInstanceUID = sop
    if truncate:
        ds.PixelData = ds.PixelData[:100]
    ds.file_meta.SourceApplicationEntityTitle = "MR1"
    from io import BytesIO

    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    path, dup = keeper.spool.write(str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID), buf.getvalue())
    return SpooledInstance(
        series_uid=str(ds.SeriesInstanceUID),
        sop_instance_uid=str(ds.SOPInstanceUID),
        sop_class_uid=str(ds.SOPClassUID),
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        path=str(path),
        size=path.stat().st_size,
        calling_ae="MR1",
        called_ae="QCNODE",
        peer="127.0.0.1:1",
        received_at=time.time(),
        duplicate=dup,
    )


def test_events_are_indexed_and_damaged_files_quarantined(keeper: Bookkeeper, shared_data: Path) -> None:
    files = sorted((shared_data / "dicom" / "philips_epi_fmri_phantom").glob("*.dcm"))
    events = [spool_file(keeper, f) for f in files[:5]]
    events.append(spool_file(keeper, files[5], truncate=True))
    events.append(spool_file(keeper, files[0]))  # a duplicate: first copy kept
    events.append(QuarantinedFile("/x/q.dcm", "cannot parse", "MR1", "1.2.3", "", 10, time.time()))
    assert events[-2].duplicate
    assert keeper.handle(events) == 5
    with keeper.factory() as s:
        series = s.scalar(select(Series))
        assert series is not None and series.instance_count == 5 and series.calling_ae == "MR1"
        reasons = sorted(q.reason for q in s.scalars(select(Quarantined)))
    assert reasons[0] == "cannot parse" and reasons[1].startswith("truncated pixel data")
    assert len(list(keeper.spool.quarantine_dir.glob("*.dcm"))) == 1  # the truncated one moved out of the spool


def test_reconcile_after_a_crash(keeper: Bookkeeper, shared_data: Path) -> None:
    files = sorted((shared_data / "dicom" / "ge_epi_fmri_phantom").glob("*.dcm"))
    keeper.handle([spool_file(keeper, f) for f in files[:10]])
    with transaction(keeper.factory) as s:  # a job was running when the node died
        complete_quiet_series(s, 0.0)
    with transaction(keeper.factory) as s:
        assert claim_next(s, "worker-0") is not None
    report = keeper.reconcile(requeue_jobs=True)
    assert report.instances_indexed == 0 and len(report.requeued) == 1
    with keeper.factory() as s:
        assert s.scalar(select(Series.status)) == SeriesStatus.COMPLETE
    # Instances acknowledged just before the crash, whose events died with the receiver, and a temporary file
    # of a transfer that was never acknowledged.
    for f in files[10:20]:
        spool_file(keeper, f)
    leftover = keeper.spool.tmp_dir / "999999-abandoned.tmp"
    leftover.write_bytes(b"partial")
    report = keeper.reconcile(requeue_jobs=True)
    assert (report.instances_indexed, report.temp_files_removed, report.requeued) == (10, 1, [])
    with keeper.factory() as s:
        series = s.scalar(select(Series))
        assert series is not None and series.instance_count == 20
        assert series.status == SeriesStatus.RECEIVING and series.generation == 2  # reopened by the new instances
        assert set(s.scalars(select(Instance.calling_ae))) == {"MR1"}  # from the file meta


def test_rescan_finds_files_whose_events_were_lost(keeper: Bookkeeper, shared_data: Path) -> None:
    files = sorted((shared_data / "dicom" / "philips_dwi_ax").glob("*.dcm"))[:4]
    for f in files:
        spool_file(keeper, f)
    keeper.spool.quarantine_bytes(b"junk", "cannot parse the dataset", calling_ae="MR1", sop_instance_uid="1.2.9")
    assert keeper.rescan(since=time.time() - 60, settle_seconds=30) == 0  # too fresh: events may still come
    assert keeper.rescan(since=time.time() - 60, settle_seconds=0) == 4
    with keeper.factory() as s:
        assert s.scalar(select(Series.instance_count)) == 4
        assert [q.reason for q in s.scalars(select(Quarantined))] == ["cannot parse the dataset"]
    assert keeper.rescan(since=time.time() - 60, settle_seconds=0) == 0  # idempotent
    json.dumps(keeper.reconcile(requeue_jobs=False).__dict__)
