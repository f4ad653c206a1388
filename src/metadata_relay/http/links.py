"""Which connection an ASGI scope came from, so the listener's protocols see their requests
reach and leave the application without reading uvicorn's state.

A protocol registers itself under its connection's addresses (local and peer, as the transport
reports them); :class:`LinkMiddleware`, the app's outermost layer, finds it again from the
scope's ``server`` and ``client`` (the same addresses, by the ASGI spec) and lets it wrap the
call (:meth:`Linked.serve`). A scope whose connection is not registered (another server, a
proxy that rewrote ``client``) simply runs unlinked: the protocols then keep to their safe
behaviour (no fast answers after a request went to uvicorn; plain ASGI for WebSockets).
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from starlette.types import ASGIApp, Receive, Scope, Send

Key = tuple[str, int, str, int]


class Linked(Protocol):
    async def serve(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        """Run ``app`` for a scope of this connection."""
        ...


def _pair(address: Any) -> tuple[str, int] | None:
    if isinstance(address, list | tuple) and len(address) >= 2:
        return str(address[0]), int(address[1])
    return None


def transport_key(transport: asyncio.BaseTransport) -> Key | None:
    """The connection's key from its transport (None for non-IP sockets)."""
    local = _pair(transport.get_extra_info("sockname"))
    peer = _pair(transport.get_extra_info("peername"))
    return None if local is None or peer is None else (*local, *peer)


def scope_key(scope: Scope) -> Key | None:
    local = _pair(scope.get("server"))
    peer = _pair(scope.get("client"))
    return None if local is None or peer is None else (*local, *peer)


class Links:
    """The live connections of one server, by key."""

    def __init__(self) -> None:
        self._by_key: dict[Key, Linked] = {}

    def __len__(self) -> int:
        return len(self._by_key)

    def add(self, key: Key | None, protocol: Linked) -> None:
        if key is not None:
            self._by_key[key] = protocol  # an upgraded connection's new protocol replaces

    def drop(self, key: Key | None, protocol: Linked) -> None:
        if key is not None and self._by_key.get(key) is protocol:
            del self._by_key[key]

    def find(self, scope: Scope) -> Linked | None:
        key = scope_key(scope)
        return None if key is None else self._by_key.get(key)


class LinkMiddleware:
    def __init__(self, app: ASGIApp, links: Links) -> None:
        self.app = app
        self.links = links

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            linked = self.links.find(scope)
            if linked is not None:
                await linked.serve(self.app, scope, receive, send)
                return
        await self.app(scope, receive, send)
