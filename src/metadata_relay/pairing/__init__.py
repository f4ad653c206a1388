"""Device pairing relay: REST routes, instance/client sockets, claims, tokens, routing hub."""
