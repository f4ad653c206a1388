"""``POST /crashes/report``: the original relay's answers (201 / 400 / 429 at 10 per minute
per client address), a body capped while it streams (413), the report stored within its caps.
There is no route that reads reports back: operators use ``metadata-relay crashes``.

``/metrics`` counts stored reports by type; the label set is bounded (the first
:data:`MAX_TYPE_LABELS` types this process sees, then ``other``), since the type is whatever
an anonymous client sends. Logs carry a report's id and size, never its content.
"""

from __future__ import annotations

import json
import re
import time

from prometheus_client import Counter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from metadata_relay.bodies import BodyTooLarge, InvalidJson, read_json_object
from metadata_relay.config import Settings
from metadata_relay.crashes.report import parse
from metadata_relay.crashes.store import CrashStore
from metadata_relay.http.edge import client_ip
from metadata_relay.observability import REGISTRY, get_logger
from metadata_relay.ratelimit import Window, retry_after_header
from metadata_relay.storage.sqlite import Database

log = get_logger("metadata_relay.crashes")

MAX_BODY = 32 * 1024
RATE_LIMIT, RATE_WINDOW = 10, 60.0  # reports per client address per window (the original's)
MAX_TYPE_LABELS = 50
DAY = 86400.0

CRASH_REPORTS = Counter(
    "relay_crash_reports_total",
    f"Crash reports stored, by type (the first {MAX_TYPE_LABELS} types seen, then 'other')",
    ["type"], registry=REGISTRY,
)
CRASH_REFUSED = Counter(
    "relay_crash_reports_refused_total", "Crash reports refused, by reason",
    ["reason"], registry=REGISTRY,
)


class TypeLabels:
    """Metric labels for report types: a safe spelling of each, at most ``limit`` of them."""

    def __init__(self, limit: int = MAX_TYPE_LABELS) -> None:
        self.limit = limit
        self._seen: set[str] = set()

    def label(self, error_type: str) -> str:
        clean = re.sub(r"[^A-Za-z0-9_.:-]", "_", error_type)[:64]
        if clean not in self._seen:
            if len(self._seen) >= self.limit:
                return "other"
            self._seen.add(clean)
        return clean


TYPE_LABELS = TypeLabels()  # process-wide, as the counter it bounds


def _answer(status: int, body: dict[str, object], **headers: str) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers or None)


def routes(settings: Settings, db: Database) -> list[BaseRoute]:
    store = CrashStore(db, settings.CRASH_REPORTS_MAX, settings.CRASH_REPORTS_MAX_AGE_DAYS * DAY)
    limiter = Window(RATE_WINDOW)

    async def report(request: Request) -> Response:
        ip, now = client_ip(request.scope, settings.TRUSTED_PROXIES), time.monotonic()
        wait = limiter.over(ip, RATE_LIMIT, now)
        if not wait:
            limiter.add(ip, now)
        else:
            CRASH_REFUSED.labels("rate_limited").inc()
            return _answer(429, {"error": "Too many requests",
                                 "message": "Rate limit exceeded. Please try again later."},
                           **{"retry-after": str(retry_after_header(wait))})
        try:
            doc = await read_json_object(request, MAX_BODY)
        except InvalidJson:
            CRASH_REFUSED.labels("invalid").inc()
            return _answer(400, {"error": "Invalid JSON",
                                 "message": "Request body must be valid JSON"})
        except BodyTooLarge:
            CRASH_REFUSED.labels("too_large").inc()
            raise  # 413 (the app's handler)
        parsed = parse(doc)
        if isinstance(parsed, list):
            CRASH_REFUSED.labels("invalid").inc()
            return _answer(400, {"error": "Validation failed", "errors": parsed})
        size = len(json.dumps(doc, ensure_ascii=False).encode())
        report_id = await store.add(parsed, size)
        CRASH_REPORTS.labels(TYPE_LABELS.label(parsed.error_type)).inc()
        log.info("crash_report_stored", report_id=report_id, bytes=size)
        return _answer(201, {"status": "created", "message": "Crash report received"})

    return [Route("/crashes/report", report, methods=["POST"])]
