"""Fixtures shared by every test package."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """The real data set beside the checkout (never copied into the project).

    ``QC_SHARED_DATA`` overrides the default ``<repo>/../shared/data``. A missing data set is an error, not a skip:
    the integration tests are the point of having it.
    """
    path = Path(os.environ.get("QC_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
    if not (path / "manifest.json").is_file():
        raise RuntimeError(f"shared data not found at {path} (set QC_SHARED_DATA to the folder holding manifest.json)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return shared_data_dir()


@pytest.fixture(scope="session")
def manifest(shared_data: Path) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = json.loads((shared_data / "manifest.json").read_text())
    return entries


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """A migrated-schema-free database on each backend (SQLite file, PostgreSQL fresh schema)."""
    from tests.dbs import database_url

    with database_url(request.param, tmp_path) as url:
        yield url
