"""TURN REST credentials (draft-uberti-behave-turn-rest): ``username = "<expiry>:<user>"``,
``password = base64(HMAC-SHA1(secret, username))``; long-term key ``MD5(user:realm:pass)``."""

from __future__ import annotations

import base64
import hashlib
import hmac

MAX_USERNAME_BYTES = 513


def rest_password(secret: str, username: str) -> str:
    mac = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(mac).decode("ascii")


def rest_credential(secret: str, user: str, ttl: int, now: float) -> tuple[str, str]:
    """(username, password) valid until ``now + ttl`` for ``user``, signed with ``secret``."""
    username = f"{int(now) + int(ttl)}:{user}"
    return username, rest_password(secret, username)


def long_term_key(username: str, realm: str, password: str) -> bytes:
    """RFC 8489 long-term credential key: MD5(username ":" realm ":" password)."""
    return hashlib.md5(f"{username}:{realm}:{password}".encode(), usedforsecurity=False).digest()


def parse_rest_username(username: str) -> tuple[int, str] | None:
    """(expiry, user) of a REST username ``"<expiry>:<user>"``; ``None`` if it is not one."""
    expiry_s, sep, user = username.partition(":")
    if not sep or not expiry_s.isascii() or not expiry_s.isdigit() or len(expiry_s) > 12:
        return None
    return int(expiry_s), user


def candidate_keys(secrets: tuple[str, ...], username: str, realm: str) -> list[bytes]:
    """The long-term key for ``username`` under each accepted secret (rotation)."""
    return [long_term_key(username, realm, rest_password(s, username)) for s in secrets]
