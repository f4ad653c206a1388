"""Reading a tag's digest from an OCI registry: the parsing, and the whole exchange against a
fake registry on loopback that behaves as Docker Hub does to an anonymous client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from relay_deploy import registry
from tests.doubles.fake_registry import OCI_INDEX, SERVICE, FakeRegistry, Manifest
from tests.tools import free_port

REPO, TAG = "n0computer/iroh-relay", "v0.96.1"


# ---- parsing -----------------------------------------------------------------------------------


def test_docker_hub_challenge_is_parsed() -> None:
    header = ('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
              'scope="repository:n0computer/iroh-relay:pull"')
    challenge = registry.parse_challenge(header)
    assert challenge.scheme == "bearer"
    assert challenge.params == {"realm": "https://auth.docker.io/token",
                                "service": "registry.docker.io",
                                "scope": "repository:n0computer/iroh-relay:pull"}
    url = registry.token_request_url(challenge, REPO, registry.DOCKER_HUB)
    assert url == ("https://auth.docker.io/token?service=registry.docker.io&"
                   "scope=repository%3An0computer%2Firoh-relay%3Apull")


def test_challenge_variants() -> None:
    c = registry.parse_challenge('bearer realm=https://a.example/t, error="insufficient_scope"')
    assert c.params == {"realm": "https://a.example/t", "error": "insufficient_scope"}
    assert registry.parse_challenge('Bearer realm="a\\"b"').params["realm"] == 'a"b'


@pytest.mark.parametrize("header", [
    None, "", "   ", 'Bearer realm="unterminated', 'Bearer realm="a",realm="b"',
    "Bearer =x", '"quoted" realm=x', "Bearer realm=a b=c",
])
def test_bad_challenges_are_value_errors(header: str | None) -> None:
    with pytest.raises(ValueError):
        registry.parse_challenge(header)


@given(st.text(max_size=200))
def test_challenge_garbage_only_raises_value_error(header: str) -> None:
    try:
        challenge = registry.parse_challenge(header)
    except ValueError:
        return
    assert challenge.scheme and all(isinstance(v, str) for v in challenge.params.values())


@pytest.mark.parametrize(("realm", "registry_url", "problem"), [
    ("http://auth.example/token", "https://registry.example", "unusable token service"),
    ("https://user:pw@auth.example/token", "https://registry.example", "unusable"),
    ("file:///etc/passwd", "http://127.0.0.1:5000", "unusable"),
    ("", "https://registry.example", "unusable"),
])
def test_the_token_service_must_be_https(realm: str, registry_url: str, problem: str) -> None:
    challenge = registry.Challenge("bearer", {"realm": realm})
    with pytest.raises(registry.RegistryError, match=problem):
        registry.token_request_url(challenge, REPO, registry_url)
    # plain HTTP only for a registry that is plain HTTP itself (a fake on loopback)
    local = registry.Challenge("bearer", {"realm": "http://127.0.0.1:5000/token"})
    assert registry.token_request_url(local, REPO, "http://127.0.0.1:5000").startswith("http:")


def test_basic_auth_means_the_image_is_not_public() -> None:
    with pytest.raises(registry.RegistryError, match="not public") as info:
        registry.token_request_url(registry.Challenge("basic", {"realm": "x"}), REPO, "")
    assert info.value.kind == "refused"


@pytest.mark.parametrize(("name", "base", "repository"), [
    ("n0computer/iroh-relay", registry.DOCKER_HUB, "n0computer/iroh-relay"),
    ("alpine", registry.DOCKER_HUB, "library/alpine"),
    ("docker.io/alpine", registry.DOCKER_HUB, "library/alpine"),
    ("docker.io/n0computer/iroh-relay", registry.DOCKER_HUB, "n0computer/iroh-relay"),
    ("ghcr.io/getmydia/metadata-relay", "https://ghcr.io", "getmydia/metadata-relay"),
    ("localhost:5000/a/b", "https://localhost:5000", "a/b"),
])
def test_image_names_are_located_as_docker_does(name: str, base: str, repository: str) -> None:
    assert registry.locate(name) == registry.Location(base, repository)
    assert registry.locate(name, "http://127.0.0.1:1/").base_url == "http://127.0.0.1:1"


@pytest.mark.parametrize("name", ["N0/Relay", "a//b", "a/b/", "", "a b", "a/../b"])
def test_bad_image_names(name: str) -> None:
    with pytest.raises(ValueError):
        registry.locate(name)


def test_tokens_digests_and_error_bodies() -> None:
    assert registry.parse_token(b'{"token": "abc.def-ghi"}') == "abc.def-ghi"
    assert registry.parse_token(b'{"access_token": "xyz"}') == "xyz"
    for bad in (b"", b"[]", b"{}", b'{"token": 5}', b'{"token": "a\\r\\nX-Evil: 1"}',
                b'{"token": ""}', b"\xff"):
        with pytest.raises(ValueError):
            registry.parse_token(bad)
    assert registry.check_digest("sha256:" + "a" * 64)
    for bad in ("sha256:" + "A" * 64, "sha256:abc", "md5:" + "a" * 32, ""):
        with pytest.raises(ValueError):
            registry.check_digest(bad)
    body = b'{"errors":[{"code":"TOOMANYREQUESTS","message":"rate\\nlimit"}]}'
    assert registry.error_summary(body) == "TOOMANYREQUESTS: rate limit"
    assert registry.error_summary(b"<html>") == "" == registry.error_summary(b'{"errors":3}')
    assert registry.retry_after("7", 1.0) == 7.0
    assert registry.retry_after("Wed, 21 Oct 2026 07:28:00 GMT", 1.5) == 1.5
    assert registry.retry_after(None, 2.0) == 2.0
    assert registry.media_type("Application/VND.OCI.image.index.v1+json; x=y") == OCI_INDEX


# ---- the exchange, against the fake registry ---------------------------------------------------


@pytest.fixture
async def hub() -> AsyncIterator[FakeRegistry]:
    fake = FakeRegistry()
    runner = web.AppRunner(fake.app())
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    fake.base = f"http://127.0.0.1:{port}"
    fake.tag(REPO, TAG, seed="build 1")
    try:
        yield fake
    finally:
        await runner.cleanup()


async def _resolve(fake: FakeRegistry, tag: str = TAG, repo: str = REPO,
                   sleeps: list[float] | None = None) -> registry.Resolved:
    where = registry.locate(repo, fake.base)
    record = sleeps.append if sleeps is not None else (lambda _s: None)
    return await asyncio.to_thread(registry.resolve, where, tag,
                                   send=registry.http_send(2.0), sleep=record, backoff=0.01)


async def test_anonymous_pull_token_then_the_index_digest(hub: FakeRegistry) -> None:
    got = await _resolve(hub)
    assert got.digest == hub.repos[REPO][TAG].digest and got.multi_platform
    head, token, again = hub.calls
    assert (head.method, again.method) == ("HEAD", "HEAD")  # no GET: no pull counted
    assert "Authorization" not in head.headers and "Authorization" not in token.headers
    assert token.path == (f"/token?service={SERVICE}&scope=repository%3An0computer%2F"
                          f"iroh-relay%3Apull")
    assert again.headers["Authorization"].startswith("Bearer ")
    accepted = {a.strip() for a in again.headers["Accept"].split(",")}
    assert set(registry.MANIFEST_TYPES) <= accepted
    assert hub.writes() == []


async def test_an_oci_index_and_a_single_manifest(hub: FakeRegistry) -> None:
    index = hub.tag(REPO, TAG, seed="oci", media_type=OCI_INDEX)
    got = await _resolve(hub)
    assert (got.digest, got.media_type, got.multi_platform) == (index.digest, OCI_INDEX, True)
    single = registry.DOCKER_MANIFEST
    hub.repos[REPO][TAG] = Manifest(json.dumps({"schemaVersion": 2,
                                                "mediaType": single}).encode(), single)
    got = await _resolve(hub)
    assert got.media_type == single and not got.multi_platform


async def test_without_a_digest_header_the_manifest_is_hashed(hub: FakeRegistry) -> None:
    hub.head_digest = False
    got = await _resolve(hub)
    assert got.digest == hub.repos[REPO][TAG].digest
    assert [c.method for c in hub.manifest_requests()] == ["HEAD", "HEAD", "GET"]
    hub.claimed_digest = "sha256:" + "0" * 64  # the GET's header lies about the body
    with pytest.raises(registry.RegistryError, match="not the sha256:0000") as info:
        await _resolve(hub)
    assert info.value.kind == "bad-answer"


async def test_rate_limits_are_waited_out_as_asked_then_given_up(hub: FakeRegistry) -> None:
    hub.rate_limited, hub.retry_after = 2, "0"
    sleeps: list[float] = []
    assert (await _resolve(hub, sleeps=sleeps)).digest == hub.repos[REPO][TAG].digest
    assert sleeps == [0.0, 0.0]
    hub.rate_limited, hub.retry_after, sleeps = 2, None, []  # no Retry-After: backing off
    await _resolve(hub, sleeps=sleeps)
    assert sleeps == [0.01, 0.02]
    hub.rate_limited, hub.retry_after, sleeps = 99, "0", []
    with pytest.raises(registry.RegistryError,
                       match=r"rate-limits this machine \(429\), 4 times in a row") as info:
        await _resolve(hub, sleeps=sleeps)
    assert info.value.kind == "rate-limited" and len(sleeps) == registry.ATTEMPTS - 1
    hub.rate_limited, hub.retry_after, sleeps = 1, "3600", []  # Docker Hub's hours-long limit
    with pytest.raises(registry.RegistryError, match="asks to wait 3600s"):
        await _resolve(hub, sleeps=sleeps)
    assert sleeps == []  # fails at once
    hub.rate_limited, hub.down = 0, True
    with pytest.raises(registry.RegistryError, match=r"unavailable \(503\)") as info:
        await _resolve(hub)
    assert info.value.kind == "unreachable"


async def test_unknown_tags_repositories_and_hosts(hub: FakeRegistry) -> None:
    with pytest.raises(registry.RegistryError, match="no such tag") as info:
        await _resolve(hub, tag="v9.9.9")
    assert info.value.kind == "not-found"
    with pytest.raises(registry.RegistryError, match="private or does not exist") as info:
        await _resolve(hub, repo="n0computer/nothing")
    assert info.value.kind == "refused"
    with pytest.raises(registry.RegistryError, match="unreachable") as info:
        await asyncio.to_thread(registry.resolve,
                                registry.locate(REPO, f"http://127.0.0.1:{free_port()}"), TAG,
                                send=registry.http_send(1.0))
    assert info.value.kind == "unreachable"


async def test_a_bad_token_service_and_a_redirect_stop_it(hub: FakeRegistry) -> None:
    for answer, problem in ((b"<html>busy</html>", "not JSON"),
                            (b'{"token": "a b"}', "no usable token"),
                            (b'{"token": "' + b"x" * (70 << 10) + b'"}', "larger than")):
        hub.token_answer = answer
        with pytest.raises(registry.RegistryError, match=problem):
            await _resolve(hub)
    hub.token_answer, hub.redirect_to = None, "http://127.0.0.2:9/elsewhere"
    with pytest.raises(registry.RegistryError, match="HEAD answered 307"):
        await _resolve(hub)  # never followed: a token must not travel to another host


async def test_a_manifest_over_the_size_limit_is_refused(hub: FakeRegistry) -> None:
    hub.head_digest = False
    hub.repos[REPO][TAG] = Manifest(b"{" + b" " * registry.MAX_MANIFEST + b"}")
    with pytest.raises(registry.RegistryError, match="larger than 4194304 bytes"):
        await _resolve(hub)


async def test_a_registry_that_stalls_or_drips_is_given_up_in_time() -> None:
    """Silence after the connection, and an answer dripping a byte at a time: both end as
    "unreachable" about the timeout later, never a hang."""
    async def silent(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.read()  # until the client gives up and closes
        w.close()

    async def drip(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readuntil(b"\r\n\r\n")
        w.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 100000\r\n\r\n")
        try:
            for _ in range(100):
                w.write(b"x")
                await w.drain()
                await asyncio.sleep(0.05)
        except ConnectionError:
            pass
        w.close()

    send = registry.http_send(0.3)
    for handler, problem in ((silent, r"unreachable \(timed out\)"),
                             (drip, r"did not answer within 0.3s")):
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(registry.RegistryError, match=problem) as info:
            await asyncio.to_thread(send, "GET", f"http://127.0.0.1:{port}/v2/", {}, 1 << 20)
        assert info.value.kind == "unreachable" and loop.time() - started < 1.5
        server.close()
    with pytest.raises(registry.RegistryError, match="not an http"):
        send("GET", "file:///etc/passwd", {}, 100)
