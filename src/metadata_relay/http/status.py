"""Service routes: ``GET /health``, ``GET /stats``, ``GET /metrics``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from metadata_relay import SERVICE_NAME, __version__
from metadata_relay.observability import METRICS_CONTENT_TYPE, render_metrics
from metadata_relay.storage.sqlite import Database

NO_STORE = {"cache-control": "no-store"}


class Reporter(Protocol):
    """What a component shows: its state in ``/health`` (``"ok"``, ``"degraded"`` or
    ``"disabled"``) and its section of ``/stats``."""

    def health(self) -> str: ...

    def stats(self) -> dict[str, Any]: ...


def routes(db: Database, components: Mapping[str, Reporter]) -> list[BaseRoute]:
    """The service routes, reporting on ``db`` and the (running) ``components``."""

    async def health(request: Request) -> Response:
        db_ok = await db.healthy()
        body: dict[str, Any] = {
            "status": "ok",
            "service": SERVICE_NAME,
            "version": __version__,
            "database": "ok" if db_ok else "unavailable",
        }
        degraded = not db_ok
        for name, component in components.items():
            state = component.health()
            body[name] = state
            degraded = degraded or state == "degraded"
        if degraded:
            body["status"] = "degraded"
        return JSONResponse(body, status_code=200 if db_ok else 503, headers=NO_STORE)

    async def stats(request: Request) -> Response:
        body: dict[str, Any] = {"service": SERVICE_NAME, "version": __version__}
        for name, component in components.items():
            body[name] = component.stats()
        return JSONResponse(body, headers=NO_STORE)

    async def metrics(request: Request) -> Response:
        return Response(render_metrics(), media_type=METRICS_CONTENT_TYPE, headers=NO_STORE)

    return [
        Route("/health", health, methods=["GET", "HEAD"]),
        Route("/stats", stats, methods=["GET", "HEAD"]),
        Route("/metrics", metrics, methods=["GET", "HEAD"]),
    ]
