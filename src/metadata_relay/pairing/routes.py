"""Pairing REST API (``/relay/...``), the two WebSocket endpoints, and the node claims of
current mydia (``/pairing/claim``), built around the service they are given."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from metadata_relay.bodies import InvalidJson, read_json_object
from metadata_relay.observability import get_logger
from metadata_relay.pairing import protocol
from metadata_relay.pairing.service import Busy, Limited, PairingService
from metadata_relay.pairing.sockets import ClientSocket, InstanceSocket, SocketEndpoint
from metadata_relay.pairing.store import iso
from metadata_relay.ratelimit import retry_after_header

log = get_logger("metadata_relay.pairing.routes")

MAX_BODY = 16 * 1024
# A node claim's body: any node_addr within its bound fits even with every byte escaped as
# \u00XX (6 bytes), so an oversized node_addr is a 400 and only a larger body a 413.
MAX_NODE_CLAIM_BODY = 6 * protocol.NODE_ADDR_MAX_BYTES + 1024


def _error(status: int, error: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": error, "message": message, **extra}, status_code=status)


def _invalid(message: str) -> JSONResponse:
    return _error(400, "validation_error", message)


def _unauthorized() -> JSONResponse:
    return _error(401, "Unauthorized", "Invalid or missing authentication token")


def _not_found() -> JSONResponse:
    return _error(404, "Not found", "Resource not found")


def _rate_limited(wait: float) -> JSONResponse:
    n = retry_after_header(wait)
    return JSONResponse(
        {"error": "rate_limited", "message": "Too many requests. Please try again later.",
         "retry_after": n},
        status_code=429, headers={"retry-after": str(n)})


async def _json_body(request: Request, *, optional: bool = False,
                     limit: int = MAX_BODY) -> dict[str, Any] | None:
    """The body as a JSON object, None when it is not one; over ``limit``: 413 (raised)."""
    try:
        return await read_json_object(request, limit, optional=optional)
    except InvalidJson:
        return None


def _urls(data: dict[str, Any]) -> list[str] | None:
    """``direct_urls`` repaired (None when absent); what was dropped is logged, not sent
    back as an error (real installs send messy lists)."""
    if data.get("direct_urls") is None:
        return None
    urls, dropped = protocol.direct_urls(data["direct_urls"])
    if dropped:
        log.info("direct_urls_dropped", dropped=dropped, kept=len(urls))
    return urls


def routes(svc: PairingService) -> list[BaseRoute]:
    """Every pairing route, answering from ``svc``."""

    def authorized(request: Request) -> str | None:
        token = protocol.bearer(request.headers.get("authorization"))
        return svc.token_instance(token) if token else None

    async def register_instance(request: Request) -> Response:
        ip = svc.client_ip(request.scope)
        wait = await svc.gate(svc.register_rule, ip)
        if wait:
            return _rate_limited(wait)
        data = await _json_body(request)
        if data is None:
            return _invalid("Request body must be a JSON object")
        iid = protocol.instance_id(data.get("instance_id"))
        if iid is None:
            return _invalid("instance_id: must be 1-255 printable characters")
        key = protocol.public_key(data.get("public_key"))
        if key is None:
            return _invalid("public_key must be a valid base64-encoded 32-byte key")
        token = protocol.bearer(request.headers.get("authorization")) or data.get("token")
        issued = await svc.register_rest(iid, key, _urls(data) or [], ip, token)
        if issued is None:
            return _error(409, "conflict",
                          "instance_id is already registered; present its token")
        return JSONResponse({"instance_id": iid, "token": issued})

    async def owner_body(request: Request) -> tuple[str, dict[str, Any]] | Response:
        """The path's instance id and the (optional) JSON body, for that instance's token."""
        iid = request.path_params["instance_id"]
        if authorized(request) != iid:
            return _unauthorized()
        data = await _json_body(request, optional=True)
        if data is None:
            return _invalid("Request body must be a JSON object")
        return iid, data

    async def heartbeat(request: Request) -> Response:
        owned = await owner_body(request)
        if isinstance(owned, Response):
            return owned
        iid, data = owned
        if await svc.store.get_instance(iid) is None:
            return _not_found()
        ts = await svc.update_urls(iid, _urls(data), svc.client_ip(request.scope))
        return JSONResponse({"status": "ok", "last_seen_at": ts})

    async def create_claim(request: Request) -> Response:
        owned = await owner_body(request)
        if isinstance(owned, Response):
            return owned
        iid, data = owned
        user = protocol.user_id(data.get("user_id"))
        if user is None:
            return _invalid("user_id: can't be blank")
        ttl = protocol.claim_ttl(data.get("ttl_seconds"))
        if ttl is None:
            return _invalid("ttl_seconds: must be a positive integer (at most 600)")
        claim = await svc.create_claim(iid, user, ttl)
        if isinstance(claim, Limited):
            return _rate_limited(claim.wait)
        if claim is None:
            return _not_found()
        return JSONResponse({"code": claim.code, "expires_at": iso(claim.expires_at)})

    async def consume_claim(request: Request) -> Response:
        iid = authorized(request)
        if iid is None:
            return _unauthorized()
        data = await _json_body(request)
        if data is None:
            return _invalid("Request body must be a JSON object")
        claim_id, device_id = data.get("claim_id"), data.get("device_id")
        if not isinstance(claim_id, str) or not 0 < len(claim_id) <= 64:
            return _invalid("claim_id: can't be blank")
        if device_id is not None and (not isinstance(device_id, str) or len(device_id) > 255):
            return _invalid("device_id: must be a string")
        result = await svc.consume_id(iid, claim_id, device_id)
        if result is None:
            return _not_found()
        if result is False:
            return _unauthorized()
        return JSONResponse({"status": "consumed"})

    async def redeem_claim(request: Request) -> Response:
        found = await svc.redeem(svc.client_ip(request.scope), request.path_params["code"])
        if isinstance(found, Limited):
            return _rate_limited(found.wait)
        if found is None:
            return _error(400, "Validation error", "Invalid or expired claim code")
        return JSONResponse({
            "claim_id": found.claim.claim_id,
            "instance_id": found.instance.instance_id,
            "public_key": protocol.encode_key(found.instance.public_key),
            "direct_urls": found.direct_urls,
            "online": found.online or found.instance.online,
            "user_id": found.claim.user_id,
        })

    async def connect_info(request: Request) -> Response:
        wait = await svc.gate(svc.connect_rule, svc.client_ip(request.scope))
        if wait:
            return _rate_limited(wait)
        iid = request.path_params["instance_id"]
        inst = await svc.store.get_instance(iid)
        if inst is None:
            return _not_found()
        body: dict[str, Any] = {
            "instance_id": inst.instance_id,
            "direct_urls": inst.direct_urls,
            "online": inst.online or await svc.hub.instance_online(iid),
            "last_seen_at": inst.last_seen_at,
        }
        # No client reads this route; the key goes only to the instance itself (its token).
        if authorized(request) == iid:
            body["public_key"] = protocol.encode_key(inst.public_key)
        return JSONResponse(body)

    # --- current mydia (iroh era): POST, GET and DELETE /pairing/claim ------------------

    async def create_node_claim(request: Request) -> Response:
        limited = await svc.node_claim_allowed(svc.client_ip(request.scope))
        if limited:
            return _rate_limited(limited.wait)
        data = await _json_body(request, limit=MAX_NODE_CLAIM_BODY)
        if data is None:
            return _invalid("Request body must be a JSON object")
        try:
            node_addr = protocol.node_addr(data.get("node_addr"))
        except protocol.InvalidNodeAddr as exc:
            return _invalid(f"node_addr: {exc}")
        claim = await svc.create_node_claim(node_addr)
        if isinstance(claim, Busy):
            n = retry_after_header(claim.wait)
            return JSONResponse(
                {"error": "busy", "message": "Too many pairing codes pending; try again later",
                 "retry_after": n}, status_code=503, headers={"retry-after": str(n)})
        if claim is None:
            return _error(500, "internal_error", "No claim code available; try again")
        return JSONResponse({"claim_code": claim.code})

    async def resolve_node_claim(request: Request) -> Response:
        found = await svc.resolve_node_claim(svc.client_ip(request.scope),
                                             request.path_params["code"])
        if isinstance(found, Limited):
            return _rate_limited(found.wait)
        if found is None:
            return _error(404, "not_found", "Invalid or expired claim code")
        return JSONResponse({"node_addr": found.node_addr}, headers={"cache-control": "no-store"})

    async def delete_node_claim(request: Request) -> Response:
        limited = await svc.delete_node_claim(svc.client_ip(request.scope),
                                              request.path_params["code"])
        if limited:
            return _rate_limited(limited.wait)
        return Response(status_code=204)

    return [
        Route("/pairing/claim", create_node_claim, methods=["POST"]),
        Route("/pairing/claim/{code}", resolve_node_claim, methods=["GET"]),
        Route("/pairing/claim/{code}", delete_node_claim, methods=["DELETE"]),
        Route("/relay/instances", register_instance, methods=["POST"]),
        Route("/relay/instances/{instance_id}/heartbeat", heartbeat, methods=["PUT"]),
        Route("/relay/instances/{instance_id}/claim", create_claim, methods=["POST"]),
        # Declared before /relay/claim/{code}: the original's order made this unreachable.
        Route("/relay/claim/consume", consume_claim, methods=["POST"]),
        Route("/relay/claim/{code}", redeem_claim, methods=["POST"]),
        Route("/relay/instances/{instance_id}/connect", connect_info, methods=["GET"]),
        WebSocketRoute("/relay/tunnel/websocket", SocketEndpoint(InstanceSocket, svc)),
        WebSocketRoute("/relay/client/websocket", SocketEndpoint(ClientSocket, svc)),
    ]
