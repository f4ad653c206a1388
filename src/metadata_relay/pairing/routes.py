"""Pairing REST API (``/relay/...``) and the two WebSocket endpoints."""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from metadata_relay.http.bodies import InvalidJson, read_json_object
from metadata_relay.http.edge import client_ip
from metadata_relay.pairing import claims, protocol, tokens
from metadata_relay.pairing.client_socket import client_socket
from metadata_relay.pairing.instance_socket import instance_socket
from metadata_relay.pairing.ratelimit import retry_after_header
from metadata_relay.pairing.service import Conflict, PairingService
from metadata_relay.pairing.store import iso

MAX_BODY = 16 * 1024


def _svc(request: Request) -> PairingService:
    svc: PairingService = request.app.state.runtime.components["pairing"].service
    return svc


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


async def _json_body(request: Request, *, optional: bool = False) -> dict[str, Any] | None:
    """The body as a JSON object, None when it is not one; over MAX_BODY: 413 (raised)."""
    try:
        return await read_json_object(request, MAX_BODY, optional=optional)
    except InvalidJson:
        return None


def _ip(request: Request, svc: PairingService) -> str:
    return client_ip(request.scope, svc.settings.TRUSTED_PROXIES)


def _authorized(request: Request, svc: PairingService) -> str | None:
    token = tokens.bearer(request.headers.get("authorization"))
    return svc.token_instance(token) if token else None


async def register_instance(request: Request) -> Response:
    svc = _svc(request)
    ip = _ip(request, svc)
    wait = svc.register_gate(ip)
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
    urls = protocol.direct_urls(data.get("direct_urls"), missing=[])
    if urls is None:
        return _invalid("direct_urls: must be a list of at most 16 http(s) URLs")
    token = tokens.bearer(request.headers.get("authorization")) or data.get("token")
    try:
        await svc.register(iid, key, urls, ip, token, online=False)
    except Conflict:
        return _error(409, "conflict",
                      "instance_id is registered with another key; present its token")
    return JSONResponse({"instance_id": iid, "token": svc.issue_token(iid)})


async def heartbeat(request: Request) -> Response:
    svc = _svc(request)
    iid = request.path_params["instance_id"]
    if _authorized(request, svc) != iid:
        return _unauthorized()
    data = await _json_body(request, optional=True)
    if data is None:
        return _invalid("Request body must be a JSON object")
    urls = protocol.direct_urls(data.get("direct_urls"), missing=None)
    if "direct_urls" in data and data["direct_urls"] is not None and urls is None:
        return _invalid("direct_urls: must be a list of at most 16 http(s) URLs")
    if await svc.directory.get_instance(iid) is None:
        return _not_found()
    ts = await svc.directory.seen(iid, time.time(), direct_urls=urls, public_ip=_ip(request, svc))
    return JSONResponse({"status": "ok", "last_seen_at": ts})


async def create_claim(request: Request) -> Response:
    svc = _svc(request)
    iid = request.path_params["instance_id"]
    if _authorized(request, svc) != iid:
        return _unauthorized()
    data = await _json_body(request, optional=True)
    if data is None:
        return _invalid("Request body must be a JSON object")
    user = protocol.user_id(data.get("user_id"))
    if user is None:
        return _invalid("user_id: can't be blank")
    ttl = claims.clamp_ttl(data.get("ttl_seconds"))
    if ttl is None:
        return _invalid("ttl_seconds: must be a positive integer (at most 600)")
    claim = await svc.create_claim(iid, user, ttl)
    if claim is None:
        return _not_found()
    return JSONResponse({"code": claim.code, "expires_at": iso(claim.expires_at)})


async def consume_claim(request: Request) -> Response:
    svc = _svc(request)
    iid = _authorized(request, svc)
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
    svc = _svc(request)
    wait = await svc.redeem_gate(_ip(request, svc))
    if wait:
        return _rate_limited(wait)
    found = await svc.redeem(request.path_params["code"])
    if found is None:
        return _error(400, "Validation error", "Invalid or expired claim code")
    online = found.online or found.instance.online
    return JSONResponse({
        "claim_id": found.claim.claim_id,
        "instance_id": found.instance.instance_id,
        "public_key": protocol.encode_key(found.instance.public_key),
        "direct_urls": found.direct_urls,
        "online": online,
        "user_id": found.claim.user_id,
    })


async def connect_info(request: Request) -> Response:
    svc = _svc(request)
    wait = svc.connect_gate(_ip(request, svc))
    if wait:
        return _rate_limited(wait)
    inst = await svc.directory.get_instance(request.path_params["instance_id"])
    if inst is None:
        return _not_found()
    online = inst.online or await svc.hub.instance_online(inst.instance_id)
    return JSONResponse({
        "instance_id": inst.instance_id,
        "public_key": protocol.encode_key(inst.public_key),
        "direct_urls": inst.direct_urls,
        "online": online,
        "last_seen_at": inst.last_seen_at,
    })


routes: list[BaseRoute] = [
    Route("/relay/instances", register_instance, methods=["POST"]),
    Route("/relay/instances/{instance_id}/heartbeat", heartbeat, methods=["PUT"]),
    Route("/relay/instances/{instance_id}/claim", create_claim, methods=["POST"]),
    # Declared before /relay/claim/{code}: the original's order made this unreachable.
    Route("/relay/claim/consume", consume_claim, methods=["POST"]),
    Route("/relay/claim/{code}", redeem_claim, methods=["POST"]),
    Route("/relay/instances/{instance_id}/connect", connect_info, methods=["GET"]),
    WebSocketRoute("/relay/tunnel/websocket", instance_socket),
    WebSocketRoute("/relay/client/websocket", client_socket),
]
