"""Free-space check for the hot path: ``statvfs`` at most every ``ttl`` seconds, then plain arithmetic."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path


class DiskGuard:
    """Says whether a write of ``size`` bytes keeps at least ``reserve_bytes`` free on the spool's filesystem."""

    def __init__(
        self,
        path: Path,
        reserve_bytes: int,
        *,
        ttl: float = 0.25,
        statvfs: Callable[[Path], os.statvfs_result] = os.statvfs,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.reserve_bytes = reserve_bytes
        self._ttl = ttl
        self._statvfs = statvfs
        self._clock = clock
        self._lock = threading.Lock()
        self._checked_at = float("-inf")
        self._free = 0
        self._pending = 0  # bytes written since the last statvfs, not yet seen by it

    def free_bytes(self) -> int:
        """Free bytes for unprivileged writers (``f_bavail``), as of at most ``ttl`` seconds ago."""
        now = self._clock()
        if now - self._checked_at >= self._ttl:
            with self._lock:
                if now - self._checked_at >= self._ttl:
                    st = self._statvfs(self.path)
                    self._free = st.f_bavail * st.f_frsize
                    self._checked_at = now
                    self._pending = 0
        return self._free - self._pending

    def has_room(self, size: int) -> bool:
        return self.free_bytes() - size >= self.reserve_bytes

    def consumed(self, size: int) -> None:
        """Account for ``size`` bytes just written, until the next ``statvfs`` sees them."""
        self._pending += size
