"""Factory for serving the relay's ASGI app under granian (P1 extra column):
``granian --interface asgi --factory bench._granian_app:create``; settings from the env."""

from __future__ import annotations

from starlette.types import ASGIApp

from metadata_relay.app import create_app
from metadata_relay.config import load_settings
from metadata_relay.observability import configure_logging


def create() -> ASGIApp:
    settings = load_settings()
    configure_logging(settings.LOG_LEVEL, settings.LOG_FORMAT)
    return create_app(settings).app
