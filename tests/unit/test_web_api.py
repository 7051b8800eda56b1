"""The HTTP API in-process: health (database and listener), series JSON, errors."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from fastapi.testclient import TestClient

from qc_daemon.config import load_settings
from qc_daemon.store.db import make_engine, make_session_factory, transaction, upgrade
from qc_daemon.store.indexing import record_instances
from qc_daemon.web.app import create_app
from tests.peers import free_port
from tests.store.test_store import rec


def _settings(tmp_path: Path, **env: str):  # type: ignore[no-untyped-def]
    return load_settings(environ={"QC_DATA_DIR": str(tmp_path), "QC_DISK_RESERVE_MB": "1", **env})


def _node_state(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Settings, a migrated database and the node's folders, as a running node leaves them."""
    settings = _settings(tmp_path)
    engine = make_engine(settings.resolved_database_url)
    upgrade(engine)
    settings.spool_dir.mkdir(parents=True)
    settings.run_dir.mkdir(parents=True)
    return settings, make_session_factory(engine)


def test_healthz_needs_database_and_listener(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    upgrade(make_engine(settings.resolved_database_url))
    settings.run_dir.mkdir(parents=True)
    settings.spool_dir.mkdir(parents=True)
    with TestClient(create_app(settings)) as client:
        r = client.get("/healthz")
        assert r.status_code == 503
        assert any("DICOM listener down" in p for p in r.json()["problems"])
        (settings.run_dir / "receiver-0.alive").touch()
        (settings.run_dir / "bookkeeper.alive").touch()
        r = client.get("/healthz")
        assert r.status_code == 200, r.json()
        assert r.json()["checks"]["database"] == "ok"


def test_healthz_and_api_when_database_is_down(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://qc:qc@127.0.0.1:{free_port()}/nothing?connect_timeout=2"
    settings = _settings(tmp_path, QC_DATABASE_URL=url)
    settings.run_dir.mkdir(parents=True)
    settings.spool_dir.mkdir(parents=True)
    (settings.run_dir / "receiver-0.alive").touch()
    (settings.run_dir / "bookkeeper.alive").touch()
    with TestClient(create_app(settings)) as client:
        r = client.get("/healthz")
        assert r.status_code == 503
        assert r.json()["checks"]["database"] == "down"
        r = client.get("/api/series")
        assert r.status_code == 503 and r.json() == {"detail": "database unavailable"}


def test_series_api(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    engine = make_engine(settings.resolved_database_url)
    upgrade(engine)
    with transaction(make_session_factory(engine)) as s:
        record_instances(s, [rec("9.1", "9.1.1", datetime(2026, 1, 1, tzinfo=UTC))])
    with TestClient(create_app(settings)) as client:
        rows = client.get("/api/series").json()
        assert [r["series_uid"] for r in rows] == ["9.1"] and rows[0]["instance_count"] == 1
        assert rows[0]["status"] == "receiving" and rows[0]["scanner"] == "Philips Ingenia MR1"
        one = client.get("/api/series/9.1").json()
        assert one["volumes"] == [] and one["study_uid"] == "1.2.3"
        assert client.get("/api/series/0.0").status_code == 404
        assert client.get("/api/series?status=bogus").status_code == 422
        assert client.get("/api/series?flagged=true").json() == []
        spec = client.get("/openapi.json").json()
        assert "/api/series/{series_uid}" in spec["paths"] and "/healthz" in spec["paths"]


def test_metrics(tmp_path: Path) -> None:
    settings, sessions = _node_state(tmp_path)
    with transaction(sessions) as s:
        record_instances(s, [rec("9.2", "9.2.1"), rec("9.2", "9.2.2")])
    with TestClient(create_app(settings)) as client:
        text = client.get("/metrics").text
    assert 'qc_series{status="receiving"} 1.0' in text
    assert "qc_instances_received_total 2.0" in text
    assert "qc_database_up 1.0" in text
    assert "QC^TEST" not in text and "PatientID" not in text


def test_metrics_count_skips_by_reason_category(tmp_path: Path) -> None:
    from sqlalchemy import select

    from qc_daemon.store.models import Series, SeriesStatus, Volume, VolumeStatus

    settings, sessions = _node_state(tmp_path)
    with transaction(sessions) as s:
        record_instances(s, [rec("9.3", "9.3.1"), rec("9.4", "9.4.1"), rec("9.5", "9.5.1")])
    reasons = {"9.3": "too few slices: 2 < 10", "9.4": "all volumes skipped: too few slices: 9 < 10 (3 volumes)"}
    with transaction(sessions) as s:
        for series in s.scalars(select(Series)):
            if series.series_uid in reasons:
                series.status, series.skip_reason = SeriesStatus.SKIPPED, reasons[series.series_uid]
            else:  # done, with one phase volume skipped and one scored
                series.status = SeriesStatus.DONE
                s.add(Volume(series=series, index=0, status=VolumeStatus.SKIPPED, skip_reason="phase image"))
                s.add(Volume(series=series, index=1, status=VolumeStatus.SCORED))
    with TestClient(create_app(settings)) as client:
        text = client.get("/metrics").text
    assert 'qc_series_skipped_total{reason="too few slices"} 2.0' in text
    assert 'qc_volumes_skipped_total{reason="phase image"} 1.0' in text
    assert text.count("qc_volumes_skipped_total{") == 1


def test_skip_reasons_are_counted_by_category() -> None:
    from qc_daemon.web.metrics import reason_category

    assert reason_category("all volumes skipped: too few slices: 2 < 10 (7 volumes)") == "too few slices"
    assert reason_category("not an image: Raw Data Storage (1.2.840.10008.5.1.4.1.1.66)") == "not an image"
    assert reason_category("phase image") == "phase image"
    assert reason_category("") == "unknown"
