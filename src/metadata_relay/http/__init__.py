"""The HTTP server side: the listener (uvicorn configuration, each connection's strict reader,
limits and fast path for cache hits, the WebSocket relay lane), the HTTP edge, request bodies,
and the service routes."""
