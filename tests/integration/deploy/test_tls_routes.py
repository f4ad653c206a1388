"""TURN over TLS on 443 and the iroh relay, deployed by the real CLI against the doubles and
verified from outside through a Traefik-like SNI router on loopback."""

from __future__ import annotations

import ssl

from tests.doubles.fake_traefik import TlsRoute
from tests.integration.deploy.conftest import IROH_HOST, TURN_HOST, World

TURN_OBJECTS = [
    ("traefik.io/v1alpha1", "ingressroutetcps", "metadata-relay-turn"),
    ("traefik.io/v1alpha1", "serverstransporttcps", "metadata-relay-turn"),
    ("traefik.io/v1alpha1", "tlsoptions", "metadata-relay-turn"),
    ("cert-manager.io/v1", "certificates", "metadata-relay-turn-tls"),
    ("v1", "services", "metadata-relay-turn"),
]
IROH_OBJECTS = [
    ("v1", "configmaps", "iroh-relay-config"),
    ("apps/v1", "deployments", "iroh-relay"),
    ("v1", "services", "iroh-relay"),
    ("cert-manager.io/v1", "certificates", "iroh-relay-tls"),
    ("traefik.io/v1alpha1", "ingressroutetcps", "iroh-relay"),
]


def _mutations(world: World, since: int) -> list[str]:
    return [f"{c.method} {c.path}" for c in world.kube.calls[since:] if c.method != "GET"]


async def test_turn_over_tls_is_deployed_and_answers_a_binding_through_traefik(
        world: World) -> None:
    result = await world.deploy("--yes")
    assert result.rc == 0, result.text
    for gv, plural, name in TURN_OBJECTS:
        assert world.kube.get(gv, plural, "metadata-relay", name) is not None, name
    config = world.kube.get("v1", "configmaps", "metadata-relay", "metadata-relay-config")
    assert config is not None and config["data"]["TURN_TLS_HOST"] == TURN_HOST
    route = world.kube.get("traefik.io/v1alpha1", "ingressroutetcps", "metadata-relay",
                           "metadata-relay-turn")
    assert route is not None
    assert route["spec"]["routes"][0]["match"] == f"HostSNI(`{TURN_HOST}`)"
    # verify connected with SNI turn.<domain>, checked the certificate against the CA, sent a
    # Binding over TLS, and the relay answered with this machine's address: the one in the
    # PROXY v2 header, not the proxy's own (127.0.0.2)
    assert world.turn_tcp.bindings >= 1
    assert {ip for ip, _ in world.turn_tcp.seen} == {"127.0.0.1"}
    assert "TURN over TLS — turns:turn.mydia.test:443?transport=tcp answers" in result.out
    assert TURN_HOST in world.dns.queries
    assert "turns:turn.mydia.test:443?transport=tcp" in result.out.split("Done")[-1]


async def test_turn_over_tls_without_the_proxy_header_fails_with_a_hint(world: World) -> None:
    assert (await world.deploy("--yes")).rc == 0
    world.advanced(wait_timeout_seconds=0.2, probe_timeout_seconds=0.3)
    world.traefik.routes[TURN_HOST].proxy_protocol = False  # a ServersTransportTCP missing
    result = await world.deploy("--phase", "verify")
    assert result.rc == 1, result.text
    assert "saw 127.0.0.2 over TLS (over UDP it sees 127.0.0.1)" in result.out, result.out
    assert "PROXY protocol v2" in result.out and "TRUSTED_PROXIES" in result.out


async def test_turn_over_tls_with_a_certificate_for_another_name_fails(world: World) -> None:
    assert (await world.deploy("--yes")).rc == 0
    world.advanced(wait_timeout_seconds=0.2, probe_timeout_seconds=0.3)
    wrong = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    world.ca.issue_cert(f"relay.{TURN_HOST.split('.', 1)[1]}").configure_cert(wrong)
    route = world.traefik.routes[TURN_HOST]
    world.traefik.routes[TURN_HOST] = TlsRoute(route.backend, wrong)  # Traefik's default cert
    result = await world.deploy("--phase", "verify")
    assert result.rc == 1, result.text
    assert f"certificate not valid for {TURN_HOST}" in result.out, result.out
    assert "describe certificate metadata-relay-turn-tls" in result.out


async def test_turn_over_tls_can_be_left_out(world: World) -> None:
    world.write_config(turn_tls_enabled=False)
    result = await world.deploy("--yes")
    assert result.rc == 0, result.text
    assert world.kube.get("traefik.io/v1alpha1", "ingressroutetcps", "metadata-relay",
                          "metadata-relay-turn") is None
    config = world.kube.get("v1", "configmaps", "metadata-relay", "metadata-relay-config")
    assert config is not None and "TURN_TLS_HOST" not in config["data"]
    assert world.turn_tcp.bindings == 0 and "turns:" not in result.out


async def test_iroh_relay_installed_once_verified_and_left_unchanged(world: World) -> None:
    world.write_config(iroh_relay_enabled=True)
    first = await world.deploy("--yes")
    assert first.rc == 0, first.text
    for gv, plural, name in IROH_OBJECTS:
        assert world.kube.get(gv, plural, "iroh-relay", name) is not None, name
    assert world.kube.get("v1", "namespaces", "", "iroh-relay") is not None
    dep = world.kube.get("apps/v1", "deployments", "iroh-relay", "iroh-relay")
    assert dep is not None
    digest = world.registry.repos["n0computer/iroh-relay"]["v0.96.1"].digest
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == \
        f"n0computer/iroh-relay:v0.96.1@{digest}"  # pinned on first use (test_image_pin.py)
    # the firewall opens its QUIC port, and only that
    rules = world.vps.files["/etc/metadata-relay/firewall.nft"]
    assert 'udp dport 7842 accept comment "iroh relay: QUIC address discovery"' in rules
    assert "tcp dport 7842" not in rules
    # verified through Traefik's passthrough against its own TLS, and handed to mydia
    assert world.iroh.health_checks >= 1 and IROH_HOST in world.dns.queries
    assert "rollout iroh-relay/iroh-relay" in first.out
    assert f"iroh relay — https://{IROH_HOST}/healthz ok, iroh-relay 0.96.1" in first.out
    assert f"https://{IROH_HOST}  (mydia: IROH_RELAY_URL)" in first.out

    n_kube, n_vps = len(world.kube.calls), len(world.vps.mutations())
    second = await world.deploy()
    assert second.rc == 0, second.text
    assert "Done: 0 changes" in second.out
    assert _mutations(world, n_kube) == [] and len(world.vps.mutations()) == n_vps
    status = await world.deploy("--status")
    assert status.rc == 0 and "FAIL" not in status.out, status.out
    assert "iroh relay" in status.out and "Certificate iroh-relay-tls" in status.out


async def test_enabling_the_iroh_relay_later_adds_it_and_its_port(world: World) -> None:
    assert (await world.deploy("--yes")).rc == 0
    assert world.kube.get("v1", "namespaces", "", "iroh-relay") is None
    assert "7842" not in world.vps.files["/etc/metadata-relay/firewall.nft"]
    world.write_config(iroh_relay_enabled=True)
    dry = await world.deploy("--dry-run")
    assert dry.rc == 0, dry.text
    assert "would update host firewall (nftables)" in dry.out
    assert "would create Deployment iroh-relay/iroh-relay" in dry.out
    assert world.kube.get("v1", "namespaces", "", "iroh-relay") is None
    enabled = await world.deploy()
    assert enabled.rc == 0, enabled.text
    assert "udp dport 7842 accept" in world.vps.files["/etc/metadata-relay/firewall.nft"]
    assert world.kube.get("apps/v1", "deployments", "iroh-relay", "iroh-relay") is not None


async def test_iroh_relay_that_does_not_answer_fails_verify_with_a_hint(world: World) -> None:
    world.write_config(iroh_relay_enabled=True)
    assert (await world.deploy("--yes")).rc == 0
    world.advanced(wait_timeout_seconds=0.2, probe_timeout_seconds=0.3)
    world.iroh.version = "0.95.0"
    old = await world.deploy("--phase", "verify")
    assert old.rc == 1 and "reports iroh-relay '0.95.0', expected 0.96.1" in old.out, old.text
    world.iroh.up = False
    down = await world.deploy("--phase", "verify")
    assert down.rc == 1 and f"https://{IROH_HOST}/healthz answered 503" in down.out, down.text
    assert "-n iroh-relay get pods,certificate,ingressroutetcp" in down.out
    world.traefik.routes.pop(IROH_HOST)  # no route: Traefik drops the connection
    unrouted = await world.deploy("--phase", "verify")
    assert unrouted.rc == 1 and "unreachable" in unrouted.out, unrouted.text
