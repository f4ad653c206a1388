"""Pairing as current mydia (iroh era, early 2026) and its player drive it, on the wire
(``clients.py``): the server offers a pairing with ``POST /pairing/claim`` (Req, ``json:``
body), the player looks the typed code up with an empty-body ``GET /pairing/claim/<code>``
and deletes it with ``DELETE`` (dart:io). ``node_addr`` is an iroh ``EndpointAddr`` as JSON
text and must come back unchanged; everything mydia reads is checked the way it reads it
(``claim_code`` from a 200, 429 as rate limited, anything else a failure)."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import pytest

from metadata_relay.pairing.protocol import CODE_ALPHABET, NODE_ADDR_MAX_BYTES
from tests.doubles.clock import ManualClock
from tests.interop.mydia.clients import DartClient, ReqClient, Response
from tests.redis_server import redis_server
from tests.relay_server import DB_NAME, serve_relay

# serde_json of iroh's EndpointAddr (0.9x): the endpoint id, its relay URL and direct
# addresses; byte for byte, so spacing and escapes must survive as well
ENDPOINT_ADDR = json.dumps({
    "id": "ae58ff8833241ac82d6ff7611046ed67b5072d142c588d0063e942d9a75502b6",
    "addrs": [{"Relay": "https://cae1-1.relay.mydia.dev./"}, {"Ip": "192.168.1.20:51820"},
              {"Ip": "[2001:db8::5]:51820"}],
}, separators=(",", ":"))
# an older NodeAddr shape, with spacing, escapes and non-ASCII text that no re-encoding keeps
NODE_ADDR_OLD = ('{ "node_id" : "ae58ff88", "relay_url" : "https:\\/\\/relay.example\\/",'
                 ' "direct_addresses" : [ "10.0.0.2:1" ], "label": "Wohnzimmer \\u00e9 ü" }')
CODE = re.compile(f"[{CODE_ALPHABET}]{{8}}")


class Relay:
    def __init__(self, url: str, clock: ManualClock) -> None:
        self.url = url
        self.clock = clock

    def mydia(self, ip: str) -> ReqClient:
        """The mydia server's Req client from ``ip`` (a second of Req's back-off is 1 ms)."""
        return ReqClient(self.url, second=0.001, extra_headers=[("x-forwarded-for", ip)])

    def player(self, ip: str) -> DartClient:
        return DartClient(self.url, {"x-forwarded-for": ip})


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Relay]:
    clock = ManualClock()
    async with serve_relay(tmp_path, clock=clock) as url:
        yield Relay(url, clock)


async def offer(mydia: ReqClient, node_addr: str = ENDPOINT_ADDR) -> str:
    """``create_pairing_claim``: 200 → the body's ``claim_code``."""
    resp = await mydia.post_json("/pairing/claim", {"node_addr": node_addr})
    assert resp.status == 200, resp
    assert "application/json" in resp.headers["content-type"]
    code = resp.body["claim_code"]
    assert isinstance(code, str) and CODE.fullmatch(code), code  # fits the 8-character field
    return code


async def lookup(player: DartClient, code: str) -> Response:
    return await player.get(f"/pairing/claim/{quote(code)}")


async def test_offer_lookup_delete_then_gone(relay: Relay) -> None:
    mydia, player = relay.mydia("81.2.69.160"), relay.player("198.51.100.42")
    codes = set()
    for node_addr in (ENDPOINT_ADDR, NODE_ADDR_OLD):
        code = await offer(mydia, node_addr)
        codes.add(code)
        found = await lookup(player, code)
        assert found.status == 200, found
        assert found.body == {"node_addr": node_addr}  # the same text, byte for byte
        assert found.headers["cache-control"] == "no-store"
        assert (await lookup(player, code)).body == {"node_addr": node_addr}  # not consumed
        gone = await player.delete(f"/pairing/claim/{code}")
        assert gone.status == 204 and gone.bytes == b""
        missing = await lookup(player, code)
        assert missing.status == 404 and missing.body["error"] == "not_found"
        assert (await player.delete(f"/pairing/claim/{code}")).status == 204  # unknown: 204
    assert len(codes) == 2
    await mydia.close()
    await player.close()


async def test_codes_expire_after_300_s_and_are_cleaned_up(relay: Relay, tmp_path: Path) -> None:
    mydia, player = relay.mydia("81.2.69.161"), relay.player("198.51.100.43")
    code = await offer(mydia)
    await relay.clock.advance(299)
    assert (await lookup(player, code)).status == 200
    await relay.clock.advance(1)  # the clean-up runs now as well (every 300 s)
    assert (await lookup(player, code)).status == 404
    rows = None
    for _ in range(100):
        db = sqlite3.connect(tmp_path / DB_NAME)
        rows = db.execute("SELECT count(*) FROM node_claims").fetchone()[0]
        db.close()
        if rows == 0:
            break
        await relay.clock.advance(0)
    assert rows == 0  # the server's addresses are not kept past the lifetime
    await mydia.close()
    await player.close()


async def test_typed_codes_are_normalised(relay: Relay) -> None:
    mydia, player = relay.mydia("81.2.69.162"), relay.player("198.51.100.44")
    code = await offer(mydia)
    for typed in (code.lower(), f"{code[:4]}-{code[4:]}", f" {code[:2]} {code[2:5]} {code[5:]} ",
                  f"{code[:4].lower()}-{code[4:]}"):
        found = await lookup(player, typed)
        assert found.status == 200 and found.body["node_addr"] == ENDPOINT_ADDR, typed
    assert (await player.delete(f"/pairing/claim/{code[:4].lower()}-{code[4:]}")).status == 204
    assert (await lookup(player, code)).status == 404
    await mydia.close()
    await player.close()


async def test_bad_node_addr_is_a_400_and_stores_nothing(relay: Relay, tmp_path: Path) -> None:
    mydia = relay.mydia("81.2.69.163")
    biggest = json.dumps("x" * (NODE_ADDR_MAX_BYTES - 2))  # 4096 bytes: accepted
    assert len(biggest.encode()) == NODE_ADDR_MAX_BYTES
    await offer(mydia, biggest)
    bodies = ({"node_addr": json.dumps("x" * (NODE_ADDR_MAX_BYTES - 1))},  # 4097 bytes
              {"node_addr": "ü" * (NODE_ADDR_MAX_BYTES // 2 + 1)},  # counted as UTF-8
              {"node_addr": "not json"}, {"node_addr": "{\"id\": "},
              {"node_addr": {"id": "an object, not JSON text"}}, {"node_addr": 5},
              {"node_addr": None}, {}, {"node": ENDPOINT_ADDR}, [ENDPOINT_ADDR],
              {"node_addr": ""}, {"node_addr": "NaN"})
    for i, body in enumerate(bodies):
        # each from its own address: refused offers count against the creation limit too
        other = relay.mydia(f"81.2.71.{i + 1}")
        resp = await other.post_json("/pairing/claim", body)
        assert resp.status == 400, (body, resp)
        assert resp.body["error"] == "validation_error"
        await other.close()
    db = sqlite3.connect(tmp_path / DB_NAME)
    assert db.execute("SELECT count(*) FROM node_claims").fetchone()[0] == 1
    db.close()
    await mydia.close()


async def test_creation_limited_to_10_a_minute_per_address(relay: Relay) -> None:
    """The 11th offer in a minute from one address is 429 (mydia reports "rate limited"
    after Req's retries, each of which is refused too); other addresses are not affected;
    a minute later the address creates again."""
    mydia = relay.mydia("81.2.69.164")
    for _ in range(10):
        await offer(mydia)
    refused = await mydia.post_json("/pairing/claim", {"node_addr": ENDPOINT_ADDR})
    assert refused.status == 429 and refused.body["error"] == "rate_limited"
    assert int(refused.headers["retry-after"]) == refused.body["retry_after"] >= 1
    assert mydia.attempts[-4:] == [429] * 4  # Req retried 3 times, honouring retry-after
    await offer(relay.mydia("81.2.70.1"))
    await relay.clock.advance(60)
    await offer(mydia)
    await mydia.close()


async def test_guessing_is_limited_per_address_and_prefix_while_the_code_resolves(
        relay: Relay) -> None:
    """5 failed lookups a minute per address and 20 per /24 (IPv4) or /48 (IPv6): after them
    even the right code is refused there, a guesser cannot tell; the user's player elsewhere
    still resolves it, there is no global budget."""
    mydia = relay.mydia("81.2.69.165")
    code = await offer(mydia)
    wrong = "WRONG234" if code != "WRONG234" else "WRONG235"
    guesser = relay.player("203.0.113.9")
    for _ in range(5):
        assert (await lookup(guesser, wrong)).status == 404
    refused = await lookup(guesser, code)
    assert refused.status == 429 and int(refused.headers["retry-after"]) >= 1
    assert (await guesser.delete(f"/pairing/claim/{code}")).status == 429  # deletes nothing
    user = relay.player("198.51.100.45")
    assert (await lookup(user, code)).body == {"node_addr": ENDPOINT_ADDR}
    for block, neighbour in (("192.0.2.{}", "192.0.3.9"), ("2001:db8:7:{}::1", "2001:db8:8::1")):
        for host in range(1, 5):
            spread = relay.player(block.format(host))
            for _ in range(5):
                assert (await lookup(spread, wrong)).status == 404
            await spread.close()
        for ip, status in ((block.format(200), 429), (neighbour, 200)):
            player = relay.player(ip)
            assert (await lookup(player, code)).status == status, ip
            await player.close()
    await relay.clock.advance(60)  # the window has passed: the guesser's address may try again
    assert (await lookup(guesser, code)).status == 200
    for client in (mydia, guesser, user):
        await client.close()


async def test_a_code_made_on_one_replica_resolves_on_another(tmp_path: Path) -> None:
    """Two replicas sharing one redis-server (and one clock): a code offered on A resolves
    on B, guesses on both count together, a delete on B is seen by A, expiry everywhere."""
    clock = ManualClock()
    with redis_server(tmp_path) as redis:
        env = {"REDIS_URL": redis.url}
        async with serve_relay(tmp_path / "a", env, clock=clock) as a, \
                serve_relay(tmp_path / "b", env, clock=clock) as b:
            ra, rb = Relay(a, clock), Relay(b, clock)
            mydia = ra.mydia("81.2.69.166")
            code = await offer(mydia)
            player_b = rb.player("198.51.100.46")
            assert (await lookup(player_b, code)).body == {"node_addr": ENDPOINT_ADDR}
            # a guesser spreading over the replicas is counted once
            guess_a, guess_b = ra.player("203.0.113.10"), rb.player("203.0.113.10")
            for guesser in (guess_a, guess_b, guess_a, guess_b, guess_a):
                assert (await lookup(guesser, "WRONG234")).status == 404
            assert (await lookup(guess_b, code)).status == 429
            # deleted on B: gone on A too, though A's database still holds its copy
            assert (await player_b.delete(f"/pairing/claim/{code}")).status == 204
            player_a = ra.player("198.51.100.47")
            assert (await lookup(player_a, code)).status == 404
            assert (await lookup(player_b, code)).status == 404
            # offered on B, expired after 300 s on both
            later = await offer(rb.mydia("81.2.69.167"))
            assert (await lookup(player_a, later)).status == 200
            await clock.advance(300)
            assert (await lookup(player_a, later)).status == 404
            assert (await lookup(player_b, later)).status == 404
            for client in (mydia, player_a, player_b, guess_a, guess_b):
                await client.close()
