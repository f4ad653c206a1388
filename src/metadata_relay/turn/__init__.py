"""Integrated STUN/TURN server (RFC 8489/8656): sans-I/O codec and state machine, asyncio edges.

Modules: ``codec`` (wire format), ``credentials`` (TURN REST credentials), ``nonce`` (stateless
nonces), ``peers`` (deny/allow policy), ``ratelimit`` (token bucket), ``ports`` (relay port
pool), ``allocation`` and ``server`` (the state machine), ``transport`` (UDP/TCP/relay sockets),
``metrics`` and ``component`` (the service's ``turn`` component).
"""
