"""Fake upstream APIs: real aiohttp servers on loopback, each in its own thread.

:class:`LoopbackFake` is what every fake shares: the server thread, a record of the calls it
received, concurrency counts, and switches a test sets to make it slow, hang, or fail with a
status (in the provider's own error shape). :class:`FakeUpstream` is TMDB + TVDB: TMDB lives
under ``/3`` and demands ``api_key``; TVDB lives under ``/v4`` with ``POST /login`` and demands
a bearer token it issued. Bodies are deliberately oddly formatted so any re-encoding by the
relay is detected. The other providers' fakes are in ``fake_music.py``,
``fake_openlibrary.py`` and ``fake_opensubtitles.py``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

TMDB_KEY = "tmdb-test-key-123"
TVDB_KEY = "tvdb-test-key-456"
TVDB_PIN = "4242"
NOT_FOUND_ID = "999999"


def make_jwt(exp: float) -> str:
    def b64(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{b64({'alg': 'HS256'})}.{b64({'exp': int(exp), 'jti': secrets.token_hex(4)})}.sig"


def odd_json(doc: dict[str, Any]) -> bytes:
    """JSON with odd spacing: a relay that re-encodes it changes these bytes."""
    return json.dumps(doc, separators=(" ,", ":  ")).encode() + b"\n"


@dataclass
class Call:
    method: str
    path: str
    params: dict[str, str]
    headers: CIMultiDict[str]  # names case-insensitive, as HTTP has them
    body: bytes
    at: float
    query_string: str = ""  # as sent (percent-encoded)


@dataclass
class LoopbackFake:
    """The server machinery every fake shares. Subclasses answer in :meth:`answer` and may
    name paths (``login_paths``) that ``api_calls`` leaves out and ``fail_status`` spares."""

    # behaviour switches, set from the test thread
    delay: float = 0.0
    fail_status: int | None = None
    fail_retry_after: str | None = None
    hang: bool = False
    calls: list[Call] = field(default_factory=list)
    in_flight: int = 0
    peak_in_flight: int = 0
    port: int = 0
    ports: list[int] = field(default_factory=list)  # every site's port, ``port`` first
    sites: int = 1  # how many loopback listeners (other hosts, e.g. a redirect target)
    login_paths: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stopping = False

    # --- control ------------------------------------------------------------------------
    def url(self, prefix: str, site: int = 0) -> str:
        return f"http://127.0.0.1:{self.ports[site]}{prefix}"

    def api_calls(self, prefix: str = "") -> list[Call]:
        with self._lock:
            return [c for c in self.calls
                    if c.path.startswith(prefix) and c.path not in self.login_paths]

    def count(self, path: str) -> int:
        return sum(1 for c in self.api_calls() if c.path == path)

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self.delay, self.fail_status, self.fail_retry_after = 0.0, None, None
            self.hang = False
            self.peak_in_flight = 0

    # --- server ---------------------------------------------------------------------------
    def start(self) -> Any:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._handle)
            runner = web.AppRunner(app, handle_signals=False, access_log=None)
            loop.run_until_complete(runner.setup())
            for i in range(self.sites):
                site = web.TCPSite(runner, "127.0.0.1", self.port if i == 0 else 0,
                                   backlog=2048)
                loop.run_until_complete(site.start())
            self.ports = [a[1] for a in runner.addresses]
            self.port = self.ports[0]
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name=type(self).__name__, daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"{type(self).__name__} did not start")
        return self

    def stop(self) -> None:
        self._stopping = True
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None

    # --- handlers -------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        params = {k: v for k, v in request.query.items()}
        call = Call(request.method, request.path, params, CIMultiDict(request.headers), body,
                    time.monotonic(), request.rel_url.raw_query_string)
        with self._lock:
            self.calls.append(call)
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            while self.hang and not self._stopping:
                await asyncio.sleep(0.02)
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.fail_status is not None and request.path not in self.login_paths:
                headers = {"Retry-After": self.fail_retry_after} if self.fail_retry_after else {}
                return self.failure(self.fail_status, headers)
            return await self.answer(request, call)
        finally:
            with self._lock:
                self.in_flight -= 1

    def failure(self, status: int, headers: dict[str, str]) -> web.Response:
        """The provider's answer for a failure the test asked for."""
        return web.Response(status=status, headers=headers,
                            text='{"status_message":"upstream trouble"}',
                            content_type="application/json")

    async def answer(self, request: web.Request, call: Call) -> web.StreamResponse:
        raise NotImplementedError


@dataclass
class FakeUpstream(LoopbackFake):
    tmdb_key: str = TMDB_KEY
    tvdb_key: str = TVDB_KEY
    tvdb_pin: str | None = TVDB_PIN
    token_lifetime: float = 30 * 86400
    body_padding: int = 0
    logins: int = 0
    login_bodies: list[dict[str, Any]] = field(default_factory=list)
    valid_tokens: set[str] = field(default_factory=set)
    login_paths: tuple[str, ...] = ("/v4/login",)

    @property
    def tmdb_url(self) -> str:
        return self.url("/3")

    @property
    def tvdb_url(self) -> str:
        return self.url("/v4")

    def env(self) -> dict[str, str]:
        env = {"TMDB_API_KEY": self.tmdb_key, "TMDB_BASE_URL": self.tmdb_url,
               "TVDB_API_KEY": self.tvdb_key, "TVDB_BASE_URL": self.tvdb_url}
        if self.tvdb_pin:
            env["TVDB_PIN"] = self.tvdb_pin
        return env

    def expire_tvdb_tokens(self) -> None:
        with self._lock:
            self.valid_tokens.clear()

    async def answer(self, request: web.Request, call: Call) -> web.StreamResponse:
        if request.path == "/v4/login" and request.method == "POST":
            return self._login(call.body)
        if request.path.startswith("/3/"):
            return self._tmdb(request, call.params)
        if request.path.startswith("/v4/"):
            return self._tvdb(request, call.params)
        return web.Response(status=404, text="nope")

    def _payload(self, path: str, params: dict[str, str]) -> bytes:
        doc: dict[str, Any] = {"z_last": True, "path": path, "params": params}
        if self.body_padding:
            doc["overview"] = "x" * self.body_padding
        return odd_json(doc)

    def _tmdb(self, request: web.Request, params: dict[str, str]) -> web.Response:
        if params.get("api_key") != self.tmdb_key:
            return web.json_response(
                {"status_code": 7, "status_message": "Invalid API key: You must be granted a "
                 "valid key.", "success": False}, status=401)
        shown = {k: v for k, v in params.items() if k != "api_key"}
        if NOT_FOUND_ID in request.path:
            return web.json_response({"success": False, "status_code": 34, "status_message":
                                      "The resource you requested could not be found."},
                                     status=404)
        if "/bad_request" in request.path or params.get("page") == "-1":
            return web.json_response({"success": False, "status_code": 22,
                                      "status_message": "Invalid page."}, status=422)
        return web.Response(body=self._payload(request.path, shown),
                            content_type="application/json")

    def _login(self, body: bytes) -> web.Response:
        try:
            doc = json.loads(body)
        except ValueError:
            return web.json_response({"status": "failure", "message": "bad json"}, status=400)
        with self._lock:
            self.logins += 1
            self.login_bodies.append(doc)
        if doc.get("apikey") != self.tvdb_key or (self.tvdb_pin and doc.get("pin")
                                                  != self.tvdb_pin):
            return web.json_response({"status": "failure", "message": "Unauthorized"},
                                     status=401)
        token = make_jwt(time.time() + self.token_lifetime)
        with self._lock:
            self.valid_tokens.add(token)
        return web.json_response({"status": "success", "data": {"token": token}})

    def _tvdb(self, request: web.Request, params: dict[str, str]) -> web.Response:
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ")
        with self._lock:
            valid = auth.startswith("Bearer ") and token in self.valid_tokens
        if not valid:
            return web.json_response({"status": "failure", "message": "Unauthorized"},
                                     status=401)
        if NOT_FOUND_ID in request.path:
            return web.json_response({"status": "failure", "message": "NotFoundException"},
                                     status=404)
        inner = self._payload(request.path, params)
        return web.Response(body=b'{"status":"success","data":' + inner.strip() + b"}",
                            content_type="application/json")
