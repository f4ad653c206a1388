"""Fail fast on bad input (exit 2, one clear line, no remote call); verify fails (exit 1)."""

from __future__ import annotations

import asyncio
import os
import subprocess

import pytest

from tests.integration.deploy.conftest import REPO, World


def _no_remote_calls(world: World) -> None:
    assert world.ovh.calls == [] and world.ovh.bad_signatures == 0
    assert world.vps.commands == [] and world.kube.calls == []


@pytest.mark.parametrize(("change", "expect"), [
    ({"domain_name": None}, "domain_name: missing"),
    ({"domain_name": "Not A Domain"}, "domain_name:"),
    ({"acme_email": "nope"}, "acme_email: not an email"),
    ({"relay_secret_key_base": "short"}, "relay_secret_key_base: too short"),
    ({"cloudflare_api_token": "REPLACE_ME"}, "cloudflare_api_token: still the example"),
    ({"ssh_port": "twenty-two"}, "ssh_port:"),
    ({"colour": "blue"}, "colour: unknown setting"),
    ({"ssh_public_key_path": "/nonexistent/id_ed25519.pub",
      "ssh_private_key_path": "../keys/id_ed25519"}, "ssh_public_key_path: cannot read"),
    ({"ssh_private_key_path": "/nonexistent/id_ed25519"}, "ssh_private_key_path: cannot read"),
    ({"gitops_repo_url": "ftp://x"}, "gitops_repo_url:"),
])
async def test_bad_config_fails_fast_with_exit_2(world: World, change: dict, expect: str
                                                 ) -> None:
    config = dict(world.config)
    for key, value in change.items():
        if value is None:
            config.pop(key)
        else:
            config[key] = value
    world.config = {}
    world.write_config(**config)
    result = await world.deploy("--yes")
    assert result.rc == 2, result.text
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], lines
    _no_remote_calls(world)


async def test_unreadable_or_garbage_ssh_key_fails_fast(world: World) -> None:
    priv = world.tmp / "keys" / "id_ed25519"
    priv.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\ngarbage\n")
    result = await world.deploy()
    assert result.rc == 2
    assert "ssh_private_key_path:" in result.err and "not an SSH private key" in result.err
    _no_remote_calls(world)


@pytest.mark.parametrize("text", ["a: [unclosed\n", "- just\n- a list\n", ""])
async def test_malformed_config_file(world: World, text: str) -> None:
    world.config_path.write_text(text)
    result = await world.deploy()
    assert result.rc == 2 and len(result.err.strip().splitlines()) == 1, result.text
    _no_remote_calls(world)


async def test_missing_config_and_ovh_files(world: World) -> None:
    missing = await world.deploy("--config", str(world.tmp / "nope.yaml"))
    assert missing.rc == 2 and "config file not found" in missing.err
    assert "config.yaml.example" in missing.err
    no_ovh = await world.deploy("--ovh-config", str(world.tmp / "nope.conf"))
    assert no_ovh.rc == 2 and "OVH config file not found" in no_ovh.err
    world.ovh_conf.write_text("[default]\nendpoint=ovh-mars\n")
    bad = await world.deploy()
    assert bad.rc == 2 and "ovh-mars" in bad.err
    _no_remote_calls(world)


async def test_unknown_phase_is_a_usage_error(world: World) -> None:
    result = await world.deploy("--phase", "everything")
    assert result.rc == 2 and "unknown phase 'everything'" in result.err
    _no_remote_calls(world)


async def test_verify_fails_with_a_hint_per_failed_check(world: World) -> None:
    assert (await world.deploy("--yes")).rc == 0
    config = world.saved()
    config["advanced"].update(wait_timeout_seconds=0.2, probe_timeout_seconds=0.2)
    world.write_config(**config)

    world.health.status = 503
    r = await world.deploy("--phase", "verify")
    assert r.rc == 1 and "health" in r.out and "answered 503" in r.out, r.text

    world.health.status = 200
    world.health.version = "0.0.9"
    r = await world.deploy("--phase", "verify")
    assert r.rc == 1 and "reports version 0.0.9, expected 0.1.0" in r.out, r.text

    world.health.version = "0.1.0"
    world.dns.records["relay.mydia.test"] = ["192.0.2.44"]
    r = await world.deploy("--phase", "verify")
    assert r.rc == 1 and "resolves to 192.0.2.44, not 127.0.0.1" in r.out, r.text
    assert "external-dns" in r.out

    world.dns.records.clear()  # NXDOMAIN
    r = await world.deploy("--phase", "verify")
    assert r.rc == 1 and "resolves to nothing" in r.out, r.text

    world.dns.records["relay.mydia.test"] = ["127.0.0.1"]
    world.stun.answering = False
    r = await world.deploy("--phase", "verify")
    assert r.rc == 1 and "no STUN answer" in r.out and "udp" in r.out, r.text

    world.stun.answering = True
    r = await world.deploy("--phase", "verify")
    assert r.rc == 0, r.text


def test_launcher_help_from_any_directory(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    result = subprocess.run([str(REPO / "infra" / "deploy"), "--help"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    for flag in ("--phase", "--skip", "--dry-run", "--status", "--config", "--ovh-config",
                 "--yes"):
        assert flag in result.stdout


async def test_launcher_dry_run_in_a_fresh_environment_without_the_dev_group(
        world: World) -> None:
    """infra/deploy (bash + uv) from another directory, into an environment of its own as on an
    operator's machine: the same plan, and none of the dev group (pytest, mypy, ruff) installed."""
    venv = world.tmp / "operator-venv"
    env = {k: v for k, v in world.env.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["UV_PROJECT_ENVIRONMENT"] = str(venv)
    proc = await asyncio.create_subprocess_exec(
        str(REPO / "infra" / "deploy"), "--dry-run", "--config", str(world.config_path),
        "--ovh-config", str(world.ovh_conf), cwd="/", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 300)
    assert proc.returncode == 0, err.decode()
    assert "would order vps-2025-model1" in out.decode() and "Plan:" in out.decode()
    assert world.ovh.mutating() == [] and world.kube.calls == []
    site = list(venv.glob("lib/python3*/site-packages"))
    assert site and (site[0] / "ovh").is_dir() and (site[0] / "asyncssh").is_dir()
    for dev_only in ("pytest", "mypy", "ruff", "hypothesis"):
        assert not (site[0] / dev_only).exists(), dev_only
