"""Builds the ASGI application; its lifespan opens storage and starts/stops every component."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp

from metadata_relay import status
from metadata_relay.component import Component
from metadata_relay.config import Settings
from metadata_relay.http_edge import EdgeMiddleware
from metadata_relay.metadata.gateway import STATE_KEY, MetadataGateway
from metadata_relay.metadata.proxy import MetadataProxy
from metadata_relay.observability import get_logger
from metadata_relay.runtime import Runtime
from metadata_relay.storage.redis import RedisAdapter

log = get_logger("metadata_relay.app")


def build_components(runtime: Runtime) -> list[Component]:
    """Every component, in start order."""
    settings = runtime.settings
    redis = RedisAdapter(settings.REDIS_URL) if settings.REDIS_URL else None
    components: list[Component] = [] if redis is None else [redis]
    components.append(MetadataProxy(settings, runtime.db, redis))
    if runtime.settings.TURN_ENABLED:
        from metadata_relay.turn.component import TurnComponent

        components.append(TurnComponent(runtime.settings, runtime.turn_secrets))
    from metadata_relay.pairing.component import PairingComponent

    components.append(PairingComponent(runtime))
    return components


def build_routes() -> list[BaseRoute]:
    from metadata_relay.pairing.routes import routes as pairing_routes

    return [*status.routes, *pairing_routes]


async def not_found(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": "not_found", "message": "Not found"}, status_code=404)


async def method_not_allowed(request: Request, exc: Exception) -> Response:
    return JSONResponse(
        {"error": "method_not_allowed", "message": "Method not allowed"}, status_code=405
    )


def create_app(settings: Settings) -> ASGIApp:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, object]]:
        runtime = await Runtime.open(settings)
        app.state.runtime = runtime
        started: list[Component] = []
        try:
            for component in build_components(runtime):
                await component.start()
                started.append(component)
                runtime.components[component.name] = component
            log.info("started", port=settings.PORT, database=str(settings.SQLITE_DB_PATH),
                     components=[c.name for c in started])
            # ASGI lifespan state: copied into every request's scope["state"]
            yield {"runtime": runtime, STATE_KEY: runtime.components["cache"]}
        finally:
            for component in reversed(started):
                try:
                    await component.stop()
                except Exception:
                    log.exception("component_stop_failed", component=component.name)
            await runtime.db.close()
            log.info("stopped")

    app = Starlette(
        routes=build_routes(),
        lifespan=lifespan,
        exception_handlers={404: not_found, 405: method_not_allowed},
    )
    return MetadataGateway(EdgeMiddleware(app))
