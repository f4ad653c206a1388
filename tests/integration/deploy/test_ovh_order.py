"""Against a fake OVH as unkind as the real one: one order across interrupted runs, a rebuild
that really happened, order configuration OVH half-describes, and a token with exactly the
rights the tool uses."""

from __future__ import annotations

import asyncio
import signal
import sys

import pytest

from relay_deploy.ovh_rights import access_rules
from tests.doubles.fake_ovh import AK, AS, CK, FakeVps
from tests.integration.deploy.conftest import Result, World


def _one_order(world: World) -> int:
    assert len(world.ovh.orders) == 1 and len(world.ovh.checkouts()) == 1, world.ovh.orders
    ((order_id, _),) = world.ovh.orders.items()
    return order_id


async def _continues_with_that_vps(world: World, order_id: int) -> None:
    again = await world.deploy("--phase", "vps", "--phase", "kubeconfig")  # no --yes needed
    assert again.rc == 0, again.text
    assert _one_order(world) == order_id
    (name,) = world.ovh.vps
    saved = world.saved()
    assert (saved["vps_order_id"], saved["vps_name"]) == (str(order_id), name)
    assert saved["vps_rebuild_task"] == str(world.ovh.vps[name].tasks[-1].id)
    assert len(world.ovh.rebuilds) == 1 and world.vps.k3s_installed


async def test_delivery_timeout_then_rerun_follows_the_same_order(world: World) -> None:
    world.ovh.checking_polls = 10**6
    config = world.saved()
    config["advanced"]["vps_order_timeout_seconds"] = 0.3
    world.write_config(**config)
    first = await world.deploy("--yes", "--phase", "vps")
    assert first.rc == 1, first.text
    order_id = _one_order(world)
    assert f"OVH order {order_id} is not delivered yet" in first.err
    assert "never orders another" in first.err
    assert world.saved()["vps_order_id"] == str(order_id)
    world.ovh.checking_polls = 0  # OVH delivers at last
    await _continues_with_that_vps(world, order_id)


async def test_ctrl_c_during_delivery_then_rerun_follows_the_same_order(world: World) -> None:
    world.ovh.stall_on = ("GET", "/status")
    proc = await world.start("--yes", "--phase", "vps")
    await asyncio.wait_for(world.ovh.stalled.wait(), 60)
    proc.send_signal(signal.SIGINT)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    world.ovh.stall_on = None
    world.ovh.release.set()
    assert proc.returncode == 130, (out + err).decode()
    order_id = _one_order(world)
    assert world.saved()["vps_order_id"] == str(order_id)
    assert world.ovh.deleted_carts == []
    await _continues_with_that_vps(world, order_id)


async def test_ctrl_c_during_checkout_is_held_until_the_order_id_is_stored(
        world: World) -> None:
    world.ovh.stall_on = ("POST", "/checkout")
    proc = await world.start("--yes", "--phase", "vps")
    await asyncio.wait_for(world.ovh.stalled.wait(), 60)
    proc.send_signal(signal.SIGINT)  # arrives while the checkout request is in flight
    await asyncio.sleep(0.2)
    world.ovh.stall_on = None
    world.ovh.release.set()
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 130, (out + err).decode()
    order_id = _one_order(world)
    assert world.saved()["vps_order_id"] == str(order_id)
    await _continues_with_that_vps(world, order_id)


@pytest.mark.parametrize("failing", [("GET", "/details"), ("PUT", ".vps.ovh.net")])
async def test_error_after_checkout_then_rerun_follows_the_same_order(
        world: World, failing: tuple[str, str]) -> None:
    world.ovh.fail_on = failing
    first = await world.deploy("--yes", "--phase", "vps")
    assert first.rc == 1, first.text
    assert "Internal failure" in first.err
    order_id = _one_order(world)
    assert world.saved()["vps_order_id"] == str(order_id)
    world.ovh.fail_on = None
    await _continues_with_that_vps(world, order_id)


async def test_rebuild_waits_for_ovh_tasks_and_retries_the_running_tasks_refusal(
        world: World) -> None:
    world.ovh.task_steps = 6  # the delivery task outlives the order's "delivered"
    world.ovh.refuse_rebuilds = 2  # and OVH still says "running tasks" twice
    result = await world.deploy("--yes", "--phase", "vps")
    assert result.rc == 0, result.text
    refused = [c for c in world.ovh.refused if c.path.endswith("/rebuild")]
    assert len(refused) == 2 and len(world.ovh.rebuilds) == 1
    assert world.ovh.rebuilds_while_busy == 0  # never sent while a task was listed
    (vps,) = world.ovh.vps.values()
    assert [(t.type, t.state) for t in vps.tasks] == [("deliverVm", "done"),
                                                      ("reinstallVm", "done")]
    assert "SSH login ubuntu@127.0.0.1" in result.out or "accepts your key" in result.out


async def test_rebuild_counts_only_when_the_login_works(world: World) -> None:
    """The rebuild task finishes, but the key went to the image's user, not root: the run
    does not pretend the VPS is ready."""
    world.write_config(ssh_user="root")
    config = world.saved()
    config["advanced"]["ssh_connect_timeout_seconds"] = 0.5
    world.write_config(**config)
    result = await world.deploy("--yes", "--phase", "vps")
    assert result.rc == 1, result.text
    assert "was rebuilt but root@127.0.0.1 still does not accept your key" in result.err
    assert "ubuntu" in result.err
    assert "vps_ip" not in world.saved()


async def test_rerun_that_cannot_log_in_rebuilds_again_after_confirmation(
        world: World) -> None:
    assert (await world.deploy("--yes", "--phase", "vps", "--phase", "kubeconfig")).rc == 0
    old_host_key = world.vps.host_keys[-1]
    world.vps.authorized_keys = []  # the key is gone from the VPS (reinstalled by hand, ...)
    declined = await world.deploy("--phase", "vps", stdin="n\n")
    assert declined.rc == 1, declined.text
    assert "Rebuild it? [y/N]" in declined.out and "ERASES" in declined.out
    assert "rebuild not confirmed" in declined.err
    assert len(world.ovh.rebuilds) == 1
    accepted = await world.deploy("--phase", "vps", "--phase", "kubeconfig", stdin="y\n")
    assert accepted.rc == 0, accepted.text
    assert len(world.ovh.rebuilds) == 2 and _one_order(world)
    # the rebuild gave the VPS a new host key: the old pin was dropped, the new one pinned
    assert world.vps.host_keys[-1] is not old_host_key
    pinned = (world.config_path.parent / "known_hosts").read_text()
    assert world.vps.host_keys[-1].export_public_key().decode().split()[1] in pinned
    assert old_host_key.export_public_key().decode().split()[1] not in pinned
    assert world.vps.k3s_installed and world.vps.nft_loaded  # set up again


async def test_a_vps_not_from_this_deployment_is_never_rebuilt(world: World) -> None:
    world.ovh.vps["vps-relay"] = FakeVps("vps-relay", "running", "metadata-relay", "127.0.0.1")
    world.vps.authorized_keys = []
    result = await world.deploy("--yes", "--phase", "vps", "--phase", "kubeconfig")
    assert result.rc == 1 and "refused" in result.err, result.text
    assert world.ovh.mutating() == [] and world.ovh.rebuilds == []


async def test_required_configurations_and_missing_allowed_values(world: World) -> None:
    world.ovh.hide_allowed_values = {"vps_datacenter", "vps_os", "vps_install_rtm"}
    world.ovh.required.append({"label": "vps_region_zone", "required": True,
                               "type": "String", "allowedValues": ["zone-a", "zone-b"]})
    unset = await world.deploy("--yes", "--phase", "vps")
    assert unset.rc == 1, unset.text
    assert "the order needs 'vps_region_zone' (allowed: zone-a, zone-b)" in unset.err
    assert "vps_order_configuration" in unset.err
    assert world.ovh.orders == {} and len(world.ovh.deleted_carts) == 1
    world.write_config(vps_order_configuration={"vps_region_zone": "zone-b"})
    result = await world.deploy("--yes", "--phase", "vps")
    assert result.rc == 0, result.text
    # datacentre and OS matched against the catalogue; no allowed values for the monitoring
    # agent: said, and "no" sent
    assert "OVH gives no allowed values for vps_install_rtm; sending 'no'" in result.out
    (order,) = world.ovh.orders.values()
    assert order.config == {"vps_datacenter": "EU-WEST-SBG", "vps_os": "Ubuntu 24.04",
                            "vps_install_rtm": "no", "vps_region_zone": "zone-b"}


@pytest.mark.parametrize(("change", "expect"), [
    ({"vps_datacenter": "US-EAST-VA"}, "vps_datacenter: 'US-EAST-VA' is not offered"),
    ({"vps_datacenter": ""}, "vps_datacenter: empty; set it to one of: EU-WEST-GRA"),
    ({"vps_os": "Windows 11"}, "vps_os: 'Windows 11' is not offered"),
    ({"vps_plan": "vps-gold-plated"}, "vps_plan: 'vps-gold-plated' is not in OVH's"),
])
async def test_dry_run_checks_plan_datacentre_and_os_against_the_catalogue(
        world: World, change: dict[str, str], expect: str) -> None:
    world.write_config(**change)
    result = await world.deploy("--dry-run")
    assert result.rc == 1, result.text
    assert expect in result.err
    assert world.ovh.mutating() == []


async def test_dry_run_of_a_pending_order_only_reads(world: World) -> None:
    world.ovh.checking_polls = 10**6
    config = world.saved()
    config["advanced"]["vps_order_timeout_seconds"] = 0.2
    world.write_config(**config)
    assert (await world.deploy("--yes", "--phase", "vps")).rc == 1
    n = len(world.ovh.mutating())
    dry = await world.deploy("--dry-run")
    assert dry.rc == 0, dry.text
    assert "would wait for the VPS of OVH order" in dry.out
    assert len(world.ovh.mutating()) == n and len(world.ovh.orders) == 1


async def test_the_token_the_old_readme_described_is_not_enough(world: World) -> None:
    """With only /vps/*, python-ovh's rules refuse the tool's first call, GET /vps."""
    world.ovh.grants[CK] = [{"method": m, "path": "/vps/*"} for m in ("GET", "POST", "PUT")] + [
        {"method": m, "path": "/order/*"} for m in ("GET", "POST", "DELETE")] + [
        {"method": "GET", "path": "/me"}]
    result = await world.deploy("--yes", "--phase", "vps")
    assert result.rc == 1, result.text
    assert "GET /vps is not granted" in result.err and "ovh-token" in result.err
    assert world.ovh.not_granted == ["GET /vps"]


async def _ovh_token(world: World) -> Result:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "relay_deploy.cli", "ovh-token", "--ovh-config",
        str(world.ovh_conf), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=world.env, cwd=world.tmp)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return Result(proc.returncode or 0, out.decode(), err.decode())


async def test_ovh_token_asks_for_exactly_the_calls_the_tool_makes(world: World) -> None:
    world.ovh_conf.write_text(f"; my notes\n[default]\nendpoint={world.ovh.base}\n\n"
                              f"[{world.ovh.base}]\napplication_key={AK}\n"
                              f"application_secret={AS}\n")
    no_key = await world.deploy("--dry-run")
    assert no_key.rc == 2 and "consumer_key missing" in no_key.err and "ovh-token" in no_key.err
    result = await _ovh_token(world)
    assert result.rc == 0, result.text
    (request,) = world.ovh.key_requests
    assert request["accessRules"] == access_rules()
    (key,) = world.ovh.pending_keys
    assert f"{world.ovh.base}/auth/?credentialToken=tok{key[3:]}" in result.out
    assert AS not in result.text and key not in result.text
    text = world.ovh_conf.read_text()
    assert text.startswith("; my notes\n") and f"consumer_key={key}" in text
    assert (world.ovh_conf.stat().st_mode & 0o777) == 0o600
    before = await world.deploy("--dry-run")
    assert before.rc == 1 and "not valid" in before.err, before.text
    world.ovh.validate(key)
    full = await world.deploy("--yes")
    assert full.rc == 0, full.text
    assert world.ovh.not_granted == []
