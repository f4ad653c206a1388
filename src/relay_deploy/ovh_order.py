"""Ordering the VPS through OVH's cart, and following that one order to the VPS it delivers.

One order, ever: the order id is handed to ``on_order`` (which stores it in the config) the
moment checkout answers, with Ctrl-C held back until it is stored; every later run follows
that order (``/me/order/{id}``) instead of ordering. The cart is deleted only when no checkout
happened (declined, failed before checkout, interrupted). A checkout that got no answer is
recorded as ``unconfirmed``: the tool then never orders again until the operator says which
order it was. Terraform's OVH provider ties a VPS to its order id the same way.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import ovh.exceptions

from relay_deploy.config import UNCONFIRMED_ORDER
from relay_deploy.ovh_api import OvhApi, outcome_unknown
from relay_deploy.ovh_vps import OrderFailed

PENDING = {"checking", "delivering", "notPaid", "unknown", "documentsRequested"}
GONE = {"cancelled", "cancelling"}
DATACENTER, OS, MONITORING = "vps_datacenter", "vps_os", "vps_install_rtm"


@dataclass
class Choice:
    label: str
    value: str
    note: str = ""  # said to the operator when OVH gave no allowed values


@dataclass
class Catalogue:
    """What OVH's public VPS catalogue offers this subsidiary, per plan."""

    plans: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # plan -> name -> values

    def problems(self, plan: str, datacenter: str, os_name: str) -> list[str]:
        """Why ordering ``plan`` in ``datacenter`` with ``os_name`` would fail ([] if fine)."""
        if plan not in self.plans:
            return [f"vps_plan: {plan!r} is not in OVH's VPS catalogue for your account; plans: "
                    f"{', '.join(sorted(self.plans)) or '(none)'}"]
        out = []
        for key, label, wanted in (("vps_datacenter", DATACENTER, datacenter),
                                   ("vps_os", OS, os_name)):
            values = self.plans[plan].get(label, [])
            if not wanted:
                out.append(f"{key}: empty; set it to one of: {', '.join(values) or '(none)'}")
            elif values and match(values, wanted) is None:
                out.append(f"{key}: {wanted!r} is not offered for {plan}; set it to one of: "
                           f"{', '.join(values)}")
        return out


def match(allowed: list[str], wanted: str) -> str | None:
    """The allowed value the operator meant: the same ignoring case, spaces, dots and dashes,
    or whose last dash-separated part it is (``SBG`` is ``EU-WEST-SBG``)."""
    def norm(text: str) -> str:
        return "".join(c for c in text.lower() if c.isalnum())

    for value in allowed:
        if norm(value) == norm(wanted):
            return value
    for value in allowed:
        if norm(value.rsplit("-", 1)[-1]) == norm(wanted):
            return value
    return None


@contextlib.contextmanager
def _interrupts_held() -> Iterator[None]:
    """Hold Ctrl-C back until the block (checkout and storing its order id) is done."""
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


class VpsOrders:
    def __init__(self, api: OvhApi) -> None:
        self.api = api
        self._subsidiary = ""

    def subsidiary(self) -> str:
        if not self._subsidiary:
            me: dict[str, Any] = self.api.get("/me")
            self._subsidiary = str(me.get("ovhSubsidiary") or "US")
        return self._subsidiary

    def catalogue(self) -> Catalogue:
        raw: dict[str, Any] = self.api.get("/order/catalog/public/vps",
                                           query={"ovhSubsidiary": self.subsidiary()})
        cat = Catalogue()
        for plan in raw.get("plans") or []:
            confs = {str(c.get("name")): [str(v) for v in c.get("values") or []]
                     for c in plan.get("configurations") or []}
            cat.plans[str(plan.get("planCode"))] = confs
        return cat

    def configure(self, required: list[dict[str, Any]], *, datacenter: str, os_name: str,
                  extra: dict[str, str], catalogue: dict[str, list[str]]) -> list[Choice]:
        """A value for every configuration the cart item needs: the operator's datacentre and
        OS, no real-time monitoring agent, ``vps_order_configuration`` for anything else;
        checked against OVH's allowed values (or the catalogue's when the cart gives none)."""
        choices = []
        for conf in required:
            label = str(conf.get("label"))
            allowed = [str(v) for v in conf.get("allowedValues") or []]
            source = "the cart's allowed values"
            if not allowed and catalogue.get(label):
                allowed, source = catalogue[label], "the catalogue"
            wanted = extra.get(label) or {DATACENTER: datacenter, OS: os_name,
                                          MONITORING: "no"}.get(label, "")
            if not wanted:
                if not conf.get("required"):
                    continue
                if len(allowed) == 1:
                    wanted = allowed[0]
                else:
                    raise OrderFailed(
                        f"the order needs {label!r} (allowed: {', '.join(allowed) or 'not given'}"
                        f"); set it in the config: vps_order_configuration: {{{label}: ...}}")
            if not allowed:
                choices.append(Choice(label, wanted, f"OVH gives no allowed values for {label}; "
                                                     f"sending {wanted!r} as configured"))
                continue
            value = match(allowed, wanted)
            if value is None:
                key = {DATACENTER: "vps_datacenter", OS: "vps_os"}.get(
                    label, f"vps_order_configuration.{label}")
                raise OrderFailed(f"{key}: {wanted!r} is not offered ({source}: "
                                  f"{', '.join(allowed)})")
            choices.append(Choice(label, value))
        return choices

    def place(self, *, catalogue: Catalogue, plan: str, datacenter: str, os_name: str,
              extra: dict[str, str], confirm: Callable[[str], bool],
              on_order: Callable[[str], None], say: Callable[[str], None]) -> int | None:
        """Order one VPS; returns the order id, or None when not confirmed (cart deleted)."""
        problems = catalogue.problems(plan, datacenter, os_name)
        if problems:
            raise OrderFailed("; ".join(problems))
        cart: dict[str, Any] = self.api.post("/order/cart", {
            "ovhSubsidiary": self.subsidiary(), "description": "metadata-relay deploy"})
        cart_id = str(cart["cartId"])
        checked_out = False
        try:
            item: dict[str, Any] = self.api.post("/order/cart/{cartId}/vps", {
                "planCode": plan, "duration": "P1M", "pricingMode": "default", "quantity": 1},
                cartId=cart_id)
            item_id = item["itemId"]
            required = self.api.get("/order/cart/{cartId}/item/{itemId}/requiredConfiguration",
                                    cartId=cart_id, itemId=item_id)
            choices = self.configure(required, datacenter=datacenter, os_name=os_name,
                                     extra=extra, catalogue=catalogue.plans[plan])
            for choice in choices:
                if choice.note:
                    say(choice.note)
                self.api.post("/order/cart/{cartId}/item/{itemId}/configuration",
                              {"label": choice.label, "value": choice.value},
                              cartId=cart_id, itemId=item_id)
            self.api.post("/order/cart/{cartId}/assign", cartId=cart_id)
            preview: dict[str, Any] = self.api.get("/order/cart/{cartId}/checkout",
                                                   cartId=cart_id)
            price = ((preview.get("prices") or {}).get("withTax") or {}).get("text", "?")
            shown = ", ".join(c.value for c in choices if c.label in (DATACENTER, OS))
            if not confirm(f"order OVH VPS {plan} ({shown}) for {price} per month"):
                return None
            with _interrupts_held():
                try:
                    order: dict[str, Any] = self.api.post(
                        "/order/cart/{cartId}/checkout",
                        {"autoPayWithPreferredPaymentMethod": True,
                         "waiveRetractationPeriod": False}, cartId=cart_id)
                except (ovh.exceptions.APIError, ovh.exceptions.HTTPError) as exc:
                    if not outcome_unknown(exc):
                        raise
                    checked_out = True
                    on_order(UNCONFIRMED_ORDER)
                    raise OrderFailed(
                        f"the checkout got no clear answer ({exc}); it may have placed an order. "
                        "Look in the OVHcloud manager (Billing, Orders): set vps_order_id in the "
                        "config to that order's number, or remove the vps_order_id line if "
                        "there is none. Until then the tool orders nothing") from exc
                checked_out = True
                order_id = order.get("orderId")
                if not isinstance(order_id, int):
                    on_order(UNCONFIRMED_ORDER)
                    raise OrderFailed("the checkout answered without an order number; look in "
                                      "the OVHcloud manager and set vps_order_id in the config")
                on_order(str(order_id))
            return order_id
        finally:
            if not checked_out:
                with contextlib.suppress(ovh.exceptions.APIError, ovh.exceptions.HTTPError):
                    self.api.call("DELETE", "/order/cart/{cartId}", cartId=cart_id)

    def status(self, order_id: int) -> str:
        return str(self.api.get("/me/order/{orderId}/status", orderId=order_id))

    def delivered_name(self, order_id: int, vps_names: set[str]) -> str | None:
        """The service name of the VPS ``order_id`` delivered, once it is in the account.

        A detail's ``domain`` is ``*`` for VPS orders on some endpoints; the delivery
        operations' ``resource.name`` carries it there. Only a name that is one of the
        account's VPSes counts (the order's other lines name other resources).
        """
        for detail_id in self.api.get("/me/order/{orderId}/details", orderId=order_id):
            detail: dict[str, Any] = self.api.get("/me/order/{orderId}/details/{orderDetailId}",
                                                  orderId=order_id, orderDetailId=detail_id)
            candidates = [str(detail.get("domain") or "")]
            try:
                operations = self.api.get(
                    "/me/order/{orderId}/details/{orderDetailId}/operations",
                    orderId=order_id, orderDetailId=detail_id)
            except ovh.exceptions.ResourceNotFoundError:
                operations = []
            for op_id in operations:
                op: dict[str, Any] = self.api.get(
                    "/me/order/{orderId}/details/{orderDetailId}/operations/{id}",
                    orderId=order_id, orderDetailId=detail_id, id=op_id)
                candidates.append(str((op.get("resource") or {}).get("name") or ""))
            for name in candidates:
                if name in vps_names:
                    return name
        return None
