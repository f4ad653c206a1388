"""metadata-relay: TMDB/TVDB caching proxy, device pairing relay and STUN/TURN server."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("metadata-relay")
except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
    __version__ = "0.0.0"

SERVICE_NAME = "metadata-relay"
