"""The spool: received instances on disk, one folder per series, written atomically and durably.

Layout (``docs/architecture.md``)::

    spool/<series_uid>/<sop_instance_uid>.dcm   exactly the bytes received, preceded by a file meta header
    spool/.tmp/<pid>-<n>.part                   files being written (never visible as instances)
    quarantine/<stamp>-<uid>.dcm + .json        what could not be spooled or parsed, and why

A write goes to ``spool/.tmp`` (same filesystem), is fsynced, then hard-linked to its final name (``link`` fails if
the name exists, so of two concurrent copies of one instance the first is kept) and the series folder is fsynced.
Only then does :meth:`Spool.write` return, and only then does the receiver acknowledge the instance: after a crash
or power loss, everything acknowledged is in the spool and nothing half-written is visible there.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import json
import os
import re
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

TMP_DIR_NAME = ".tmp"
_TMP_SUFFIX = ".part"
_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_UNSAFE_RE = re.compile(r"[^0-9A-Za-z._-]+")
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)

Buffer = bytes | bytearray | memoryview


def safe_name(uid: str) -> str:
    """A file-name-safe form of a UID: the UID itself when it is a valid UID, else a sanitised name plus a hash.

    Never empty, never starting with a dot, never containing a path separator, at most 100 characters.
    """
    if len(uid) <= 64 and _UID_RE.match(uid):
        return uid
    digest = hashlib.sha256(uid.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    cleaned = _UNSAFE_RE.sub("_", uid).strip("._-")[:64]
    return f"x-{cleaned}-{digest}" if cleaned else f"x-{digest}"


def _fsync_dir(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY | _O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_datasync = getattr(os, "fdatasync", os.fsync)


class _DirSyncer:
    """Coalesces directory fsyncs: a caller is covered by any fsync of the folder that *started* after its link.

    With several associations writing into one series folder, one fsync serves every link made before it started
    instead of one fsync per instance.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[str, _DirState] = {}

    def sync(self, path: str) -> None:
        state = self._states.get(path)
        if state is None:
            with self._lock:
                state = self._states.setdefault(path, _DirState())
        state.sync(path)


class _DirState:
    __slots__ = ("cond", "requested", "running", "synced")

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.requested = 0
        self.synced = 0
        self.running = False

    def sync(self, path: str) -> None:
        with self.cond:
            self.requested += 1
            mine = self.requested
            while True:
                if self.synced >= mine:
                    return
                if not self.running:
                    self.running = True
                    target = self.requested
                    break
                self.cond.wait()
        ok = False
        try:
            _fsync_dir(path)
            ok = True
        finally:
            with self.cond:
                self.running = False
                if ok:
                    self.synced = max(self.synced, target)
                self.cond.notify_all()


class Spool:
    """Atomic, durable, idempotent storage of received instances (thread-safe; one per process)."""

    def __init__(self, spool_dir: Path, quarantine_dir: Path, fsync: bool = True) -> None:
        self.spool_dir = Path(spool_dir).resolve()
        self.quarantine_dir = Path(quarantine_dir).resolve()
        self.fsync = fsync
        self.tmp_dir = self.spool_dir / TMP_DIR_NAME
        self._quarantine_tmp = self.quarantine_dir / TMP_DIR_NAME
        self._spool_str = str(self.spool_dir)
        self._tmp_str = str(self.tmp_dir)
        for folder in (self.spool_dir, self.tmp_dir, self.quarantine_dir, self._quarantine_tmp):
            folder.mkdir(parents=True, exist_ok=True)
        self._series_dirs: set[str] = set()
        self._series_lock = threading.Lock()
        self._dir_syncer = _DirSyncer()
        self._counter = itertools.count()
        self._pid = os.getpid()

    # --- paths
    def instance_path(self, series_uid: str, sop_instance_uid: str) -> Path:
        """``spool/<series_uid>/<sop_instance_uid>.dcm`` with both UIDs made file-name safe."""
        return self.spool_dir / safe_name(series_uid) / (safe_name(sop_instance_uid) + ".dcm")

    def _tmp_path(self, folder: str) -> str:
        if os.getpid() != self._pid:  # forked: keep temp names unique per process
            self._pid = os.getpid()
        return f"{folder}/{self._pid}-{threading.get_ident()}-{next(self._counter)}{_TMP_SUFFIX}"

    # --- writing
    def write(self, series_uid: str, sop_instance_uid: str, data: Buffer, *, header: Buffer = b"") -> tuple[Path, bool]:
        """Store ``header + data`` as the instance; return ``(path, duplicate)``.

        ``duplicate`` is True when the instance was already in the spool: the first copy is kept, nothing is written.
        Raises ``OSError`` (no partial file is left behind) when the write fails.
        """
        final, duplicate = self.write_str(series_uid, sop_instance_uid, data, header=header)
        return Path(final), duplicate

    def write_str(
        self, series_uid: str, sop_instance_uid: str, data: Buffer, *, header: Buffer = b""
    ) -> tuple[str, bool]:
        """:meth:`write` returning the path as a string (the receiver's hot path: pathlib costs more than I/O)."""
        series_name = safe_name(series_uid)
        series_dir = os.path.join(self._spool_str, series_name)
        final = os.path.join(series_dir, safe_name(sop_instance_uid) + ".dcm")
        if os.path.exists(final):
            return final, True
        self._ensure_series_dir(series_name, series_dir)
        tmp = self._tmp_path(self._tmp_str)
        self._write_file(tmp, (header, data) if header else (data,))
        try:
            created = self._link(tmp, final, series_name, series_dir)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if not created:
            return final, True
        if self.fsync:
            self._dir_syncer.sync(series_dir)
        return final, False

    def _link(self, tmp: str, final: str, series_name: str, series_dir: str) -> bool:
        """Give ``tmp`` its final name unless that name exists; return whether it was created."""
        for attempt in range(2):
            try:
                os.link(tmp, final)
                return True
            except FileExistsError:
                return False
            except FileNotFoundError:
                if attempt:
                    raise
                # the series folder was removed since we created it (e.g. cleaned up after processing)
                with self._series_lock:
                    self._series_dirs.discard(series_name)
                self._ensure_series_dir(series_name, series_dir)
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                    raise
                # a filesystem without hard links: rename (a concurrent duplicate could then replace the first copy)
                os.rename(tmp, final)
                return True
        return False  # not reached

    def _ensure_series_dir(self, name: str, series_dir: str) -> None:
        if name in self._series_dirs:
            return
        with self._series_lock:
            if name in self._series_dirs:
                return
            try:
                os.mkdir(series_dir)
                created = True
            except FileExistsError:
                created = False
            if created and self.fsync:
                _fsync_dir(self._spool_str)
            self._series_dirs.add(name)

    def _write_file(self, path: str | Path, parts: Sequence[Buffer]) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC, 0o644)
        try:
            total = sum(len(p) for p in parts)
            written = os.writev(fd, parts)
            if written < total:  # short write: finish it piecewise
                blob = memoryview(b"".join(bytes(p) for p in parts))[written:]
                while blob:
                    blob = blob[os.write(fd, blob) :]
            if self.fsync:
                _datasync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            raise
        os.close(fd)

    # --- quarantine
    def quarantine_bytes(self, data: Buffer, reason: str, **meta: str) -> Path:
        """Keep bytes that could not be spooled, with ``<name>.json`` holding the reason and ``meta``; durable."""
        base = self._quarantine_name(meta.get("sop_instance_uid", ""))
        target = self.quarantine_dir / f"{base}.dcm"
        tmp = self._tmp_path(str(self._quarantine_tmp))
        self._write_file(tmp, (data,))
        os.rename(tmp, target)
        self._write_reason(base, reason, meta, size=len(data))
        return target

    def move_to_quarantine(self, path: Path, reason: str, **meta: str) -> Path:
        """Move a spooled file into the quarantine with its reason (for the bookkeeper); durable."""
        path = Path(path)
        base = self._quarantine_name(meta.get("sop_instance_uid", "") or path.stem)
        target = self.quarantine_dir / f"{base}.dcm"
        size = path.stat().st_size
        try:
            os.rename(path, target)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            tmp = self._tmp_path(str(self._quarantine_tmp))
            self._write_file(tmp, (path.read_bytes(),))
            os.rename(tmp, target)
            path.unlink()
        self._write_reason(base, reason, {"original_path": str(path), **meta}, size=size)
        if self.fsync:
            _fsync_dir(path.parent)
        return target

    def _quarantine_name(self, uid: str) -> str:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        return f"{stamp}-{self._pid}-{next(self._counter)}-{safe_name(uid) if uid else 'unknown'}"

    def _write_reason(self, base: str, reason: str, meta: dict[str, str], size: int) -> None:
        record = {"reason": reason, "size": size, "quarantined_at": time.time(), **meta}
        tmp = self._tmp_path(str(self._quarantine_tmp))
        self._write_file(tmp, (json.dumps(record, indent=1, sort_keys=True).encode("utf-8"),))
        os.rename(tmp, self.quarantine_dir / f"{base}.json")
        if self.fsync:
            _fsync_dir(self.quarantine_dir)

    # --- start-up
    def iter_instances(self) -> Iterator[tuple[str, str, Path]]:
        """Every spooled instance as ``(series folder name, SOP instance file stem, path)``.

        The names are the UIDs unless a UID was not a valid UID (see :func:`safe_name`); read the header for the
        exact values.
        """
        with os.scandir(self.spool_dir) as series_entries:
            for series in sorted(series_entries, key=lambda e: e.name):
                if series.name.startswith(".") or not series.is_dir(follow_symlinks=False):
                    continue
                with os.scandir(series.path) as files:
                    for entry in sorted(files, key=lambda e: e.name):
                        if entry.name.endswith(".dcm") and entry.is_file(follow_symlinks=False):
                            yield series.name, entry.name[:-4], Path(entry.path)

    def clean_tmp(self, max_age: float = 60.0) -> int:
        """Remove abandoned temporary files (never acknowledged); return how many were removed.

        A temporary file lives for the few milliseconds of one write: one whose writing process is gone, or older
        than ``max_age`` seconds, is abandoned. Safe to call while receivers run.
        """
        removed = 0
        now = time.time()
        for folder in (self.tmp_dir, self._quarantine_tmp):
            with os.scandir(folder) as entries:
                for entry in entries:
                    if not entry.is_file(follow_symlinks=False):
                        continue
                    try:
                        old = now - entry.stat().st_mtime > max_age
                    except FileNotFoundError:
                        continue
                    if old or not _owner_alive(entry.name):
                        try:
                            os.unlink(entry.path)
                            removed += 1
                        except FileNotFoundError:
                            pass
        return removed


def _owner_alive(name: str) -> bool:
    pid_text = name.split("-", 1)[0]
    if not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
