"""TVDB v4: a bearer token from ``POST /login`` with the key (and the subscriber PIN when
set), kept and refreshed by :class:`TokenLogin`."""

from __future__ import annotations

from metadata_relay.clock import Clock
from metadata_relay.config import Settings
from metadata_relay.metadata.providers.base import Provider, upstream_client
from metadata_relay.metadata.providers.logins import TokenLogin, token_from
from metadata_relay.metadata.routes import Match, Param
from metadata_relay.metadata.upstream import UpstreamResponse

TOKEN_LIFETIME = 30 * 86400  # when the JWT carries no exp


class Tvdb(Provider):
    name = "tvdb"
    title = "TVDB"

    def __init__(self, settings: Settings, clock: Clock) -> None:
        super().__init__(upstream_client(settings, clock, self.name, settings.TVDB_BASE_URL))
        self.api_key = settings.TVDB_API_KEY
        self.pin = settings.TVDB_PIN
        self.login = TokenLogin(self._login, TOKEN_LIFETIME, clock)

    def configured(self) -> bool:
        return self.api_key is not None

    async def _login(self) -> str:
        body = {"apikey": self.api_key or ""}
        if self.pin:
            body["pin"] = self.pin
        return token_from(await self.client.request("POST", "/login", json=body),
                          self.title, "data", "token")

    async def fetch(self, match: Match, params: list[Param]) -> UpstreamResponse:
        return await self.login.send(lambda token: self.client.request(
            "GET", match.upstream_path, params=params,
            headers={"authorization": f"Bearer {token}"}))
