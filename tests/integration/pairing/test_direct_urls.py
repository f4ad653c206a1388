"""``direct_urls`` as real installs send them (issue 12 item 2): ``register`` and
``update_urls`` never fail because of them; entries are trimmed, a missing scheme becomes
``https://``, what cannot be a URL is dropped, at most 32 are kept."""

from __future__ import annotations

from tests.integration.pairing.helpers import (
    Relay,
    create_claim,
    new_key,
    recv,
    register_frame,
    roundtrip,
    send,
)

# mydia on a host with docker bridges, tailscale and friends: 2 URLs per local IPv4
EIGHTEEN = [f"https://{i}-0-0-{j}.sslip.io:4000" for i in (10, 100, 172) for j in range(3)] + [
    f"https://192-168-{k}-2.sslip.io:4000" for k in range(9)]


async def register_with(relay: Relay, name: str, urls: object) -> list[str]:
    """Register over the socket with ``urls``; what the relay stored."""
    ws = await relay.instance()
    await send(ws, register_frame(name, new_key(), direct_urls=urls))
    assert await recv(ws) == {"type": "registered", "relay_protocol": "1.0"}
    status, info, _ = await relay.request("GET", f"/relay/instances/{name}/connect")
    assert status == 200
    await ws.close()
    return list(info["direct_urls"])


async def test_eighteen_urls_are_registered(relay: Relay) -> None:
    assert len(EIGHTEEN) == 18
    assert await register_with(relay, "eighteen", EIGHTEEN) == EIGHTEEN


async def test_a_leading_space_is_trimmed(relay: Relay) -> None:
    # ADDITIONAL_DIRECT_URLS="https://a.example, https://b.example" split on ","
    urls = ["https://a.example", " https://b.example", "https://c.example:8443 "]
    assert await register_with(relay, "spaced", urls) == [
        "https://a.example", "https://b.example", "https://c.example:8443"]


async def test_a_missing_scheme_becomes_https(relay: Relay) -> None:
    assert await register_with(relay, "schemeless", ["relay.example.com:4000"]) == [
        "https://relay.example.com:4000"]


async def test_what_cannot_be_a_url_is_dropped_and_the_rest_kept(relay: Relay) -> None:
    messy = ["javascript:alert(1)", "ftp://files.example", "", "   ", 5, None, ["x"],
             "https://", "https://h:port", "https://has space.example", "https://ok.example",
             "https://ok.example", "wss://ws.example/path"]
    assert await register_with(relay, "messy", messy) == [
        "https://ok.example", "wss://ws.example/path"]
    many = [f"https://h{i}.example" for i in range(40)]
    assert await register_with(relay, "many", many) == many[:32]
    assert await register_with(relay, "single", "https://one.example") == [
        "https://one.example"]
    assert await register_with(relay, "object", {"url": "https://x.example"}) == []


async def test_update_urls_and_rest_are_lenient_too(relay: Relay) -> None:
    ws = await relay.instance()
    await send(ws, register_frame("updating", new_key()))
    assert (await recv(ws))["type"] == "registered"
    await send(ws, {"type": "update_urls",
                    "direct_urls": [" https://new.example", "new2.example:4000", 7]})
    await roundtrip(ws)
    _, info, _ = await relay.request("GET", "/relay/instances/updating/connect")
    assert info["direct_urls"] == ["https://new.example", "https://new2.example:4000"]
    await ws.close()
    status, body, _ = await relay.request(
        "POST", "/relay/instances",
        json_body={"instance_id": "rest-messy", "public_key": new_key(),
                   "direct_urls": [*EIGHTEEN, " https://x.example", "y.example", "ftp://z"]})
    assert status == 200 and body["token"]
    _, info, _ = await relay.request("GET", "/relay/instances/rest-messy/connect")
    assert info["direct_urls"] == [*EIGHTEEN, "https://x.example", "https://y.example"]


async def test_sslip_enrichment_uses_port_4000_unless_a_url_gives_one(relay: Relay) -> None:
    """The original relay (and mydia's default) use port 4000 for the sslip.io URL built
    from the instance's public address."""
    for name, urls, port in (("no-port", ["https://nas.example"], 4000),
                             ("none", [], 4000),
                             ("ported", ["https://nas.example", "https://10.0.0.2:8443"], 8443)):
        ws = await relay.instance(ip="81.2.69.160")
        await send(ws, register_frame(name, new_key(), direct_urls=urls))
        assert (await recv(ws))["type"] == "registered"
        code = (await create_claim(ws))["code"]
        status, body, _ = await relay.request("POST", f"/relay/claim/{code}")
        assert status == 200
        assert body["direct_urls"] == [*urls, f"https://81-2-69-160.sslip.io:{port}"]
        await ws.close()
