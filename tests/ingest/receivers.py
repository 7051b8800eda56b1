"""Run the node's real receivers in ``spawn`` processes for tests, with their logs in JSON files."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import queue
import signal
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from qc_daemon.ingest.events import QuarantinedFile, SpooledInstance
from qc_daemon.ingest.limits import ReceiverShared, make_receiver_shared
from qc_daemon.ingest.options import ReceiverOptions
from qc_daemon.ingest.scp import heartbeat_path, run_receiver
from tests.peers import free_port

CTX = multiprocessing.get_context("spawn")


def make_options(root: Path, **overrides: Any) -> ReceiverOptions:
    options = ReceiverOptions(
        spool_dir=root / "spool",
        quarantine_dir=root / "quarantine",
        run_dir=root / "run",
        bind_address="127.0.0.1",
        dicom_port=free_port(),
        disk_reserve_mb=16,
        log_level="DEBUG",
        heartbeat_seconds=0.5,
        drain_seconds=2.0,
        network_timeout=20.0,
        dimse_timeout=20.0,
        acse_timeout=10.0,
    )
    return replace(options, **overrides)


def child_main(options: ReceiverOptions, events: Any, index: int, shared: ReceiverShared | None, log: str) -> None:
    """Entry point of a receiver process: JSON logs to ``log`` (and stderr), then ``run_receiver``."""
    from qc_daemon.logs import JsonFormatter, configure_logging

    configure_logging(options.log_level, "json", role=f"receiver-{index}")
    handler = logging.FileHandler(log)
    handler.setFormatter(JsonFormatter())
    logging.getLogger().addHandler(handler)
    run_receiver(options, events, index, shared)


class Receivers:
    """One or more receiving processes sharing ``options`` (and a port), as the supervisor starts them."""

    def __init__(
        self,
        options: ReceiverOptions,
        processes: int = 1,
        shared: ReceiverShared | None = None,
        ports: Sequence[int] | None = None,
    ) -> None:
        self.options = options
        self.events_queue: Any = CTX.Queue()
        if shared is None:
            shared = make_receiver_shared(replace(options, receiver_processes=processes))
        self.shared = shared
        self.ports = list(ports) if ports is not None else [options.dicom_port] * processes
        self.log_dir = options.run_dir.parent / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.procs: list[Any] = []
        self._seen: list[SpooledInstance | QuarantinedFile] = []

    @property
    def port(self) -> int:
        return self.ports[0]

    def start(self, timeout: float = 60) -> Receivers:
        for index, port in enumerate(self.ports):
            heartbeat_path(self.options.run_dir, index).unlink(missing_ok=True)
            proc = CTX.Process(
                target=child_main,
                args=(
                    replace(self.options, dicom_port=port),
                    self.events_queue,
                    index,
                    self.shared,
                    str(self.log_dir / f"receiver-{index}.jsonl"),
                ),
                name=f"receiver-{index}",
            )
            proc.start()
            self.procs.append(proc)
        deadline = time.monotonic() + timeout
        while not all(heartbeat_path(self.options.run_dir, i).exists() for i in range(len(self.ports))):
            dead = [p for p in self.procs if p.exitcode is not None]
            if dead or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"receivers did not start (exit codes {[p.exitcode for p in self.procs]})")
            time.sleep(0.05)
        return self

    def events(self, expected: int | None = None, timeout: float = 15.0) -> list[SpooledInstance | QuarantinedFile]:
        """Every event so far; with ``expected``, wait until that many arrived (then a little more for extras)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._seen.append(self.events_queue.get(timeout=0.2))
                continue
            except queue.Empty:
                pass
            if expected is None or len(self._seen) >= expected or time.monotonic() > deadline:
                break
        return list(self._seen)

    def logs(self) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        for path in sorted(self.log_dir.glob("receiver-*.jsonl")):
            records += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return records

    def kill9(self) -> None:
        for proc in self.procs:
            if proc.pid is not None and proc.exitcode is None:
                os.kill(proc.pid, signal.SIGKILL)
        for proc in self.procs:
            proc.join(10)

    def stop(self) -> list[int | None]:
        for proc in self.procs:
            if proc.exitcode is None:
                proc.terminate()
        for proc in self.procs:
            proc.join(20)
            if proc.exitcode is None:
                proc.kill()
                proc.join(5)
        return [p.exitcode for p in self.procs]

    def __enter__(self) -> Receivers:
        return self.start() if not self.procs else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def spooled(events: Sequence[object]) -> list[SpooledInstance]:
    return [e for e in events if isinstance(e, SpooledInstance)]


def quarantined(events: Sequence[object]) -> list[QuarantinedFile]:
    return [e for e in events if isinstance(e, QuarantinedFile)]


def spool_files(options: ReceiverOptions) -> list[Path]:
    return sorted(p for p in options.spool_dir.rglob("*.dcm") if ".tmp" not in p.parts)


def split_file(path: Path) -> tuple[Any, bytes]:
    """A file's meta information (pydicom) and the bytes after it."""
    import io

    from pydicom.filereader import _read_file_meta_info, read_preamble

    raw = path.read_bytes()
    fp = io.BytesIO(raw)
    read_preamble(fp, False)
    meta = _read_file_meta_info(fp)
    return meta, raw[fp.tell() :]


def dataset_part(path: Path) -> tuple[bytes, str]:
    """The bytes after a file's meta information, and its transfer syntax."""
    meta, data = split_file(path)
    return data, str(meta.TransferSyntaxUID)


def make_copies(sources: Sequence[Path], out_dir: Path, count: int) -> list[Path]:
    """``count`` copies of ``sources`` (cycled) with new SOP Instance UIDs and one new series UID."""
    import pydicom
    from pydicom.uid import generate_uid

    out_dir.mkdir(parents=True, exist_ok=True)
    series = generate_uid()
    paths = []
    for i in range(count):
        ds = pydicom.dcmread(sources[i % len(sources)])
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        path = out_dir / f"{i:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
