"""Every pairing limit in one place (defaults are the contract's values; tests shorten them).

Guessing claim codes (README, "Claim codes"): a code has 40 bits; failed redemptions count
per client IP and per network prefix (/24 IPv4, /48 IPv6), never globally, so guessers
cannot lock anyone else out; valid redemptions count against their own, generous limit. The
node claims of current mydia (``/pairing/claim``) share both budgets with the claim codes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PairingLimits:
    # REST and socket rate limits, per client IP per minute
    register_per_min: int = 10
    connect_per_min: int = 30
    # claim-code redemption (REST lookup and socket connect{claim_code} together), per minute
    guesses_per_ip: int = 5          # failed redemptions per client IP
    guesses_per_prefix: int = 20     # failed redemptions per /24 (IPv4) or /48 (IPv6)
    redemptions_per_ip: int = 30     # valid redemptions per client IP
    # node claims (current mydia, ``POST /pairing/claim``): created per client IP and per
    # network prefix per minute, and at most this many live at once on a replica (each holds
    # up to 4 KiB). Their lookups share the claim-code guess and redemption limits above.
    node_claims_per_ip: int = 10
    node_claims_per_prefix: int = 60
    node_claims_live: int = 20_000
    # instance identity: a socket that sent an app-level frame this recently is alive (mydia
    # pings 30 s after each pong and gives up after 10 s more: at most 40 s between pings)
    alive_window: float = 50.0
    identify_timeout: float = 30.0   # to register (and prove) or connect after opening
    # instance sockets: per-instance claim rate, per-socket ping and URL-update buckets
    claims_per_min: int = 10
    ping_rate: float = 0.5           # per second, with bursts of ping_burst
    ping_burst: float = 5.0
    update_urls_rate: float = 0.1
    update_urls_burst: float = 5.0
    # open sockets per client IP
    instance_sockets_per_ip: int = 10
    client_sockets_per_ip: int = 50
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
