"""Hand events to the bookkeeper's queue off the hot path, in small batches.

``multiprocessing.Queue.put`` wakes the queue's feeder thread on every call; on a small virtual machine that wake-up
costs about as much CPU as writing the instance. :class:`DeferredSink` only appends to a deque on the receiving
thread; a forwarder thread moves what accumulated into the real queue every ``interval`` seconds, so the feeder wakes
once per batch. Events stay hints, as with any ``multiprocessing.Queue`` (whose feeder also buffers): the spool is the
truth, and the bookkeeper reconciles it at start.
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import Any

from qc_daemon.ingest.events import EventSink

LOGGER = logging.getLogger("qc_daemon.ingest")


class DeferredSink:
    """An :class:`EventSink` that forwards to ``target`` from its own thread; :meth:`close` flushes."""

    def __init__(self, target: EventSink, interval: float = 0.02) -> None:
        self._target = target
        self._interval = interval
        self._items: collections.deque[Any] = collections.deque()
        self._stop = threading.Event()
        self._errors = 0
        self._thread = threading.Thread(target=self._run, name="event-forwarder", daemon=True)
        self._thread.start()

    def put(self, obj: Any, /) -> None:
        self._items.append(obj)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._flush()
        self._flush()

    def _flush(self) -> None:
        while self._items:
            obj = self._items.popleft()
            try:
                self._target.put(obj)
            except Exception as exc:  # the file is durable; the bookkeeper finds it when it reconciles
                self._errors += 1
                if self._errors == 1 or self._errors % 1000 == 0:
                    LOGGER.error("cannot queue an event for the bookkeeper: %s", exc, extra={"errors": self._errors})

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
