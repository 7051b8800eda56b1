"""The one configuration object: defaults, TOML, QC_ variables, and errors that name the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from qc_daemon.config import ConfigError, load_settings


def test_defaults() -> None:
    s = load_settings(environ={})
    assert s.data_dir == Path("./qc-data")
    assert s.resolved_database_url == f"sqlite:///{Path('./qc-data').resolve() / 'qc.db'}"
    assert (s.ae_title, s.dicom_port, s.http_port, s.series_quiet_seconds) == ("QCNODE", 11112, 8080, 10.0)


def test_toml_then_environment(tmp_path: Path) -> None:
    cfg = tmp_path / "qc.toml"
    cfg.write_text(
        'ae_title = "FROMFILE"\ndicom_port = 104\nallowed_calling_aets = ["A1", "A2"]\n'
        "[threshold_overrides.MR1]\nmotion = 0.7\n"
    )
    s = load_settings(cfg, environ={"QC_DICOM_PORT": "11113", "QC_ALLOWED_CALLING_AETS": "X1, X2"})
    assert s.ae_title == "FROMFILE"
    assert s.dicom_port == 11113
    assert s.allowed_calling_aets == ["X1", "X2"]
    assert s.threshold_overrides == {"MR1": {"motion": 0.7}}


@pytest.mark.parametrize(
    ("environ", "needle"),
    [
        ({"QC_DICOM_PORT": "abc"}, "dicom_port (from QC_DICOM_PORT)"),
        ({"QC_DICOM_PORT": "70000"}, "dicom_port"),
        ({"QC_AE_TITLE": "THIS_TITLE_IS_FAR_TOO_LONG"}, "ae_title"),
        ({"QC_SERIES_QUIET_SECONDS": "-1"}, "series_quiet_seconds"),
        ({"QC_DICOM_PORTT": "1"}, "QC_DICOM_PORTT: unknown setting"),
        ({"QC_EXCLUDE_RULES": '{"SeriesDescription": ["(unclosed"]}'}, "exclude_rules"),
        ({"QC_THRESHOLD_OVERRIDES": "not json"}, "QC_THRESHOLD_OVERRIDES: expected a JSON object"),
        ({"QC_TLS_CERT": "/nonexistent.pem"}, "tls_cert"),
        ({"QC_LOG_LEVEL": "LOUD"}, "log_level"),
    ],
)
def test_bad_values_name_the_key(environ: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(environ=environ)
    assert needle in str(err.value)


def test_bad_toml_file(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("dicom_port = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(cfg, environ={})
    cfg.write_text("colour = 'blue'\n")
    with pytest.raises(ConfigError, match="colour: unknown setting"):
        load_settings(cfg, environ={})


def test_cli_reports_a_bad_value_in_one_line(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "QC_DICOM_PORT": "not-a-port", "HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "qc_daemon", "check-config"], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "dicom_port (from QC_DICOM_PORT)" in lines[0] and "Traceback" not in proc.stderr


def test_cli_check_config_prints_effective_settings_without_password(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "QC_DATABASE_URL": "postgresql+psycopg://qc:secret@db:5432/qc",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "qc_daemon", "check-config"], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "secret" not in proc.stdout and "qc:***@db" in proc.stdout


def test_example_config_lists_every_key_and_loads() -> None:
    example = Path(__file__).resolve().parents[2] / "deploy" / "qc.example.toml"
    text = example.read_text()
    from qc_daemon.config import Settings

    for key in Settings.model_fields:
        assert f"{key} =" in text, f"deploy/qc.example.toml lacks {key}"
    assert load_settings(example, environ={}) == load_settings(environ={})
