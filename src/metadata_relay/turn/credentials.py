"""TURN REST API credentials (draft-uberti-behave-turn-rest): stateless, shared-secret based."""

from __future__ import annotations

import base64
import hashlib
import hmac


def rest_credential(secret: str, user: str, ttl: int, now: float) -> tuple[str, str]:
    """``(username, password)``: username ``"<expiry>:<user>"``, password
    base64(HMAC-SHA1(secret, username))."""
    username = f"{int(now) + ttl}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")
