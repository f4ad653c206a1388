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

from relay_deploy.files import write_private

K3S_CONFIG_PATH = "/etc/rancher/k3s/k3s.yaml"


class SshError(Exception):
    pass


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

    async def run(self, command: str, *, check: bool = True, limit: float = 600) -> str:
        result = await self.conn.run(command, check=False, timeout=limit)
        if check and result.exit_status != 0:
            err = str(result.stderr or "").strip().splitlines()
            raise SshError(f"`{command.split()[0]} …` failed on the VPS "
                           f"(exit {result.exit_status}): {err[-1] if err else 'no output'}")
        return str(result.stdout or "")

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


async def connect(target: SshTarget, *, store_new_key: bool, within: float,
                  retry_interval: float = 5.0) -> tuple[VpsShell, bool]:
    """Connect (retrying for ``within`` seconds while the VPS boots). Returns the shell and whether
    the host key was newly pinned. A changed host key is an error, never retried."""
    pinned = pinned_key_line(target)
    agent = os.environ.get("SSH_AUTH_SOCK") or None
    keys: list[asyncssh.SSHKey] = []
    try:
        keys = [asyncssh.read_private_key(target.private_key)]
    except (asyncssh.KeyEncryptionError, asyncssh.KeyImportError, OSError):
        keys = []  # passphrase-protected: the agent holds it
    deadline = time.monotonic() + within
    last: Exception | None = None
    while True:
        try:
            conn = await asyncssh.connect(
                target.host, port=target.port, username=target.user,
                client_keys=keys or None, agent_path=agent,
                known_hosts=(asyncssh.import_known_hosts(pinned) if pinned else None),
                connect_timeout=min(30.0, max(1.0, within)), login_timeout=30,
            )
            break
        except asyncssh.HostKeyNotVerifiable as exc:
            raise SshError(f"the host key of {target.host}:{target.port} does not match the "
                           f"one pinned in {target.known_hosts}; if the VPS was reinstalled, "
                           f"remove its line there") from exc
        except asyncssh.PermissionDenied as exc:
            raise SshError(f"SSH login as {target.user}@{target.host} refused; is the public "
                           f"key installed on the VPS (and ssh_user right)?") from exc
        except (OSError, asyncssh.Error, TimeoutError) as exc:
            last = exc
            if time.monotonic() + retry_interval > deadline:
                raise SshError(f"cannot reach {target.host}:{target.port} over SSH: {exc}; "
                               f"check the VPS is running and port {target.port} is open") from last
            await asyncio.sleep(retry_interval)
    newly = False
    if pinned is None:
        key = conn.get_server_host_key()
        if key is not None and store_new_key:
            pin_host_key(target, key)
        newly = True
    return VpsShell(conn, target.user), newly
