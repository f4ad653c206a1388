"""Integrated STUN/TURN server (RFC 8489/8656): sans-I/O codec and state machine, two I/O edges.

Modules: ``codec`` (wire format), ``credentials`` (TURN REST credentials), ``nonce`` (stateless
nonces), ``peers`` (deny/allow policy), ``ratelimit`` (token bucket), ``ports`` (relay port
pool), ``allocation`` (one allocation and every forwarding decision) and ``server`` (the state
machine), ``transport`` (the event-loop edge: UDP/TCP listeners, relay sockets), ``native``
(the C forwarder ``_forward.c`` and its UDP edge), ``metrics`` and ``component`` (the
service's ``turn`` component, which picks the UDP engine).
"""
