"""The HTTP server side: uvicorn configuration, edge middleware, the fast path for cache hits,
the WebSocket relay lane, and the service routes."""
