"""A fake OCI registry on loopback, as unkind as Docker Hub to an anonymous client.

``/v2/<repository>/manifests/<reference>`` (HEAD and GET) wants a bearer token: without one
it answers 401 with ``WWW-Authenticate: Bearer realm="<base>/token",service=..,scope=..``.
``/token`` hands out a token for ``service`` and ``scope=repository:<name>:pull`` (anything
else: 400/401, as auth.docker.io). With a token for another repository, or for a repository
it does not hold, the registry answers 401 ``insufficient_scope`` (Docker Hub cannot tell
private from missing). An unknown tag is 404 ``MANIFEST_UNKNOWN``. A client whose Accept
header does not take the tag's index gets 404 ("OCI index found, but accept header does not
support OCI indexes"), as distribution answers. ``rate_limited`` answers the next N requests
429 ``TOOMANYREQUESTS`` (with ``Retry-After`` when set); ``down`` answers 503. HEAD
answers carry ``Docker-Content-Digest`` and no body (``head_digest=False`` leaves the
digest out). Misbehaviour on demand: a digest header that lies (``claimed_digest``), a token
service answering garbage (``token_answer``), manifests redirected elsewhere
(``redirect_to``). Every request is recorded; writes (PUT, POST, PATCH, DELETE) are refused
and recorded too.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

SERVICE = "registry.fake"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"


def index_manifest(seed: str, media_type: str = DOCKER_LIST) -> bytes:
    """A multi-platform manifest (list) body; ``seed`` makes its digest differ."""
    def platform_digest(arch: str) -> str:
        return "sha256:" + hashlib.sha256(f"{seed}/{arch}".encode()).hexdigest()

    body = {
        "schemaVersion": 2, "mediaType": media_type,
        "manifests": [{"mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                       "size": 1234, "digest": platform_digest(arch),
                       "platform": {"architecture": arch, "os": "linux"}}
                      for arch in ("amd64", "arm64")],
    }
    return json.dumps(body, indent=3).encode()


@dataclass
class Manifest:
    body: bytes
    media_type: str = DOCKER_LIST

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.body).hexdigest()


@dataclass
class Call:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class FakeRegistry:
    base: str = ""  # http://127.0.0.1:<port>, set once serving
    # repository -> tag -> manifest
    repos: dict[str, dict[str, Manifest]] = field(default_factory=dict)
    rate_limited: int = 0  # answer the next N requests 429
    retry_after: str | None = None
    down: bool = False
    head_digest: bool = True
    claimed_digest: str | None = None  # a Docker-Content-Digest that is not the manifest's
    token_answer: bytes | None = None  # what /token answers instead of a token
    redirect_to: str | None = None  # manifests answer 307 to this URL
    calls: list[Call] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)  # token -> repository

    def tag(self, repository: str, tag: str, seed: str, media_type: str = DOCKER_LIST
            ) -> Manifest:
        """Point ``repository:tag`` at a (new) multi-platform manifest; returns it."""
        manifest = Manifest(index_manifest(seed, media_type), media_type)
        self.repos.setdefault(repository, {})[tag] = manifest
        return manifest

    def writes(self) -> list[Call]:
        return [c for c in self.calls if c.method not in ("GET", "HEAD")]

    def manifest_requests(self) -> list[Call]:
        return [c for c in self.calls if "/manifests/" in c.path]

    def app(self) -> web.Application:
        @web.middleware
        async def record(request: web.Request, handler: Any) -> web.StreamResponse:
            self.calls.append(Call(request.method, request.path_qs, dict(request.headers)))
            if self.down:
                return _errors(503, "UNAVAILABLE", "service unavailable")
            if self.rate_limited > 0:
                self.rate_limited -= 1
                response = _errors(429, "TOOMANYREQUESTS", "You have reached your unauthenticated"
                                   " pull rate limit. https://www.docker.com/increase-rate-limit")
                if self.retry_after is not None:
                    response.headers["Retry-After"] = self.retry_after
                return response
            if request.method not in ("GET", "HEAD"):
                return _errors(405, "UNSUPPORTED", "the operation is unsupported")
            return await handler(request)

        async def token(request: web.Request) -> web.Response:
            q = request.query
            if q.get("service") != SERVICE:
                return web.json_response({"details": "invalid service"}, status=400)
            scope = q.get("scope", "")
            parts = scope.split(":")
            if len(parts) != 3 or parts[0] != "repository" or parts[2] != "pull":
                return web.json_response({"details": f"invalid scope {scope!r}"}, status=401)
            if self.token_answer is not None:
                return web.Response(body=self.token_answer, content_type="application/json")
            value = secrets.token_urlsafe(24)
            self.tokens[value] = parts[1]
            return web.json_response({"token": value, "access_token": value, "expires_in": 300,
                                      "issued_at": "2026-02-01T00:00:00Z"})

        async def manifest(request: web.Request) -> web.StreamResponse:
            repository, reference = request.match_info["repo"], request.match_info["ref"]
            if self.redirect_to is not None:
                return web.Response(status=307, headers={"Location": self.redirect_to})
            auth = request.headers.get("Authorization", "")
            holder = self.tokens.get(auth.removeprefix("Bearer ")) \
                if auth.startswith("Bearer ") else None
            challenge = (f'Bearer realm="{self.base}/token",service="{SERVICE}",'
                         f'scope="repository:{repository}:pull"')
            if holder is None:
                response = _errors(401, "UNAUTHORIZED", "authentication required")
                response.headers["WWW-Authenticate"] = challenge
                return response
            if holder != repository or repository not in self.repos:
                response = _errors(401, "UNAUTHORIZED", "authentication required")
                response.headers["WWW-Authenticate"] = challenge + ',error="insufficient_scope"'
                return response
            found = self.repos[repository].get(reference)
            if found is None:
                return _errors(404, "MANIFEST_UNKNOWN", "manifest unknown")
            accepted = [a.split(";")[0].strip() for a in
                        ",".join(request.headers.getall("Accept", [])).split(",")]
            if found.media_type not in accepted:
                return _errors(404, "MANIFEST_UNKNOWN",
                               "OCI index found, but accept header does not support OCI indexes")
            headers = {"Content-Type": found.media_type, "Docker-Distribution-Api-Version":
                       "registry/2.0", "Etag": f'"{found.digest}"'}
            if self.head_digest or request.method == "GET":
                headers["Docker-Content-Digest"] = self.claimed_digest or found.digest
            if request.method == "HEAD":
                headers["Content-Length"] = str(len(found.body))
                return web.Response(status=200, headers=headers)
            return web.Response(status=200, body=found.body, headers=headers)

        app = web.Application(middlewares=[record])
        app.router.add_get("/token", token)
        # GET routes answer HEAD too
        app.router.add_get(r"/v2/{repo:.+}/manifests/{ref:[^/]+}", manifest)
        return app


def _errors(status: int, code: str, message: str) -> web.Response:
    body = {"errors": [{"code": code, "message": message, "detail": None}]}
    return web.Response(status=status, body=json.dumps(body),
                        content_type="application/json")
