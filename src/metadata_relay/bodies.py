"""Request bodies read with a cap that holds while they stream: a body over its route's limit
is refused with ``413`` as soon as the announced length or the bytes read pass the limit, so
no request can make the process buffer more than the limit."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response


class BodyTooLarge(Exception):
    """The request body is over ``limit`` bytes (answered ``413`` by :func:`too_large`)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body over {limit} bytes")
        self.limit = limit


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, or :class:`BodyTooLarge` before more than ``limit`` bytes are held."""
    announced = request.headers.get("content-length")
    if announced is not None and announced.isdigit() and int(announced) > limit:
        raise BodyTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


class InvalidJson(ValueError):
    """The body is not one JSON object."""


async def read_json_object(request: Request, limit: int, *,
                           optional: bool = False) -> dict[str, Any]:
    """The body as a JSON object (``{}`` for an empty body when ``optional``);
    :class:`InvalidJson` when it is anything else, :class:`BodyTooLarge` over ``limit``."""
    body = await read_body(request, limit)
    if not body.strip():
        if optional:
            return {}
        raise InvalidJson("empty body")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidJson("not JSON") from exc
    if not isinstance(data, dict):
        raise InvalidJson("not a JSON object")
    return data


async def too_large(request: Request, exc: Exception) -> Response:
    """Exception handler: ``413`` with the error envelope; the connection is closed, since
    the rest of the body was not read."""
    limit = exc.limit if isinstance(exc, BodyTooLarge) else 0
    return JSONResponse(
        {"error": "payload_too_large", "message": f"Request body must be at most {limit} bytes"},
        status_code=413, headers={"connection": "close"})
