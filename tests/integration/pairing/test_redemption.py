"""Claim-code redemption limits (issue 13 item 3, issue 12 items 3-4): failed guesses count
per client address and per network prefix, never globally; valid redemptions have their
own, generous limit, so households pair and guessers lock nobody else out."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter

import aiohttp

from tests.integration.pairing.helpers import (
    Relay,
    create_claim,
    fresh_ip,
    new_key,
    pair_with_code,
    recv,
    register_ws,
    roundtrip,
    send,
)

WRONG = "WRONG234"


async def guess(relay: Relay, code: str, ip: str) -> int:
    status, _, _ = await relay.request("POST", f"/relay/claim/{code}", ip=ip)
    return status


async def test_failed_guesses_limited_per_address(relay: Relay) -> None:
    """5 failed guesses a minute per address, REST and socket together; then even a valid
    code is refused from that address (a guesser cannot tell), elsewhere it is not."""
    inst = await register_ws(relay, "guessed", new_key())
    code = (await create_claim(inst))["code"]
    ip = fresh_ip()
    for _ in range(3):
        assert await guess(relay, WRONG, ip) == 400
    ws = await relay.client(ip=ip)
    for _ in range(2):
        await send(ws, {"type": "connect", "claim_code": WRONG})
        assert await recv(ws) == {"type": "error", "message": "Invalid or expired claim code"}
    status, body, headers = await relay.request("POST", f"/relay/claim/{code}", ip=ip)
    assert status == 429 and body["error"] == "rate_limited"
    assert int(headers["Retry-After"]) == body["retry_after"] >= 1
    await send(ws, {"type": "connect", "claim_code": code})
    err = await recv(ws)
    assert err["code"] == "rate_limited" and err["retry_after"] >= 1
    other = await pair_with_code(relay, code, fresh_ip())
    assert other["type"] == "connected", other
    await ws.close()
    await relay.clock.advance(30)
    await roundtrip(inst)  # mydia's heartbeat keeps the instance
    await relay.clock.advance(30)
    assert (await pair_with_code(relay, code, ip))["type"] == "connected"
    await inst.close()


async def test_failed_guesses_limited_per_network_prefix(relay: Relay) -> None:
    """20 failed guesses a minute per /24 (IPv4) or /48 (IPv6): a guesser spreading over
    its own block is limited as a block; the neighbouring block is not."""
    inst = await register_ws(relay, "prefixed", new_key())
    code = (await create_claim(inst))["code"]
    for block, other in (("198.51.100.{}", "198.51.101.9"),
                         ("2001:db8:7:{}::1", "2001:db8:8::1")):
        for host in range(1, 5):
            for _ in range(5):
                assert await guess(relay, WRONG, block.format(host)) == 400
        assert await guess(relay, code, block.format(200)) == 429
        assert await guess(relay, code, other) == 200
    await inst.close()


async def test_typos_then_lookup_and_connect(relay: Relay) -> None:
    """4 mistyped codes, then the right one: the lookup and the socket connect (two
    redemptions of a valid code) succeed from the same address."""
    inst = await register_ws(relay, "typo", new_key())
    code = (await create_claim(inst))["code"]
    ip = fresh_ip()
    for typo in ("ABCD2345", code[:7] + "Z", "22222222", code[1:] + "A"):
        if typo != code:
            assert await guess(relay, typo, ip) == 400
    connected = await pair_with_code(relay, code, ip)
    assert connected["type"] == "connected" and connected["instance_id"] == "typo"
    await inst.close()


async def test_three_devices_paired_from_one_address_within_a_minute(relay: Relay) -> None:
    inst = await register_ws(relay, "household", new_key())
    ip = fresh_ip()
    for device in range(3):
        code = (await create_claim(inst, user=f"u{device}", request_id=str(device)))["code"]
        connected = await pair_with_code(relay, code, ip)
        assert connected["type"] == "connected" and connected["user_id"] == f"u{device}"
        await send(inst, {"type": "consume_claim", "claim_code": code})
    await inst.close()


async def test_valid_redemptions_have_a_separate_generous_limit(relay: Relay) -> None:
    """30 valid redemptions a minute per address; failed guesses are still counted apart."""
    inst = await register_ws(relay, "popular", new_key())
    code = (await create_claim(inst))["code"]
    ip = fresh_ip()
    for _ in range(30):
        assert await guess(relay, code, ip) == 200
    assert await guess(relay, code, ip) == 429
    assert await guess(relay, code, fresh_ip()) == 200
    await relay.clock.advance(60)  # the claim is still valid (300 s)
    assert await guess(relay, code, ip) == 200
    await inst.close()


async def test_guessing_flood_from_1000_addresses_finds_nothing_and_stops_no_one(
        relay: Relay) -> None:
    """1,000 addresses (4 in each of 250 /24 blocks) guess 6 times each while a user pairs
    from elsewhere: every guess fails (5 per address, the 6th refused) and the user's
    lookup and connect succeed; there is no global budget to exhaust."""
    inst = await register_ws(relay, "flooded", new_key())
    code = (await create_claim(inst))["code"]
    addresses = [f"100.{64 + b // 256}.{b % 256}.{h}" for b in range(250) for h in (1, 2, 3, 4)]
    guesses = ("".join(p) + "2223" for p in itertools.product("ABCDEFGHJK", repeat=4))
    outcomes: Counter[int] = Counter()
    url = relay.url + "/relay/claim/"

    async def guesser(http: aiohttp.ClientSession, ip: str) -> None:
        for _ in range(6):
            async with http.post(url + next(guesses), headers={"x-forwarded-for": ip}) as r:
                await r.read()
                outcomes[r.status] += 1

    async def user() -> dict:
        await asyncio.sleep(0.2)  # in the middle of the flood
        return await pair_with_code(relay, code, "192.0.2.77")

    connector = aiohttp.TCPConnector(limit=32)
    async with aiohttp.ClientSession(connector=connector) as http:
        pairing = asyncio.create_task(user())
        sem = asyncio.Semaphore(32)

        async def bounded(ip: str) -> None:
            async with sem:
                await guesser(http, ip)

        await asyncio.gather(*(bounded(ip) for ip in addresses))
        connected = await pairing
    assert connected["type"] == "connected" and connected["instance_id"] == "flooded"
    assert outcomes == {400: 5000, 429: 1000}
    await inst.close()
