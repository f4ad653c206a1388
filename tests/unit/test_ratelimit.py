"""The service-wide rate limits: the sliding window and the token bucket."""

from __future__ import annotations

from metadata_relay.ratelimit import TokenBucket, Window, retry_after_header


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


def test_token_bucket() -> None:
    tb = TokenBucket(rate=10.0, burst=5.0, now=0.0)
    assert all(tb.spend(0.0) for _ in range(5))
    assert not tb.spend(0.0)
    assert tb.wait() > 0
    assert tb.spend(0.1)  # one token refilled
    assert not tb.spend(0.1)
    bytes_ = TokenBucket(rate=1000.0, burst=1500.0, now=0.0)  # bytes: refilled by a tick
    assert bytes_.take(1200) and not bytes_.take(1200)
    bytes_.refill(1.0)
    assert bytes_.tokens == 1300.0 and bytes_.take(1200)
    bytes_.refill(100.0)
    assert bytes_.tokens == 1500.0  # never above the burst
