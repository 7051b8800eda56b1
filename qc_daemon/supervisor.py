"""``qc-daemon serve``: start one process per role, restart the ones that die, stop them in order.

Order at start: directories, database migrations, jobs left ``processing`` by a previous run go back to the queue,
then the bookkeeper (which reconciles the spool), the receivers, the workers and the web server. Order at stop:
receivers first (no new data), then workers, web, and the bookkeeper last, after it has drained the queue.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import Any

from qc_daemon import roles
from qc_daemon.config import Settings, describe
from qc_daemon.series.bookkeeper import requeue_all
from qc_daemon.store.db import make_engine, make_session_factory, transaction, upgrade
from qc_daemon.store.jobs import requeue_processing, stuck_jobs

log = logging.getLogger(__name__)


@dataclass
class Child:
    name: str
    target: Callable[..., None]
    args: tuple[Any, ...]
    process: BaseProcess | None = None
    restarts: list[float] = field(default_factory=list)
    next_start: float = 0.0


def prepare(settings: Settings) -> None:
    """Create the data directories and bring the database schema up to date."""
    for path in (settings.data_dir, settings.spool_dir, settings.quarantine_dir, settings.run_dir):
        path.mkdir(parents=True, exist_ok=True)
    for stale in settings.run_dir.glob("*.alive"):
        stale.unlink(missing_ok=True)
    engine = make_engine(settings.resolved_database_url)
    try:
        revision = upgrade(engine)
    finally:
        engine.dispose()
    log.info("database ready", extra={"revision": revision})


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ctx = multiprocessing.get_context("spawn")
        self.events: Any = self.ctx.Queue()
        self.children: list[Child] = []
        self.stop = threading.Event()
        self.engine = make_engine(settings.resolved_database_url)
        self.factory = make_session_factory(self.engine)

    def _plan(self) -> None:
        from qc_daemon.ingest.scp import ReceiverOptions, make_receiver_shared

        s = self.settings
        shared = make_receiver_shared(ReceiverOptions.from_settings(s))
        self.children.append(Child("bookkeeper", roles.bookkeeper_main, (s, self.events)))
        for i in range(s.effective_receiver_processes):
            self.children.append(Child(f"receiver-{i}", roles.receiver_main, (s, i, self.events, shared)))
        for i in range(s.workers):
            self.children.append(Child(f"worker-{i}", roles.worker_main, (s, i)))
        if s.http_port:
            self.children.append(Child("web", roles.web_main, (s,)))

    def _start_child(self, child: Child) -> None:
        child.process = self.ctx.Process(target=child.target, args=child.args, name=child.name, daemon=False)
        child.process.start()
        log.info("process started", extra={"child": child.name, "child_pid": child.process.pid})

    def _on_death(self, child: Child) -> None:
        assert child.process is not None
        code = child.process.exitcode
        log.error("process died; restarting", extra={"child": child.name, "exit_code": code})
        if child.name.startswith("worker-"):
            with transaction(self.factory) as session:
                requeued, failed = requeue_processing(
                    session,
                    self.settings.max_job_attempts,
                    worker_id=child.name,
                    reason=f"worker process died (exit code {code})",
                )
            for uid in requeued:
                log.warning("job requeued after worker death", extra={"series_uid": uid, "child": child.name})
            for uid in failed:
                log.error("job failed: worker died too often", extra={"series_uid": uid, "child": child.name})
        now = time.monotonic()
        child.restarts = [t for t in child.restarts if now - t < 60] + [now]
        # Back off when a process keeps crashing, so a broken setup does not spin the CPU.
        child.next_start = now + min(30.0, 0.5 * 2 ** max(0, len(child.restarts) - 3))
        child.process = None

    def _kill_stuck_workers(self) -> None:
        with self.factory() as session:
            stuck = stuck_jobs(session, self.settings.job_timeout_seconds)
        for series_uid, worker in stuck:
            for child in self.children:
                if child.name == worker and child.process is not None and child.process.is_alive():
                    log.error(
                        "job timed out; killing its worker",
                        extra={
                            "series_uid": series_uid,
                            "child": worker,
                            "timeout_s": self.settings.job_timeout_seconds,
                        },
                    )
                    child.process.kill()

    def run(self) -> int:
        log.info("starting node", extra={"settings": describe(self.settings)})
        requeue_all(self.factory, self.settings.max_job_attempts)
        self._plan()
        for child in self.children:
            self._start_child(child)
        last_stuck_check = 0.0
        while not self.stop.wait(0.5):
            for child in self.children:
                if child.process is not None and not child.process.is_alive():
                    child.process.join(0)
                    self._on_death(child)
                if child.process is None and time.monotonic() >= child.next_start and not self.stop.is_set():
                    self._start_child(child)
            if time.monotonic() - last_stuck_check > 5:
                last_stuck_check = time.monotonic()
                try:
                    self._kill_stuck_workers()
                except Exception as exc:
                    log.warning("cannot check for stuck jobs", extra={"error": str(exc)})
        self._shutdown()
        return 0

    def _shutdown(self) -> None:
        log.info("stopping node")
        order = ("receiver-", "worker-", "web", "bookkeeper")
        for prefix in order:
            group = [c for c in self.children if c.name.startswith(prefix) and c.process is not None]
            for child in group:
                assert child.process is not None
                child.process.terminate()
            deadline = time.monotonic() + 10
            for child in group:
                assert child.process is not None
                child.process.join(max(0.1, deadline - time.monotonic()))
                if child.process.is_alive():
                    log.warning("process did not stop; killing it", extra={"child": child.name})
                    child.process.kill()
                    child.process.join(2)
        self.events.close()
        self.engine.dispose()
        log.info("node stopped")


def serve(settings: Settings) -> int:
    prepare(settings)
    supervisor = Supervisor(settings)

    def _handler(signum: int, _frame: Any) -> None:
        log.info("signal received", extra={"signal": signal.Signals(signum).name})
        supervisor.stop.set()

    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)
    return supervisor.run()
