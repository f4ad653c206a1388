"""Open Library: keyless JSON (``/search.json``, ``/api/books``, ``/works/…``, ``/authors/…``;
paths and fixed parameters are in the route table)."""

from __future__ import annotations

from metadata_relay.clock import Clock
from metadata_relay.config import Settings
from metadata_relay.metadata.providers.base import Provider, upstream_client


class OpenLibrary(Provider):
    name = "openlibrary"
    title = "Open Library"

    def __init__(self, settings: Settings, clock: Clock) -> None:
        super().__init__(upstream_client(settings, clock, self.name, settings.OPENLIBRARY_BASE_URL))
