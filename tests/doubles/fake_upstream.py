"""A fake TMDB + TVDB upstream: a real aiohttp server on loopback, in its own thread.

TMDB lives under ``/3`` and demands ``api_key``; TVDB lives under ``/v4`` with ``POST /login``
and demands a bearer token it issued. It counts calls and concurrency and can be told to be
slow, hang, fail with a status, answer 429 with ``Retry-After``, or expire TVDB tokens.
Bodies are deliberately oddly formatted so any re-encoding by the relay is detected.
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

TMDB_KEY = "tmdb-test-key-123"
TVDB_KEY = "tvdb-test-key-456"
TVDB_PIN = "4242"
NOT_FOUND_ID = "999999"


def make_jwt(exp: float) -> str:
    def b64(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{b64({'alg': 'HS256'})}.{b64({'exp': int(exp), 'jti': secrets.token_hex(4)})}.sig"


@dataclass
class Call:
    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class FakeUpstream:
    tmdb_key: str = TMDB_KEY
    tvdb_key: str = TVDB_KEY
    tvdb_pin: str | None = TVDB_PIN
    token_lifetime: float = 30 * 86400
    # behaviour switches, set from the test thread
    delay: float = 0.0
    fail_status: int | None = None
    fail_retry_after: str | None = None
    hang: bool = False
    body_padding: int = 0
    calls: list[Call] = field(default_factory=list)
    logins: int = 0
    login_bodies: list[dict[str, Any]] = field(default_factory=list)
    in_flight: int = 0
    peak_in_flight: int = 0
    valid_tokens: set[str] = field(default_factory=set)
    port: int = 0

    def __post_init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stopping = False

    # --- control ------------------------------------------------------------------------
    @property
    def tmdb_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/3"

    @property
    def tvdb_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v4"

    def env(self) -> dict[str, str]:
        env = {"TMDB_API_KEY": self.tmdb_key, "TMDB_BASE_URL": self.tmdb_url,
               "TVDB_API_KEY": self.tvdb_key, "TVDB_BASE_URL": self.tvdb_url}
        if self.tvdb_pin:
            env["TVDB_PIN"] = self.tvdb_pin
        return env

    def api_calls(self, prefix: str = "") -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.path.startswith(prefix) and c.path != "/v4/login"]

    def count(self, path: str) -> int:
        return sum(1 for c in self.api_calls() if c.path == path)

    def expire_tvdb_tokens(self) -> None:
        with self._lock:
            self.valid_tokens.clear()

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self.delay, self.fail_status, self.fail_retry_after = 0.0, None, None
            self.hang = False
            self.peak_in_flight = 0

    # --- server ---------------------------------------------------------------------------
    def start(self) -> FakeUpstream:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._handle)
            runner = web.AppRunner(app, handle_signals=False, access_log=None)
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", self.port, backlog=2048)
            loop.run_until_complete(site.start())
            self.port = runner.addresses[0][1]
            self._runner = runner
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-upstream", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake upstream did not start")
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
        call = Call(request.method, request.path, params, dict(request.headers), body,
                    time.monotonic())
        with self._lock:
            self.calls.append(call)
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            while self.hang and not self._stopping:
                await asyncio.sleep(0.02)
            if self.delay:
                await asyncio.sleep(self.delay)
            if request.path == "/v4/login" and request.method == "POST":
                return self._login(body)
            if self.fail_status is not None:
                headers = {"Retry-After": self.fail_retry_after} if self.fail_retry_after else {}
                return web.Response(status=self.fail_status, headers=headers,
                                    text='{"status_message":"upstream trouble"}',
                                    content_type="application/json")
            if request.path.startswith("/3/"):
                return self._tmdb(request, params)
            if request.path.startswith("/v4/"):
                return self._tvdb(request, params)
            return web.Response(status=404, text="nope")
        finally:
            with self._lock:
                self.in_flight -= 1

    def _payload(self, path: str, params: dict[str, str]) -> bytes:
        # odd spacing and key order: a relay that re-encodes JSON changes these bytes
        doc = {"z_last": True, "path": path, "params": params}
        if self.body_padding:
            doc["overview"] = "x" * self.body_padding
        return json.dumps(doc, separators=(" ,", ":  ")).encode() + b"\n"

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
