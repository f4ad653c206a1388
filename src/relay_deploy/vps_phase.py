"""The vps phase: this deployment's one VPS, ordered at most once, reachable over SSH.

In order: a server you manage yourself (``vps_ip`` without ``vps_name``); the configured VPS;
the VPS of this deployment's stored order (``vps_order_id``, followed until OVH delivers it);
a running VPS named for the relay; else a new order (after confirmation). A VPS from this
deployment's order is rebuilt with ``vps_os`` and the operator's SSH key once OVH's own tasks
on it are done, and counts as ready only when the rebuild task has finished and a login with
the configured key works; when a later run cannot log in it rebuilds again, after asking.
Any other VPS is never rebuilt.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

import ovh.exceptions

from relay_deploy.config import UNCONFIRMED_ORDER
from relay_deploy.context import Context
from relay_deploy.ovh_api import busy
from relay_deploy.ovh_order import GONE, VpsOrders
from relay_deploy.ovh_vps import TASK_FAILED, OvhVps, Vps
from relay_deploy.report import PhaseFailed, poll_until
from relay_deploy.ssh import SshTarget, forget_host_key, login_works

T = TypeVar("T")


def phase_vps(ctx: Context) -> None:
    cfg, rep = ctx.cfg, ctx.report
    if cfg.vps_ip and not cfg.vps_name and not cfg.vps_order_id:
        rep.found("vps", cfg.vps_ip, "vps_ip is set without vps_name: a server you manage "
                  "yourself; OVH is not asked and nothing is ordered")
        ctx.vps_ip = cfg.vps_ip
        return
    if ctx.ovh is None:
        raise PhaseFailed("OVH credentials not loaded")
    if cfg.vps_order_id == UNCONFIRMED_ORDER:
        raise PhaseFailed(
            "vps_order_id is 'unconfirmed': an earlier checkout got no answer and may have "
            "placed an order. Look in the OVHcloud manager (Billing, Orders): set vps_order_id "
            "to that order's number, or remove the line if there is none. Nothing is ordered "
            "until then")
    api = ctx.ovh.api()
    vpses, orders = OvhVps(api), VpsOrders(api)
    if cfg.vps_name:
        vps = vpses.get(cfg.vps_name)
        if vps is not None:
            if cfg.ordered_vps:
                _make_ready(ctx, vpses, vps.name)
                return
            if not (vps.running and vps.ip):
                raise PhaseFailed(f"configured VPS {vps.name} is {vps.state or 'not running'}; "
                                  f"start it in the OVHcloud manager, then run again")
            _record_vps(ctx, vps, f"configured VPS {vps.name} is running")
            return
        if cfg.ordered_vps:
            raise PhaseFailed(f"VPS {cfg.vps_name} (from order {cfg.vps_order_id}) is not in "
                              f"this account any more; to order a new one, remove vps_name, "
                              f"vps_ip and vps_order_id from {cfg.path.name}")
        ctx.say(f"configured VPS {cfg.vps_name} is not in this account; searching")
    if cfg.ordered_vps:
        _follow_order(ctx, vpses, orders, int(cfg.vps_order_id))
        return
    found = vpses.find_named(cfg.vps_display_name)
    if found is not None:
        _record_vps(ctx, found, f"running VPS named {found.display_name!r} found")
        return
    _order(ctx, vpses, orders)


def _order(ctx: Context, vpses: OvhVps, orders: VpsOrders) -> None:
    cfg, rep = ctx.cfg, ctx.report
    catalogue = orders.catalogue()
    problems = catalogue.problems(cfg.vps_plan, cfg.vps_datacenter, cfg.vps_os)
    if problems:
        raise PhaseFailed("cannot order: " + "; ".join(problems))
    rep.change("vps", f"{cfg.vps_plan} VPS in {cfg.vps_datacenter} with {cfg.vps_os}", "order",
               f"no running VPS named {cfg.vps_display_name!r} in this account (costs money; "
               f"plan, datacentre and OS checked against OVH's catalogue)")
    if ctx.dry_run:
        ctx.vps_pending = True
        return

    def stored(order_id: str) -> None:
        ctx.save(vps_order_id=order_id)

    order_id = orders.place(catalogue=catalogue, plan=cfg.vps_plan,
                            datacenter=cfg.vps_datacenter, os_name=cfg.vps_os,
                            extra=cfg.vps_order_configuration, on_order=stored, say=ctx.say,
                            confirm=lambda summary: ctx.confirm(summary, "Order it?"))
    if order_id is None:
        raise PhaseFailed("VPS order not confirmed: nothing was ordered (cart deleted); "
                          "answer 'y' or pass --yes to order")
    rep.change("vps", f"{cfg.path.name}: vps_order_id={order_id}", "record",
               "checkout done: every later run follows this order and never orders again")
    _follow_order(ctx, vpses, orders, order_id)


def _follow_order(ctx: Context, vpses: OvhVps, orders: VpsOrders, order_id: int) -> None:
    """Wait for OVH to deliver ``order_id``, then make its VPS ready."""
    last = [""]

    def delivered() -> str | None:
        status = orders.status(order_id)
        last[0] = status
        if status in GONE:
            raise PhaseFailed(f"OVH order {order_id} is {status}: nothing was delivered; to "
                              f"order again, remove vps_order_id from {ctx.cfg.path.name}")
        if status not in ("delivering", "delivered"):
            return None
        return orders.delivered_name(order_id, set(vpses.names()))

    if ctx.dry_run:
        name = delivered()
        if name is None:
            ctx.report.change("vps", f"the VPS of OVH order {order_id}", "wait for",
                              f"order status {last[0]!r}; a real run waits for delivery")
            ctx.vps_pending = True
            return
    else:
        name = ctx.wait_ovh(f"waiting for OVH to deliver order {order_id}", delivered,
                            ctx.adv.vps_order_timeout_seconds)
    if not name:
        hint = (" It is not paid: pay it in the OVHcloud manager (Billing, Orders)."
                if last[0] == "notPaid" else "")
        raise PhaseFailed(f"OVH order {order_id} is not delivered yet (status {last[0]!r}).{hint}"
                          f" Run again later: the tool follows order {order_id} and never "
                          f"orders another VPS")
    ctx.report.change("vps", f"{ctx.cfg.path.name}: vps_name={name}", "record",
                      f"delivered by OVH order {order_id}")
    ctx.save(vps_name=name)
    _make_ready(ctx, vpses, name)


def _make_ready(ctx: Context, vpses: OvhVps, name: str) -> None:
    """The ordered VPS running, OVH's tasks done, named, and accepting our SSH login. Its
    first rebuild needs no question (the order was confirmed, the VPS holds nothing yet);
    any later one is asked for."""
    try:
        vps = _settled(ctx, vpses, name)
    except _Pending:
        return
    if vps.display_name != ctx.cfg.vps_display_name:
        ctx.report.change("vps", f"display name of {name}", "set",
                          f"{ctx.cfg.vps_display_name!r} (is {vps.display_name!r})")
        if not ctx.dry_run:
            _retry_while_busy(ctx, name, lambda: vpses.set_display_name(
                name, ctx.cfg.vps_display_name))
    _ensure_login(ctx, vpses, vps, fresh=not ctx.cfg.vps_rebuild_task)
    _record_vps(ctx, vps, f"VPS of order {ctx.cfg.vps_order_id}; SSH login works")


def _settled(ctx: Context, vpses: OvhVps, name: str) -> Vps:
    """The VPS once it runs, has an IPv4 address and no OVH task is pending on it."""
    def ready() -> Vps | None:
        vps = vpses.get(name)
        if vps is None or not vps.running or not vps.ip:
            return None
        return None if vpses.active_tasks(name) else vps

    if ctx.dry_run:
        vps = ready()
        if vps is None:
            ctx.report.change("vps", f"VPS {name}", "wait for",
                              "OVH is still installing it or running tasks on it")
            ctx.vps_pending = True
            raise _Pending
        return vps
    settled: Vps | None = ctx.wait_ovh(f"waiting for OVH's tasks on {name} to finish", ready,
                                       ctx.adv.vps_task_timeout_seconds)
    if settled is None:
        raise PhaseFailed(f"VPS {name} is not running, or OVH still runs tasks on it, after "
                          f"{ctx.adv.vps_task_timeout_seconds:.0f}s; run again later")
    return settled


class _Pending(Exception):
    """Dry run: the VPS is not ready, so nothing past this point can be planned."""


def _retry_while_busy(ctx: Context, name: str, action: Callable[[], T]) -> T:
    """Run ``action``, retrying while OVH refuses it because its own tasks run on the VPS."""
    def attempt() -> tuple[T] | None:
        try:
            return (action(),)
        except ovh.exceptions.APIError as exc:
            if busy(exc):
                return None
            raise

    result: tuple[T] | None = ctx.wait_ovh(f"waiting for OVH's running tasks on {name}",
                                           attempt, ctx.adv.vps_task_timeout_seconds)
    if result is None:
        raise PhaseFailed(f"OVH kept refusing to act on {name} while its tasks run, for "
                          f"{ctx.adv.vps_task_timeout_seconds:.0f}s; run again later")
    return result[0]


def _target(ctx: Context, ip: str) -> SshTarget:
    cfg = ctx.cfg
    return SshTarget(ip, cfg.ssh_port, cfg.ssh_user, cfg.private_key_file, cfg.known_hosts_path)


def _login(ctx: Context, target: SshTarget, *, until_true: bool = False) -> bool | None:
    """Whether the configured key logs in; waits while the VPS does not answer (and, with
    ``until_true``, while it refuses: right after a rebuild the key may not be there yet)."""
    outcome: list[bool | None] = [None]

    def answered() -> bool:
        outcome[0] = asyncio.run(login_works(target,
                                             connect_within=ctx.adv.probe_timeout_seconds))
        return outcome[0] is True or (outcome[0] is False and not until_true)

    poll_until(ctx.console, f"logging in as {target.user}@{target.host}", answered,
               timeout=ctx.adv.ssh_connect_timeout_seconds,
               interval=max(ctx.adv.poll_seconds, 0.05))
    return outcome[0]


def _ensure_login(ctx: Context, vpses: OvhVps, vps: Vps, *, fresh: bool) -> None:
    cfg, rep = ctx.cfg, ctx.report
    target = _target(ctx, vps.ip)
    works = _login(ctx, target)
    if works:
        rep.found("vps", f"SSH login {cfg.ssh_user}@{vps.ip}", "works with your key")
        return
    if works is None:
        raise PhaseFailed(f"VPS {vps.name} ({vps.ip}) does not answer on SSH port "
                          f"{cfg.ssh_port}; check it in the OVHcloud manager (KVM console)")
    why = f"{cfg.ssh_user}@{vps.ip} does not accept the key {cfg.public_key_file}"
    if ctx.dry_run:
        rep.change("vps", f"VPS {vps.name}", "rebuild",
                   f"{why}: with {cfg.vps_os} and your SSH key (erases its disk)")
        return
    if not fresh and not ctx.confirm(
            f"rebuild VPS {vps.name} ({vps.ip}) with {cfg.vps_os} and your SSH key, because "
            f"{why}. A rebuild ERASES the VPS's disk", "Rebuild it?"):
        raise PhaseFailed(f"rebuild not confirmed; {why}. Answer 'y' (or pass --yes), or fix "
                          f"ssh_user / ssh_public_key_path")
    _rebuild(ctx, vpses, vps, target, why)


def _rebuild(ctx: Context, vpses: OvhVps, vps: Vps, target: SshTarget, why: str) -> None:
    cfg, rep = ctx.cfg, ctx.report
    image = vpses.image_id(vps.name, cfg.vps_os)
    public_key = cfg.public_key_file.read_text().strip()
    task = _retry_while_busy(ctx, vps.name, lambda: vpses.rebuild(vps.name, image, public_key))
    rep.change("vps", f"VPS {vps.name}", "rebuild", f"with {cfg.vps_os} and your SSH key: {why}")
    ctx.save(vps_rebuild_task=str(task))
    if forget_host_key(target):
        ctx.say(f"forgot the pinned host key of {vps.ip}: the rebuild gives the VPS a new one")

    def finished() -> bool:
        state = vpses.task_state(vps.name, task)
        if state in TASK_FAILED:
            raise PhaseFailed(f"OVH's rebuild task {task} on {vps.name} ended {state!r}; see the "
                              f"VPS in the OVHcloud manager, then run again")
        return state == "done"

    if not ctx.wait_ovh(f"rebuilding {vps.name} with {cfg.vps_os}", finished,
                        ctx.adv.vps_task_timeout_seconds):
        raise PhaseFailed(f"OVH's rebuild of {vps.name} has not finished after "
                          f"{ctx.adv.vps_task_timeout_seconds:.0f}s; run again later (the "
                          f"tool waits for it, and rebuilds only if the login still fails)")
    if not _login(ctx, target, until_true=True):
        raise PhaseFailed(f"VPS {vps.name} was rebuilt but {cfg.ssh_user}@{vps.ip} still does "
                          f"not accept your key; check ssh_user (OVH's Ubuntu images: ubuntu)")
    ctx.say(f"rebuilt: {cfg.ssh_user}@{vps.ip} accepts your key")


def _record_vps(ctx: Context, vps: Vps, why: str) -> None:
    ctx.vps_ip = vps.ip
    if ctx.cfg.vps_name == vps.name and ctx.cfg.vps_ip == vps.ip:
        ctx.report.found("vps", f"{vps.name} ({vps.ip})", why)
        return
    ctx.report.change("vps", f"{ctx.cfg.path.name}: vps_name={vps.name} vps_ip={vps.ip}",
                      "record", why)
    ctx.save(vps_name=vps.name, vps_ip=vps.ip)
