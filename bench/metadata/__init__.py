"""P1-P4, the metadata proxy: cache hits, a cold stampede, misses under the upstream caps, and
an upstream outage."""
