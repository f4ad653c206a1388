"""Stateless nonces: ``hex32(timestamp) + hex(HMAC-SHA256(key, timestamp))[:12]`` (20 chars,
kept short because a 401 carries one and must stay small against amplification).

Nothing is stored per nonce, so a flood of unauthenticated requests costs no memory; a nonce
older than its lifetime (or forged) is stale and gets 438 with a fresh one.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets


class NonceFactory:
    def __init__(self, lifetime: float = 600.0, key: bytes | None = None) -> None:
        self.lifetime = lifetime
        self._key = key or secrets.token_bytes(32)

    def _mac(self, stamp: str) -> str:
        return hmac.new(self._key, stamp.encode(), hashlib.sha256).hexdigest()[:12]

    def issue(self, now: float) -> str:
        stamp = f"{int(now) & 0xFFFFFFFF:08x}"
        return stamp + self._mac(stamp)

    def valid(self, nonce: str, now: float) -> bool:
        if len(nonce) != 20:
            return False
        stamp, mac = nonce[:8], nonce[8:]
        if not hmac.compare_digest(mac, self._mac(stamp)):
            return False
        try:
            issued = int(stamp, 16)
        except ValueError:
            return False
        return issued <= now + 1 and now - issued < self.lifetime
