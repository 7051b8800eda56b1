"""Spool (atomic, idempotent, traversal-proof), quarantine, clean-up, disk guard, association slots, event sink."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from qc_daemon.ingest.diskguard import DiskGuard
from qc_daemon.ingest.limits import ReceiverShared
from qc_daemon.ingest.sink import DeferredSink
from qc_daemon.ingest.spool import Spool, safe_name


def make_spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "spool", tmp_path / "quarantine")


def test_write_is_atomic_and_idempotent(tmp_path: Path) -> None:
    spool = make_spool(tmp_path)
    path, duplicate = spool.write("1.2.3", "1.2.3.4", b"dataset", header=b"meta")
    assert not duplicate
    assert path == tmp_path / "spool" / "1.2.3" / "1.2.3.4.dcm"
    assert path.read_bytes() == b"metadataset"
    again, duplicate = spool.write("1.2.3", "1.2.3.4", b"another copy")
    assert (again, duplicate) == (path, True)
    assert path.read_bytes() == b"metadataset"  # the first copy is kept
    assert list(spool.tmp_dir.iterdir()) == []
    assert list(spool.iter_instances()) == [("1.2.3", "1.2.3.4", path)]


def test_concurrent_duplicates_keep_exactly_one_copy(tmp_path: Path) -> None:
    spool = make_spool(tmp_path)
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def write(n: int) -> None:
        barrier.wait()
        results.append(spool.write("1.2.3", "9.9", f"copy {n}".encode())[1])

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] + [True] * 7
    assert len(list(spool.iter_instances())) == 1
    assert list(spool.tmp_dir.iterdir()) == []


@pytest.mark.parametrize("uid", ["../../etc/passwd", "..", ".", "", "a/b", "1.2.3\0", "/abs", "x" * 300, "1.2.é"])
def test_names_never_escape_the_spool(tmp_path: Path, uid: str) -> None:
    spool = make_spool(tmp_path)
    name = safe_name(uid)
    assert name and "/" not in name and "\0" not in name and not name.startswith(".") and len(name) <= 100
    path = spool.instance_path(uid, uid)
    assert path.resolve().parent.parent == spool.spool_dir
    written, _ = spool.write(uid, uid, b"x")
    assert written.resolve().is_relative_to(spool.spool_dir)
    assert safe_name("1.2.840.10008.1") == "1.2.840.10008.1"
    assert safe_name("a/b") != safe_name("a_b")  # sanitised names carry a hash: no collisions


def test_series_folder_removed_behind_the_spool(tmp_path: Path) -> None:
    spool = make_spool(tmp_path)
    first, _ = spool.write("1.2.3", "1.1", b"a")
    first.unlink()
    first.parent.rmdir()
    second, duplicate = spool.write("1.2.3", "1.2", b"b")
    assert not duplicate and second.read_bytes() == b"b"


def test_write_error_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = make_spool(tmp_path)

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("qc_daemon.ingest.spool._datasync", broken_fsync)
    with pytest.raises(OSError):
        spool.write("1.2.3", "1.2.3.4", b"dataset")
    assert list(spool.tmp_dir.iterdir()) == []
    assert list(spool.iter_instances()) == []


def test_quarantine_bytes_and_move(tmp_path: Path) -> None:
    spool = make_spool(tmp_path)
    q = spool.quarantine_bytes(b"garbage", "cannot parse", sop_instance_uid="1.2.9", calling_ae="MOD")
    assert q.parent == spool.quarantine_dir and q.read_bytes() == b"garbage"
    record = json.loads(q.with_suffix(".json").read_text())
    assert record["reason"] == "cannot parse" and record["calling_ae"] == "MOD" and record["size"] == 7
    path, _ = spool.write("1.2.3", "1.2.3.4", b"later found broken")
    moved = spool.move_to_quarantine(path, "bookkeeper could not parse", sop_instance_uid="1.2.3.4")
    assert not path.exists() and moved.read_bytes() == b"later found broken"
    assert json.loads(moved.with_suffix(".json").read_text())["original_path"] == str(path)
    assert list(spool.iter_instances()) == []


def test_clean_tmp_removes_only_abandoned_files(tmp_path: Path) -> None:
    spool = make_spool(tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    abandoned = spool.tmp_dir / f"{dead_pid}-1-1.part"
    abandoned.write_bytes(b"half")
    live = spool.tmp_dir / f"{os.getpid()}-1-2.part"  # a write in progress in a running receiver
    live.write_bytes(b"in progress")
    old = spool.tmp_dir / f"{os.getpid()}-1-3.part"
    old.write_bytes(b"stale")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    assert spool.clean_tmp() == 2
    assert sorted(p.name for p in spool.tmp_dir.iterdir()) == [live.name]


def test_disk_guard_caches_and_recovers() -> None:
    free = {"bytes": 10 * 2**20}
    now = {"t": 0.0}
    calls = []

    def statvfs(path: Path) -> SimpleNamespace:
        calls.append(path)
        return SimpleNamespace(f_bavail=free["bytes"] // 4096, f_frsize=4096)

    guard = DiskGuard(Path("/x"), 8 * 2**20, ttl=0.25, statvfs=statvfs, clock=lambda: now["t"])  # type: ignore[arg-type]
    assert guard.has_room(2**20)
    guard.consumed(2**20)
    assert not guard.has_room(2**20 + 1)  # 9 MiB left - 1 MiB + 1 is below the 8 MiB reserve
    assert len(calls) == 1  # cached
    free["bytes"] = 2**20
    now["t"] = 0.3
    assert not guard.has_room(0)  # full
    free["bytes"] = 100 * 2**20  # space returns
    now["t"] = 0.6
    assert guard.has_room(2**20)
    assert len(calls) == 3


def test_association_slots() -> None:
    shared = ReceiverShared(3, 2)
    assert shared.try_acquire(0) and shared.try_acquire(1) and shared.try_acquire(1)
    assert not shared.try_acquire(0)
    assert shared.active() == 3
    shared.reset(1)  # receiver 1 restarted: its associations are gone
    assert shared.active() == 1
    shared.release(0)
    shared.release(0)  # never below zero
    assert shared.active() == 0
    with pytest.raises(ValueError):
        shared.reset(2)


def test_deferred_sink_forwards_everything_in_order() -> None:
    received: list[int] = []

    class Target:
        def put(self, obj: int) -> None:
            received.append(obj)

    sink = DeferredSink(Target(), interval=0.01)
    for i in range(1000):
        sink.put(i)
    sink.close()
    assert received == list(range(1000))
