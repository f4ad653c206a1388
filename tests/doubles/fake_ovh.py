"""A fake OVHcloud API on loopback, as unkind as the real one.

- Every request must be signed like OVH signs (``$1$`` + sha1 over secret, consumer key,
  method, URL, body, timestamp) by a *validated* consumer key, and is checked against that
  key's access rules with OVH's semantics: a rule's path is a glob over the request path
  without its query, so ``/vps/*`` covers ``/vps/x/ips`` but not ``/vps``. Otherwise 403
  ``NOT_GRANTED_CALL``, which python-ovh raises as NotGrantedCall.
- ``POST /auth/credential`` (python-ovh's consumer-key request) records the rules asked for
  and answers a validation URL; :meth:`FakeOvh.validate` plays the operator's click.
- Bodies and queries are validated: unknown or missing keys, wrong types, configuration
  values outside the allowed ones (even when ``requiredConfiguration`` hides them) are 400.
- Time passes per poll, deterministically: an order is ``checking`` then ``delivering`` (the
  VPS appears, ``installing``, with a ``deliverVm`` task) then ``delivered``; OVH's tasks on a
  VPS advance one step per read of its tasks. While a task runs, rebuild and rename are
  refused with OVH's "Action not available while there are running tasks" (400).
- A rebuild installs the public key for the image's user (``ubuntu``), not root: the
  ``on_rebuilt`` hook tells the SSH double, which also gets a new host key.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

AK, AS, CK = "fake-app-key", "fake-app-secret", "fake-consumer-key"
SUBSIDIARY = "FR"
IMAGES = {"img-deb12": "Debian 12", "img-ubu2404": "Ubuntu 24.04", "img-ubu2204": "Ubuntu 22.04"}
DATACENTERS = ["EU-WEST-GRA", "EU-WEST-SBG", "CA-EAST-BHS"]
OSES = ["Debian 12", "Ubuntu 24.04", "AlmaLinux 9"]
BUSY = "Action not available while there are running tasks on the VPS"


class ApiRefusal(Exception):
    def __init__(self, status: int, message: str, code: str = "") -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


@dataclass
class Call:
    method: str
    path: str  # without the query
    body: Any
    query: dict[str, str] = field(default_factory=dict)


@dataclass
class FakeTask:
    id: int
    type: str
    state: str = "doing"
    steps_left: int = 2
    on_done: Callable[[], None] | None = None


@dataclass
class FakeVps:
    name: str
    state: str
    display_name: str
    ip: str
    tasks: list[FakeTask] = field(default_factory=list)

    def busy(self) -> bool:
        return any(t.state in ("todo", "doing") for t in self.tasks)


@dataclass
class FakeOrder:
    id: int
    plan: str
    config: dict[str, str]
    polls: int = 0
    vps_name: str = ""
    status: str = "checking"


@dataclass
class FakeOvh:
    vps: dict[str, FakeVps] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    refused: list[Call] = field(default_factory=list)  # signed calls OVH answered 4xx to
    bad_signatures: int = 0
    not_granted: list[str] = field(default_factory=list)
    grants: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    pending_keys: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    key_requests: list[dict[str, Any]] = field(default_factory=list)
    carts: dict[str, dict[str, Any]] = field(default_factory=dict)
    deleted_carts: list[str] = field(default_factory=list)
    orders: dict[int, FakeOrder] = field(default_factory=dict)
    fail_on: tuple[str, str] | None = None  # (method, path suffix) that answers 500
    stall_on: tuple[str, str] | None = None  # (method, path suffix) held until released
    stalled: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    new_vps_ip: str = "127.0.0.1"
    checking_polls: int = 1  # status reads an order stays "checking"
    delivery_polls: int = 2  # then "delivering", the VPS installing
    task_steps: int = 2  # reads of a VPS's tasks until a task is done
    refuse_rebuilds: int = 0  # refuse that many rebuilds as busy even with no task listed
    refuse_checkout: str = ""  # a 400 the checkout answers (e.g. a payment problem)
    plans: tuple[str, ...] = ("vps-2025-model1", "vps-2025-model2")
    required: list[dict[str, Any]] = field(default_factory=lambda: [
        {"label": "vps_datacenter", "required": True, "type": "String",
         "allowedValues": list(DATACENTERS)},
        {"label": "vps_os", "required": True, "type": "String", "allowedValues": list(OSES)},
        {"label": "vps_install_rtm", "required": True, "type": "String",
         "allowedValues": ["if_available", "no"]},
    ])
    hide_allowed_values: set[str] = field(default_factory=set)  # labels sent without them
    base: str = ""
    rebuilds: list[dict[str, Any]] = field(default_factory=list)
    rebuilds_while_busy: int = 0  # rebuilds sent while a task was still listed
    on_delivered: Callable[[FakeVps], None] | None = None
    on_rebuilt: Callable[[FakeVps, str], None] | None = None
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    # ---- helpers for tests --------------------------------------------------------------
    def mutating(self) -> list[Call]:
        return [c for c in self.calls if c.method in ("POST", "PUT", "DELETE")]

    def calls_to(self, method: str, suffix: str) -> list[Call]:
        return [c for c in self.calls if c.method == method and c.path.endswith(suffix)]

    def checkouts(self) -> list[Call]:
        return [c for c in self.calls_to("POST", "/checkout") if c not in self.refused]

    def validate(self, consumer_key: str) -> None:
        """The operator opened the validation URL and logged in."""
        self.grants[consumer_key] = self.pending_keys.pop(consumer_key)

    # ---- server -------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/1.0/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["tail"]
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            return _error(400, "Invalid JSON body")
        if path == "/auth/time" and request.method == "GET":
            return web.json_response(int(time.time()))
        if path == "/auth/credential" and request.method == "POST":
            return self._credential(request, body)
        consumer = self._signed(request, raw)
        if consumer is None:
            self.bad_signatures += 1
            return _error(400, "Invalid signature", "INVALID_SIGNATURE")
        if consumer in self.pending_keys:
            return _error(403, "This credential is not valid", "INVALID_CREDENTIAL")
        if not self._granted(consumer, request.method, path):
            self.not_granted.append(f"{request.method} {path}")
            return _error(403, "This call has not been granted", "NOT_GRANTED_CALL")
        call = Call(request.method, path, body, dict(request.query))
        self.calls.append(call)
        if self.stall_on and request.method == self.stall_on[0] and path.endswith(
                self.stall_on[1]):
            self.stalled.set()
            await asyncio.wait_for(self.release.wait(), 60)
        if self.fail_on and request.method == self.fail_on[0] and path.endswith(self.fail_on[1]):
            return _error(500, "Internal failure (injected)")
        try:
            result = self.route(request.method, path, body, dict(request.query))
        except KeyError as exc:
            self.refused.append(call)
            return _error(404, f"The requested object ({exc}) does not exist")
        except ApiRefusal as exc:
            self.refused.append(call)
            return _error(exc.status, exc.message, exc.code)
        return web.json_response(result)

    def _credential(self, request: web.Request, body: Any) -> web.Response:
        if request.headers.get("X-Ovh-Application") != AK:
            return _error(403, "Invalid application key", "INVALID_KEY")
        if not isinstance(body, dict) or set(body) - {"accessRules", "redirection",
                                                      "allowedIPs"}:
            return _error(400, "Invalid body")
        rules = body.get("accessRules")
        if not isinstance(rules, list) or not rules or not all(
                isinstance(r, dict) and set(r) == {"method", "path"}
                and r["method"] in ("GET", "POST", "PUT", "DELETE")
                and str(r["path"]).startswith("/") for r in rules):
            return _error(400, "Invalid accessRules")
        self.key_requests.append(body)
        n = next(self._ids)
        key = f"ck-{n}"
        self.pending_keys[key] = rules
        return web.json_response({"validationUrl": f"{self.base}/auth/?credentialToken=tok{n}",
                                  "consumerKey": key, "state": "pendingValidation"})

    def _signed(self, request: web.Request, raw: bytes) -> str | None:
        h = request.headers
        consumer = h.get("X-Ovh-Consumer", "")
        if h.get("X-Ovh-Application") != AK or not consumer:
            return None
        ts = h.get("X-Ovh-Timestamp", "")
        if not ts.isdigit() or abs(int(ts) - time.time()) > 300:
            return None
        url = self.base + request.path_qs[len("/1.0"):]
        sig = hashlib.sha1("+".join([AS, consumer, request.method, url, raw.decode(), ts])
                           .encode())
        return consumer if h.get("X-Ovh-Signature") == "$1$" + sig.hexdigest() else None

    def _granted(self, consumer: str, method: str, path: str) -> bool:
        rules = self.grants.get(consumer, [])
        return any(r["method"] == method and fnmatch.fnmatchcase(path, r["path"])
                   for r in rules)

    # ---- routes -------------------------------------------------------------------------
    def route(self, method: str, path: str, body: Any, query: dict[str, str]) -> Any:
        parts = path.strip("/").split("/")
        if parts[0] != "order" or parts[1:2] != ["catalog"]:
            if query and not (parts[0] == "vps" and parts[2:3] == ["tasks"]):
                raise ApiRefusal(400, f"Unexpected query {sorted(query)}")
        if parts == ["me"] and method == "GET":
            return {"nichandle": "xx1234-ovh", "ovhSubsidiary": SUBSIDIARY}
        if parts[:2] == ["me", "order"] and method == "GET":
            return self._order(parts[2:])
        if parts[0] == "vps":
            return self._vps(method, parts[1:], body, query)
        if parts[:4] == ["order", "catalog", "public", "vps"] and method == "GET":
            if query != {"ovhSubsidiary": SUBSIDIARY}:
                raise ApiRefusal(400, "ovhSubsidiary is required and must be yours")
            return self._catalogue()
        if parts[:2] == ["order", "cart"]:
            return self._cart(method, parts[2:], body)
        raise KeyError(path)

    def _catalogue(self) -> dict[str, Any]:
        confs = {c["label"]: c for c in self.required}
        return {"catalogId": 1, "locale": {"subsidiary": SUBSIDIARY, "currencyCode": "EUR"},
                "plans": [{"planCode": p, "invoiceName": p, "product": p, "configurations": [
                    {"name": "vps_datacenter", "isMandatory": True, "isCustom": False,
                     "values": list(confs["vps_datacenter"].get("allowedValues") or [])},
                    {"name": "vps_os", "isMandatory": True, "isCustom": False,
                     "values": list(OSES)},
                ]} for p in self.plans]}

    # ---- orders -------------------------------------------------------------------------
    def _advance(self, order: FakeOrder) -> None:
        order.polls += 1
        if order.status == "checking" and order.polls > self.checking_polls:
            order.status = "delivering"
            order.vps_name = f"vps-{order.id:x}.vps.ovh.net"
            vps = FakeVps(order.vps_name, "installing", order.vps_name, self.new_vps_ip)
            vps.tasks.append(FakeTask(next(self._ids), "deliverVm",
                                      steps_left=self.task_steps + self.delivery_polls))
            self.vps[vps.name] = vps
            if self.on_delivered:
                self.on_delivered(vps)
        elif order.status == "delivering" and order.polls > self.checking_polls + \
                self.delivery_polls:
            order.status = "delivered"
            self.vps[order.vps_name].state = "running"

    def _order(self, parts: list[str]) -> Any:
        order = self.orders[int(parts[0])]
        rest = parts[1:]
        if rest == ["status"]:
            self._advance(order)
            return order.status
        if rest == ["details"]:
            return [order.id * 10 + 1, order.id * 10 + 2]
        detail = int(rest[1])
        if detail not in (order.id * 10 + 1, order.id * 10 + 2):
            raise KeyError(f"detail {detail}")
        is_vps = detail == order.id * 10 + 1
        if len(rest) == 2:
            return {"orderDetailId": detail, "domain": "*", "quantity": "1",
                    "description": order.plan if is_vps else "Linux OS"}
        ops = [detail * 10] if is_vps and order.status == "delivered" else []
        if rest[2:] == ["operations"]:
            return ops
        if len(rest) == 4 and rest[2] == "operations" and int(rest[3]) in ops:
            return {"id": int(rest[3]), "status": "done", "type": "installation",
                    "resource": {"name": order.vps_name, "displayName": order.vps_name,
                                 "state": "ok"}, "quantity": 1}
        raise KeyError("/".join(rest))

    # ---- VPS ----------------------------------------------------------------------------
    def _tick(self, vps: FakeVps) -> None:
        for task in vps.tasks:
            if task.state in ("todo", "doing"):
                task.steps_left -= 1
                if task.steps_left <= 0:
                    task.state = "done"
                    if task.on_done:
                        task.on_done()

    def _vps(self, method: str, parts: list[str], body: Any, query: dict[str, str]) -> Any:
        if not parts and method == "GET":
            return sorted(self.vps)
        vps = self.vps[parts[0]]
        rest = parts[1:]
        if not rest and method == "GET":
            return {"name": vps.name, "state": vps.state, "displayName": vps.display_name,
                    "model": {"name": "vps-2025-model1"}, "zone": "Region OpenStack: os-sbg"}
        if not rest and method == "PUT":
            _expect(body, required={"displayName": str})
            if vps.busy():
                raise ApiRefusal(400, BUSY)
            vps.display_name = body["displayName"]
            return None
        if rest == ["ips"] and method == "GET":
            return [vps.ip, "2001:db8::1"]
        if rest == ["tasks"] and method == "GET":
            if set(query) - {"state", "type"} or query.get("state", "todo") not in (
                    "todo", "doing", "done", "error", "cancelled"):
                raise ApiRefusal(400, "Invalid value for state")
            self._tick(vps)
            return [t.id for t in vps.tasks if t.state == query.get("state", t.state)]
        if rest[:1] == ["tasks"] and len(rest) == 2 and method == "GET":
            self._tick(vps)
            task = next(t for t in vps.tasks if t.id == int(rest[1]))
            return {"id": task.id, "type": task.type, "state": task.state, "progress": 0}
        if rest == ["images", "available"] and method == "GET":
            return sorted(IMAGES)
        if rest[:2] == ["images", "available"] and len(rest) == 3 and method == "GET":
            return {"id": rest[2], "name": IMAGES[rest[2]]}
        if rest == ["rebuild"] and method == "POST":
            _expect(body, required={"imageId": str},
                    optional={"publicSshKey": str, "doNotSendPassword": bool,
                              "installRTM": bool, "sshKey": str})
            if body["imageId"] not in IMAGES:
                raise ApiRefusal(400, f"Invalid imageId {body['imageId']}")
            if vps.busy():
                self.rebuilds_while_busy += 1
            if vps.busy() or self.refuse_rebuilds > 0:
                self.refuse_rebuilds = max(0, self.refuse_rebuilds - 1)
                raise ApiRefusal(400, BUSY)
            self.rebuilds.append({"vps": vps.name, **body})
            vps.state = "installing"
            key = str(body.get("publicSshKey", ""))

            def rebuilt() -> None:
                vps.state = "running"
                if self.on_rebuilt:
                    self.on_rebuilt(vps, key)

            task = FakeTask(next(self._ids), "reinstallVm", steps_left=self.task_steps,
                            on_done=rebuilt)
            vps.tasks.append(task)
            return {"id": task.id, "type": task.type, "state": "todo", "progress": 0}
        raise KeyError("/".join(parts))

    # ---- carts --------------------------------------------------------------------------
    def _cart(self, method: str, parts: list[str], body: Any) -> Any:
        if not parts and method == "POST":
            _expect(body, required={"ovhSubsidiary": str}, optional={"description": str,
                                                                      "expire": str})
            if body["ovhSubsidiary"] != SUBSIDIARY:
                raise ApiRefusal(400, "ovhSubsidiary must be the account's")
            cart_id = f"cart-{next(self._ids)}"
            self.carts[cart_id] = {"items": {}, "assigned": False, "checked_out": False}
            return {"cartId": cart_id, "expire": "2099-01-01T00:00:00Z", "readOnly": False}
        cart_id, rest = parts[0], parts[1:]
        cart = self.carts[cart_id]
        if not rest and method == "DELETE":
            if cart["checked_out"]:
                raise KeyError(cart_id)  # a checked-out cart is gone
            del self.carts[cart_id]
            self.deleted_carts.append(cart_id)
            return None
        if cart["checked_out"]:
            raise ApiRefusal(400, "This cart is read-only: it has been checked out")
        if rest == ["vps"] and method == "POST":
            _expect(body, required={"planCode": str, "duration": str, "pricingMode": str,
                                    "quantity": int})
            if body["planCode"] not in self.plans or body["duration"] != "P1M" or \
                    body["pricingMode"] != "default" or body["quantity"] != 1:
                raise ApiRefusal(400, "bad planCode/duration/pricingMode/quantity")
            item_id = next(self._ids)
            cart["items"][item_id] = {"planCode": body["planCode"], "config": {}}
            return {"itemId": item_id, "cartId": cart_id}
        if len(rest) >= 3 and rest[0] == "item":
            item = cart["items"][int(rest[1])]
            if rest[2] == "requiredConfiguration" and method == "GET":
                out = []
                for conf in self.required:
                    shown = dict(conf)
                    if conf["label"] in self.hide_allowed_values:
                        shown["allowedValues"] = None
                    out.append(shown)
                return out
            if rest[2] == "configuration" and method == "POST":
                _expect(body, required={"label": str, "value": str})
                conf = next((c for c in self.required if c["label"] == body["label"]), None)
                if conf is None:
                    raise ApiRefusal(400, f"Unknown configuration label {body['label']}")
                if conf.get("allowedValues") and body["value"] not in conf["allowedValues"]:
                    raise ApiRefusal(400, f"Invalid value {body['value']!r} for "
                                          f"{body['label']}")
                item["config"][body["label"]] = body["value"]
                return {"id": next(self._ids), "label": body["label"], "value": body["value"]}
        if rest == ["assign"] and method == "POST":
            if body is not None:
                raise ApiRefusal(400, "assign takes no body")
            cart["assigned"] = True
            return None
        if rest == ["checkout"] and method == "GET":
            return {"orderId": None, "prices": {"withTax": {"text": "5.08 €", "value": 5.08}},
                    "details": []}
        if rest == ["checkout"] and method == "POST":
            _expect(body, optional={"autoPayWithPreferredPaymentMethod": bool,
                                    "waiveRetractationPeriod": bool})
            if not cart["assigned"] or not cart["items"]:
                raise ApiRefusal(400, "cart not assigned or empty")
            for item in cart["items"].values():
                missing = {c["label"] for c in self.required if c.get("required")} - set(
                    item["config"])
                if missing:
                    raise ApiRefusal(400, f"missing required configuration {sorted(missing)}")
            if body.get("autoPayWithPreferredPaymentMethod") is not True:
                raise ApiRefusal(400, "payment mode")
            if self.refuse_checkout:
                raise ApiRefusal(400, self.refuse_checkout)
            (item,) = cart["items"].values()
            order = FakeOrder(1000 + next(self._ids), item["planCode"], dict(item["config"]))
            self.orders[order.id] = order
            cart["checked_out"] = True
            return {"orderId": order.id, "url": "https://example.invalid/order",
                    "prices": {"withTax": {"text": "5.08 €", "value": 5.08}}}
        raise KeyError("/".join(parts))


def _expect(body: Any, required: dict[str, type] | None = None,
            optional: dict[str, type] | None = None) -> None:
    required, optional = required or {}, optional or {}
    if not isinstance(body, dict):
        raise ApiRefusal(400, "A JSON object body is required")
    unknown = set(body) - set(required) - set(optional)
    if unknown:
        raise ApiRefusal(400, f"Invalid parameters: {sorted(unknown)}")
    for key, kind in {**required, **optional}.items():
        if key in required and key not in body:
            raise ApiRefusal(400, f"Missing parameter {key}")
        if key in body and (not isinstance(body[key], kind) or (
                kind is int and isinstance(body[key], bool))):
            raise ApiRefusal(400, f"Invalid type for {key}")


def _error(status: int, message: str, code: str = "") -> web.Response:
    payload = {"message": message, "class": "Client::BadRequest" if status < 500 else
               "Server::InternalServerError"}
    if code:
        payload["errorCode"] = code
    return web.json_response(payload, status=status)
