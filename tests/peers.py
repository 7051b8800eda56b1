"""Real DICOM peers for tests: dcmtk command-line tools and Orthanc, on loopback, stopped by PID."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} not found: install the Debian package (make test does it)")
    return path


def dcmtk_env() -> dict[str, str]:
    """dcmtk waits on delayed ACKs on loopback unless TCP_NODELAY is set."""
    return {**os.environ, "TCP_NODELAY": "1"}


def echoscu(
    port: int, called: str = "QCNODE", calling: str = "ECHOSCU", timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    cmd = [require_tool("echoscu"), "-aet", calling, "-aec", called, "-to", "10", "127.0.0.1", str(port)]
    return subprocess.run(cmd, env=dcmtk_env(), capture_output=True, text=True, timeout=timeout)


def dcmsend(
    port: int, paths: Sequence[Path], called: str = "QCNODE", calling: str = "DCMSEND", timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Send files or folders, each file in its own transfer syntax (``+sd`` scans folders, ``+r`` recursively)."""
    cmd = [require_tool("dcmsend"), "-aet", calling, "-aec", called, "+sd", "+r", "-nuc", "-to", "20"]
    cmd += ["127.0.0.1", str(port), *[str(p) for p in paths]]
    return subprocess.run(cmd, env=dcmtk_env(), capture_output=True, text=True, timeout=timeout)


def storescu_cmd(port: int, paths: Sequence[Path], called: str = "QCNODE", calling: str = "STORESCU") -> list[str]:
    return [
        require_tool("storescu"),
        "-v",
        "-aet",
        calling,
        "-aec",
        called,
        "+sd",
        "+r",
        "-to",
        "20",
        "127.0.0.1",
        str(port),
        *[str(p) for p in paths],
    ]


class Orthanc:
    """An Orthanc server from a config folder written here; stop() kills it by PID and waits for it to exit."""

    def __init__(self, workdir: Path, aet: str = "ORTHANC", modalities: dict[str, list[Any]] | None = None) -> None:
        self.workdir = workdir
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.aet = aet
        workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "qc-test",
            "StorageDirectory": str(workdir / "storage"),
            "IndexDirectory": str(workdir / "storage"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": aet,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomModalities": modalities or {},
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomCheckCalledAet": False,
            "Plugins": [],
            "StableAge": 2,
            "DicomScuTimeout": 30,
        }
        (workdir / "orthanc.json").write_text(json.dumps(config))
        self.log = open(workdir / "orthanc.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [require_tool("Orthanc"), str(workdir / "orthanc.json")], stdout=self.log, stderr=subprocess.STDOUT
        )
        self._wait_ready()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def _wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited: {(self.workdir / 'orthanc.log').read_text()[-2000:]}")
            try:
                self.get("/system")
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("Orthanc did not start")

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=30) as resp:
            return json.loads(resp.read())

    def post(self, path: str, body: Any, timeout: float = 300) -> Any:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method="POST")
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def put(self, path: str, body: Any) -> Any:
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method="PUT")
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
