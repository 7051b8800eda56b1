"""The limit on simultaneous associations, held across all receiving processes.

Each process has its own slot counter in one shared array; the total is the sum. A restarted process resets only its
own counter, so a receiver that crashed with associations open does not leak them.
"""

from __future__ import annotations

import multiprocessing
import threading
from multiprocessing.sharedctypes import SynchronizedArray
from typing import Any

from qc_daemon.ingest.options import ReceiverOptions


class ReceiverShared:
    """State shared by the receiving processes; create it once, before starting them, and pass it to each."""

    def __init__(self, max_associations: int, processes: int, *, shared: bool = True) -> None:
        if processes < 1:
            raise ValueError("processes must be at least 1")
        self.max_associations = max_associations
        self._slots: SynchronizedArray[Any] | _LocalSlots
        if shared:
            self._slots = multiprocessing.get_context("spawn").Array("i", processes)
        else:
            self._slots = _LocalSlots(processes)

    @property
    def processes(self) -> int:
        return len(self._slots)

    def _check(self, index: int) -> None:
        if not 0 <= index < len(self._slots):
            raise ValueError(f"receiver index {index} outside 0..{len(self._slots) - 1}")

    def reset(self, index: int) -> None:
        """Forget the associations of a previous life of receiver ``index`` (call when it starts)."""
        self._check(index)
        with self._slots.get_lock():
            self._slots[index] = 0

    def try_acquire(self, index: int) -> bool:
        """Take one association slot for receiver ``index``; False when the limit is reached."""
        with self._slots.get_lock():
            if sum(self._slots[:]) >= self.max_associations:
                return False
            self._slots[index] += 1
            return True

    def release(self, index: int) -> None:
        with self._slots.get_lock():
            if self._slots[index] > 0:
                self._slots[index] -= 1

    def active(self) -> int:
        with self._slots.get_lock():
            return int(sum(self._slots[:]))


class _LocalSlots(list[int]):
    """A list with the ``get_lock()`` of a shared array, for a receiver running alone."""

    def __init__(self, size: int) -> None:
        super().__init__([0] * size)
        self._lock = threading.Lock()

    def get_lock(self) -> threading.Lock:
        return self._lock


def make_receiver_shared(options: ReceiverOptions) -> ReceiverShared:
    """The shared state for ``options.receiver_processes`` receivers (the supervisor calls it once)."""
    return ReceiverShared(options.max_associations, max(1, options.receiver_processes))
