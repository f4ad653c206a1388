"""Structured logs (structlog, JSON lines on stdout) and the Prometheus metrics registry.

Metrics live in one process-wide registry (``REGISTRY``); each package declares its own
collectors against it. Hot paths only increment counters: never log per request or packet.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

REGISTRY = CollectorRegistry(auto_describe=True)
METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST

HTTP_REQUESTS = Counter(
    "relay_http_requests_total", "HTTP requests by route and status class",
    ["route", "status"], registry=REGISTRY,
)
HTTP_LATENCY = Histogram(
    "relay_http_request_duration_seconds", "HTTP request latency by route", ["route"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
    registry=REGISTRY,
)
WEBSOCKETS_OPEN = Gauge(
    "relay_websockets_open", "Open WebSockets by kind", ["kind"], registry=REGISTRY
)

_SECRET_KEYS = ("secret", "token", "password", "api_key", "apikey", "pin", "credential")


def _redact(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """Last line of defence: drop values whose key names a secret."""
    for key in list(event):
        if any(s in key.lower() for s in _SECRET_KEYS):
            event[key] = "[redacted]"
    return event


def configure_logging(level: str = "info", fmt: str | None = None) -> None:
    """JSON lines on stdout (console rendering on a TTY unless ``fmt`` says otherwise)."""
    if fmt is None:
        fmt = "console" if sys.stdout.isatty() else "json"
    renderer: Any = (
        structlog.dev.ConsoleRenderer() if fmt == "console" else structlog.processors.JSONRenderer()
    )
    numeric = logging.getLevelNamesMapping()[level.upper()]
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    # Libraries (uvicorn, aiohttp, asyncssh) log through stdlib logging: render them the same way.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    # uvicorn.access logs every request line; aiosqlite logs every statement with its
    # parameters at debug level (crash reports, tokens, generated secrets): never below warning
    for name in ("uvicorn.access", "aiosqlite"):
        logging.getLogger(name).setLevel(logging.WARNING)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)


def render_metrics() -> bytes:
    return generate_latest(REGISTRY)
