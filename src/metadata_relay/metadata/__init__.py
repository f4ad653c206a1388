"""TMDB/TVDB caching proxy: route table, TTL policy, cache tiers, upstream clients."""
