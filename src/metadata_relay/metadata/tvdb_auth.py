"""TVDB v4 bearer token: lazy login, refresh ahead of expiry, backoff after failures.

A bad key or a TVDB outage never stops the service: login happens on the first TVDB request
and is retried with exponential backoff.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time

from metadata_relay.metadata.politeness import UpstreamFailure
from metadata_relay.metadata.upstream import ProviderClient

DEFAULT_LIFETIME = 30 * 86400
REFRESH_AHEAD = 0.1  # refresh when less than 10 % of the lifetime remains
MIN_BACKOFF, MAX_BACKOFF = 1.0, 300.0


class TvdbAuthError(Exception):
    """TVDB refused our credentials."""


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT (unverified: we only schedule the refresh with it)."""
    try:
        payload = token.split(".")[1]
        payload += "=" * (-len(payload) % 4)
        exp = json.loads(base64.urlsafe_b64decode(payload)).get("exp")
    except (IndexError, ValueError, binascii.Error, AttributeError):
        return None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


class TvdbAuth:
    def __init__(self, client: ProviderClient, api_key: str, pin: str | None) -> None:
        self.client = client
        self.api_key = api_key
        self.pin = pin
        self.token: str | None = None
        self.expires_at = 0.0
        self.issued_at = 0.0
        self.logins = 0
        self._lock = asyncio.Lock()
        self._backoff = 0.0
        self._retry_at = 0.0
        self._last_error: Exception | None = None

    def _needs_refresh(self) -> bool:
        if self.token is None:
            return True
        now = time.time()
        return now >= self.expires_at - (self.expires_at - self.issued_at) * REFRESH_AHEAD

    async def bearer(self, *, force: bool = False, stale: str | None = None) -> str:
        """A valid token. ``force`` logs in again unless another caller already replaced
        ``stale`` (the token that was just rejected)."""
        async with self._lock:
            if force and self.token is not None and self.token != stale:
                return self.token
            if not force and not self._needs_refresh():
                assert self.token is not None
                return self.token
            if time.monotonic() < self._retry_at and self._last_error is not None:
                if self.token is not None and not force and time.time() < self.expires_at:
                    return self.token
                raise self._last_error
            try:
                await self._login()
            except (UpstreamFailure, TvdbAuthError) as exc:
                self._backoff = min(max(self._backoff * 2, MIN_BACKOFF), MAX_BACKOFF)
                self._retry_at = time.monotonic() + self._backoff
                self._last_error = exc
                if self.token is not None and not force and time.time() < self.expires_at:
                    return self.token
                raise
            self._backoff = 0.0
            self._last_error = None
            assert self.token is not None
            return self.token

    async def _login(self) -> None:
        body: dict[str, str] = {"apikey": self.api_key}
        if self.pin:
            body["pin"] = self.pin
        resp = await self.client.request("POST", "/login", json=body)
        self.logins += 1
        if resp.status in (401, 403):
            raise TvdbAuthError("TVDB rejected the API key")
        if resp.status != 200:
            raise UpstreamFailure("bad_status", f"TVDB login answered {resp.status}",
                                  status=resp.status, retry_after=resp.retry_after)
        try:
            token = json.loads(resp.body)["data"]["token"]
        except (ValueError, KeyError, TypeError):
            raise UpstreamFailure("bad_status", "TVDB login answer has no token") from None
        if not isinstance(token, str) or not token:
            raise UpstreamFailure("bad_status", "TVDB login answer has no token")
        now = time.time()
        self.token = token
        self.issued_at = now
        self.expires_at = jwt_expiry(token) or now + DEFAULT_LIFETIME
        if self.expires_at <= now:
            self.expires_at = now + 60.0
