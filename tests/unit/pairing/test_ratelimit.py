from __future__ import annotations

from metadata_relay.pairing.ratelimit import (
    LocalCounter,
    Rule,
    SocketCounts,
    TokenBucket,
    Window,
    network,
    retry_after_header,
)


def test_window_counts_per_key() -> None:
    w = Window(60.0)
    for t in (0.0, 1.0, 2.0):
        assert w.over("a", 3, t) == 0.0
        w.add("a", t)
    assert w.over("a", 3, 3.0) == 57.0
    assert w.over("b", 3, 3.0) == 0.0  # other key unaffected
    assert w.over("a", 3, 60.5) == 0.0  # first event left the window
    assert retry_after_header(57.0) == 57 and retry_after_header(0.2) == 1


def test_window_bounded_keys_and_prune() -> None:
    w = Window(10.0, max_keys=100)
    for i in range(1000):
        w.add(f"ip{i}", 0.0)
    assert len(w) == 100
    w.prune(20.0)
    assert len(w) == 0


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


def test_token_bucket() -> None:
    tb = TokenBucket(rate=10.0, burst=5.0, now=0.0)
    assert all(tb.take(0.0) for _ in range(5))
    assert not tb.take(0.0)
    assert tb.wait() > 0
    assert tb.take(0.1)  # one token refilled
    assert not tb.take(0.1)


def test_socket_counts() -> None:
    counts = SocketCounts({"client": 2})
    assert counts.open("client", "a") and counts.open("client", "a")
    assert not counts.open("client", "a")
    assert counts.open("client", "b")
    counts.close("client", "a")
    assert counts.open("client", "a")
