"""What every provider is: a name, its :class:`ProviderClient`, whether the relay holds its
credentials, and how a resolved request becomes upstream calls (a GET of the upstream path
with the resolved parameters, unless the provider says otherwise)."""

from __future__ import annotations

from typing import Any

from metadata_relay import __version__
from metadata_relay.clock import Clock
from metadata_relay.config import Settings
from metadata_relay.metadata.routes import Match, Param, ProviderName
from metadata_relay.metadata.upstream import ProviderClient, UpstreamResponse


def user_agent(contact: str) -> str:
    """``metadata-relay/<version> ( <contact> )``: the form MusicBrainz asks for."""
    return f"metadata-relay/{__version__} ( {contact} )"


def upstream_client(settings: Settings, clock: Clock, name: ProviderName, base_url: str,
                    **overrides: Any) -> ProviderClient:
    """A client with the UPSTREAM_* limits, the relay's User-Agent and the entry size cap;
    ``overrides`` replace single options (a provider's own rate, redirects, ...)."""
    options: dict[str, Any] = {
        "timeout": settings.UPSTREAM_TIMEOUT, "rate": settings.UPSTREAM_MAX_RPS,
        "concurrency": settings.UPSTREAM_MAX_CONNECTIONS,
        "queue_timeout": settings.UPSTREAM_QUEUE_TIMEOUT,
        "user_agent": user_agent(settings.UPSTREAM_CONTACT),
        "max_body": settings.CACHE_ENTRY_MAX_BYTES,
        "clock": clock,
    }
    return ProviderClient(name, base_url, **{**options, **overrides})


class Provider:
    name: ProviderName
    title: str  # for messages: "TMDB", "MusicBrainz", ...
    # an upstream 429 is answered 429 + Retry-After (the client backs off), not 502
    passes_rate_limits = False

    def __init__(self, client: ProviderClient) -> None:
        self.client = client

    def configured(self) -> bool:
        """Whether the relay holds what this provider needs (keys); else 503 not_configured."""
        return True

    async def fetch(self, match: Match, params: list[Param]) -> UpstreamResponse:
        return await self.client.request("GET", match.upstream_path, params=params)

    def body_params(self, doc: dict[str, Any]) -> list[Param]:
        """The upstream parameters for a body route's JSON object (``ValueError``: 400)."""
        raise ValueError(f"{self.title} takes no request body")
