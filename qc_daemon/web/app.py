"""The ASGI application: ``/healthz`` and the JSON API, with an OpenAPI description at ``/openapi.json``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from qc_daemon import __version__
from qc_daemon.config import Settings
from qc_daemon.store.db import make_engine, make_session_factory
from qc_daemon.store.models import SeriesStatus
from qc_daemon.store.views import get_series, list_quarantine, list_series, status_counts
from qc_daemon.web.health import check_health
from qc_daemon.web.metrics import NodeCollector


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.resolved_database_url)
        app.state.engine = engine
        app.state.sessions = make_session_factory(engine)
        app.state.registry = CollectorRegistry()
        app.state.registry.register(NodeCollector(settings, app.state.sessions))
        yield
        engine.dispose()

    app = FastAPI(
        title="MRI QC node",
        version=__version__,
        description="Artifact scores of every MR series the node received.",
        lifespan=lifespan,
    )

    @app.exception_handler(SQLAlchemyError)
    async def _database_error(_request: Request, exc: SQLAlchemyError) -> JSONResponse:
        kind = "database unavailable" if isinstance(exc, OperationalError) else "database error"
        return JSONResponse({"detail": kind}, status_code=503)

    @app.get("/healthz", tags=["operations"])
    def healthz(request: Request) -> JSONResponse:
        """200 when the database answers and the DICOM listener is alive; 503 with the problems otherwise."""
        health = check_health(settings, request.app.state.engine)
        body = {"status": "ok" if health.ok else "unhealthy", "checks": health.checks, "problems": health.problems}
        return JSONResponse(body, status_code=200 if health.ok else 503)

    @app.get("/metrics", tags=["operations"], response_class=Response)
    def metrics(request: Request) -> Response:
        """Prometheus metrics (text exposition format)."""
        return Response(generate_latest(request.app.state.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/series", tags=["series"])
    def api_series(
        request: Request,
        flagged: bool = False,
        status: Annotated[list[SeriesStatus] | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> list[dict[str, Any]]:
        """Series, newest first; ``flagged=true`` keeps those with an artifact over threshold."""
        with request.app.state.sessions() as session:
            return list_series(
                session,
                flagged=flagged,
                status=[s.value for s in status] if status else None,
                limit=limit,
                offset=offset,
            )

    @app.get("/api/series/{series_uid}", tags=["series"])
    def api_series_one(request: Request, series_uid: str) -> dict[str, Any]:
        """One series with its volumes, scores, flags and timings."""
        with request.app.state.sessions() as session:
            data = get_series(session, series_uid)
        if data is None:
            raise HTTPException(status_code=404, detail=f"no series {series_uid}")
        return data

    @app.get("/api/status", tags=["operations"])
    def api_status(request: Request) -> dict[str, Any]:
        """Series counts per status."""
        with request.app.state.sessions() as session:
            return {"series": status_counts(session)}

    @app.get("/api/quarantine", tags=["operations"])
    def api_quarantine(request: Request, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict[str, Any]]:
        """Datasets that could not be used, with the reason."""
        with request.app.state.sessions() as session:
            return list_quarantine(session, limit)

    return app
