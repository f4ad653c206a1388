"""W1-W3, the pairing relay: relay throughput and latency, idle socket density, pairing
latency."""
