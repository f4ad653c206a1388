"""Prometheus view of the TURN servers in this process, read at scrape time.

The relay path only bumps plain integers on each allocation; this collector sums them when
``/metrics`` is scraped, so no metric object is touched per packet. No label carries a
username (ephemeral REST usernames would grow the label set without bound).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from metadata_relay.observability import REGISTRY
from metadata_relay.turn.server import TurnServer

_SERVERS: weakref.WeakSet[TurnServer] = weakref.WeakSet()
_SETTLE: weakref.WeakKeyDictionary[TurnServer, weakref.WeakMethod[Callable[[], None]]] = (
    weakref.WeakKeyDictionary())
"""Weak both ways: the edge whose method settles holds the server, so a strong value would
keep a stopped server (and its edge) reported for the life of the process."""


def track(server: TurnServer, settle: Callable[[], None] | None = None) -> None:
    """Report ``server``; ``settle`` (a bound method, if any) brings its counters up to date
    before each read (the C forwarder counts outside the allocations between ticks)."""
    _SERVERS.add(server)
    if settle is not None:
        _SETTLE[server] = weakref.WeakMethod(settle)


def snapshot(server: TurnServer) -> dict[str, Any]:
    ref = _SETTLE.get(server)
    settle = ref() if ref is not None else None
    if settle is not None:
        settle()
    pk_out, by_out, pk_in, by_in = server.totals()
    return {
        "allocations": len(server.allocations),
        "allocations_total": server.allocations_total,
        "permissions": server.permission_count(),
        "channels": server.channel_count(),
        "relayed_packets": {"client_to_peer": pk_out, "peer_to_client": pk_in},
        "relayed_bytes": {"client_to_peer": by_out, "peer_to_client": by_in},
        "auth_failures": dict(server.auth_failures),
        "error_responses": {str(k): v for k, v in sorted(server.error_responses.items())},
    }


class TurnCollector(Collector):
    def collect(self) -> Iterator[Any]:
        snaps = [snapshot(s) for s in list(_SERVERS)]
        gauges = {
            "allocations": "Active TURN allocations",
            "permissions": "Active TURN permissions",
            "channels": "Active TURN channel bindings",
        }
        for key, doc in gauges.items():
            yield GaugeMetricFamily(f"relay_turn_{key}", doc, value=sum(s[key] for s in snaps))
        yield CounterMetricFamily("relay_turn_allocations", "TURN allocations created",
                                  value=sum(s["allocations_total"] for s in snaps))
        for unit in ("packets", "bytes"):
            fam = CounterMetricFamily(f"relay_turn_relayed_{unit}",
                                      f"Relayed {unit} by direction", labels=["direction"])
            for direction in ("client_to_peer", "peer_to_client"):
                fam.add_metric([direction],
                               sum(s[f"relayed_{unit}"][direction] for s in snaps))
            yield fam
        yield _by_label(snaps, "auth_failures", "TURN authentication failures", "reason")
        yield _by_label(snaps, "error_responses", "TURN error responses by code", "code")


def _by_label(snaps: list[dict[str, Any]], key: str, doc: str,
              label: str) -> CounterMetricFamily:
    """``relay_turn_<key>``: the servers' ``key`` counts summed per label value."""
    totals: dict[str, int] = {}
    for s in snaps:
        for k, v in s[key].items():
            totals[k] = totals.get(k, 0) + v
    fam = CounterMetricFamily(f"relay_turn_{key}", doc, labels=[label])
    for k, v in sorted(totals.items()):
        fam.add_metric([k], v)
    return fam

REGISTRY.register(TurnCollector())
