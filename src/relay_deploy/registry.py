"""The digest an image tag stands for, read from its registry (OCI distribution API).

Anonymous pull, as ``docker pull`` does it: ``HEAD /v2/<repository>/manifests/<tag>`` asking
for a multi-platform index (OCI image index, Docker manifest list) or a single manifest;
the registry answers 401 with ``WWW-Authenticate: Bearer realm=..,service=..,scope=..``; a
token from that realm for ``repository:<repository>:pull``; the HEAD again with the token.
Its ``Docker-Content-Digest`` is the tag's digest (for a multi-platform image, the index's:
what ``docker buildx imagetools inspect`` prints as ``Digest:``). A HEAD does not count
against Docker Hub's pull rate limit; when it carries no usable digest, the manifest is
fetched with a GET and hashed. Only GET and HEAD are ever sent.

Parsing (image names, challenges, token and error bodies, digests) is pure; :func:`resolve`
is the HTTP edge (urllib: the environment's proxy settings apply, redirects are refused so
the token never follows one).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.message import Message
from typing import Any

DOCKER_HUB = "https://registry-1.docker.io"  # where docker.io's images are served
DOCKER_HUB_AUTH = "auth.docker.io"  # the token service Docker Hub's challenge names

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (*INDEX_TYPES, OCI_MANIFEST, DOCKER_MANIFEST)
ACCEPT = ", ".join(MANIFEST_TYPES)

MAX_MANIFEST = 4 << 20  # the largest manifest registries accept (distribution: 4 MiB)
MAX_TOKEN_ANSWER = 64 << 10
MAX_ERROR_BODY = 16 << 10
ATTEMPTS = 4  # per request, while the registry answers 429 or 502-504
MAX_RETRY_AFTER = 60.0  # a longer Retry-After fails at once (Docker Hub's limits last hours)
RETRIED = (429, 502, 503, 504)

DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_TOKEN_RE = re.compile(r"[A-Za-z0-9._~+/=-]{1,8192}")  # a bearer token (RFC 6750 b64token)
_PARAM_RE = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,"]*)\s*(,|$)')


class RegistryError(Exception):
    """The registry did not tell the digest. ``kind``: ``unreachable``, ``not-found``,
    ``refused``, ``rate-limited`` or ``bad-answer``; the message is one line."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Location:
    """Where an image's manifests are: the registry's base URL and the repository in it."""

    base_url: str
    repository: str

    def manifest_url(self, tag: str) -> str:
        return f"{self.base_url}/v2/{self.repository}/manifests/{tag}"


@dataclass(frozen=True)
class Resolved:
    digest: str  # sha256:<64 hex>
    media_type: str

    @property
    def multi_platform(self) -> bool:
        return self.media_type in INDEX_TYPES


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lower case: "bearer", "basic"
    params: dict[str, str]


# ---- parsing -----------------------------------------------------------------------------------


def locate(name: str, base_url: str = "") -> Location:
    """Where ``name`` (an image name without tag or digest, as a Deployment names it) lives,
    by Docker's rules: a first path component with a dot or a port, or ``localhost``, is a
    registry host; anything else is on Docker Hub (one-component names under ``library/``).
    ``base_url`` replaces the registry's address (a mirror, or a test's fake)."""
    host, _, rest = name.partition("/")
    if rest and host in ("docker.io", "index.docker.io"):
        registry, repository = DOCKER_HUB, rest if "/" in rest else f"library/{rest}"
    elif rest and ("." in host or ":" in host or host == "localhost"):
        registry, repository = f"https://{host}", rest
    else:
        registry, repository = DOCKER_HUB, name if rest else f"library/{name}"
    if not _REPOSITORY_RE.fullmatch(repository) or len(repository) > 255:
        raise ValueError(f"not an image repository name: {name!r}")
    return Location((base_url or registry).rstrip("/"), repository)


def check_tag(tag: str) -> str:
    if not isinstance(tag, str) or not _TAG_RE.fullmatch(tag):
        raise ValueError(f"not an image tag: {tag!r}")
    return tag


def check_digest(value: str) -> str:
    """``value`` if it is a sha256 digest as registries write it (``sha256:`` + 64 lower-case
    hex digits); ValueError otherwise."""
    if not isinstance(value, str) or not DIGEST_RE.fullmatch(value):
        raise ValueError(f"not a sha256 digest (sha256: and 64 lower-case hex digits): "
                         f"{str(value)[:80]!r}")
    return value


def digest_of(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


def parse_challenge(header: str | None) -> Challenge:
    """A ``WWW-Authenticate`` value: ``Bearer realm="...",service="...",scope="..."``.
    Raises ValueError for anything else (only one challenge is expected)."""
    if not header or not header.strip():
        raise ValueError("no WWW-Authenticate challenge")
    scheme, _, rest = header.strip().partition(" ")
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", scheme):
        raise ValueError(f"not an authentication challenge: {header[:80]!r}")
    params: dict[str, str] = {}
    pos, rest = 0, rest.strip()
    while pos < len(rest):
        match = _PARAM_RE.match(rest, pos)
        if match is None or match.end() == pos:
            raise ValueError(f"malformed challenge parameters: {rest[:80]!r}")
        key, value = match.group(1).lower(), match.group(2)
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        if key in params:
            raise ValueError(f"challenge parameter {key!r} given twice")
        params[key] = value
        pos = match.end()
    return Challenge(scheme.lower(), params)


def token_request_url(challenge: Challenge, repository: str, registry_url: str) -> str:
    """The realm's URL asking for a pull token for ``repository``. The realm must be HTTPS
    (plain HTTP only when the registry itself is, as a test's fake on loopback is)."""
    if challenge.scheme != "bearer":
        raise RegistryError("refused", f"the registry asks for {challenge.scheme} "
                                       f"credentials, not an anonymous token: the image is "
                                       f"not public")
    realm = challenge.params.get("realm", "")
    parts = urllib.parse.urlsplit(realm)
    secure = parts.scheme == "https" or (
        parts.scheme == "http" and registry_url.startswith("http://"))
    if not secure or not parts.hostname or parts.username or parts.password:
        raise RegistryError("bad-answer", f"the registry names an unusable token service "
                                          f"(realm {realm[:100]!r})")
    query = [("scope", f"repository:{repository}:pull")]
    if challenge.params.get("service"):
        query.insert(0, ("service", challenge.params["service"]))
    extra = f"&{parts.query}" if parts.query else ""
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path or "/",
                                    urllib.parse.urlencode(query) + extra, ""))


def parse_token(body: bytes) -> str:
    """The bearer token of a token service's JSON answer (``token``, or ``access_token``)."""
    try:
        answer = json.loads(body)
    except ValueError:
        raise ValueError("the token service's answer is not JSON") from None
    if not isinstance(answer, dict):
        raise ValueError("the token service's answer is not a JSON object")
    token = answer.get("token") or answer.get("access_token")
    if not isinstance(token, str) or not _TOKEN_RE.fullmatch(token):
        raise ValueError("the token service's answer holds no usable token")
    return token


def error_summary(body: bytes) -> str:
    """``CODE: message`` of an OCI error body (``{"errors": [{"code", "message"}]}``), or ""."""
    try:
        answer = json.loads(body)
    except ValueError:
        return ""
    errors = answer.get("errors") if isinstance(answer, dict) else None
    if not isinstance(errors, list):
        return ""
    parts = []
    for error in errors[:3]:
        if isinstance(error, dict):
            code, message = str(error.get("code", ""))[:40], str(error.get("message", ""))[:120]
            parts.append(f"{code}: {message}" if code else message)
    return "; ".join(_printable(p) for p in parts if p)


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else " " for c in text)


def retry_after(value: str | None, default: float) -> float:
    """Seconds a ``Retry-After`` asks for (delta-seconds; an HTTP date or garbage: ``default``)."""
    if value and value.strip().isdigit():
        return float(value.strip())
    return default


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


# ---- HTTP (the edge) ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # urllib then raises the 3xx as an HTTPError


Send = Callable[[str, str, dict[str, str], int], Answer]


def _headers(message: Message) -> dict[str, str]:
    return {k.lower(): v for k, v in message.items()}


class _Slow(Exception):
    pass


def _read(stream: Any, limit: int, deadline: float) -> bytes:
    """At most ``limit + 1`` bytes of ``stream``, given up at ``deadline`` (a server that
    drips its answer byte by byte never holds the run longer than that)."""
    body = b""
    read = getattr(stream, "read1", stream.read)  # what has arrived, not a full buffer
    while len(body) <= limit:
        if time.monotonic() > deadline:
            raise _Slow
        chunk = read(min(65536, limit + 1 - len(body)))
        if not chunk:
            break
        body += chunk
    return body


def http_send(timeout: float) -> Send:
    """A sender: (method, url, headers, body limit) -> Answer, each exchange within about
    ``timeout`` seconds. Raises RegistryError ("unreachable") when no HTTP answer comes in
    time, ("bad-answer") when it is larger than the limit."""
    opener = urllib.request.build_opener(_NoRedirects())

    def send(method: str, url: str, headers: dict[str, str], limit: int) -> Answer:
        host = urllib.parse.urlsplit(url).netloc
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise RegistryError("bad-answer", f"not an http(s) URL: {url[:100]!r}")
        request = urllib.request.Request(url, method=method, headers=headers)  # noqa: S310
        deadline = time.monotonic() + timeout
        try:
            try:
                with opener.open(request, timeout=timeout) as response:
                    status, head = int(response.status), _headers(response.headers)
                    body = _read(response, limit, deadline) if method != "HEAD" else b""
            except urllib.error.HTTPError as exc:
                with exc:
                    status, head = int(exc.code), _headers(exc.headers)
                    body = _read(exc, limit, deadline) if method != "HEAD" else b""
        except _Slow:
            raise RegistryError("unreachable", f"{host} did not answer within "
                                               f"{timeout:g}s") from None
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", None) or exc or "timed out"
            raise RegistryError("unreachable", f"{host} unreachable ({reason})") from None
        if len(body) > limit:
            raise RegistryError("bad-answer", f"{method} {url}: answer larger than "
                                              f"{limit} bytes")
        return Answer(status, head, body)

    return send


def _send_retrying(send: Send, sleep: Callable[[float], None], backoff: float, method: str,
                   url: str, headers: dict[str, str], limit: int) -> Answer:
    """``send``, again while the registry answers 429 or 502-504 (waiting as its
    Retry-After asks, ``backoff`` without one), at most :data:`ATTEMPTS` times."""
    for attempt in range(1, ATTEMPTS + 1):
        answer = send(method, url, headers, limit)
        if answer.status not in RETRIED:
            return answer
        wait = retry_after(answer.headers.get("retry-after"), backoff * attempt)
        what = "rate-limits this machine (429)" if answer.status == 429 else \
            f"is unavailable ({answer.status})"
        detail = error_summary(answer.body)
        host = urllib.parse.urlsplit(url).netloc
        if wait > MAX_RETRY_AFTER:
            raise RegistryError("rate-limited" if answer.status == 429 else "unreachable",
                                f"{host} {what} and asks to wait {wait:.0f}s"
                                f"{f' ({detail})' if detail else ''}")
        if attempt == ATTEMPTS:
            raise RegistryError("rate-limited" if answer.status == 429 else "unreachable",
                                f"{host} {what}, {ATTEMPTS} times in a row"
                                f"{f' ({detail})' if detail else ''}")
        sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover


def resolve(location: Location, tag: str, *, send: Send,
            sleep: Callable[[float], None] = time.sleep, backoff: float = 1.0) -> Resolved:
    """The digest ``tag`` stands for in ``location`` (see the module docstring)."""
    check_tag(tag)
    url = location.manifest_url(tag)
    where = f"{location.repository}:{tag}"
    headers = {"Accept": ACCEPT, "User-Agent": "relay-deploy (metadata-relay)"}

    def ask(method: str, limit: int = MAX_ERROR_BODY) -> Answer:
        return _send_retrying(send, sleep, backoff, method, url, headers, limit)

    answer = ask("HEAD")
    if answer.status == 401:
        try:
            challenge = parse_challenge(answer.headers.get("www-authenticate"))
        except ValueError as exc:
            raise RegistryError("bad-answer", f"{where}: 401 without a usable challenge "
                                              f"({exc})") from None
        token_url = token_request_url(challenge, location.repository, location.base_url)
        got = _send_retrying(send, sleep, backoff, "GET", token_url,
                             {"Accept": "application/json", "User-Agent": headers["User-Agent"]},
                             MAX_TOKEN_ANSWER)
        if got.status != 200:
            detail = error_summary(got.body) or f"HTTP {got.status}"
            raise RegistryError("refused", f"the token service refused an anonymous pull "
                                           f"token for {location.repository} ({detail})")
        try:
            headers["Authorization"] = f"Bearer {parse_token(got.body)}"
        except ValueError as exc:
            raise RegistryError("bad-answer", str(exc)) from None
        answer = ask("HEAD")
    if answer.status == 401:
        raise RegistryError("refused", f"{where}: anonymous pull refused (the repository is "
                                       f"private or does not exist)")
    if answer.status == 404:
        raise RegistryError("not-found", f"{where}: no such tag (404)")
    if answer.status != 200:
        raise RegistryError("bad-answer", f"{where}: HEAD answered {answer.status}")
    kind = media_type(answer.headers.get("content-type"))
    digest = answer.headers.get("docker-content-digest", "")
    if not DIGEST_RE.fullmatch(digest) or kind not in MANIFEST_TYPES:
        answer = ask("GET", MAX_MANIFEST)  # no usable digest in the HEAD: hash the manifest
        if answer.status != 200:
            detail = error_summary(answer.body) or f"HTTP {answer.status}"
            raise RegistryError("bad-answer", f"{where}: GET of the manifest failed ({detail})")
        kind = media_type(answer.headers.get("content-type"))
        digest = digest_of(answer.body)
        said = answer.headers.get("docker-content-digest")
        if said and said != digest:
            raise RegistryError("bad-answer", f"{where}: the manifest's digest is {digest}, "
                                              f"not the {said[:80]} the registry claims")
    if kind not in MANIFEST_TYPES:
        raise RegistryError("bad-answer", f"{where}: answered a {kind or 'untyped'} document, "
                                          f"not an image index or manifest")
    return Resolved(digest, kind)
