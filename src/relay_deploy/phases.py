"""The phases kubeconfig, kubernetes, app and verify, and the runner of all five (the vps
phase is :mod:`relay_deploy.vps_phase`).

Each phase reports what it found, what it changed (or, in a dry run, would change) and why;
on a second run every step is "found". A dry run makes only read calls: GETs to OVH, GET and
``dryRun=All`` to Kubernetes, read-only commands over SSH, HEAD/GET to the iroh relay image's
registry, no local file writes.
"""

from __future__ import annotations

import ipaddress
import json
import re
import ssl
import time
from collections.abc import Callable
from typing import Any

from lightkube import ApiError

from relay_deploy import firewall as fw
from relay_deploy import image_pin, probes, registry
from relay_deploy import kubeconfig as kcfg
from relay_deploy.config import DeployConfig, generate_turn_secret
from relay_deploy.context import Context, manifests
from relay_deploy.kube import Cluster, condition_true, describe
from relay_deploy.kubeconfig_phase import phase_kubeconfig
from relay_deploy.report import PhaseFailed, hide, waiting
from relay_deploy.vps_phase import phase_vps

PURPOSE = {
    "vps": "find or order the OVHcloud VPS",
    "kubeconfig": "k3s on the VPS and the metadata-relay kubectl context",
    "kubernetes": "Traefik, cert-manager, external-dns, Argo CD, ClusterIssuers",
    "app": "the relay's Secret and manifests (or its Argo CD Application), the iroh relay",
    "verify": "rollout, https health, DNS, STUN, TURN over TLS, the iroh relay",
}
APP_NAMESPACE = "metadata-relay"
APP_DEPLOYMENT = "metadata-relay"
ISSUER_KINDS = {"ClusterIssuer", "Issuer"}


# ---- kubeconfig -----------------------------------------------------------------------------


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
    iroh = _iroh_relay(ctx)  # first: a moved tag stops the phase before any change
    cfg, m = ctx.cfg, manifests()
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
    turn = cfg.turn_subdomain if cfg.turn_tls_enabled else None
    app_objs: list[dict[str, Any]] = list(m.app_objects(
        domain=cfg.domain_name, image=image, relay_subdomain=cfg.relay_subdomain,
        turn_subdomain=turn))
    namespaces = [o for o in app_objs if o.get("kind") == "Namespace"]
    secret = m.relay_secret(cfg.relay_secret_data())
    pulling: list[dict[str, Any]] = []
    if cfg.image_pull_token:  # a private GHCR package: pods pull with this secret
        pulling = [m.pull_secret(registry=m.image_registry(), username=cfg.image_pull_username,
                                 token=cfg.image_pull_token), m.pulling_service_account()]
    if cfg.gitops_repo_url:
        application = m.argocd_application(
            repo_url=cfg.gitops_repo_url, revision=cfg.gitops_revision,
            domain=cfg.domain_name, relay_subdomain=cfg.relay_subdomain, turn_subdomain=turn,
            image=image)
        apply_all(ctx, "app", [*namespaces, secret, *pulling, application, *iroh])
    else:
        rest = [o for o in app_objs if o.get("kind") != "Namespace"]
        apply_all(ctx, "app", [*namespaces, secret, *pulling, *_ordered(rest), *iroh])


def _iroh_relay(ctx: Context) -> list[dict[str, Any]]:
    """The iroh relay's objects (or its Argo CD Application) when the config enables it."""
    cfg, m = ctx.cfg, manifests()
    if not cfg.iroh_relay_enabled:
        return []
    digest = pin_iroh_relay(ctx)
    hosts = {"domain": cfg.domain_name, "iroh_subdomain": cfg.iroh_subdomain,
             "relay_subdomain": cfg.relay_subdomain, "digest": digest}
    if cfg.gitops_repo_url:
        return [m.iroh_relay_application(repo_url=cfg.gitops_repo_url,
                                         revision=cfg.gitops_revision, **hosts)]
    return _ordered(list(m.iroh_relay_objects(**hosts)))


def pin_iroh_relay(ctx: Context) -> str:
    """The digest the iroh relay is deployed with (relay_deploy.image_pin): reported, and
    recorded in the config on first use (not in a dry run)."""
    cfg, m = ctx.cfg, manifests()
    image = m.iroh_relay()
    where = registry.locate(image.name, cfg.advanced.image_registry_url)
    home = registry.locate(image.name).base_url  # the registry as operators know it
    label = "Docker Hub" if home == registry.DOCKER_HUB else home.removeprefix("https://")

    def lookup() -> registry.Resolved:
        with waiting(ctx.console, f"asking {label} for the digest of {image.name}:{image.tag}"):
            return registry.resolve(where, image.tag,
                                    send=registry.http_send(cfg.advanced.registry_timeout_seconds),
                                    backoff=max(cfg.advanced.poll_seconds, 0.05))

    sources = image_pin.Sources(
        name=image.name, tag=image.tag, operator=cfg.iroh_relay_digest,
        kustomization=image.digest, kustomization_file=f"{m.IROH_APP_PATH}/kustomization.yaml",
        recorded=cfg.iroh_relay_pinned_image, accept=ctx.accept_iroh_digest,
        config_file=cfg.path.name, registry=label)
    try:
        pin = image_pin.decide(sources, lookup)
    except image_pin.PinStop as exc:
        raise PhaseFailed(str(exc)) from None
    target = f"iroh relay image {image.name}:{image.tag}"
    if pin.action == "found":
        ctx.report.found("app", target, pin.why)
    else:
        ctx.report.change("app", target, pin.action, pin.why)
    if pin.record is not None:
        ctx.save(iroh_relay_pinned_image=pin.record)
    return pin.digest


# ---- verify ---------------------------------------------------------------------------------


def expected_version(cfg: DeployConfig) -> str | None:
    """The version /health must report: the deployed image tag, when it is a version."""
    tag = cfg.image_tag or str(manifests().default_image().new_tag or "")
    return tag.lstrip("v") if re.match(r"^v?\d+\.\d+", tag) else None


def phase_verify(ctx: Context) -> None:
    cfg, rep = ctx.cfg, ctx.report
    ip = ctx.vps_ip or cfg.vps_ip
    if ctx.dry_run:
        extra = "".join(f", {what}" for what, _ in optional_checks(cfg, ip or "<vps>"))
        ctx.console.print("  (dry run) would check: rollout of deployment metadata-relay, "
                          f"{cfg.health_url}, DNS {', '.join(hosts(cfg))}, STUN "
                          f"{ip or '<vps>'}:{cfg.advanced.stun_port}{extra}")
        return
    if not ip:
        raise PhaseFailed("vps_ip is empty; run `./infra/deploy --phase vps` first")
    cluster = ctx.cluster()
    assert cluster is not None
    m = manifests()
    rollouts = [(APP_NAMESPACE, APP_DEPLOYMENT)]
    if cfg.iroh_relay_enabled:
        rollouts.append((m.IROH_NAMESPACE, m.IROH_DEPLOYMENT))
    for ns, name in rollouts:
        def rolled_out(ns: str = ns, name: str = name) -> bool:
            from relay_deploy.kube import deployment_ready

            dep = cluster.deployment(ns, name)
            return dep is not None and deployment_ready(dep)

        if ctx.wait(f"waiting for the rollout of {ns}/{name}", rolled_out):
            rep.found("verify", f"rollout {ns}/{name}", f"deployment {name} is available")
        else:
            rep.fail("verify", f"rollout {ns}/{name}", rollout_hint(cluster, ns, name))
    checks: list[tuple[str, Callable[[], tuple[bool, str]]]] = [
        ("health", lambda: check_health(cfg)),
        *[(f"DNS {host}", lambda host=host: check_dns(cfg, ip, host)) for host in hosts(cfg)],
        ("STUN", lambda: check_stun(cfg, ip)),
        *optional_checks(cfg, ip),
        ("exposure", lambda: check_exposure(cfg, ip)),
    ]
    for name, check in checks:
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


def hosts(cfg: DeployConfig) -> list[str]:
    """Every host name DNS must resolve to the VPS."""
    return [h for h in (cfg.relay_host, cfg.turn_host, cfg.iroh_host) if h]


def optional_checks(cfg: DeployConfig, ip: str
                    ) -> list[tuple[str, Callable[[], tuple[bool, str]]]]:
    """The checks of the optional parts the config enables."""
    out: list[tuple[str, Callable[[], tuple[bool, str]]]] = []
    if cfg.turn_tls_enabled:
        out.append(("TURN over TLS", lambda: check_turn_tls(cfg, ip)))
    if cfg.iroh_relay_enabled:
        out.append(("iroh relay", lambda: check_iroh_relay(cfg, ip)))
    return out


def rollout_hint(cluster: Cluster, namespace: str = APP_NAMESPACE,
                 name: str = APP_DEPLOYMENT) -> str:
    """Why a deployment is not available, naming ImagePullBackOff when that is it."""
    waiting = cluster.waiting_containers(namespace)
    pulls = [w for w in waiting if w[1] in ("ImagePullBackOff", "ErrImagePull")]
    if pulls and name == APP_DEPLOYMENT:
        pod, reason, message = pulls[0]
        return (f"deployment {name} is not available: pod {pod} is in {reason} "
                f"({message}). A new GHCR package is private: make it public (the package's "
                f"settings on GitHub, Change visibility) or set image_pull_username and "
                f"image_pull_token (a token with read:packages) and run --phase app")
    detail = f": {waiting[0][0]} is {waiting[0][1]}" if waiting else ""
    return (f"deployment {name} is not available{detail}; see `kubectl --context "
            f"{kcfg.CONTEXT} -n {namespace} describe pods`")


def check_exposure(cfg: DeployConfig, ip: str) -> tuple[bool, str]:
    """From this machine: the relay's plain HTTP port refused, 443 and TURN's TCP answer."""
    adv = cfg.advanced
    host = adv.probe_host or ip
    closed = adv.relay_http_port or manifests().relay_ports().http
    problems = []
    if probes.tcp_answers(host, closed, timeout=adv.probe_timeout_seconds):
        problems.append(f"{closed}/tcp (the relay's plain HTTP) answers from outside: the "
                        f"host firewall is not active; run `./infra/deploy --phase kubeconfig`")
    for port, what in ((adv.https_port, "HTTPS (Traefik)"), (adv.stun_port, "TURN over TCP")):
        if not probes.tcp_answers(host, port, timeout=adv.probe_timeout_seconds):
            problems.append(f"{port}/tcp ({what}) does not answer from here; check the firewall "
                            f"and `kubectl -n kube-system get pods`")
    if problems:
        return False, "; ".join(problems)
    return True, (f"{closed}/tcp refused, {adv.https_port}/tcp and {adv.stun_port}/tcp answer "
                  f"from here")


def _tls(cfg: DeployConfig) -> ssl.SSLContext:
    return probes.tls_context(verify=cfg.advanced.health_verify_tls,
                              ca_file=cfg.advanced.tls_ca_file)


def check_turn_tls(cfg: DeployConfig, ip: str) -> tuple[bool, str]:
    """From this machine, as a ``turns:`` client: a TLS connection to 443 with the TURN host
    name completes a STUN Binding, and the relay saw this machine's address (PROXY v2)."""
    adv, name = cfg.advanced, cfg.turn_host or ""
    host, port = adv.probe_host or ip, adv.https_port
    where = f"{host}:{port} (SNI {name})"
    try:
        mapped = probes.stun_binding_tls(host, port, name, context=_tls(cfg),
                                         timeout=adv.probe_timeout_seconds)
    except ssl.SSLCertVerificationError as exc:
        return False, (f"{where}: certificate not valid for {name} ({exc.verify_message}); "
                       f"see `kubectl -n {APP_NAMESPACE} describe certificate "
                       f"metadata-relay-turn-tls`")
    except (OSError, ValueError) as exc:
        return False, (f"no STUN answer over TLS from {where} ({exc or 'timeout'}); see "
                       f"`kubectl -n {APP_NAMESPACE} get ingressroutetcp,certificate` and "
                       f"the relay's log (TURN_TLS_HOST, TRUSTED_PROXIES)")
    if mapped is None:
        return False, f"{where} answered the Binding without XOR-MAPPED-ADDRESS"
    seen = ipaddress.ip_address(mapped[0])
    try:  # the address the relay sees over UDP, straight from this machine
        direct = probes.stun_binding(host, adv.stun_port, timeout=adv.probe_timeout_seconds)
    except (OSError, ValueError):
        direct = None  # the STUN check says why
    if seen in ipaddress.ip_network(fw.POD_CIDR) or (direct and direct[0] != mapped[0]):
        theirs = f" (over UDP it sees {direct[0]})" if direct else ""
        return False, (f"{where}: the relay saw {seen} over TLS{theirs}: Traefik's address, "
                       f"not yours, so the PROXY protocol v2 header does not reach it "
                       f"(ServersTransportTCP metadata-relay-turn) or Traefik is not in its "
                       f"TRUSTED_PROXIES")
    return True, (f"turns:{name}:443?transport=tcp answers a STUN Binding over TLS "
                  f"(mapped {mapped[0]}:{mapped[1]})")


def check_iroh_relay(cfg: DeployConfig, ip: str) -> tuple[bool, str]:
    """From this machine: the iroh relay answers /healthz over its own TLS (through Traefik's
    passthrough) with the pinned version."""
    adv, name = cfg.advanced, cfg.iroh_host or ""
    host, port = adv.probe_host or ip, adv.https_port
    url = f"https://{name}/healthz"
    want = manifests().iroh_relay().version
    hint = (f"see `kubectl --context {kcfg.CONTEXT} -n {manifests().IROH_NAMESPACE} "
            f"get pods,certificate,ingressroutetcp`")
    try:
        answer = probes.https_get(host, port, name, "/healthz", context=_tls(cfg),
                                  timeout=adv.probe_timeout_seconds)
    except ssl.SSLCertVerificationError as exc:
        return False, f"{url}: certificate not valid ({exc.verify_message}); {hint}"
    except OSError as exc:
        return False, f"{url} via {host}:{port} unreachable ({exc or 'timeout'}); {hint}"
    try:
        health = json.loads(answer.body)
    except ValueError:
        health = None
    if answer.status != 200 or not isinstance(health, dict) or health.get("status") != "ok":
        return False, f"{url} answered {answer.status} {answer.body[:80]!r}; {hint}"
    if health.get("version") != want:
        return False, (f"{url} reports iroh-relay {health.get('version')!r}, expected {want}; "
                       f"the rollout may still be in progress")
    return True, f"{url} ok, iroh-relay {want}"


def check_health(cfg: DeployConfig) -> tuple[bool, str]:
    url = cfg.health_url
    try:
        h = probes.get_health(url, verify_tls=cfg.advanced.health_verify_tls,
                              ca_file=cfg.advanced.tls_ca_file,
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


def check_dns(cfg: DeployConfig, ip: str, name: str | None = None) -> tuple[bool, str]:
    adv = cfg.advanced
    name = name or cfg.relay_host
    try:
        addrs = probes.resolve_a(name, adv.dns_resolver, adv.dns_port,
                                 timeout=adv.probe_timeout_seconds)
    except (OSError, ValueError) as exc:
        return False, f"DNS lookup of {name} via {adv.dns_resolver} failed ({exc})"
    if ip in addrs:
        return True, f"{name} resolves to {ip}"
    return False, (f"{name} resolves to {', '.join(addrs) or 'nothing'}, not {ip}; "
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
    turns = [("TURN over TLS", f"turns:{cfg.turn_host}:443?transport=tcp")] \
        if cfg.turn_host else []
    iroh = [("iroh relay", f"{cfg.iroh_relay_url}  (mydia: IROH_RELAY_URL)")] \
        if cfg.iroh_relay_url else []
    return [
        ("VPS", f"{cfg.vps_name} ({ip})"),
        ("Relay URL", f"https://{cfg.relay_host}  (mydia: METADATA_RELAY_URL)"),
        ("TURN server", f"turn:{ip}:3478 (integrated)"),
        *turns,
        *iroh,
        ("Argo CD", f"https://{cfg.argocd_host}  (user admin)"),
        ("Argo CD password", f"kubectl --context {kcfg.CONTEXT} -n argocd get secret "
                             "argocd-initial-admin-secret -o jsonpath='{.data.password}' "
                             "| base64 -d"),
        ("Health check", cfg.health_url),
    ]

