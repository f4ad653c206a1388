"""Spending money only when confirmed, dry runs that only read, phase selection, failures."""

from __future__ import annotations

import asyncio
import signal

import pytest

from tests.doubles.fake_ovh import FakeVps
from tests.integration.deploy.conftest import World


@pytest.mark.parametrize("answer", ["n\n", "", "maybe\n"])
async def test_no_vps_is_ordered_without_confirmation(world: World, answer: str) -> None:
    result = await world.deploy(stdin=answer)
    assert result.rc == 1, result.text
    assert "Order it? [y/N]" in result.out
    assert "not confirmed" in result.err
    assert world.ovh.orders == {} and world.ovh.calls_to("POST", "/checkout") == []
    assert world.ovh.carts == {} and len(world.ovh.deleted_carts) == 1
    assert world.vps.commands == [] and world.kube.calls == []
    assert "vps_name" not in world.saved() and "vps_order_id" not in world.saved()


async def test_confirmation_orders_exactly_one(world: World) -> None:
    result = await world.deploy("--phase", "vps", stdin="y\n")
    assert result.rc == 0, result.text
    assert len(world.ovh.orders) == 1 and len(world.ovh.checkouts()) == 1
    assert world.ovh.deleted_carts == []  # the checked-out cart is the order: never deleted


async def test_ctrl_c_during_the_order_deletes_the_cart(world: World) -> None:
    world.ovh.stall_on = ("POST", "/assign")
    proc = await world.start("--yes")
    await asyncio.wait_for(world.ovh.stalled.wait(), 60)
    proc.send_signal(signal.SIGINT)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    world.ovh.release.set()
    assert proc.returncode == 130, (out + err).decode()
    assert "interrupted" in err.decode()
    assert world.ovh.carts == {} and len(world.ovh.deleted_carts) == 1
    assert world.ovh.orders == {} and world.ovh.calls_to("POST", "/checkout") == []
    assert "vps_order_id" not in world.saved()


@pytest.mark.parametrize("step", ["/configuration", "/assign"])
async def test_order_failing_before_checkout_deletes_the_cart(world: World, step: str) -> None:
    world.ovh.fail_on = ("POST", step)
    result = await world.deploy("--yes")
    assert result.rc == 1, result.text
    assert "OVH API" in result.err
    assert world.ovh.orders == {}
    assert world.ovh.carts == {} and len(world.ovh.deleted_carts) == 1
    assert world.vps.commands == [] and world.kube.calls == []
    assert "vps_order_id" not in world.saved()


async def test_checkout_refused_deletes_the_cart_and_orders_nothing(world: World) -> None:
    world.ovh.refuse_checkout = "No default payment method"
    result = await world.deploy("--yes")
    assert result.rc == 1, result.text
    assert "No default payment method" in result.err
    assert world.ovh.orders == {} and len(world.ovh.deleted_carts) == 1
    assert "vps_order_id" not in world.saved()


async def test_checkout_without_an_answer_never_orders_twice(world: World) -> None:
    """A 500 (or no answer) to the checkout may have placed an order: the tool records that,
    keeps the cart, and orders nothing until the operator says which order it was."""
    world.ovh.fail_on = ("POST", "/checkout")
    first = await world.deploy("--yes")
    assert first.rc == 1, first.text
    assert "no clear answer" in first.err and "vps_order_id" in first.err
    assert world.saved()["vps_order_id"] == "unconfirmed"
    assert world.ovh.deleted_carts == []
    world.ovh.fail_on = None
    again = await world.deploy("--yes")
    assert again.rc == 1 and "'unconfirmed'" in again.err, again.text
    assert len(world.ovh.calls_to("POST", "/checkout")) == 1
    assert len(world.ovh.calls_to("POST", "/order/cart")) == 1


async def test_unoffered_plan_fails_without_a_cart(world: World) -> None:
    world.write_config(vps_plan="vps-gold-plated")
    result = await world.deploy("--yes")
    assert result.rc == 1
    assert "vps-gold-plated" in result.err and "vps-2025-model1" in result.err
    assert world.ovh.orders == {} and world.ovh.calls_to("POST", "/order/cart") == []


async def test_dry_run_from_empty_account_only_reads(world: World) -> None:
    result = await world.deploy("--dry-run")
    assert result.rc == 0, result.text
    assert "would order vps-2025-model1" in result.out
    assert "would install k3s" in result.out
    assert "would create HelmChart kube-system/cert-manager" in result.out
    assert "would create Deployment metadata-relay/metadata-relay" in result.out
    assert world.ovh.mutating() == [] and world.ovh.carts == {}
    assert world.vps.commands == []
    assert world.kube.calls == []
    assert world.health.hits == 0 and world.stun.requests == 0 and world.dns.queries == []
    assert "vps_name" not in world.saved() and "turn_secret" not in world.saved()


async def test_dry_run_with_a_fresh_vps_uses_only_read_only_ssh(world: World) -> None:
    world.ovh.vps["vps-relay"] = FakeVps("vps-relay", "running", "metadata-relay", "127.0.0.1")
    result = await world.deploy("--dry-run")
    assert result.rc == 0, result.text
    assert "would record" in result.out and "would pin host key" in result.out
    assert "would install host firewall (nftables)" in result.out
    assert "would install k3s" in result.out
    assert world.vps.commands and world.vps.mutations() == []
    assert world.vps.installs == [] and world.ovh.mutating() == [] and world.kube.calls == []
    assert not (world.config_path.parent / "known_hosts").exists()
    assert not (world.tmp / "home" / ".kube").exists()
    assert "vps_name" not in world.saved()


async def test_dry_run_never_reads_the_kubeconfig_over_an_unpinned_connection(
        world: World) -> None:
    world.ovh.vps["vps-relay"] = FakeVps("vps-relay", "running", "metadata-relay", "127.0.0.1")
    world.vps.k3s_installed = True
    result = await world.deploy("--dry-run")
    assert result.rc == 0, result.text
    assert "would pin host key of 127.0.0.1" in result.out and "SHA256:" in result.out
    assert "not read over this connection" in result.out
    assert not any("k3s.yaml" in c and c.startswith("sudo -n cat") for c in
                   world.vps.commands)
    assert world.vps.mutations() == [] and world.kube.calls == []
    assert not (world.config_path.parent / "known_hosts").exists()
    assert not (world.tmp / "home" / ".kube").exists()


async def test_dry_run_with_k3s_installed_asks_the_api_with_dry_run_only(world: World) -> None:
    world.ovh.vps["vps-relay"] = FakeVps("vps-relay", "running", "metadata-relay", "127.0.0.1")
    world.vps.k3s_installed = True
    # the host key was pinned by an earlier run
    (world.config_path.parent / "known_hosts").write_text(
        f"[127.0.0.1]:{world.config['ssh_port']} "
        f"{world.vps.host_keys[-1].export_public_key().decode().strip()}\n")
    result = await world.deploy("--dry-run")
    assert result.rc == 0, result.text
    assert "would write context metadata-relay" in result.out
    assert world.vps.installs == []
    assert world.kube.calls, "the plan is computed against the real API"
    assert all(c.method == "GET" or (c.method == "PATCH" and c.dry_run)
               for c in world.kube.calls)
    assert world.kube.kinds() == ["Deployment", "Namespace", "Node"]  # nothing stored
    assert not (world.tmp / "home" / ".kube").exists()


async def test_phase_and_skip_select_exactly_those_phases(world: World) -> None:
    assert (await world.deploy("--yes")).rc == 0
    world.ovh.calls.clear()
    world.kube.calls.clear()
    world.vps.commands.clear()

    only_kube = await world.deploy("--phase", "kubernetes")
    assert only_kube.rc == 0, only_kube.text
    assert world.ovh.calls == [] and world.vps.commands == []
    paths = {c.path for c in world.kube.calls}
    assert any("helmcharts" in p for p in paths)
    assert not any("/namespaces/metadata-relay/" in p for p in paths)
    assert "phases: kubernetes\n" in only_kube.out

    world.kube.calls.clear()
    skipped = await world.deploy("--skip", "vps", "--skip", "kubeconfig", "--skip", "verify")
    assert skipped.rc == 0, skipped.text
    assert world.ovh.calls == [] and world.vps.commands == []
    assert "phases: kubernetes, app\n" in skipped.out
    assert any("/namespaces/metadata-relay/" in c.path for c in world.kube.calls)
    assert world.health.hits == 1  # only the first full run verified

    only_ssh = await world.deploy("--phase", "kubeconfig", "--phase", "vps")
    assert only_ssh.rc == 0 and "phases: vps, kubeconfig\n" in only_ssh.out
    assert world.ovh.calls and world.vps.commands


async def test_wrong_ovh_credentials_are_rejected_by_the_signature_check(world: World) -> None:
    text = world.ovh_conf.read_text().replace("fake-app-secret", "wrong-secret")
    world.ovh_conf.write_text(text)
    result = await world.deploy("--yes")
    assert result.rc == 1
    assert world.ovh.bad_signatures >= 1 and world.ovh.calls == []
    assert "wrong-secret" not in result.text


async def test_changed_host_key_is_refused(world: World) -> None:
    world.ovh.vps["vps-relay"] = FakeVps("vps-relay", "running", "metadata-relay", "127.0.0.1")
    port = world.config["ssh_port"]
    (world.config_path.parent / "known_hosts").write_text(
        f"[127.0.0.1]:{port} ssh-ed25519 "
        "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n")
    result = await world.deploy("--phase", "vps", "--phase", "kubeconfig")
    assert result.rc == 1
    assert "does not match the one pinned" in result.err
    assert world.vps.commands == []


async def test_root_login_when_configured_runs_commands_without_sudo(world: World) -> None:
    world.vps.user = "root"
    world.vps.k3s_installed = True
    world.ovh.vps["vps-relay"] = FakeVps("vps-relay", "running", "metadata-relay", "127.0.0.1")
    world.write_config(ssh_user="root")
    result = await world.deploy("--phase", "vps", "--phase", "kubeconfig")
    assert result.rc == 0, result.text
    assert not any("sudo" in c for c in world.vps.commands)
    assert "cat /etc/rancher/k3s/k3s.yaml" in world.vps.commands
    assert world.vps.nft_loaded is not None


async def test_default_user_is_ubuntu_with_sudo(world: World) -> None:
    world.vps.k3s_installed = True
    world.ovh.vps["vps-relay"] = FakeVps("vps-relay", "running", "metadata-relay", "127.0.0.1")
    result = await world.deploy("--phase", "vps", "--phase", "kubeconfig")
    assert result.rc == 0, result.text
    assert "connecting to ubuntu@127.0.0.1" in result.out or world.vps.refused_logins == 0
    assert "sudo -n cat /etc/rancher/k3s/k3s.yaml" in world.vps.commands
    assert world.vps.refused_logins == 0


async def test_platform_that_never_becomes_available_fails_with_a_hint(world: World) -> None:
    world.kube.workloads_become_ready = False
    world.advanced(wait_timeout_seconds=0.3)  # they never become available: do not wait long
    result = await world.deploy("--yes")
    assert result.rc == 1, result.text
    assert "cert-manager/cert-manager is not available" in result.err
    assert "kubectl" in result.err
    # it stopped there: no issuers, no relay
    assert world.kube.get("cert-manager.io/v1", "clusterissuers", "", "letsencrypt-prod") is None
    assert world.kube.get("v1", "namespaces", "", "metadata-relay") is None


async def test_own_server_by_ip_is_never_ordered_for(world: World) -> None:
    world.write_config(vps_ip="127.0.0.1")
    world.ovh_conf.unlink()  # no OVH account needed at all
    result = await world.deploy("--phase", "vps", "--phase", "kubeconfig")
    assert result.rc == 0, result.text
    assert world.ovh.calls == [] and world.ovh.bad_signatures == 0
    assert len(world.vps.installs) == 1
