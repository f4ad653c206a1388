from metadata_relay.pairing.ratelimit import (
    FailureBudget,
    SlidingWindow,
    TokenBucket,
    retry_after_header,
)


def test_sliding_window() -> None:
    w = SlidingWindow(3, 60.0)
    assert [w.check("a", t) for t in (0, 1, 2)] == [0.0, 0.0, 0.0]
    assert w.check("a", 3) == 57.0
    assert w.check("b", 3) == 0.0  # other key unaffected
    assert w.check("a", 60.5) == 0.0  # first event left the window
    assert retry_after_header(57.0) == 57 and retry_after_header(0.2) == 1


def test_sliding_window_bounded_keys_and_prune() -> None:
    w = SlidingWindow(1, 10.0, max_keys=100)
    for i in range(1000):
        w.check(f"ip{i}", 0.0)
    assert len(w) == 100
    w.prune(20.0)
    assert len(w) == 0


def test_failure_budget_trips_and_recovers() -> None:
    b = FailureBudget(limit=3, window=60.0, cooldown=30.0)
    for t in range(3):
        b.failure(float(t))
    assert b.blocked(3.0) == 0.0
    b.failure(3.0)
    assert b.blocked(3.0) == 30.0 and b.trips == 1
    assert b.blocked(33.0) == 0.0  # cool-down over: honest pairing resumes
    b.failure(34.0)
    assert b.blocked(34.0) == 0.0  # budget was reset


def test_failures_spread_out_never_trip() -> None:
    b = FailureBudget(limit=3, window=10.0, cooldown=30.0)
    for t in range(0, 100, 4):
        b.failure(float(t))
        assert b.blocked(float(t)) == 0.0


def test_token_bucket() -> None:
    tb = TokenBucket(rate=10.0, burst=5.0, now=0.0)
    assert all(tb.take(0.0) for _ in range(5))
    assert not tb.take(0.0)
    assert tb.take(0.1)  # one token refilled
    assert not tb.take(0.1)
