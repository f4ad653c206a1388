"""SSH to the VPS (asyncssh): host key pinned on first contact, commands, k3s install.

Host keys live in a known_hosts file next to the config (git-ignored). On first contact the
server's key is accepted and stored (trust on first use); afterwards any other key is refused.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from relay_deploy import firewall as fw
from relay_deploy.files import write_private

K3S_CONFIG_PATH = "/etc/rancher/k3s/k3s.yaml"


class SshError(Exception):
    pass


@dataclass(frozen=True)
class FirewallState:
    rules: str | None  # the ruleset file's text, None when absent
    unit: str | None  # the boot unit's text
    enabled: bool  # the unit runs at boot
    loaded: bool  # the table is in the kernel now


@dataclass(frozen=True)
class SshTarget:
    host: str
    port: int
    user: str
    private_key: Path
    known_hosts: Path


def _known_hosts_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def pinned_key_line(target: SshTarget) -> str | None:
    if not target.known_hosts.exists():
        return None
    name = _known_hosts_name(target.host, target.port)
    for line in target.known_hosts.read_text().splitlines():
        if line.split(" ", 1)[0] == name:
            return line
    return None


def pin_host_key(target: SshTarget, key: asyncssh.SSHKey) -> None:
    """Store ``key`` as the one host key of ``target`` (replacing an older pin)."""
    line = (f"{_known_hosts_name(target.host, target.port)} "
            f"{key.export_public_key('openssh').decode().strip()}")
    write_private(target.known_hosts, "\n".join([*_other_pins(target), line]) + "\n")


def forget_host_key(target: SshTarget) -> bool:
    """Drop the pinned key of ``target`` (after a rebuild gave the VPS a new one)."""
    if pinned_key_line(target) is None:
        return False
    others = _other_pins(target)
    write_private(target.known_hosts, "".join(f"{line}\n" for line in others))
    return True


def _other_pins(target: SshTarget) -> list[str]:
    if not target.known_hosts.exists():
        return []
    name = _known_hosts_name(target.host, target.port)
    return [line for line in target.known_hosts.read_text().splitlines()
            if line.strip() and line.split(" ", 1)[0] != name]


class VpsShell:
    """One SSH connection to the VPS."""

    def __init__(self, conn: asyncssh.SSHClientConnection, user: str) -> None:
        self.conn = conn
        self.sudo = "" if user == "root" else "sudo -n "

    async def run(self, command: str, *, check: bool = True, limit: float = 600,
                  stdin: str | None = None) -> str:
        result = await self.conn.run(command, check=False, timeout=limit, input=stdin)
        if check and result.exit_status != 0:
            err = str(result.stderr or "").strip().splitlines()
            raise SshError(f"`{command.split()[0]} …` failed on the VPS "
                           f"(exit {result.exit_status}): {err[-1] if err else 'no output'}")
        return str(result.stdout or "")

    async def succeeds(self, command: str) -> bool:
        result = await self.conn.run(command, check=False, timeout=60)
        return result.exit_status == 0

    async def operator_address(self) -> str:
        """The address this connection comes from, as the VPS sees it (sshd's
        SSH_CONNECTION): the operator's public address."""
        fields = (await self.run('echo "$SSH_CONNECTION"')).split()
        if not fields:
            raise SshError("the VPS did not say where this SSH connection comes from "
                           "(SSH_CONNECTION is empty)")
        return fields[0]

    async def firewall_state(self) -> FirewallState:
        """What of the host firewall is on the VPS now (read-only)."""
        rules = await self.conn.run(f"{self.sudo}cat {fw.RULES_PATH}", check=False, timeout=60)
        unit = await self.conn.run(f"{self.sudo}cat {fw.UNIT_PATH}", check=False, timeout=60)
        enabled = await self.run(f"{self.sudo}systemctl is-enabled {fw.UNIT_NAME}", check=False)
        return FirewallState(
            rules=str(rules.stdout) if rules.exit_status == 0 else None,
            unit=str(unit.stdout) if unit.exit_status == 0 else None,
            enabled=enabled.strip() == "enabled",
            loaded=await self.succeeds(f"{self.sudo}nft list table inet {fw.TABLE}"))

    async def install_firewall(self, rules: str, unit: str) -> None:
        """Check the ruleset with nft, then install it, its boot unit, and load it."""
        s = self.sudo
        if not await self.succeeds("command -v nft"):
            await self.run(f"{s}env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
                           f"nftables", limit=600)
        staged = f"{fw.RULES_PATH}.new"
        await self.run(f"{s}install -d -m 0755 {shlex.quote(fw.RULES_PATH.rsplit('/', 1)[0])}")
        await self.run(f"{s}tee {staged} >/dev/null", stdin=rules)
        await self.run(f"{s}nft -c -f {staged}")
        await self.run(f"{s}mv {staged} {fw.RULES_PATH}")
        await self.run(f"{s}tee {fw.UNIT_PATH} >/dev/null", stdin=unit)
        await self.run(f"{s}systemctl daemon-reload")
        await self.run(f"{s}systemctl enable {fw.UNIT_NAME}")
        await self.run(f"{s}nft -f {fw.RULES_PATH}")

    async def k3s_installed(self) -> bool:
        out = await self.run(f"{self.sudo}test -f {K3S_CONFIG_PATH} && echo present || "
                             f"echo absent")
        return out.strip() == "present"

    async def install_k3s(self, vps_ip: str, k3s_version: str) -> None:
        """The official installer at a pinned version; k3s's bundled Traefik is kept."""
        env = f"env INSTALL_K3S_VERSION={shlex.quote(k3s_version)}"
        await self.run(f"curl -sfL https://get.k3s.io | {self.sudo}{env} sh -s - server "
                       f"--tls-san {shlex.quote(vps_ip)} --write-kubeconfig-mode 600",
                       limit=900)

    async def read_kubeconfig(self) -> str:
        return await self.run(f"{self.sudo}cat {K3S_CONFIG_PATH}")

    async def close(self) -> None:
        self.conn.close()
        await self.conn.wait_closed()


def _client_keys(target: SshTarget) -> list[asyncssh.SSHKey]:
    try:
        return [asyncssh.read_private_key(target.private_key)]
    except (asyncssh.KeyEncryptionError, asyncssh.KeyImportError, OSError):
        return []  # passphrase-protected: the agent holds it


async def _open(target: SshTarget, pinned: str | None, connect_within: float
                ) -> asyncssh.SSHClientConnection:
    try:
        return await asyncssh.connect(
            target.host, port=target.port, username=target.user,
            client_keys=_client_keys(target) or None,
            agent_path=os.environ.get("SSH_AUTH_SOCK") or None,
            known_hosts=(asyncssh.import_known_hosts(pinned) if pinned else None),
            connect_timeout=min(30.0, max(1.0, connect_within)), login_timeout=30,
        )
    except asyncssh.HostKeyNotVerifiable as exc:
        raise SshError(f"the host key of {target.host}:{target.port} does not match the "
                       f"one pinned in {target.known_hosts}; if the VPS was reinstalled, "
                       f"remove its line there") from exc


async def login_works(target: SshTarget, *, connect_within: float) -> bool | None:
    """One login attempt with the configured key: True, False when the key is refused, None
    when the VPS does not answer. A host key other than the pinned one raises SshError.
    Nothing is pinned and no command runs."""
    try:
        conn = await _open(target, pinned_key_line(target), connect_within)
    except asyncssh.PermissionDenied:
        return False
    except (OSError, asyncssh.Error, TimeoutError):
        return None
    conn.close()
    await conn.wait_closed()
    return True


async def connect(target: SshTarget, *, store_new_key: bool, within: float,
                  retry_interval: float = 5.0) -> tuple[VpsShell, asyncssh.SSHKey | None]:
    """Connect (retrying for ``within`` seconds while the VPS boots). Returns the shell and,
    on first contact, the host key (pinned when ``store_new_key``); None when the key was
    already pinned and matched. A changed host key is an error, never retried."""
    pinned = pinned_key_line(target)
    deadline = time.monotonic() + within
    while True:
        try:
            conn = await _open(target, pinned, within)
            break
        except asyncssh.PermissionDenied as exc:
            raise SshError(f"SSH login as {target.user}@{target.host} refused; is the public "
                           f"key installed on the VPS (and ssh_user right)?") from exc
        except (OSError, asyncssh.Error, TimeoutError) as exc:
            if time.monotonic() + retry_interval > deadline:
                raise SshError(f"cannot reach {target.host}:{target.port} over SSH: {exc}; "
                               f"check the VPS is running and port {target.port} is open") from exc
            await asyncio.sleep(retry_interval)
    if pinned is not None:
        return VpsShell(conn, target.user), None
    key = conn.get_server_host_key()
    if key is None:  # pragma: no cover - asyncssh always has one after key exchange
        raise SshError(f"{target.host} presented no host key")
    if store_new_key:
        pin_host_key(target, key)
    return VpsShell(conn, target.user), key
