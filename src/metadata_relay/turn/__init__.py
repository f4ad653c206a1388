"""Integrated STUN/TURN server."""
