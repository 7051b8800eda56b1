"""Database URLs for tests: a fresh SQLite file, or a fresh schema in the PostgreSQL test database.

The PostgreSQL URL comes from ``QC_TEST_DATABASE_URL`` (``.ci/run`` and ``make test`` set it). Without it the
PostgreSQL cases fail with that message: storage tests must run on both backends, never skip silently.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text

BACKENDS = ("sqlite", "postgresql")


def postgres_base_url() -> str:
    url = os.environ.get("QC_TEST_DATABASE_URL", "")
    if not url:
        raise RuntimeError(
            "QC_TEST_DATABASE_URL is not set: run the tests with `make test` (it starts PostgreSQL) "
            "or point it at a PostgreSQL database"
        )
    return url


@contextmanager
def database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'qc.db'}"
        return
    base = postgres_base_url()
    schema = "t_" + uuid.uuid4().hex[:12]
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
