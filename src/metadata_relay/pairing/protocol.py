"""The pairing wire format, sans I/O: frames of both relay sockets (parse, validate fields,
build replies), claim codes and instance tokens.

Nothing here touches a socket, a clock or a database: callers pass ``now`` and send what
comes back.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from typing import Any, TypeGuard
from urllib.parse import urlsplit

RELAY_PROTOCOL = "1.0"
PROVEN_PROTOCOL = "1.1"  # 1.0 plus proof of possession at register (possession.py)
SUPPORTED_VERSIONS = [RELAY_PROTOCOL, PROVEN_PROTOCOL]
MAX_ID_LEN = 255

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def dumps(msg: dict[str, Any]) -> str:
    return _dumps(msg)


def parse(text: str | bytes | None) -> dict[str, Any] | None:
    """One frame → a JSON object with a string ``type``; None for anything else."""
    if text is None:
        return None
    try:
        msg = json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        return None
    return msg


# --- fields -------------------------------------------------------------------------------

def new_session_id() -> str:
    """16 random bytes, base64url without padding (22 characters)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode("ascii")


def is_session_id(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and 0 < len(value) <= 64


def b64_bytes(value: object, size: int) -> bytes | None:
    """Standard base64 (padding optional, url-safe accepted) of exactly ``size`` bytes."""
    if not isinstance(value, str) or len(value) > 2 * size + 8:
        return None
    text = value.strip().replace("-", "+").replace("_", "/")
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == size else None


def public_key(value: object) -> bytes | None:
    """An instance's X25519 public key: base64 of exactly 32 bytes."""
    return b64_bytes(value, 32)


def encode_key(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def instance_id(value: object) -> str | None:
    if isinstance(value, str) and 0 < len(value) <= MAX_ID_LEN and value.isprintable():
        return value
    return None


def user_id(value: object) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and 0 < len(value) <= MAX_ID_LEN:
        return value
    return None


def negotiate(versions: object) -> str | None:
    """The relay protocol version to speak, from ``protocol_versions``; None if incompatible.

    A missing map or list is treated as ``["1.0"]`` (older clients). ``1.1`` (proof of
    possession) is spoken only when offered; any other ``1.x`` gets ``1.0``.
    """
    if versions is None:
        return RELAY_PROTOCOL
    if not isinstance(versions, dict):
        return None
    offered = versions.get("relay_protocol")
    if offered is None:
        return RELAY_PROTOCOL
    if isinstance(offered, str):
        offered = [offered]
    if not isinstance(offered, list):
        return None
    if PROVEN_PROTOCOL in offered:
        return PROVEN_PROTOCOL
    for v in offered:
        if isinstance(v, str) and v.split(".", 1)[0] == "1":
            return RELAY_PROTOCOL
    return None


# --- direct URLs (lenient: real installs send messy lists) ----------------------------------

MAX_URLS = 32
MAX_URL_LEN = 2048
URL_SCHEMES = ("http", "https", "ws", "wss")


def repair_url(value: object) -> str | None:
    """One ``direct_urls`` entry made usable, or None when it cannot be a URL.

    Surrounding whitespace is trimmed (``ADDITIONAL_DIRECT_URLS="https://a, https://b"``
    keeps the space) and a missing scheme becomes ``https://`` (mydia serves HTTPS, and
    ``EXTERNAL_URL`` may be ``host:port``).
    """
    if not isinstance(value, str):
        return None
    url = value.strip()
    if not url or len(url) > MAX_URL_LEN or not url.isprintable() or " " in url:
        return None
    if "://" not in url:
        url = "https://" + url
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return None
    if parts.scheme.lower() not in URL_SCHEMES or not parts.hostname:
        return None
    return url


def direct_urls(value: object) -> tuple[list[str], int]:
    """``direct_urls`` repaired: (the first :data:`MAX_URLS` distinct usable URLs, how many
    entries were dropped). Never a reason to refuse a message; None or absent is ``[]``."""
    if value is None:
        return [], 0
    items = value if isinstance(value, list) else [value]
    out: list[str] = []
    dropped = 0
    for item in items:
        url = repair_url(item)
        if url is None or len(out) >= MAX_URLS:
            dropped += 1
        elif url not in out:
            out.append(url)
    return out, dropped


# --- relayed payloads -----------------------------------------------------------------------

_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/_-="


def b64_payload(value: object) -> TypeGuard[str]:
    """A ``payload`` field of ``message``/``relay_message``: a base64 string (standard or
    url-safe alphabet, at most two trailing ``=``). Such a string needs no JSON escaping (see
    :func:`message_frame`). ``bytes.translate`` deleting the alphabet is a C loop, ~3x
    cheaper than a regular expression on a 1 KiB payload (this runs on every relayed frame).
    """
    if not isinstance(value, str) or not value.isascii():
        return False
    if value.encode().translate(None, _B64_ALPHABET):
        return False  # a character outside the alphabet
    body = value.rstrip("=")
    return len(value) - len(body) <= 2 and "=" not in body


def message_frame(payload: str) -> str:
    """``{"type":"message","payload":...}`` for a payload that passed :func:`b64_payload`."""
    return '{"type":"message","payload":"' + payload + '"}'


def relay_message_frame(session_id: str, payload: str) -> str:
    """``relay_message`` for a session id of ours and a :func:`b64_payload` payload."""
    return ('{"type":"relay_message","session_id":"' + session_id + '","payload":"'
            + payload + '"}')


def signalling_frame(kind: str, payload: object, session_id: str | None = None) -> str:
    """A ``webrtc_<x>`` frame; the payload (a JSON string for mydia) passes untouched."""
    if session_id is None:
        return dumps({"type": kind, "payload": payload})
    return dumps({"type": kind, "session_id": session_id, "payload": payload})


def is_webrtc(kind: str) -> bool:
    return kind.startswith("webrtc_") and 7 < len(kind) <= 64


def session_frame(kind: str, session_id: str) -> str:
    """``session_closed`` and the like: ``{"type": kind, "session_id": ...}``."""
    return dumps({"type": kind, "session_id": session_id})


# --- replies --------------------------------------------------------------------------------

def error(message: str, code: str | None = None, **extra: Any) -> str:
    msg: dict[str, Any] = {"type": "error"}
    if code:
        msg["code"] = code
    msg["message"] = message
    msg.update(extra)
    return dumps(msg)


def registered(version: str) -> str:
    return dumps({"type": "registered", "relay_protocol": version})


def rate_limited(retry_after: int, **extra: Any) -> str:
    return error("Too many requests. Please try again later.", "rate_limited",
                 retry_after=retry_after, **extra)


PONG = dumps({"type": "pong"})
VERSION_INCOMPATIBLE = error(
    "Relay protocol version mismatch", "version_incompatible",
    supported_versions=SUPPORTED_VERSIONS,
)
NOT_REGISTERED = error("Not registered")
REGISTRATION_FAILED = error("Registration failed", "validation_error")
OTHER_INSTANCE = error("Already registered as another instance", "bad_request")
UNAUTHORIZED = error("Instance id is registered with another key", "unauthorized")
PROOF_REQUIRED = error("This instance proved its key: register with relay protocol 1.1",
                       "proof_required")
PROOF_FAILED = error("Proof of possession failed", "unauthorized")
IN_USE = error("Instance is connected from another address", "instance_connected")
REPLACED = error("Another connection registered this instance", "replaced")
INVALID_CLAIM = error("Invalid or expired claim code")
INSTANCE_OFFLINE = error("Instance is offline")
INSTANCE_NOT_FOUND = error("Instance not found")
NOT_CONNECTED = error("Not connected")
BAD_REQUEST = error("Invalid message", "bad_request")
CLAIM_FAILED = "Failed to create claim"


# --- claim codes ----------------------------------------------------------------------------

CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 8  # 32**8 = 2**40 codes
CLAIM_TTL = 300
MAX_CLAIM_TTL = 600


def new_code() -> str:
    """8 symbols drawn uniformly (``secrets.choice`` rejects, never biases) from a CSPRNG."""
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def normalise_code(raw: object) -> str | None:
    """Upper-case, ``-`` and whitespace removed; None unless a well-formed code results."""
    if not isinstance(raw, str) or len(raw) > 64:
        return None
    code = "".join(raw.split()).replace("-", "").upper()
    if len(code) != CODE_LENGTH or any(c not in CODE_ALPHABET for c in code):
        return None
    return code


def redacted(code: str) -> str:
    """What logs may show of a code: its first two characters."""
    return code[:2] + "…"


def claim_ttl(raw: object) -> int | None:
    """``ttl_seconds``: default 300, 1..600; None when not a usable integer."""
    if raw is None:
        return CLAIM_TTL
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return None
    ttl = int(raw)
    if ttl < 1:
        return None
    return min(ttl, MAX_CLAIM_TTL)


# --- node claims (current mydia: iroh) ------------------------------------------------------
# ``POST /pairing/claim {"node_addr": "<JSON text>"}`` gives a claim code that resolves to
# that text (``GET /pairing/claim/{code}``). The text is an iroh ``EndpointAddr`` whose shape
# changes between iroh versions: it is bounded and must be JSON, its fields are never read.

NODE_CLAIM_TTL = 300
NODE_ADDR_MAX_BYTES = 4096  # UTF-8 bytes; mydia's EndpointAddr is a few hundred
NODE_ADDR_MAX_DEPTH = 32    # nesting of arrays and objects; an EndpointAddr has 3


class InvalidNodeAddr(ValueError):
    """Why a ``node_addr`` was refused (the message is for the 400 answer)."""


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def node_addr(value: object) -> str:
    """``node_addr`` as it is stored and handed back, unchanged; :class:`InvalidNodeAddr`
    unless it is a string of at most :data:`NODE_ADDR_MAX_BYTES` bytes of UTF-8 that parses
    as strict JSON (no ``NaN``/``Infinity``) nested at most :data:`NODE_ADDR_MAX_DEPTH`
    deep."""
    if value is None:
        raise InvalidNodeAddr("is required")
    if not isinstance(value, str):
        raise InvalidNodeAddr("must be a string (the node address as JSON text)")
    if len(value) > NODE_ADDR_MAX_BYTES:
        raise InvalidNodeAddr(f"must be at most {NODE_ADDR_MAX_BYTES} bytes")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate: cannot be stored or sent as UTF-8
        raise InvalidNodeAddr("must be valid UTF-8") from None
    if size > NODE_ADDR_MAX_BYTES:
        raise InvalidNodeAddr(f"must be at most {NODE_ADDR_MAX_BYTES} bytes")
    try:
        parsed = json.loads(value, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise InvalidNodeAddr("must be JSON text") from None
    if _depth(parsed) > NODE_ADDR_MAX_DEPTH:
        raise InvalidNodeAddr(f"must be nested at most {NODE_ADDR_MAX_DEPTH} deep")
    return value


def _depth(doc: object) -> int:
    """How deeply arrays and objects nest in a parsed JSON document (iteratively)."""
    deepest = 0
    stack: list[tuple[object, int]] = [(doc, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        deepest = max(deepest, depth)
        stack.extend((child, depth) for child in children)
    return deepest


# --- instance tokens ------------------------------------------------------------------------
# HMAC-SHA256 (key RELAY_TOKEN_SECRET) over ``{instance_id, iat, exp}``. Wire form (as the
# original): base64url-no-padding of ``"<json>.<signature>"`` where the signature is
# base64url-no-padding of the HMAC over the JSON text. Opaque to clients.

TOKEN_TTL = 7 * 24 * 3600
MAX_TOKEN_LEN = 2048


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: str, payload: bytes) -> bytes:
    return hmac.new(secret.encode(), payload, hashlib.sha256).digest()


def sign_token(secret: str, instance_id: str, now: float, ttl: int = TOKEN_TTL) -> str:
    iat = int(now)
    payload = json.dumps(
        {"instance_id": instance_id, "iat": iat, "exp": iat + ttl}, separators=(",", ":")
    ).encode()
    return _b64e(payload + b"." + _b64e(_mac(secret, payload)).encode())


def verify_token(secret: str, token: object, now: float) -> str | None:
    """The token's instance_id when the signature is valid and it has not expired."""
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LEN:
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
