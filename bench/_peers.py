"""Start and stop the receivers under test (dcmtk ``storescp``, the node's receivers) and run ``storescu``."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qc_daemon.config import load_settings
from qc_daemon.ingest.limits import make_receiver_shared
from qc_daemon.ingest.options import ReceiverOptions
from qc_daemon.ingest.scp import heartbeat_path, run_receiver
from tests.peers import dcmtk_env, free_port

DCMTK_ENV = dcmtk_env()
__all__ = ["free_port"]


def wait_for_echo(port: int, aet: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = subprocess.run(
            ["echoscu", "-aec", aet, "-to", "2", "127.0.0.1", str(port)], env=DCMTK_ENV, capture_output=True
        )
        if result.returncode == 0:
            return
        time.sleep(0.2)
    raise TimeoutError(f"no C-ECHO answer on port {port} after {timeout} s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Receiver:
    """A running receiver: its port, its processes and a way to count what it stored."""

    name: str
    port: int
    aet: str
    pids: list[int]
    count: Any  # () -> int: instances stored so far
    stop: Any  # () -> None
    extra: dict[str, Any] = field(default_factory=dict)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Terminate a peer, then kill it if it has not gone within 10 s."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def storescp(out_dir: Path, fork: bool, max_pdu: int = 131072) -> Iterator[Receiver]:
    """dcmtk ``storescp`` writing what it receives bit-preserving (``+B``) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cmd = ["storescp", "+B", "-pdu", str(max_pdu), "-od", str(out_dir), "-aet", "STORESCP"]
    if fork:
        cmd.append("--fork")
    proc = subprocess.Popen([*cmd, str(port)], env=DCMTK_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_echo(port, "STORESCP")
        yield Receiver(
            name="storescp --fork" if fork else "storescp",
            port=port,
            aet="STORESCP",
            pids=[proc.pid],
            count=lambda: sum(1 for p in out_dir.iterdir() if p.is_file()),
            stop=proc.terminate,
        )
    finally:
        stop_process(proc)


@contextlib.contextmanager
def plain_pynetdicom(out_dir: Path) -> Iterator[Receiver]:
    """The baseline: a plain pynetdicom SCP with durable writes (``bench/_plain_scp.py``)."""
    import sys

    port = free_port()
    script = Path(__file__).with_name("_plain_scp.py")
    proc = subprocess.Popen(
        [sys.executable, str(script), str(port), str(out_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        wait_for_echo(port, "PLAINSCP")
        yield Receiver(
            name="pynetdicom, plain",
            port=port,
            aet="PLAINSCP",
            pids=[proc.pid],
            count=lambda: sum(1 for p in out_dir.glob("*.dcm")),
            stop=proc.terminate,
        )
    finally:
        stop_process(proc)


@contextlib.contextmanager
def node_receivers(data_dir: Path, env_overrides: dict[str, str] | None = None) -> Iterator[Receiver]:
    """The node's real receiving processes, configured as ``qc-daemon serve`` configures them.

    Settings come from the defaults plus ``QC_*`` variables of the environment (so ``QC_RECEIVER_PROCESSES=4`` or
    ``QC_FSYNC=false`` can be tried), with the data directory and port of this run. A thread stands in for the
    bookkeeper and drains the event queue.
    """
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if k.startswith("QC_")}
    environ.update({"QC_DATA_DIR": str(data_dir), "QC_DICOM_PORT": str(port), "QC_BIND_ADDRESS": "127.0.0.1"})
    environ.update(env_overrides or {})
    settings = load_settings(None, environ=environ)
    options = ReceiverOptions.from_settings(settings)
    ctx = multiprocessing.get_context("spawn")
    events: Any = ctx.Queue()
    shared = make_receiver_shared(options)
    processes = [
        ctx.Process(target=run_receiver, args=(options, events, index, shared), name=f"receiver-{index}")
        for index in range(options.receiver_processes)
    ]
    received = [0]
    done = threading.Event()

    def drain() -> None:
        while not done.is_set():
            try:
                events.get(timeout=0.2)
            except queue.Empty:
                continue
            received[0] += 1

    drainer = threading.Thread(target=drain, daemon=True)
    drainer.start()
    for process in processes:
        process.start()
    try:
        deadline = time.monotonic() + 60
        while not all(heartbeat_path(options.run_dir, i).exists() for i in range(len(processes))):
            if time.monotonic() > deadline or any(p.exitcode is not None for p in processes):
                raise RuntimeError("the node's receivers did not start")
            time.sleep(0.1)
        wait_for_echo(port, options.ae_title)
        yield Receiver(
            name="node",
            port=port,
            aet=options.ae_title,
            pids=[p.pid for p in processes if p.pid is not None],
            count=lambda: received[0],
            stop=lambda: None,
            extra={"processes": len(processes), "fsync": options.fsync, "max_pdu_size": options.max_pdu_size},
        )
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.join(20)
            if process.exitcode is None:
                process.kill()
                process.join()
        done.set()
        drainer.join(2)
        events.close()
        events.join_thread()


def send_with_storescu(port: int, aet: str, groups: Sequence[Sequence[Path]]) -> float:
    """Send each group over its own association, all at once, with ``storescu``; return the wall time in seconds."""
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            ["storescu", "-aec", aet, "127.0.0.1", str(port), *map(str, group)],
            env=DCMTK_ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for group in groups
    ]
    errors = [p.communicate()[1] for p in procs]
    elapsed = time.perf_counter() - started
    failed = [
        (p.returncode, e.decode(errors="replace")[-500:]) for p, e in zip(procs, errors, strict=True) if p.returncode
    ]
    if failed:
        raise RuntimeError(f"storescu failed: {failed}")
    return elapsed


def reset_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path
