"""Bearer tokens from a login call (TVDB, OpenSubtitles): lazy login, refresh ahead of
expiry, backoff after failures, and one retry with a fresh token when the upstream answers 401.

A bad key or an outage never stops the service: login happens on the first request that needs
it and is retried with exponential backoff.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import Awaitable, Callable

from metadata_relay.clock import Clock
from metadata_relay.metadata.politeness import UpstreamFailure
from metadata_relay.metadata.upstream import UpstreamResponse

REFRESH_AHEAD = 0.1  # refresh when less than 10 % of the lifetime remains
MIN_BACKOFF, MAX_BACKOFF = 1.0, 300.0


class LoginRefused(Exception):
    """The provider refused the relay's credentials."""


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT (unverified: we only schedule the refresh with it)."""
    try:
        payload = token.split(".")[1]
        payload += "=" * (-len(payload) % 4)
        exp = json.loads(base64.urlsafe_b64decode(payload)).get("exp")
    except (IndexError, ValueError, binascii.Error, AttributeError):
        return None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


def token_from(resp: UpstreamResponse, provider: str, *path: str) -> str:
    """The token at ``path`` in a login answer; :class:`LoginRefused` on 401/403,
    :class:`UpstreamFailure` for anything else that is not a token."""
    if resp.status in (401, 403):
        raise LoginRefused(f"{provider} rejected the relay's credentials")
    if resp.status != 200:
        raise UpstreamFailure("bad_status", f"{provider} login answered {resp.status}",
                              status=resp.status, retry_after=resp.retry_after)
    try:
        token = json.loads(resp.body)
        for key in path:
            token = token[key]
    except (ValueError, KeyError, TypeError):
        raise UpstreamFailure("bad_status", f"{provider} login answer has no token") from None
    if not isinstance(token, str) or not token:
        raise UpstreamFailure("bad_status", f"{provider} login answer has no token")
    return token


class TokenLogin:
    """The current token of one account. ``login`` performs the login call and returns the
    token (or raises :class:`LoginRefused` / :class:`UpstreamFailure`); a token's lifetime is
    its JWT ``exp``, else ``default_lifetime``."""

    def __init__(self, login: Callable[[], Awaitable[str]], default_lifetime: float,
                 clock: Clock) -> None:
        self._login = login
        self.clock = clock
        self.default_lifetime = default_lifetime
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
        now = self.clock.time()
        return now >= self.expires_at - (self.expires_at - self.issued_at) * REFRESH_AHEAD

    async def send(self, call: Callable[[str], Awaitable[UpstreamResponse]]) -> UpstreamResponse:
        """``call(token)``; on a 401, once more with a fresh token. A second 401 means the
        account itself is refused: :class:`LoginRefused`."""
        token = await self.bearer()
        resp = await call(token)
        if resp.status != 401:
            return resp
        resp = await call(await self.bearer(force=True, stale=token))
        if resp.status == 401:
            raise LoginRefused("the upstream refused a fresh token")
        return resp

    async def bearer(self, *, force: bool = False, stale: str | None = None) -> str:
        """A valid token. ``force`` logs in again unless another caller already replaced
        ``stale`` (the token that was just rejected)."""
        async with self._lock:
            if force and self.token is not None and self.token != stale:
                return self.token
            if not force and not self._needs_refresh():
                assert self.token is not None
                return self.token
            if self.clock.monotonic() < self._retry_at and self._last_error is not None:
                if self.token is not None and not force and self.clock.time() < self.expires_at:
                    return self.token
                raise self._last_error
            try:
                token = await self._login()
            except (UpstreamFailure, LoginRefused) as exc:
                self._backoff = min(max(self._backoff * 2, MIN_BACKOFF), MAX_BACKOFF)
                self._retry_at = self.clock.monotonic() + self._backoff
                self._last_error = exc
                if self.token is not None and not force and self.clock.time() < self.expires_at:
                    return self.token
                raise
            finally:
                self.logins += 1
            self._backoff = 0.0
            self._last_error = None
            now = self.clock.time()
            self.token = token
            self.issued_at = now
            self.expires_at = jwt_expiry(token) or now + self.default_lifetime
            if self.expires_at <= now:
                self.expires_at = now + 60.0
            return token
