"""The command line against a real node and real databases: send, series list/show, db upgrade, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.node import REPO, Node
from tests.peers import free_port

pytestmark = pytest.mark.integration


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {"PATH": "/usr/bin:/bin", "HOME": "/tmp"}
    return subprocess.run(
        [sys.executable, "-m", "qc_daemon", *args],
        cwd=REPO,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_send_then_list_and_show(make_node: Callable[..., Node], shared_data: Path) -> None:
    node = make_node("cli", workers="0").start()
    folder = shared_data / "dicom" / "siemens_epi_ts_9syntaxes"
    proc = node.cli("send", str(folder), "--port", str(node.dicom_port), "--aet", "QCNODE", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("sent 9 instance(s)")
    rows = node.wait_for(lambda rows: len(rows) == 1 and rows[0]["status"] == "complete")
    listed = json.loads(node.cli("series", "list", "--json").stdout)
    assert listed == json.loads(json.dumps(rows)) or listed[0]["series_uid"] == rows[0]["series_uid"]
    assert listed[0]["instance_count"] == 9 and listed[0]["calling_ae"] == "QCSEND"
    text = node.cli("series", "list").stdout
    assert rows[0]["series_uid"] in text and "complete" in text
    shown = json.loads(node.cli("series", "show", rows[0]["series_uid"], "--json").stdout)
    assert shown["series_uid"] == rows[0]["series_uid"] and shown["volumes"] == []
    missing = node.cli("series", "show", "1.2.3.4")
    assert missing.returncode == 1 and missing.stderr.strip() == "qc-daemon: no series with UID 1.2.3.4"


def test_send_errors_are_one_line(tmp_path: Path, shared_data: Path) -> None:
    proc = cli("send", str(tmp_path / "nothing"), "--port", "11112")
    assert proc.returncode == 1 and proc.stderr.strip() == f"qc-daemon: no such file or folder: {tmp_path / 'nothing'}"
    one = shared_data / "dicom" / "philips_t1_mprage_3d_sag" / "0001.dcm"
    proc = cli("send", str(one), "--port", str(free_port()), "--quiet")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip(), "a refused connection must say why"


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_db_upgrade_and_list_on_both_backends(backend: str, tmp_path: Path) -> None:
    from tests.dbs import database_url

    with database_url(backend, tmp_path) as url:
        env = {"QC_DATABASE_URL": url, "QC_DATA_DIR": str(tmp_path / "data")}
        before = cli("series", "list", env=env)
        assert before.returncode == 1 and "has no schema yet" in before.stderr
        proc = cli("db", "upgrade", env=env)
        assert proc.returncode == 0, proc.stderr
        assert "at revision 0001" in proc.stdout and ":qc@" not in proc.stdout  # password masked
        listed = cli("series", "list", "--json", env=env)
        assert listed.returncode == 0 and json.loads(listed.stdout) == []


def test_database_down_is_one_line(tmp_path: Path) -> None:
    env = {"QC_DATABASE_URL": f"postgresql+psycopg://qc:qc@127.0.0.1:{free_port()}/x?connect_timeout=2"}
    proc = cli("db", "upgrade", env=env)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
