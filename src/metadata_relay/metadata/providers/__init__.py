"""The upstream APIs the proxy calls, one module each; :func:`build_providers` makes them all
from the settings."""

from __future__ import annotations

from metadata_relay.clock import Clock
from metadata_relay.config import Settings
from metadata_relay.metadata.providers.base import Provider
from metadata_relay.metadata.providers.coverart import CoverArt
from metadata_relay.metadata.providers.musicbrainz import MusicBrainz
from metadata_relay.metadata.providers.openlibrary import OpenLibrary
from metadata_relay.metadata.providers.opensubtitles import OpenSubtitles
from metadata_relay.metadata.providers.tmdb import Tmdb
from metadata_relay.metadata.providers.tvdb import Tvdb
from metadata_relay.metadata.routes import ProviderName

__all__ = ["Provider", "build_providers"]


def build_providers(settings: Settings, clock: Clock) -> dict[ProviderName, Provider]:
    providers: list[Provider] = [
        kind(settings, clock)
        for kind in (Tmdb, Tvdb, MusicBrainz, CoverArt, OpenLibrary, OpenSubtitles)]
    return {p.name: p for p in providers}
