"""Fixtures for the receiving edge: real receiver processes on free loopback ports, tmp spools."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from qc_daemon.ingest.options import ReceiverOptions
from tests.ingest.receivers import Receivers, make_options
from tests.peers import require_tool


@pytest.fixture(scope="session", autouse=True)
def _dcmtk() -> None:
    for tool in ("echoscu", "storescu", "storescp", "dcmsend", "dcmodify"):
        require_tool(tool)  # missing tools fail the run, they never skip it


@pytest.fixture
def make_receivers(tmp_path: Path) -> Iterator[Callable[..., Receivers]]:
    started: list[Receivers] = []

    def factory(processes: int = 1, root: Path | None = None, **overrides: Any) -> Receivers:
        options: ReceiverOptions = make_options(root or tmp_path / f"node{len(started)}", **overrides)
        receivers = Receivers(options, processes=processes).start()
        started.append(receivers)
        return receivers

    yield factory
    for receivers in started:
        receivers.stop()


@pytest.fixture(scope="session")
def shared_files(shared_data: Path) -> list[Path]:
    files = sorted((shared_data / "dicom").rglob("*.dcm"))
    assert len(files) == 1027
    return files
