from __future__ import annotations

from metadata_relay.pairing.ratelimit import LocalCounter, Rule, SocketCounts, network


async def test_local_counter_keeps_rules_apart() -> None:
    c = LocalCounter()
    fail, ok = Rule("fail", 2), Rule("ok", 5)
    for _ in range(2):
        await c.add(fail, "1.2.3.4", 0.0)
    assert await c.over(fail, "1.2.3.4", 1.0) == 59.0
    assert await c.over(ok, "1.2.3.4", 1.0) == 0.0


def test_network_prefixes() -> None:
    assert network("198.51.100.7") == network("198.51.100.250") == "198.51.100.0/24"
    assert network("198.51.101.7") != network("198.51.100.7")
    assert network("2001:db8:1:2::1") == network("2001:db8:1:ffff::9") == "2001:db8:1::/48"
    assert network("::ffff:198.51.100.7") == "198.51.100.0/24"
    assert network("not-an-ip") == "not-an-ip"


def test_socket_counts() -> None:
    counts = SocketCounts({"client": 2})
    assert counts.open("client", "a") and counts.open("client", "a")
    assert not counts.open("client", "a")
    assert counts.open("client", "b")
    counts.close("client", "a")
    assert counts.open("client", "a")
