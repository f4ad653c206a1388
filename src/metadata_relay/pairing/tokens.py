"""Instance tokens: HMAC-SHA256 (key RELAY_TOKEN_SECRET) over ``{instance_id, iat, exp}``.

Wire form (as the original): base64url-no-padding of ``"<json>.<signature>"`` where the
signature is base64url-no-padding of the HMAC over the JSON text. Opaque to clients.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json

TOKEN_TTL = 7 * 24 * 3600
MAX_TOKEN_LEN = 2048


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: str, payload: bytes) -> bytes:
    return hmac.new(secret.encode(), payload, hashlib.sha256).digest()


def sign(secret: str, instance_id: str, now: float, ttl: int = TOKEN_TTL) -> str:
    iat = int(now)
    payload = json.dumps(
        {"instance_id": instance_id, "iat": iat, "exp": iat + ttl}, separators=(",", ":")
    ).encode()
    return _b64e(payload + b"." + _b64e(_mac(secret, payload)).encode())


def verify(secret: str, token: str, now: float) -> str | None:
    """The token's instance_id when the signature is valid and it has not expired."""
    if not token or len(token) > MAX_TOKEN_LEN:
        return None
    try:
        raw = _b64d(token)
    except (binascii.Error, ValueError):
        return None
    payload, dot, sig = raw.rpartition(b".")
    if not dot:
        return None
    if not hmac.compare_digest(_b64e(_mac(secret, payload)).encode(), sig):
        return None
    try:
        claims = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(claims, dict):
        return None
    iid, exp = claims.get("instance_id"), claims.get("exp")
    if not isinstance(iid, str) or not isinstance(exp, int) or isinstance(exp, bool):
        return None
    if exp <= now:
        return None
    return iid


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
