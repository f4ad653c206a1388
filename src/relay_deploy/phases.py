"""The five phases: vps, kubeconfig, kubernetes, app, verify.

Each phase reports what it found, what it changed (or, in a dry run, would change) and why;
on a second run every step is "found". A dry run makes only read calls: GETs to OVH, GET and
``dryRun=All`` to Kubernetes, read-only commands over SSH, no local file writes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections.abc import Callable
from typing import Any

from lightkube import ApiError
from lightkube.config.kubeconfig import KubeConfig
from rich.console import Console

from relay_deploy import kubeconfig as kcfg
from relay_deploy import probes
from relay_deploy.config import Advanced, DeployConfig, generate_turn_secret, update_config_file
from relay_deploy.kube import Cluster, condition_true, describe
from relay_deploy.ovh_api import OvhCredentials, OvhVps, Vps
from relay_deploy.report import PhaseFailed, Report, hide, poll_until, waiting
from relay_deploy.ssh import SshTarget, connect

PURPOSE = {
    "vps": "find or order the OVHcloud VPS",
    "kubeconfig": "k3s on the VPS and the metadata-relay kubectl context",
    "kubernetes": "Traefik, cert-manager, external-dns, Argo CD, ClusterIssuers",
    "app": "the relay's Secret and manifests (or its Argo CD Application)",
    "verify": "rollout, https health, DNS, STUN",
}
APP_NAMESPACE = "metadata-relay"
APP_DEPLOYMENT = "metadata-relay"
ISSUER_KINDS = {"ClusterIssuer", "Issuer"}


def manifests() -> Any:
    """The manifests helper's module (kept behind a function: it is another branch's file)."""
    try:
        from relay_deploy import platform  # type: ignore[attr-defined,unused-ignore]
    except ImportError as exc:  # pragma: no cover - only before the manifests branch lands
        raise PhaseFailed("src/relay_deploy/platform.py is missing; the manifests are not "
                          "in this checkout") from exc
    return platform


@dataclasses.dataclass
class Context:
    cfg: DeployConfig
    report: Report
    console: Console
    dry_run: bool
    confirm: Callable[[str], bool]
    ovh: OvhCredentials | None = None
    vps_ip: str = ""
    vps_pending: bool = False  # dry run: the VPS would be ordered, so nothing past it exists
    cluster_pending: bool = False  # dry run: k3s would be installed, no API to ask yet
    kube_doc: dict[str, Any] | None = None  # dry run: the kubeconfig we would have written
    _cluster: Cluster | None = None

    @property
    def adv(self) -> Advanced:
        return self.cfg.advanced

    def save(self, **updates: str) -> None:
        """Record values in the config file (never in a dry run) and in memory."""
        if not self.dry_run:
            update_config_file(self.cfg.path, updates)
        self.cfg = self.cfg.updated(**updates)

    def cluster(self) -> Cluster | None:
        """The cluster API, or None in a dry run where it would only exist after this run."""
        if self._cluster is not None:
            return self._cluster
        if self.cluster_pending or self.vps_pending:
            return None
        if self.kube_doc is not None:
            conf = KubeConfig.from_dict(self.kube_doc).get(context_name=kcfg.CONTEXT)
            if conf is not None:
                from lightkube import Client

                self._cluster = Cluster(Client(config=conf, field_manager="relay-deploy",
                                               trust_env=False))
                return self._cluster
        path = kcfg.kubeconfig_path()
        if not kcfg.has_context(path):
            if self.dry_run:
                self.cluster_pending = True
                return None
            raise PhaseFailed(f"no {kcfg.CONTEXT} context in {path}; run "
                              f"`./infra/deploy --phase kubeconfig` first")
        self._cluster = Cluster.from_kubeconfig(path)
        return self._cluster

    def wait(self, what: str, check: Callable[[], Any]) -> Any:
        return poll_until(self.console, what, check, timeout=self.adv.wait_timeout_seconds,
                          interval=self.adv.poll_seconds)


# ---- vps ------------------------------------------------------------------------------------


def phase_vps(ctx: Context) -> None:
    cfg, rep = ctx.cfg, ctx.report
    if cfg.vps_ip and not cfg.vps_name:
        rep.found("vps", cfg.vps_ip, "vps_ip is set without vps_name: a server you manage "
                  "yourself; OVH is not asked and nothing is ordered")
        ctx.vps_ip = cfg.vps_ip
        return
    if ctx.ovh is None:
        raise PhaseFailed("OVH credentials not loaded")
    api = OvhVps(ctx.ovh.client())
    if cfg.vps_name:
        vps = api.get(cfg.vps_name)
        if vps is not None and vps.running and vps.ip:
            _record_vps(ctx, vps, f"configured VPS {vps.name} is running")
            return
        if vps is not None:
            raise PhaseFailed(f"configured VPS {vps.name} is {vps.state or 'not running'}; "
                              f"start it in the OVHcloud manager, then run again")
        ctx.console.print(f"  configured VPS {cfg.vps_name} is not in this account; searching")
    found = api.find_named(cfg.vps_display_name)
    if found is not None:
        _record_vps(ctx, found, f"running VPS named {found.display_name!r} found")
        return
    what = f"{cfg.vps_plan} VPS in {cfg.vps_datacenter} with {cfg.vps_os}"
    why = f"no running VPS named {cfg.vps_display_name!r} in this account (costs money)"
    rep.change("vps", what, "order", why)
    if ctx.dry_run:
        ctx.vps_pending = True
        return

    def wait_for(check: Callable[[], Vps | None]) -> Vps | None:
        return poll_until(ctx.console, "waiting for OVHcloud to deliver the VPS", check,
                          timeout=ctx.adv.vps_order_timeout_seconds,
                          interval=ctx.adv.vps_poll_seconds)

    vps = api.order(plan=cfg.vps_plan, datacenter=cfg.vps_datacenter, os_name=cfg.vps_os,
                    display_name=cfg.vps_display_name, confirm=ctx.confirm, wait=wait_for,
                    public_key=cfg.public_key_file.read_text().strip())
    if vps is None:
        raise PhaseFailed("VPS order not confirmed: nothing was ordered (cart deleted); "
                          "answer 'y' or pass --yes to order")
    _record_vps(ctx, vps, "ordered, delivered, rebuilt with your SSH key")


def _record_vps(ctx: Context, vps: Vps, why: str) -> None:
    ctx.vps_ip = vps.ip
    if ctx.cfg.vps_name == vps.name and ctx.cfg.vps_ip == vps.ip:
        ctx.report.found("vps", f"{vps.name} ({vps.ip})", why)
        return
    ctx.report.change("vps", f"{ctx.cfg.path.name}: vps_name={vps.name} vps_ip={vps.ip}",
                      "record", why)
    ctx.save(vps_name=vps.name, vps_ip=vps.ip)


# ---- kubeconfig -----------------------------------------------------------------------------


def phase_kubeconfig(ctx: Context) -> None:
    rep = ctx.report
    ip = ctx.vps_ip or ctx.cfg.vps_ip
    if ctx.vps_pending:
        rep.change("kubeconfig", f"k3s {manifests().load_k3s_pin().version} on the new VPS",
                   "install",
                   "the VPS does not exist yet")
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
    assert cluster is not None
    ready = cluster.nodes_ready() if ctx.dry_run else ctx.wait(
        "waiting for the k3s node to be Ready", cluster.nodes_ready)
    if not ready and not ctx.dry_run:
        raise PhaseFailed("the k3s node is not Ready; see `ssh root@VPS journalctl -u k3s`")
    ctx.console.print(f"  node Ready: {', '.join(ready) or 'not yet'}")


async def _kubeconfig(ctx: Context, ip: str) -> None:
    cfg, rep = ctx.cfg, ctx.report
    k3s_version = manifests().load_k3s_pin().version
    target = SshTarget(ip, cfg.ssh_port, cfg.ssh_user, cfg.private_key_file,
                       cfg.known_hosts_path)
    with waiting(ctx.console, f"connecting to {cfg.ssh_user}@{ip}:{cfg.ssh_port}"):
        shell, newly = await connect(target, store_new_key=not ctx.dry_run,
                                     within=ctx.adv.ssh_connect_timeout_seconds,
                                     retry_interval=max(ctx.adv.poll_seconds, 0.1))
    try:
        if newly:
            rep.change("kubeconfig", f"host key of {ip}", "pin",
                       f"first contact; stored in {cfg.known_hosts_path}")
        else:
            rep.found("kubeconfig", f"host key of {ip}", "matches the pinned key")
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


# ---- kubernetes / app: server-side apply ----------------------------------------------------


def apply_all(ctx: Context, phase: str, objs: list[dict[str, Any]]) -> None:
    """Plan and apply ``objs`` in order (Namespaces first is the caller's order)."""
    cluster = ctx.cluster()
    for obj in objs:
        name = describe(obj)
        if cluster is None:
            ctx.report.change(phase, name, "create", "the cluster does not exist yet")
            continue
        plan = cluster.plan_apply(obj)
        if plan.action == "found":
            ctx.report.found(phase, name, plan.why)
            continue
        why = plan.why
        try:
            cluster.apply(plan.obj, dry_run=ctx.dry_run)
        except ApiError as exc:
            if ctx.dry_run and exc.status.code == 404:
                why += " (no server dry-run yet: this run creates its namespace or CRD first)"
            else:
                raise PhaseFailed(f"{name}: the API refused it: {exc.status.message}") from exc
        ctx.report.change(phase, name, plan.action, why)


def _ordered(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rank = {"Namespace": 0, "Secret": 1, "ConfigMap": 1}
    return sorted(objs, key=lambda o: rank.get(str(o.get("kind")), 2))


def phase_kubernetes(ctx: Context) -> None:
    cfg = ctx.cfg
    m = manifests()
    objs: list[dict[str, Any]] = list(m.platform_objects(
        domain=cfg.domain_name, acme_email=cfg.acme_email,
        relay_subdomain=cfg.relay_subdomain, argocd_subdomain=cfg.argocd_subdomain))
    issuers = [o for o in objs if o.get("kind") in ISSUER_KINDS]
    if not issuers and hasattr(m, "cluster_issuers"):
        issuers = list(m.cluster_issuers(acme_email=cfg.acme_email))
    rest = [o for o in objs if o.get("kind") not in ISSUER_KINDS]
    secret = m.cloudflare_secret(cfg.cloudflare_api_token)
    apply_all(ctx, "kubernetes", _ordered([*rest, secret]))
    cluster = ctx.cluster()
    if cluster is not None and not ctx.dry_run:
        for kind, ns, name in platform_workloads(rest):
            _wait_workload(ctx, cluster, kind, ns, name)
    apply_all(ctx, "kubernetes", issuers)
    if cluster is not None and not ctx.dry_run:
        for obj in issuers:
            _wait_condition(ctx, cluster, obj, "Ready")


def platform_workloads(objs: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(kind, namespace, name) of every workload the platform must bring up: the charts'
    workloads from charts.yaml, plus k3s's own Traefik when we configure it."""
    out: list[tuple[str, str, str]] = []
    for obj in objs:
        meta = obj.get("metadata") or {}
        if obj.get("kind") == "HelmChartConfig" and meta.get("name") == "traefik":
            out.append(("Deployment", str(meta.get("namespace", "kube-system")), "traefik"))
    return out + list(manifests().platform_workloads())


def _wait_workload(ctx: Context, cluster: Cluster, kind: str, ns: str, name: str) -> None:
    if ctx.wait(f"waiting for {kind} {ns}/{name} to be available",
                lambda: cluster.workload_ready(kind, ns, name)):
        ctx.console.print(f"  {kind} {ns}/{name}: available")
        return
    raise PhaseFailed(f"{kind} {ns}/{name} is not available after "
                      f"{ctx.adv.wait_timeout_seconds:.0f}s; see `kubectl --context "
                      f"{kcfg.CONTEXT} -n {ns} get pods` and the HelmChart's install job "
                      f"(`kubectl -n kube-system get jobs`)")


def _wait_condition(ctx: Context, cluster: Cluster, obj: dict[str, Any], cond: str) -> None:
    def ok() -> bool:
        live = cluster.get_dict(obj)
        return live is not None and condition_true(live, cond)

    if not ctx.wait(f"waiting for {describe(obj)} to be {cond}", ok):
        raise PhaseFailed(f"{describe(obj)} is not {cond}; see `kubectl --context "
                          f"{kcfg.CONTEXT} describe {obj.get('kind', '').lower()} "
                          f"{(obj.get('metadata') or {}).get('name')}`")
    ctx.console.print(f"  {describe(obj)}: {cond}")


def phase_app(ctx: Context) -> None:
    cfg = ctx.cfg
    m = manifests()
    if not cfg.turn_secret:
        ctx.report.change("app", f"turn_secret in {cfg.path.name}", "generate",
                          "empty in the config (kept there for the next runs)")
        secret = generate_turn_secret()
        hide(ctx.console, secret)
        ctx.save(turn_secret=secret)
        cfg = ctx.cfg
    image = None
    if cfg.image_tag:
        default = m.default_image()
        image = f"{default.new_name or default.name}:{cfg.image_tag}"
    app_objs: list[dict[str, Any]] = list(m.app_objects(
        domain=cfg.domain_name, image=image, relay_subdomain=cfg.relay_subdomain))
    namespaces = [o for o in app_objs if o.get("kind") == "Namespace"]
    secret = m.relay_secret(cfg.relay_secret_data())
    if cfg.gitops_repo_url:
        application = m.argocd_application(
            repo_url=cfg.gitops_repo_url, revision=cfg.gitops_revision,
            domain=cfg.domain_name, relay_subdomain=cfg.relay_subdomain, image=image)
        apply_all(ctx, "app", [*namespaces, secret, application])
    else:
        rest = [o for o in app_objs if o.get("kind") != "Namespace"]
        apply_all(ctx, "app", [*namespaces, secret, *_ordered(rest)])


# ---- verify ---------------------------------------------------------------------------------


def expected_version(cfg: DeployConfig) -> str | None:
    """The version /health must report: the deployed image tag, when it is a version."""
    tag = cfg.image_tag or str(manifests().default_image().new_tag or "")
    return tag.lstrip("v") if re.match(r"^v?\d+\.\d+", tag) else None


def phase_verify(ctx: Context) -> None:
    cfg, rep = ctx.cfg, ctx.report
    ip = ctx.vps_ip or cfg.vps_ip
    if ctx.dry_run:
        ctx.console.print("  (dry run) would check: rollout of deployment metadata-relay, "
                          f"{cfg.health_url}, DNS {cfg.relay_host}, STUN {ip or '<vps>'}:"
                          f"{cfg.advanced.stun_port}")
        return
    if not ip:
        raise PhaseFailed("vps_ip is empty; run `./infra/deploy --phase vps` first")
    cluster = ctx.cluster()
    assert cluster is not None

    def rolled_out() -> bool:
        from relay_deploy.kube import deployment_ready

        dep = cluster.deployment(APP_NAMESPACE, APP_DEPLOYMENT)
        return dep is not None and deployment_ready(dep)

    if ctx.wait("waiting for the relay rollout", rolled_out):
        rep.found("verify", "rollout", "deployment metadata-relay is available")
    else:
        rep.fail("verify", "rollout", "deployment metadata-relay is not available; see "
                 f"`kubectl --context {kcfg.CONTEXT} -n {APP_NAMESPACE} describe pods`")
    for name, check in (("health", lambda: check_health(cfg)),
                        ("DNS", lambda: check_dns(cfg, ip)),
                        ("STUN", lambda: check_stun(cfg, ip))):
        last: list[str] = []

        def attempt(check: Callable[[], tuple[bool, str]] = check, last: list[str] = last
                    ) -> bool:
            ok, detail = check()
            last[:] = [detail]
            return ok

        if ctx.wait(f"checking {name}", attempt):
            rep.found("verify", name, last[0])
        else:
            rep.fail("verify", name, last[0])
    if rep.failures:
        raise PhaseFailed(f"{len(rep.failures)} check(s) failed (hints above)")


def check_health(cfg: DeployConfig) -> tuple[bool, str]:
    url = cfg.health_url
    try:
        h = probes.get_health(url, verify_tls=cfg.advanced.health_verify_tls,
                              timeout=cfg.advanced.probe_timeout_seconds)
    except OSError as exc:
        return False, (f"{url} unreachable ({exc}); check DNS, the certificate (`kubectl get "
                       f"certificates -A`) and Traefik")
    if h.status != 200:
        return False, f"{url} answered {h.status}; see `kubectl -n {APP_NAMESPACE} logs deploy/"\
                      f"{APP_DEPLOYMENT}`"
    want = expected_version(cfg)
    if want and h.version != want:
        return False, (f"{url} reports version {h.version or '?'}, expected {want}; the "
                       f"rollout may still be in progress or image_tag is wrong")
    return True, f"{url} 200, version {h.version or '?'}"


def check_dns(cfg: DeployConfig, ip: str) -> tuple[bool, str]:
    adv = cfg.advanced
    try:
        addrs = probes.resolve_a(cfg.relay_host, adv.dns_resolver, adv.dns_port,
                                 timeout=adv.probe_timeout_seconds)
    except (OSError, ValueError) as exc:
        return False, f"DNS lookup of {cfg.relay_host} via {adv.dns_resolver} failed ({exc})"
    if ip in addrs:
        return True, f"{cfg.relay_host} resolves to {ip}"
    return False, (f"{cfg.relay_host} resolves to {', '.join(addrs) or 'nothing'}, not {ip}; "
                   f"see `kubectl -n external-dns logs deploy/external-dns` and the Cloudflare "
                   f"token's Zone:DNS:Edit permission")


def check_stun(cfg: DeployConfig, ip: str) -> tuple[bool, str]:
    host = cfg.advanced.probe_host or ip
    port = cfg.advanced.stun_port
    try:
        mapped = probes.stun_binding(host, port, timeout=cfg.advanced.probe_timeout_seconds)
    except (OSError, ValueError) as exc:
        return False, (f"no STUN answer from {host}:{port} ({exc or 'timeout'}); open "
                       f"{port}/udp in the VPS firewall and check TURN_ENABLED")
    return True, f"STUN Binding answered by {host}:{port} (mapped {mapped})"


RUNNERS: dict[str, Callable[[Context], None]] = {
    "vps": phase_vps, "kubeconfig": phase_kubeconfig, "kubernetes": phase_kubernetes,
    "app": phase_app, "verify": phase_verify,
}


def run_phases(ctx: Context, phases: list[str]) -> None:
    platform = manifests()
    for phase in phases:
        ctx.report.phase_header(phase, PURPOSE[phase])
        started = time.monotonic()
        try:
            RUNNERS[phase](ctx)
        except (platform.PlatformError, ValueError) as exc:
            raise PhaseFailed(f"{phase}: {exc}") from exc
        ctx.report.phase_footer(phase)
        ctx.console.print(f"  ({time.monotonic() - started:.1f}s)", style="dim")


def summary_lines(cfg: DeployConfig, ip: str) -> list[tuple[str, str]]:
    return [
        ("VPS", f"{cfg.vps_name} ({ip})"),
        ("Relay URL", f"https://{cfg.relay_host}"),
        ("TURN server", f"turn:{ip}:3478 (integrated)"),
        ("Argo CD", f"https://{cfg.argocd_host}  (user admin)"),
        ("Argo CD password", f"kubectl --context {kcfg.CONTEXT} -n argocd get secret "
                             "argocd-initial-admin-secret -o jsonpath='{.data.password}' "
                             "| base64 -d"),
        ("Health check", cfg.health_url),
    ]

