"""MusicBrainz (``/ws/2``, JSON by ``fmt=json``; the ``inc=`` sets are in the route table).

musicbrainz.org allows 1 request/s per client and answers 503 beyond it, so the relay paces
its calls at ``MUSICBRAINZ_MAX_RPS`` (1) with a wider margin than other providers: a burst
queues (up to ``UPSTREAM_QUEUE_TIMEOUT``) instead of being refused upstream. Its User-Agent
names the relay, its version and ``UPSTREAM_CONTACT``, as MusicBrainz asks.
"""

from __future__ import annotations

from metadata_relay.clock import Clock
from metadata_relay.config import Settings
from metadata_relay.metadata.providers.base import Provider, upstream_client

# pace at 90 % of the allowed rate: a request held up by the event loop must not land less
# than a second after the previous one at musicbrainz.org
HEADROOM = 0.9


class MusicBrainz(Provider):
    name = "musicbrainz"
    title = "MusicBrainz"

    def __init__(self, settings: Settings, clock: Clock) -> None:
        super().__init__(upstream_client(
            settings, clock, self.name, settings.MUSICBRAINZ_BASE_URL,
            rate=settings.MUSICBRAINZ_MAX_RPS, headroom=HEADROOM))
