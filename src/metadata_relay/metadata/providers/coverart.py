"""Cover Art Archive: a release's front image as bytes, with the upstream's content type.

``/release/{mbid}/front-500`` first, ``/release/{mbid}/front`` when that is 404, and 404 when
neither exists. The archive redirects to archive.org (often twice); redirects are followed,
and only an image is accepted as the answer (an HTML error page is an upstream failure, never
something served from the relay's domain). Bodies are capped at ``CACHE_ENTRY_MAX_BYTES``.
"""

from __future__ import annotations

import json

from metadata_relay.clock import Clock
from metadata_relay.config import Settings
from metadata_relay.metadata.politeness import UpstreamFailure
from metadata_relay.metadata.providers.base import Provider, upstream_client
from metadata_relay.metadata.routes import Match, Param
from metadata_relay.metadata.upstream import UpstreamResponse

MAX_REDIRECTS = 5
NOT_FOUND = json.dumps({"error": "not_found",
                        "message": "No front cover for this release"}).encode()


class CoverArt(Provider):
    name = "coverart"
    title = "Cover Art Archive"

    def __init__(self, settings: Settings, clock: Clock) -> None:
        super().__init__(upstream_client(settings, clock, self.name, settings.COVERART_BASE_URL,
                                         accept="image/*", max_redirects=MAX_REDIRECTS))

    async def fetch(self, match: Match, params: list[Param]) -> UpstreamResponse:
        resp = await self.client.request("GET", match.upstream_path)
        if resp.status == 404:
            resp = await self.client.request("GET", f"/release/{match.ids['mbid']}/front")
        if resp.status == 404:
            return UpstreamResponse(404, NOT_FOUND, "application/json")
        if 200 <= resp.status < 300 and not resp.content_type.lower().startswith("image/"):
            raise UpstreamFailure("bad_status", f"{self.title} answered {resp.content_type}, "
                                  "not an image")
        return resp
