"""T1-T3, the STUN/TURN server, each against Debian coturn driven the same way."""
