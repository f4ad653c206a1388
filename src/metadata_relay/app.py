"""Builds the service: the shared state (:class:`Runtime`), every component, the routes, the
ASGI app whose lifespan opens storage and starts/stops the components in order, and what the
listener shares with it (:class:`~metadata_relay.http.server.Service`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from metadata_relay.bodies import BodyTooLarge, too_large
from metadata_relay.clock import Clock
from metadata_relay.config import Settings
from metadata_relay.crashes.routes import routes as crash_routes
from metadata_relay.http import status
from metadata_relay.http.edge import Edge, EdgeMiddleware
from metadata_relay.http.fastpath import FastPath
from metadata_relay.http.server import Service
from metadata_relay.metadata.gateway import MetadataGateway
from metadata_relay.metadata.hits import HitAnswers
from metadata_relay.metadata.proxy import MetadataProxy
from metadata_relay.observability import get_logger
from metadata_relay.pairing.component import PairingComponent
from metadata_relay.pairing.limits import PairingLimits
from metadata_relay.storage.redis import RedisAdapter
from metadata_relay.storage.sqlite import Database

log = get_logger("metadata_relay.app")


class Component(status.Reporter, Protocol):
    """A long-lived part of the service (proxy, pairing hub, TURN server, ...).

    ``start`` runs in the lifespan before the first request, in registration order; ``stop``
    runs in reverse order on shutdown and must release every socket, task and file it holds.
    ``health`` returns ``"ok"``, ``"degraded"`` or ``"disabled"`` (shown in ``/health``);
    ``stats`` returns the component's section of ``/stats``.
    """

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class Runtime:
    """The running service's shared state: settings, database, clock, resolved secrets,
    components.
    Built with the app; :meth:`open` connects the database and resolves the secrets."""

    settings: Settings
    db: Database
    clock: Clock = field(default_factory=Clock)
    token_secret: str = ""
    turn_secret: str = ""
    components: dict[str, Component] = field(default_factory=dict)

    @property
    def turn_secrets(self) -> tuple[str, ...]:
        """Current TURN secret first, then older ones still accepted during rotation."""
        s = self.settings
        return (self.turn_secret, *(x for x in s.TURN_SECRETS if x != self.turn_secret))

    async def open(self) -> None:
        s = self.settings
        await self.db.connect()
        try:
            self.token_secret = await self.db.secret("RELAY_TOKEN_SECRET", s.RELAY_TOKEN_SECRET)
            self.turn_secret = await self.db.secret("TURN_SECRET", s.TURN_SECRET)
        except BaseException:
            await self.db.close()
            raise


def build_components(runtime: Runtime, redis: RedisAdapter | None, proxy: MetadataProxy,
                     pairing: PairingComponent) -> list[Component]:
    """Every component, in start order, each given what it needs. ``redis`` (the one Redis
    client, when ``REDIS_URL`` is set), ``proxy`` and ``pairing`` are built with the app: the
    listener's fast path answers from the proxy's memory tier, and the pairing routes get
    their service by construction."""
    settings = runtime.settings
    components: list[Component] = [] if redis is None else [redis]
    components.append(proxy)
    if settings.TURN_ENABLED:
        from metadata_relay.turn.component import TurnComponent

        components.append(TurnComponent(settings, runtime.turn_secrets, clock=runtime.clock.time))
    components.append(pairing)
    return components


async def not_found(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": "not_found", "message": "Not found"}, status_code=404)


async def method_not_allowed(request: Request, exc: Exception) -> Response:
    return JSONResponse(
        {"error": "method_not_allowed", "message": "Method not allowed"}, status_code=405
    )


def create_app(settings: Settings, *, pairing_limits: PairingLimits | None = None,
               clock: Clock | None = None) -> Service:
    """The service: its ASGI app (the HTTP edge outermost, then the proxy's gateway, then the
    routes) and the fast path and edge the listener shares with it. ``pairing_limits`` and
    ``clock`` replace the pairing limits and the service's clock (tests)."""
    runtime = Runtime(settings, Database(settings.SQLITE_DB_PATH), clock or Clock())
    redis = RedisAdapter(settings.REDIS_URL) if settings.REDIS_URL else None
    proxy = MetadataProxy(settings, runtime.db, redis, runtime.clock)
    hits = HitAnswers(proxy)
    edge = Edge(access_log=settings.HTTP_ACCESS_LOG)
    # secrets are read at start
    pairing = PairingComponent(settings, runtime.db, runtime, redis, pairing_limits,
                               runtime.clock)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await runtime.open()
        started: list[Component] = []
        try:
            for component in build_components(runtime, redis, proxy, pairing):
                await component.start()
                started.append(component)
                runtime.components[component.name] = component
            log.info("started", port=settings.PORT, database=str(settings.SQLITE_DB_PATH),
                     components=[c.name for c in started])
            yield
        finally:
            for component in reversed(started):
                try:
                    await component.stop()
                except Exception:
                    log.exception("component_stop_failed", component=component.name)
            runtime.components.clear()
            await runtime.db.close()
            log.info("stopped")

    app = Starlette(
        routes=[*status.routes(runtime.db, runtime.components),
                *crash_routes(settings, runtime.db), *pairing.routes()],
        lifespan=lifespan,
        exception_handlers={404: not_found, 405: method_not_allowed, BodyTooLarge: too_large},
    )
    return Service(EdgeMiddleware(MetadataGateway(app, hits), edge), edge, FastPath(hits, edge))
