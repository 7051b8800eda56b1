"""Health of the node as seen from the web process: database reachable, DICOM listener alive."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine

from qc_daemon.config import Settings
from qc_daemon.store.db import ping

HEARTBEAT_STALE_SECONDS = 10.0


@dataclass
class Health:
    ok: bool
    checks: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def _alive(settings: Settings, pattern: str, now: float) -> list[str]:
    alive = []
    for path in settings.run_dir.glob(pattern):
        try:
            if now - path.stat().st_mtime < HEARTBEAT_STALE_SECONDS:
                alive.append(path.stem)
        except FileNotFoundError:
            continue
    return sorted(alive)


def check_health(settings: Settings, engine: Engine) -> Health:
    health = Health(ok=True)
    now = time.time()
    try:
        ping(engine)
        health.checks["database"] = "ok"
    except Exception as exc:
        health.checks["database"] = "down"
        health.problems.append(f"database unreachable: {type(exc).__name__}")
    receivers = _alive(settings, "receiver-*.alive", now)
    health.checks["receivers_alive"] = len(receivers)
    health.checks["receivers_expected"] = settings.effective_receiver_processes
    if not receivers:
        health.problems.append("DICOM listener down: no receiver process alive")
    health.checks["bookkeeper"] = "ok" if _alive(settings, "bookkeeper.alive", now) else "down"
    if health.checks["bookkeeper"] != "ok":
        health.problems.append("bookkeeper down: received instances are not indexed")
    try:
        usage = shutil.disk_usage(settings.spool_dir)
        health.checks["disk_free_mb"] = usage.free // (1024 * 1024)
        health.checks["disk_reserve_mb"] = settings.disk_reserve_mb
        if usage.free < settings.disk_reserve_mb * 1024 * 1024:
            health.problems.append("disk below reserve: new instances are refused (0xA700)")
    except OSError as exc:
        health.problems.append(f"spool not accessible: {exc.strerror}")
    health.ok = not health.problems
    return health
