"""Run the real node (``qc-daemon serve``) in a subprocess on free loopback ports, as hospital IT would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.peers import free_port

REPO = Path(__file__).resolve().parents[2]


class Node:
    def __init__(self, data_dir: Path, database_url: str | None = None, **settings: Any) -> None:
        self.data_dir = data_dir
        self.dicom_port = int(settings.pop("dicom_port", 0)) or free_port()
        self.http_port = int(settings.pop("http_port", 0)) or free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("QC_")}
        self.env.update(
            {
                "QC_DATA_DIR": str(data_dir),
                "QC_DICOM_PORT": str(self.dicom_port),
                "QC_HTTP_PORT": str(self.http_port),
                "QC_BIND_ADDRESS": "127.0.0.1",
                "QC_HTTP_HOST": "127.0.0.1",
                "QC_SERIES_QUIET_SECONDS": "2",
                "QC_DISK_RESERVE_MB": "64",
                "QC_LOG_FORMAT": "json",
            }
        )
        if database_url:
            self.env["QC_DATABASE_URL"] = database_url
        for key, value in settings.items():
            self.env["QC_" + key.upper()] = value if isinstance(value, str) else json.dumps(value)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}-node.log"
        self._log = None

    # --- lifecycle
    def start(self, wait: bool = True) -> Node:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "qc_daemon", "serve"],
            cwd=REPO,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so kill -9 can take the whole node
        )
        if wait:
            self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"node exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                status, body = self.http("/healthz")
                last = body
                if status == 200:
                    return dict(body)
            except OSError as exc:
                last = exc
            time.sleep(0.2)
        raise RuntimeError(f"node not healthy after {timeout}s: {last}\n{self.log_tail()}")

    def stop(self, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._wait_group_gone()
        if self._log:
            self._log.close()
        return self.proc.returncode

    def kill9(self) -> None:
        """What a power cut or the OOM killer does: SIGKILL the whole process group, no clean-up."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._wait_group_gone()
        if self._log:
            self._log.close()

    def _wait_group_gone(self, timeout: float = 15) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        os.killpg(self.proc.pid, signal.SIGKILL)

    # --- observation
    def http(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null")

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "qc_daemon", *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def series(self) -> list[dict[str, Any]]:
        proc = self.cli("series", "list", "--json")
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr)
        rows: list[dict[str, Any]] = json.loads(proc.stdout)
        return rows

    def wait_for(self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 120) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        rows: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            _, rows = self.http("/api/series?limit=1000")
            if isinstance(rows, list) and predicate(rows):
                return rows
            time.sleep(0.5)
        raise AssertionError(
            f"condition not met in {timeout}s; series now: {json.dumps(rows, indent=1)[:4000]}\n{self.log_tail()}"
        )

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for raw in self.log_path.read_text(errors="replace").splitlines():
            try:
                lines.append(json.loads(raw))
            except json.JSONDecodeError:
                lines.append({"msg": raw, "level": "RAW"})
        return lines

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return ""


def final(rows: list[dict[str, Any]]) -> bool:
    return bool(rows) and all(r["status"] in ("done", "skipped", "failed") for r in rows)
