"""Every OVH API call the deploy tool makes, and the token rights they need: one list.

:class:`relay_deploy.ovh_api.OvhApi` refuses any call not declared here, and
:func:`access_rules` derives the consumer key's rules from the same list (each ``{param}``
becomes ``*``), so the token ``./infra/deploy ovh-token`` asks for grants exactly the calls
the tool makes. OVH matches a rule's path as a glob: ``/vps/*`` covers ``/vps/x`` and
``/vps/x/ips`` but not ``/vps`` itself, hence one rule per call.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PARAM = re.compile(r"\{[A-Za-z]+\}")


@dataclass(frozen=True)
class Call:
    method: str
    template: str  # e.g. /vps/{serviceName}/ips
    why: str

    @property
    def rule_path(self) -> str:
        return _PARAM.sub("*", self.template)


CALLS: tuple[Call, ...] = (
    Call("GET", "/me", "your OVH subsidiary (the cart and catalogue are per subsidiary)"),
    Call("GET", "/vps", "list your VPSes to find the relay's"),
    Call("GET", "/vps/{serviceName}", "a VPS's state, display name, model and zone"),
    Call("PUT", "/vps/{serviceName}", "name a newly delivered VPS (displayName)"),
    Call("GET", "/vps/{serviceName}/ips", "a VPS's IPv4 address"),
    Call("GET", "/vps/{serviceName}/tasks", "OVH's running tasks on a VPS (waited for)"),
    Call("GET", "/vps/{serviceName}/tasks/{id}", "the rebuild task's progress"),
    Call("GET", "/vps/{serviceName}/images/available", "images a VPS can be rebuilt with"),
    Call("GET", "/vps/{serviceName}/images/available/{id}", "an image's name"),
    Call("POST", "/vps/{serviceName}/rebuild",
         "rebuild the VPS from this deployment's order with your SSH key (erases it)"),
    Call("GET", "/order/catalog/public/vps", "check plan, datacentre and OS before ordering"),
    Call("POST", "/order/cart", "open a cart to order the VPS"),
    Call("POST", "/order/cart/{cartId}/vps", "put the VPS plan in the cart"),
    Call("GET", "/order/cart/{cartId}/item/{itemId}/requiredConfiguration",
         "what the plan needs configured (datacentre, OS, ...)"),
    Call("POST", "/order/cart/{cartId}/item/{itemId}/configuration",
         "configure the VPS (datacentre, OS, monitoring)"),
    Call("POST", "/order/cart/{cartId}/assign", "assign the cart to your account"),
    Call("GET", "/order/cart/{cartId}/checkout", "the price, shown before you confirm"),
    Call("POST", "/order/cart/{cartId}/checkout", "place the order (after your confirmation)"),
    Call("DELETE", "/order/cart/{cartId}", "delete the cart when no order was placed"),
    Call("GET", "/me/order/{orderId}/status", "follow this deployment's order"),
    Call("GET", "/me/order/{orderId}/details", "find the VPS the order delivered"),
    Call("GET", "/me/order/{orderId}/details/{orderDetailId}", "find the delivered VPS"),
    Call("GET", "/me/order/{orderId}/details/{orderDetailId}/operations",
         "find the delivered VPS"),
    Call("GET", "/me/order/{orderId}/details/{orderDetailId}/operations/{id}",
         "find the delivered VPS (its service name)"),
)

_BY_KEY = {(c.method, c.template): c for c in CALLS}


def declared(method: str, template: str) -> Call:
    """The declared call, or ValueError: the tool must not call OVH outside :data:`CALLS`."""
    call = _BY_KEY.get((method, template))
    if call is None:
        raise ValueError(f"{method} {template} is not a declared OVH call "
                         f"(relay_deploy.ovh_rights.CALLS)")
    return call


def access_rules() -> list[dict[str, str]]:
    """The consumer key's access rules: one per declared call, in python-ovh's shape."""
    return [{"method": c.method, "path": c.rule_path} for c in CALLS]


def rules_text() -> str:
    """The rules as the README and infra/ovh.conf.example list them."""
    return "\n".join(f"{c.method} {c.rule_path}" for c in CALLS)
