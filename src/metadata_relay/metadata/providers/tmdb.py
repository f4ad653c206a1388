"""TMDB v3: the relay's key as the ``api_key`` query parameter."""

from __future__ import annotations

from metadata_relay.clock import Clock
from metadata_relay.config import Settings
from metadata_relay.metadata.providers.base import Provider, upstream_client
from metadata_relay.metadata.routes import Match, Param
from metadata_relay.metadata.upstream import UpstreamResponse


class Tmdb(Provider):
    name = "tmdb"
    title = "TMDB"

    def __init__(self, settings: Settings, clock: Clock) -> None:
        super().__init__(upstream_client(settings, clock, self.name, settings.TMDB_BASE_URL))
        self.api_key = settings.TMDB_API_KEY

    def configured(self) -> bool:
        return self.api_key is not None

    async def fetch(self, match: Match, params: list[Param]) -> UpstreamResponse:
        assert self.api_key is not None
        return await self.client.request("GET", match.upstream_path,
                                         params=[*params, ("api_key", self.api_key)])
