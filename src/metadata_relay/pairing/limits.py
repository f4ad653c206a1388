"""Every pairing limit in one place (defaults are the contract's values)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PairingLimits:
    # REST + socket connect rate limits, per client IP, per 60 s
    register_per_min: int = 10
    redeem_per_min: int = 5
    connect_per_min: int = 30
    # global failed-redemption budget (HTTP and WebSocket together)
    failure_budget: int = 100
    failure_window: float = 60.0
    failure_cooldown: float = 60.0
    # sockets
    instance_heartbeat: float = 60.0
    client_idle: float = 300.0
    send_queue_bytes: int = 1024 * 1024
    session_msg_rate: float = 500.0
    session_msg_burst: float = 1000.0
    # housekeeping
    cleanup_interval: float = 300.0
    offline_after: float = 120.0
    claim_retention: float = 24 * 3600.0
