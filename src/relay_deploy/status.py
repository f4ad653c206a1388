"""``--status``: one table of VPS, node, platform components, certificates, DNS, health, TURN
(over UDP and TLS), and the iroh relay when deployed.

Read-only; every row is gathered independently so one unreachable piece never hides the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from relay_deploy import kubeconfig as kcfg
from relay_deploy.config import DeployConfig
from relay_deploy.context import manifests
from relay_deploy.kube import Cluster, condition_true, deployment_ready
from relay_deploy.ovh_api import OvhCredentials
from relay_deploy.ovh_vps import OvhVps
from relay_deploy.phases import (
    APP_DEPLOYMENT,
    APP_NAMESPACE,
    ISSUER_KINDS,
    check_dns,
    check_exposure,
    check_health,
    check_stun,
    hosts,
    optional_checks,
    platform_workloads,
    rollout_hint,
)

Row = tuple[str, bool | None, str]  # (what, ok / unknown, detail)


def _safe(rows: list[Row], what: str, fn: Callable[[], list[Row]]) -> None:
    try:
        rows.extend(fn())
    except Exception as exc:  # status must always print a table
        rows.append((what, False, f"{type(exc).__name__}: {exc}"[:200]))


def _bind(check: Callable[..., tuple[bool, str]], *args: Any) -> Callable[[], tuple[bool, str]]:
    return lambda: check(*args)


def _row(what: str, check: Callable[[], tuple[bool, str]]) -> Callable[[], list[Row]]:
    def row() -> list[Row]:
        ok, detail = check()
        return [(what, ok, detail)]

    return row


def gather(cfg: DeployConfig, ovh: OvhCredentials | None) -> list[Row]:
    rows: list[Row] = []
    ip = cfg.vps_ip

    def vps_rows() -> list[Row]:
        nonlocal ip
        if ovh is None:
            return [("VPS", None, f"{cfg.vps_name or '?'} ({ip or 'no IP'}); "
                     "OVH credentials not found, not asked")]
        api = OvhVps(ovh.api())
        vps = api.get(cfg.vps_name) if cfg.vps_name else api.find_named(cfg.vps_display_name)
        if vps is None:
            return [("VPS", False, "none found; run `./infra/deploy --phase vps`")]
        ip = ip or vps.ip
        return [("VPS", vps.running, f"{vps.name} {vps.state} {vps.ip}")]

    _safe(rows, "VPS", vps_rows)
    cluster: Cluster | None = None
    path = kcfg.kubeconfig_path()
    if kcfg.has_context(path):
        try:
            cluster = Cluster.from_kubeconfig(path)
        except Exception as exc:
            rows.append(("Node", False, f"kubeconfig unusable: {exc}"))
    else:
        rows.append(("Node", None, f"no {kcfg.CONTEXT} context in {path}"))
        rows.append(("Platform (Traefik, cert-manager, external-dns, Argo CD)", None,
                     "cluster not reachable"))
        rows.append(("Certificate", None, "cluster not reachable"))
    if cluster is not None:
        c = cluster

        def node_rows() -> list[Row]:
            ready = c.nodes_ready()
            return [("Node", bool(ready), ", ".join(ready) + " Ready" if ready else "not Ready")]

        def platform_rows() -> list[Row]:
            out: list[Row] = []
            objs = manifests().platform_objects(
                domain=cfg.domain_name, acme_email=cfg.acme_email,
                relay_subdomain=cfg.relay_subdomain, argocd_subdomain=cfg.argocd_subdomain)
            issuers = [o for o in objs if o.get("kind") in ISSUER_KINDS]
            if not issuers and hasattr(manifests(), "cluster_issuers"):
                issuers = list(manifests().cluster_issuers(acme_email=cfg.acme_email))
            for kind, ns, name in platform_workloads(objs):
                ok = c.workload_ready(kind, ns, name)
                out.append((f"{ns}/{name}", ok, f"{kind} {'available' if ok else 'NOT available'}"))
            for obj in issuers:
                live = c.get_dict(obj)
                ready = live is not None and condition_true(live, "Ready")
                out.append((f"{obj['kind']} {obj['metadata']['name']}", ready,
                            "Ready" if ready else ("not Ready" if live else "absent")))
            return out

        def app_rows() -> list[Row]:
            dep = c.deployment(APP_NAMESPACE, APP_DEPLOYMENT)
            ready = dep is not None and deployment_ready(dep)
            out: list[Row] = [("metadata-relay", ready, "absent" if dep is None else
                               ("available" if ready else rollout_hint(c)))]
            certs: list[dict[str, Any]] = c.list_dicts("cert-manager.io/v1", "Certificate",
                                                      APP_NAMESPACE)
            if not certs:
                out.append(("Certificate", False, "none in namespace metadata-relay"))
            if cfg.iroh_relay_enabled:
                ns, name = manifests().IROH_NAMESPACE, manifests().IROH_DEPLOYMENT
                iroh = c.deployment(ns, name)
                up = iroh is not None and deployment_ready(iroh)
                out.append((name, up, "absent" if iroh is None else
                            ("available" if up else rollout_hint(c, ns, name))))
                certs += c.list_dicts("cert-manager.io/v1", "Certificate", ns)
            for cert in certs:
                ok = condition_true(cert, "Ready")
                after = (cert.get("status") or {}).get("notAfter", "")
                out.append((f"Certificate {cert['metadata']['name']}", ok,
                            ("Ready" if ok else "not Ready") + (f", until {after}" if after
                                                               else "")))
            return out

        _safe(rows, "Node", node_rows)
        _safe(rows, "Platform", platform_rows)
        _safe(rows, "metadata-relay", app_rows)
    if ip:
        checks = [(f"DNS {host}", _bind(check_dns, cfg, ip, host)) for host in hosts(cfg)]
        checks += [("TURN (STUN)", _bind(check_stun, cfg, ip)), *optional_checks(cfg, ip)]
        for what, check in checks:
            _safe(rows, what, _row(what, check))
        _safe(rows, "Exposure", lambda: [("Ports from outside", *check_exposure(cfg, ip))])
    else:
        rows.append(("DNS", None, "no VPS IP known"))
        rows.append(("TURN (STUN)", None, "no VPS IP known"))
        rows.append(("Ports from outside", None, "no VPS IP known"))
    _safe(rows, "Health", lambda: [("Health", *check_health(cfg))])
    return rows


def print_status(console: Console, rows: list[Row]) -> None:
    table = Table(title="metadata-relay status")
    table.add_column("Component")
    table.add_column("State")
    table.add_column("Detail", overflow="fold")
    for what, ok, detail in rows:
        state = "[green]ok[/green]" if ok else ("[yellow]?[/yellow]" if ok is None
                                                else "[red]FAIL[/red]")
        table.add_row(what, state, detail)
    console.print(table)
