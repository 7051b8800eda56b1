"""The schema, migrations and job queue on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select

from qc_daemon.processing.outcome import SeriesOutcome, VolumeOutcome
from qc_daemon.series.headers import InstanceRecord
from qc_daemon.store.db import head_revision, make_engine, make_session_factory, transaction, upgrade
from qc_daemon.store.indexing import instance_counts, record_instances
from qc_daemon.store.jobs import claim_next, complete_quiet_series, requeue_processing
from qc_daemon.store.models import Base, Scanner, Score, Series, SeriesStatus
from qc_daemon.store.results import record_outcome
from qc_daemon.store.views import get_series, list_series, status_counts

T0 = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)


def rec(series: str, sop: str, at: datetime = T0, **kw: object) -> InstanceRecord:
    fields: dict[str, object] = dict(
        series_uid=series,
        sop_instance_uid=sop,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.4",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        study_uid="1.2.3",
        study_date="20261101",
        modality="MR",
        manufacturer="Philips",
        manufacturer_model="Ingenia",
        device_serial="42",
        station_name="MR1",
        protocol_name="WIP T1 3D",
        series_description="t1",
        series_number=3,
        instance_number=int(sop.rsplit(".", 1)[-1]),
        body_part="BRAIN",
        path=f"{series}/{sop}.dcm",
        size=100,
        calling_ae="SCANNER1",
        received_at=at,
    )
    fields.update(kw)
    return InstanceRecord(**fields)  # type: ignore[arg-type]


@pytest.fixture
def factory(db_url: str):  # type: ignore[no-untyped-def]
    engine = make_engine(db_url)
    upgrade(engine)
    yield make_session_factory(engine)
    engine.dispose()


def test_migrations_match_models(db_url: str) -> None:
    engine = make_engine(db_url)
    assert upgrade(engine) == head_revision()
    assert upgrade(engine) == head_revision()  # idempotent
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == [], f"models and migrations differ: {diff}"
    assert {"series", "instances", "scores", "alerts", "feedback", "quarantine"} <= set(
        inspect(engine).get_table_names()
    )
    engine.dispose()


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    engine.dispose()


def test_indexing_is_idempotent_and_identifies_scanner_and_protocol(factory) -> None:  # type: ignore[no-untyped-def]
    with transaction(factory) as s:
        r1 = record_instances(s, [rec("1.1", "1.1.1"), rec("1.1", "1.1.2"), rec("1.1", "1.1.2")])
    assert (r1.new_instances, r1.duplicates, r1.new_series) == (2, 1, ["1.1"])
    with transaction(factory) as s:
        r2 = record_instances(s, [rec("1.1", "1.1.1")])
    assert (r2.new_instances, r2.duplicates) == (0, 1)
    with factory() as s:
        series = s.scalar(select(Series))
        assert series is not None and series.instance_count == 2
        assert series.protocol is not None and series.protocol.name == "t1 3d"
        assert s.scalar(select(Scanner.key)) == "PHILIPS|INGENIA|42|MR1"
        assert instance_counts(s) == {"1.1": 2}


def test_quiet_period_completion_claim_and_result(factory) -> None:  # type: ignore[no-untyped-def]
    with transaction(factory) as s:
        record_instances(s, [rec("2.1", "2.1.1", T0), rec("2.2", "2.2.1", T0 + timedelta(seconds=8))])
    with transaction(factory) as s:
        done = complete_quiet_series(s, quiet_seconds=10, now=T0 + timedelta(seconds=12))
    assert [d.series_uid for d in done] == ["2.1"]  # 2.2 has been quiet for only 4 s
    with transaction(factory) as s:
        job = claim_next(s, "worker-0")
        again = claim_next(s, "worker-1")
    assert job is not None and job.series_uid == "2.1" and job.files == ("2.1/2.1.1.dcm",)
    assert again is None
    outcome = SeriesOutcome(
        status=SeriesStatus.DONE,
        volumes=[
            VolumeOutcome(
                index=0,
                label="v0",
                split_key={},
                scored=True,
                probabilities={"motion": 0.9, "noise": 0.1},
                rescan_score=0.9,
                flags=["motion"],
            ),
            VolumeOutcome(index=1, label="v1", split_key={}, scored=False, skip_reason="phase image"),
        ],
        probabilities={"motion": 0.9, "noise": 0.1},
        rescan_score=0.9,
        flags=["motion"],
        thresholds={"motion": 0.5, "noise": 0.5},
        model_name="m",
        model_version="1",
    )
    with transaction(factory) as s:
        assert record_outcome(s, job, "worker-0", outcome)
    with factory() as s:
        data = get_series(s, "2.1")
        assert data is not None
        assert data["status"] == "done" and data["flags"] == ["motion"] and data["scores"]["motion"] == 0.9
        assert [v["status"] for v in data["volumes"]] == ["scored", "skipped"]
        assert [d["series_uid"] for d in list_series(s, flagged=True)] == ["2.1"]
        assert s.scalar(select(Score.flagged).where(Score.volume_id.is_(None), Score.artifact == "motion")) is True
        assert status_counts(s)["done"] == 1 and status_counts(s)["receiving"] == 1


def test_late_instance_reopens_and_stale_result_is_discarded(factory) -> None:  # type: ignore[no-untyped-def]
    with transaction(factory) as s:
        record_instances(s, [rec("3.1", "3.1.1", T0)])
        complete_quiet_series(s, 10, now=T0 + timedelta(seconds=11))
    with transaction(factory) as s:
        job = claim_next(s, "worker-0")
    assert job is not None
    with transaction(factory) as s:  # an instance arrives while the worker is busy
        result = record_instances(s, [rec("3.1", "3.1.2", T0 + timedelta(seconds=20))])
    assert result.reopened_series == ["3.1"]
    with transaction(factory) as s:
        stored = record_outcome(s, job, "worker-0", SeriesOutcome(status=SeriesStatus.SKIPPED, skip_reason="x"))
    assert not stored
    with factory() as s:
        series = s.scalar(select(Series))
        assert series is not None
        assert series.status == SeriesStatus.RECEIVING and series.generation == 2 and series.instance_count == 2


def test_requeue_after_worker_death_is_bounded(factory) -> None:  # type: ignore[no-untyped-def]
    with transaction(factory) as s:
        record_instances(s, [rec("4.1", "4.1.1", T0)])
        complete_quiet_series(s, 10, now=T0 + timedelta(seconds=11))
    for attempt in range(1, 4):
        with transaction(factory) as s:
            job = claim_next(s, "worker-0")
            assert job is not None and job.attempts == attempt
        with transaction(factory) as s:
            requeued, failed = requeue_processing(s, max_attempts=3, worker_id="worker-0", reason="worker died")
        assert (requeued, failed) == ((["4.1"], []) if attempt < 3 else ([], ["4.1"]))
    with factory() as s:
        series = s.scalar(select(Series))
        assert series is not None and series.status == SeriesStatus.FAILED
        assert series.error is not None and "gave up after 3 attempts" in series.error
