"""The kubeconfig phase: SSH to the VPS (host key pinned), its host firewall, k3s, and the
``metadata-relay`` context in the operator's kubeconfig.

The firewall comes first, so the k3s API is never open to the world. A dry run never reads
the k3s admin kubeconfig over a connection whose host key is not pinned yet: it says which
key a real run would pin and plans the rest with what the operator's machine already has.
"""

from __future__ import annotations

import asyncio

from relay_deploy import firewall as fw
from relay_deploy import kubeconfig as kcfg
from relay_deploy.context import Context, manifests
from relay_deploy.report import PhaseFailed, waiting
from relay_deploy.ssh import SshTarget, VpsShell, connect


def phase_kubeconfig(ctx: Context) -> None:
    rep = ctx.report
    ip = ctx.vps_ip or ctx.cfg.vps_ip
    if ctx.vps_pending:
        rep.change("kubeconfig", "host firewall (nftables)", "install",
                   "the VPS does not exist yet")
        rep.change("kubeconfig", f"k3s {manifests().load_k3s_pin().version} on the new VPS",
                   "install", "the VPS does not exist yet")
        rep.change("kubeconfig", f"context {kcfg.CONTEXT} in {kcfg.kubeconfig_path()}", "write",
                   "the cluster does not exist yet")
        ctx.cluster_pending = True
        return
    if not ip:
        raise PhaseFailed("vps_ip is empty; run `./infra/deploy --phase vps` first")
    ctx.vps_ip = ip
    asyncio.run(_kubeconfig(ctx, ip))
    if ctx.cluster_pending:
        return
    cluster = ctx.cluster()
    if cluster is None:
        return
    ready = cluster.nodes_ready() if ctx.dry_run else ctx.wait(
        "waiting for the k3s node to be Ready", cluster.nodes_ready)
    if not ready and not ctx.dry_run:
        raise PhaseFailed(f"the k3s node is not Ready; see `ssh {ctx.cfg.ssh_user}@{ip} "
                          f"sudo journalctl -u k3s`")
    ctx.say(f"node Ready: {', '.join(ready) or 'not yet'}")


async def _kubeconfig(ctx: Context, ip: str) -> None:
    cfg, rep = ctx.cfg, ctx.report
    k3s_version = manifests().load_k3s_pin().version
    target = SshTarget(ip, cfg.ssh_port, cfg.ssh_user, cfg.private_key_file,
                       cfg.known_hosts_path)
    with waiting(ctx.console, f"connecting to {cfg.ssh_user}@{ip}:{cfg.ssh_port}"):
        shell, new_key = await connect(target, store_new_key=not ctx.dry_run,
                                       within=ctx.adv.ssh_connect_timeout_seconds,
                                       retry_interval=max(ctx.adv.poll_seconds, 0.1))
    trusted = True
    try:
        if new_key is not None:
            rep.change("kubeconfig", f"host key of {ip}", "pin",
                       f"first contact: {new_key.get_algorithm()} "
                       f"{new_key.get_fingerprint()}; stored in {cfg.known_hosts_path}")
            trusted = not ctx.dry_run
        else:
            rep.found("kubeconfig", f"host key of {ip}", "matches the pinned key")
        await _firewall(ctx, shell)
        if await shell.k3s_installed():
            rep.found("kubeconfig", "k3s", "already installed")
        else:
            rep.change("kubeconfig", f"k3s {k3s_version}", "install",
                       "/etc/rancher/k3s/k3s.yaml absent on the VPS")
            if ctx.dry_run:
                rep.change("kubeconfig", f"context {kcfg.CONTEXT}", "write",
                           "k3s would be installed first")
                ctx.cluster_pending = True
                return
            with waiting(ctx.console, f"installing k3s {k3s_version} (a few minutes)"):
                await shell.install_k3s(ip, k3s_version)
        if not trusted:
            _plan_without_reading(ctx)
            return
        text = await shell.read_kubeconfig()
    finally:
        await shell.close()
    ours = kcfg.rewrite_k3s(text, ip)
    path = kcfg.kubeconfig_path()
    existing = kcfg.read_existing(path)
    new = kcfg.merged(existing, ours)
    if existing == new:
        rep.found("kubeconfig", f"context {kcfg.CONTEXT} in {path}", "up to date")
    else:
        why = "not there yet" if not kcfg.has_context(path) else "server or credentials changed"
        rep.change("kubeconfig", f"context {kcfg.CONTEXT} in {path}",
                   "write", why + " (other contexts kept)")
        if not ctx.dry_run:
            kcfg.write(path, new)
    ctx.kube_doc = new


def _plan_without_reading(ctx: Context) -> None:
    """Dry run, host key not pinned: the k3s admin credentials stay on the VPS."""
    path = kcfg.kubeconfig_path()
    ctx.say("dry run: the host key is not pinned yet, so the k3s kubeconfig (admin "
            "credentials) is not read over this connection")
    if kcfg.has_context(path):
        ctx.report.found("kubeconfig", f"context {kcfg.CONTEXT} in {path}",
                         "planning with it (a real run re-reads it from the VPS)")
        return
    ctx.report.change("kubeconfig", f"context {kcfg.CONTEXT} in {path}", "write",
                      "read from the VPS once its host key is pinned (a real run)")
    ctx.cluster_pending = True


async def _firewall(ctx: Context, shell: VpsShell) -> None:
    """The host firewall as :mod:`relay_deploy.firewall` renders it, installed and loaded."""
    cfg, rep = ctx.cfg, ctx.report
    ports = manifests().relay_ports()
    iroh = manifests().iroh_relay().quic_port if cfg.iroh_relay_enabled else None
    rules = fw.inbound_rules(ssh_port=cfg.ssh_port, turn_port=ports.turn,
                             relay_min=ports.relay_min, relay_max=ports.relay_max,
                             iroh_quic_port=iroh)
    operator = await shell.operator_address()
    text, unit = fw.ruleset(rules, operator), fw.unit()
    state = await shell.firewall_state()
    what = "host firewall (nftables)"
    open_ports = ", ".join(f"{r.ports}/{r.protocol}" for r in rules if not r.only_operator)
    if state.rules == text and state.unit == unit and state.enabled and state.loaded:
        rep.found("kubeconfig", what, f"open: {open_ports}; k3s API only from {operator}")
        return
    if state.rules is None:
        why = f"none yet: open only {open_ports}, k3s API only from {operator}"
    elif state.rules != text and operator not in state.rules:
        why = f"k3s API now from your address {operator}"
    elif state.rules != text or state.unit != unit:
        why = f"rules differ from the declared ones (open: {open_ports})"
    else:
        why = "not " + ("loaded" if state.enabled else "enabled at boot")
    rep.change("kubeconfig", what, "install" if state.rules is None else "update", why)
    if not ctx.dry_run:
        with waiting(ctx.console, "installing the host firewall"):
            await shell.install_firewall(text, unit)
