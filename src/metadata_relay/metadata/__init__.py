"""The metadata proxy: the route table (``routes.py``), the providers it calls
(``providers/``), the HTTP client and its politeness (``upstream.py``, ``politeness.py``), the
cache tiers and TTLs (``cache.py``, ``ttl.py``), and the proxy itself (``proxy.py``) behind its
ASGI front door (``gateway.py``, ``hits.py``)."""
