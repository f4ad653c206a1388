"""A fake OVHcloud API on loopback: checks every request's signature like the real API,
records every call, and models the VPS and cart/order endpoints the deploy tool uses."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

AK, AS, CK = "fake-app-key", "fake-app-secret", "fake-consumer-key"
IMAGES = {"img-deb12": "Debian 12", "img-ubu2404": "Ubuntu 24.04", "img-ubu2204": "Ubuntu 22.04"}


@dataclass
class Call:
    method: str
    path: str
    body: Any


@dataclass
class FakeVps:
    name: str
    state: str
    display_name: str
    ip: str
    polls_until_running: int = 0


@dataclass
class FakeOvh:
    vps: dict[str, FakeVps] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    bad_signatures: int = 0
    carts: dict[str, dict[str, Any]] = field(default_factory=dict)
    deleted_carts: list[str] = field(default_factory=list)
    orders: list[dict[str, Any]] = field(default_factory=list)
    fail_on: tuple[str, str] | None = None  # (method, path suffix) that answers 500
    stall_on: tuple[str, str] | None = None  # (method, path suffix) held until released
    stalled: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    new_vps_ip: str = "127.0.0.1"
    delivery_polls: int = 2
    plans: tuple[str, ...] = ("vps-2025-model1", "vps-2025-model2")
    base: str = ""
    rebuilds: list[dict[str, Any]] = field(default_factory=list)
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    # ---- helpers for tests --------------------------------------------------------------
    def mutating(self) -> list[Call]:
        return [c for c in self.calls if c.method in ("POST", "PUT", "DELETE")]

    def calls_to(self, method: str, suffix: str) -> list[Call]:
        return [c for c in self.calls if c.method == method and c.path.endswith(suffix)]

    # ---- server -------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/1.0/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["tail"]
        raw = await request.read()
        body = json.loads(raw) if raw else None
        if path == "/auth/time":
            return web.json_response(int(time.time()))
        if not self._signed(request, raw):
            self.bad_signatures += 1
            return web.json_response({"message": "Invalid signature",
                                      "errorCode": "INVALID_SIGNATURE"}, status=400)
        self.calls.append(Call(request.method, path, body))
        if self.stall_on and request.method == self.stall_on[0] and path.endswith(
                self.stall_on[1]):
            self.stalled.set()
            await asyncio.wait_for(self.release.wait(), 60)
        if self.fail_on and request.method == self.fail_on[0] and path.endswith(self.fail_on[1]):
            return web.json_response({"message": "Internal failure (injected)"}, status=500)
        try:
            result = self.route(request.method, path, body or {})
        except KeyError as exc:
            return web.json_response({"message": f"The requested object ({exc}) does not "
                                                 f"exist"}, status=404)
        except ValueError as exc:
            return web.json_response({"message": str(exc)}, status=400)
        return web.json_response(result)

    def _signed(self, request: web.Request, raw: bytes) -> bool:
        h = request.headers
        if h.get("X-Ovh-Application") != AK or h.get("X-Ovh-Consumer") != CK:
            return False
        ts = h.get("X-Ovh-Timestamp", "")
        if not ts.isdigit() or abs(int(ts) - time.time()) > 300:
            return False
        url = self.base + request.path_qs[len("/1.0"):]
        sig = hashlib.sha1("+".join([AS, CK, request.method, url, raw.decode(), ts]).encode())
        return h.get("X-Ovh-Signature") == "$1$" + sig.hexdigest()

    def route(self, method: str, path: str, body: dict[str, Any]) -> Any:
        parts = path.strip("/").split("/")
        if parts == ["me"] and method == "GET":
            return {"nichandle": "xx1234-ovh", "ovhSubsidiary": "FR"}
        if parts[0] == "vps":
            return self._vps(method, parts[1:], body)
        if parts[:2] == ["order", "cart"]:
            return self._cart(method, parts[2:], body)
        raise KeyError(path)

    def _vps(self, method: str, parts: list[str], body: dict[str, Any]) -> Any:
        if not parts and method == "GET":
            return sorted(self.vps)
        vps = self.vps[parts[0]]
        if len(parts) == 1 and method == "GET":
            if vps.state != "running":
                vps.polls_until_running -= 1
                if vps.polls_until_running <= 0:
                    vps.state = "running"
            return {"name": vps.name, "state": vps.state, "displayName": vps.display_name,
                    "model": {"name": "vps-2025-model1"}}
        if len(parts) == 1 and method == "PUT":
            vps.display_name = str(body["displayName"])
            return None
        if parts[1:] == ["ips"] and method == "GET":
            return [vps.ip, "2001:db8::1"]
        if parts[1:] == ["images", "available"] and method == "GET":
            return sorted(IMAGES)
        if parts[1:3] == ["images", "available"] and len(parts) == 4 and method == "GET":
            return {"id": parts[3], "name": IMAGES[parts[3]]}
        if parts[1:] == ["rebuild"] and method == "POST":
            if body.get("imageId") not in IMAGES or not str(
                    body.get("publicSshKey", "")).startswith("ssh-"):
                raise ValueError("imageId and publicSshKey required")
            self.rebuilds.append({"vps": vps.name, **body})
            vps.state, vps.polls_until_running = "installing", self.delivery_polls
            return {"id": next(self._ids), "type": "rebuild", "state": "todo"}
        raise KeyError("/".join(parts))

    def _cart(self, method: str, parts: list[str], body: dict[str, Any]) -> Any:
        if not parts and method == "POST":
            if body.get("ovhSubsidiary") != "FR":
                raise ValueError("ovhSubsidiary must be the account's")
            cart_id = f"cart-{next(self._ids)}"
            self.carts[cart_id] = {"items": {}, "assigned": False, "checked_out": False}
            return {"cartId": cart_id, "expire": "2099-01-01T00:00:00Z"}
        cart_id, rest = parts[0], parts[1:]
        cart = self.carts[cart_id]
        if not rest and method == "DELETE":
            del self.carts[cart_id]
            self.deleted_carts.append(cart_id)
            return None
        if rest == ["vps"] and method == "GET":
            return [{"planCode": p, "productName": p, "prices": []} for p in self.plans]
        if rest == ["vps"] and method == "POST":
            if body.get("planCode") not in self.plans or body.get("duration") != "P1M":
                raise ValueError("bad planCode/duration")
            item_id = next(self._ids)
            cart["items"][item_id] = {"planCode": body["planCode"], "config": {}}
            return {"itemId": item_id, "cartId": cart_id}
        if len(rest) >= 3 and rest[0] == "item":
            item = cart["items"][int(rest[1])]
            if rest[2] == "requiredConfiguration" and method == "GET":
                return [
                    {"label": "vps_datacenter", "required": True, "type": "String",
                     "allowedValues": ["BHS", "GRA", "SBG"]},
                    {"label": "vps_os", "required": True, "type": "String",
                     "allowedValues": ["Debian 12", "Ubuntu 24.04", "AlmaLinux 9"]},
                ]
            if rest[2] == "configuration" and method == "POST":
                item["config"][body["label"]] = body["value"]
                return {"id": next(self._ids), "label": body["label"], "value": body["value"]}
        if rest == ["assign"] and method == "POST":
            cart["assigned"] = True
            return None
        if rest == ["checkout"] and method == "GET":
            return {"orderId": None, "prices": {"withTax": {"text": "5.08 €", "value": 5.08}}}
        if rest == ["checkout"] and method == "POST":
            if not cart["assigned"] or not cart["items"]:
                raise ValueError("cart not assigned or empty")
            for item in cart["items"].values():
                if set(item["config"]) != {"vps_datacenter", "vps_os"}:
                    raise ValueError("missing required configuration")
            if body.get("autoPayWithPreferredPaymentMethod") is not True:
                raise ValueError("payment mode")
            order_id = 1000 + next(self._ids)
            self.orders.append({"orderId": order_id, "items": list(cart["items"].values())})
            name = f"vps-{order_id}.vps.ovh.net"
            self.vps[name] = FakeVps(name, "installing", name, self.new_vps_ip,
                                     polls_until_running=self.delivery_polls)
            cart["checked_out"] = True
            return {"orderId": order_id, "url": "https://example.invalid/order"}
        raise KeyError("/".join(parts))
