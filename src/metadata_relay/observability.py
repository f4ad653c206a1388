"""Structured logs (structlog, JSON lines on stdout) and the Prometheus metrics registry.

Metrics live in one process-wide registry (``REGISTRY``); each package declares its own
collectors against it. Hot paths only increment counters: never log per request or packet.

No log line carries a payload, the libraries' included: an exception is logged as its type and
where it was raised, never its message (``UnicodeDecodeError``, websockets' header errors and
many more quote the bytes a client sent), and the libraries that log frames or requests at
debug level (uvicorn, which hands its logger to websockets) log from ``info`` up only.
"""

from __future__ import annotations

import logging
import sys
import traceback
from types import TracebackType
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

REGISTRY = CollectorRegistry(auto_describe=True)
METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST

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


# loggers whose output quotes what clients send, kept at warning whatever LOG_LEVEL says:
# uvicorn logs every WebSocket handshake at info with the peer's address, path and query (and
# websockets logs every frame, with its data, at debug to the logger uvicorn gives it,
# "uvicorn.error"); uvicorn.access would log request lines (the edge keeps its own, without
# paths); aiosqlite logs every statement with its parameters at debug (crash reports, tokens,
# generated secrets). The service's own "started"/"stopped" lines replace uvicorn's.
QUIET_BELOW_INFO = ("websockets",)
QUIET_BELOW_WARNING = ("uvicorn", "uvicorn.error", "uvicorn.access", "aiosqlite")
TRACEBACK_FRAMES = 12


def _exception(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """``exc_info`` → ``exception`` (its type, then the types of what caused it) and
    ``traceback`` (``file:line in function`` of the innermost frames); no message."""
    exc_info = event.pop("exc_info", None)
    if not exc_info:
        return event
    if exc_info is True:
        exc_info = sys.exc_info()
    elif isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    exc = exc_info[1] if isinstance(exc_info, tuple) else None
    if not isinstance(exc, BaseException):
        return event
    chain: list[BaseException] = []
    while exc is not None and exc not in chain and len(chain) < 8:
        chain.append(exc)
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    event["exception"] = " <- ".join(type(e).__qualname__ for e in chain)
    event["traceback"] = _frames(chain[0].__traceback__)
    return event


def _frames(tb: TracebackType | None) -> list[str]:
    frames = traceback.extract_tb(tb)[-TRACEBACK_FRAMES:]
    return [f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} in {f.name}" for f in frames]


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
        _exception,
    ]
    structlog.configure(
        processors=[*shared, renderer],
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
    for name in QUIET_BELOW_INFO:
        logging.getLogger(name).setLevel(max(numeric, logging.INFO))
    for name in QUIET_BELOW_WARNING:
        logging.getLogger(name).setLevel(logging.WARNING)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)


def render_metrics() -> bytes:
    return generate_latest(REGISTRY)
