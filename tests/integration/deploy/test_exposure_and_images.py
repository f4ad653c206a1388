"""The host firewall applied once and checked from outside; a private image named in verify
and pulled with the optional pull secret; secrets masked in every error."""

from __future__ import annotations

import asyncio
import base64

from tests.doubles.fake_ovh import FakeVps
from tests.integration.deploy.conftest import World

RULES = "/etc/metadata-relay/firewall.nft"


def _existing_vps(world: World) -> None:
    world.ovh.vps["vps-relay"] = FakeVps("vps-relay", "running", "metadata-relay", "127.0.0.1")


async def test_firewall_applied_once_and_repaired_when_it_drifts(world: World) -> None:
    _existing_vps(world)
    first = await world.deploy("--phase", "vps", "--phase", "kubeconfig")
    assert first.rc == 0, first.text
    assert "+ install host firewall (nftables)" in first.out
    rules = world.vps.files[RULES]
    assert world.vps.nft_loaded == rules
    n = len(world.vps.mutations())
    second = await world.deploy("--phase", "vps", "--phase", "kubeconfig")
    assert second.rc == 0 and "kubeconfig: nothing to change" in second.out, second.text
    assert len(world.vps.mutations()) == n  # a second run changes nothing
    assert (f"= host firewall (nftables) — open: {world.config['ssh_port']}/tcp, 80/tcp, 443/tcp"
            in second.out)

    world.vps.client_address = "198.51.100.23"  # the operator's address changed
    moved = await world.deploy("--phase", "vps", "--phase", "kubeconfig")
    assert moved.rc == 0, moved.text
    assert "update host firewall (nftables) — k3s API now from your address 198.51.100.23" \
        in moved.out
    assert "ip saddr 198.51.100.23 tcp dport 6443 accept" in world.vps.files[RULES]

    world.vps.nft_loaded = None  # flushed by hand
    reloaded = await world.deploy("--phase", "vps", "--phase", "kubeconfig")
    assert reloaded.rc == 0 and "not loaded" in reloaded.out, reloaded.text
    assert world.vps.nft_loaded == world.vps.files[RULES]


async def test_dry_run_plans_the_firewall_without_touching_it(world: World) -> None:
    _existing_vps(world)
    dry = await world.deploy("--dry-run", "--phase", "vps", "--phase", "kubeconfig")
    assert dry.rc == 0, dry.text
    assert "would install host firewall (nftables)" in dry.out
    assert world.vps.mutations() == [] and world.vps.files == {}


async def test_verify_checks_from_outside_that_4001_is_refused(world: World) -> None:
    assert (await world.deploy("--yes")).rc == 0
    config = world.saved()
    config["advanced"].update(wait_timeout_seconds=0.2, probe_timeout_seconds=0.2)
    world.write_config(**config)
    ok = await world.deploy("--phase", "verify")
    assert ok.rc == 0 and "/tcp refused" in ok.out, ok.text
    exposed_port = config["advanced"]["relay_http_port"]
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", exposed_port)
    try:
        exposed = await world.deploy("--phase", "verify")
        assert exposed.rc == 1, exposed.text
        assert f"{exposed_port}/tcp (the relay's plain HTTP) answers from outside" in exposed.out
        status = await world.deploy("--status")
        assert status.rc == 1 and "answers from outside" in status.out, status.text
    finally:
        server.close()
    config["advanced"]["https_port"] = exposed_port  # nothing listens there now
    world.write_config(**config)
    closed = await world.deploy("--phase", "verify")
    assert closed.rc == 1 and f"{exposed_port}/tcp (HTTPS (Traefik)) does not answer" in \
        closed.out, closed.text


async def test_private_image_is_named_and_pulled_with_the_optional_secret(
        world: World) -> None:
    world.kube.private_images = {"ghcr.io/getmydia/metadata-relay"}
    world.advanced(wait_timeout_seconds=0.3)  # the rollout never completes: do not wait long
    first = await world.deploy("--yes")
    assert first.rc == 1, first.text
    assert "ImagePullBackOff" in first.out and "image_pull_token" in first.out
    assert "Change visibility" in first.out
    world.write_config(image_pull_username="mydia-bot", image_pull_token="ghcr-read-token")
    fixed = await world.deploy()
    assert fixed.rc == 0, fixed.text
    assert "+ create Secret metadata-relay/metadata-relay-ghcr" in fixed.out
    assert "ghcr-read-token" not in fixed.text
    account = world.kube.get("v1", "serviceaccounts", "metadata-relay", "default")
    assert account is not None
    assert account["imagePullSecrets"] == [{"name": "metadata-relay-ghcr"}]
    again = await world.deploy()
    assert again.rc == 0 and "Done: 0 changes" in again.out, again.text


async def test_a_secret_echoed_by_an_error_is_masked(world: World) -> None:
    world.kube.secrets_refused_verbosely = True
    result = await world.deploy("--yes")
    assert result.rc == 1, result.text
    assert "refused by policy" in result.err and "***" in result.err
    assert "cf-token-secret" not in result.text
    assert base64.b64encode(b"cf-token-secret").decode() not in result.text
