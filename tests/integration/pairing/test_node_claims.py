"""The node claims of current mydia (``/pairing/claim``) against an anonymous attacker:
creation floods from one address or a whole block, a bound on live codes, hostile
``node_addr`` texts and bodies, guessing through lookups and deletes (one budget with the
legacy claim codes), and other people's codes. The flows as mydia drives them are in
``tests/interop/mydia/test_iroh_pairing.py``."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from metadata_relay.pairing.limits import PairingLimits
from metadata_relay.pairing.protocol import NODE_ADDR_MAX_BYTES, NODE_ADDR_MAX_DEPTH
from tests.doubles.clock import ManualClock
from tests.integration.pairing.conftest import RELAY_ENV
from tests.integration.pairing.helpers import Relay, create_claim, new_key, register_ws
from tests.redis_server import redis_server
from tests.relay_server import DB_NAME, client, serve_relay, streamed_json

NODE_ADDR = '{"id":"ae58ff88","addrs":[{"Relay":"https://relay.example/"}]}'


async def offer(relay: Relay, ip: str, node_addr: str = NODE_ADDR) -> tuple[int, dict]:
    status, body, _ = await relay.request("POST", "/pairing/claim",
                                          json_body={"node_addr": node_addr}, ip=ip)
    return status, body


async def raw_offer(relay: Relay, body: bytes, ip: str) -> tuple[int, dict]:
    status, answer, _ = await relay.request(
        "POST", "/pairing/claim", data=body, ip=ip)
    return status, answer


def stored(tmp_path: Path) -> list[str]:
    db = sqlite3.connect(tmp_path / DB_NAME)
    try:
        return [r[0] for r in db.execute("SELECT node_addr FROM node_claims")]
    finally:
        db.close()


async def test_creation_limited_per_network_prefix(relay: Relay) -> None:
    """10 a minute per address cannot be dodged with many addresses of one block: 60 a
    minute per /24 (IPv4) or /48 (IPv6, where one household has 2⁶⁴ addresses)."""
    for block, neighbour in (("81.2.69.{}", "81.2.70.1"),
                             ("2001:db8:5:{}::1", "2001:db8:6::1")):
        for host in range(1, 7):
            for _ in range(10):
                status, _ = await offer(relay, block.format(host))
                assert status == 200
        status, body = await offer(relay, block.format(7))
        assert status == 429 and body["error"] == "rate_limited"
        assert (await offer(relay, neighbour))[0] == 200


async def test_live_codes_are_bounded(tmp_path: Path) -> None:
    """A flood from many blocks meets the bound on live codes: 503 with retry-after, nothing
    stored; a deleted or expired code frees its place."""
    clock = ManualClock()
    limits = PairingLimits(node_claims_live=3)
    async with serve_relay(tmp_path, RELAY_ENV, pairing_limits=limits,
                           clock=clock) as url:
        relay = Relay(url, clock)
        codes = []
        for i in range(3):
            status, body = await offer(relay, f"81.{i}.0.1")
            assert status == 200
            codes.append(body["claim_code"])
        status, body, headers = await relay.request(
            "POST", "/pairing/claim", json_body={"node_addr": NODE_ADDR}, ip="81.9.0.1")
        assert status == 503 and body["error"] == "busy"
        assert int(headers["Retry-After"]) == body["retry_after"] >= 1
        assert len(stored(tmp_path)) == 3
        status, _, _ = await relay.request("DELETE", f"/pairing/claim/{codes[0]}")
        assert status == 204
        assert (await offer(relay, "81.10.0.1"))[0] == 200
        assert (await offer(relay, "81.11.0.1"))[0] == 503
        await clock.advance(300)
        assert (await offer(relay, "81.12.0.1"))[0] == 200


async def test_hostile_node_addr_texts(relay: Relay, tmp_path: Path) -> None:
    """Deep nesting, a lone surrogate (cannot be stored as UTF-8), and non-JSON constants
    are refused with 400; within every bound the text is kept exactly, even when each of its
    4,096 bytes arrives escaped."""
    deep_ok = "[" * NODE_ADDR_MAX_DEPTH + "]" * NODE_ADDR_MAX_DEPTH
    too_deep = "[" * (NODE_ADDR_MAX_DEPTH + 1) + "]" * (NODE_ADDR_MAX_DEPTH + 1)
    very_deep = "[" * 2000 + "]" * 2000  # past the parser's own recursion limit
    assert (await offer(relay, "81.2.72.1", deep_ok))[0] == 200
    for n, bad in enumerate((too_deep, very_deep, '{"a": Infinity}', "-NaN")):
        status, body = await offer(relay, f"81.2.72.{n + 2}", bad)
        assert status == 400 and body["message"].startswith("node_addr:"), (bad[:20], body)
    status, body = await raw_offer(relay, b'{"node_addr": "\\"\\ud800\\""}', "81.2.72.9")
    assert status == 400 and "UTF-8" in body["message"]
    status, body = await raw_offer(relay, b'{"node_addr": "\xff"}', "81.2.72.10")
    assert status == 400 and body["error"] == "validation_error"
    # 4,094 tabs (JSON whitespace) and "{}", each tab sent as \u0009: 24 KiB of body
    escaped = b'{"node_addr": "' + b"\\u0009" * (NODE_ADDR_MAX_BYTES - 2) + b'{}"}'
    status, body = await raw_offer(relay, escaped, "81.2.72.11")
    assert status == 200, body
    assert stored(tmp_path) == [deep_ok, "\t" * (NODE_ADDR_MAX_BYTES - 2) + "{}"]


async def test_the_body_is_capped_while_it_streams(relay: Relay) -> None:
    async with client() as http:
        async with http.post(relay.url + "/pairing/claim",
                             data=streamed_json(b'{"node_addr": "', 64),
                             headers={"x-forwarded-for": "81.2.73.1"}) as r:
            assert r.status == 413
            assert (await r.json())["error"] == "payload_too_large"


async def test_lookups_and_deletes_share_the_claim_code_guess_budget(relay: Relay) -> None:
    """Failed guesses at legacy claim codes and at node claims, lookups and deletes alike,
    come out of one budget per address (5 a minute): a guesser gains nothing by switching
    routes. A delete answers 204 for known and unknown codes (it tells nothing), so it is
    counted like a lookup."""
    inst = await register_ws(relay, "legacy", new_key())
    legacy = (await create_claim(inst))["code"]
    _, body = await offer(relay, "81.2.74.1")
    code = body["claim_code"]
    ip = "203.0.113.50"
    for method, path, expected in (("POST", "/relay/claim/WRONG234", 400),
                                   ("POST", "/relay/claim/WRONG235", 400),
                                   ("GET", "/pairing/claim/WRONG234", 404),
                                   ("DELETE", "/pairing/claim/WRONG235", 204),
                                   ("GET", "/pairing/claim/" + "A" * 5000, 404)):
        status, _, _ = await relay.request(method, path, ip=ip)
        assert status == expected, (method, path)
    for method, path in (("GET", f"/pairing/claim/{code}"), ("DELETE", f"/pairing/claim/{code}"),
                         ("POST", f"/relay/claim/{legacy}")):
        status, _, _ = await relay.request(method, path, ip=ip)
        assert status == 429, (method, path)
    status, found, _ = await relay.request("GET", f"/pairing/claim/{code}")
    assert status == 200 and found == {"node_addr": NODE_ADDR}  # not deleted by the guesser
    await inst.close()


async def test_anyone_holding_a_code_may_delete_it(relay: Relay) -> None:
    """As in the original, the code is the only credential (mydia's player holds nothing
    else): whoever has it may look it up and delete it, from any address."""
    _, body = await offer(relay, "81.2.75.1")
    code = body["claim_code"]
    status, _, _ = await relay.request("DELETE", f"/pairing/claim/{code.lower()}",
                                       ip="198.51.100.60")
    assert status == 204
    status, _, _ = await relay.request("GET", f"/pairing/claim/{code}")
    assert status == 404


async def test_wrong_methods(relay: Relay) -> None:
    for method, path in (("GET", "/pairing/claim"), ("PUT", "/pairing/claim/ABCDEFGH"),
                         ("POST", "/pairing/claim/ABCDEFGH"), ("DELETE", "/pairing/claim")):
        status, body, _ = await relay.request(method, path)
        assert status == 405 and body["error"] == "method_not_allowed", (method, path)


async def test_node_claims_survive_a_restart(tmp_path: Path) -> None:
    """Stored in SQLite: a code offered before a restart resolves after it."""
    clock = ManualClock()
    async with serve_relay(tmp_path, RELAY_ENV, clock=clock) as url:
        _, body = await offer(Relay(url, clock), "81.2.76.1", json.dumps({"id": "x"}))
    async with serve_relay(tmp_path, RELAY_ENV, clock=clock) as url:
        status, found, _ = await Relay(url, clock).request(
            "GET", f"/pairing/claim/{body['claim_code']}")
    assert status == 200 and found == {"node_addr": '{"id": "x"}'}


async def test_redis_down_the_replica_serves_its_own_codes(tmp_path: Path) -> None:
    """Scale-out with Redis gone: codes made on this replica are kept, resolved and deleted
    in its SQLite; nothing fails."""
    with redis_server(tmp_path) as redis:
        async with serve_relay(tmp_path, {**RELAY_ENV, "REDIS_URL": redis.url}) as url:
            relay = Relay(url)
            _, body = await offer(relay, "81.2.77.1")
            before = body["claim_code"]
            redis.stop()
            status, body = await offer(relay, "81.2.77.2")
            assert status == 200
            code = body["claim_code"]
            for known in (before, code):
                status, found, _ = await relay.request("GET", f"/pairing/claim/{known}")
                assert status == 200 and found == {"node_addr": NODE_ADDR}
            status, _, _ = await relay.request("DELETE", f"/pairing/claim/{code}")
            assert status == 204
            status, _, _ = await relay.request("GET", f"/pairing/claim/{code}")
            assert status == 404
