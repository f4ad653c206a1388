"""A real SSH server (asyncssh) on loopback standing in for the VPS.

Only public-key login with the test's key is accepted. Commands emulate a fresh Ubuntu box
with the k3s installer: the install (pinned version required) creates k3s.yaml, whose server
points at the fake Kubernetes API. Every command is recorded."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncssh

K3S_YAML = """apiVersion: v1
clusters:
- cluster:
    server: {server}
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
current-context: default
kind: Config
preferences: {{}}
users:
- name: default
  user:
    token: {token}
"""


@dataclass
class FakeVpsHost:
    authorized_key: asyncssh.SSHKey
    kube_server: str
    kube_token: str
    user: str = "ubuntu"  # OVH's Ubuntu images install the rebuild's key for this user
    k3s_installed: bool = False
    commands: list[str] = field(default_factory=list)
    installs: list[str] = field(default_factory=list)
    refused_logins: int = 0

    def read_only(self) -> bool:
        return not self.installs

    def handle(self, command: str) -> tuple[int, str, str]:
        self.commands.append(command)
        if self.user != "root":
            if "get.k3s.io" in command:
                if "| sudo -n env " not in command:
                    return 1, "", "[ERROR]  You need to be root to perform this install\n"
            elif not command.startswith("sudo -n "):
                return 1, "", "Permission denied\n"
            command = command.removeprefix("sudo -n ")
        if command == "test -f /etc/rancher/k3s/k3s.yaml && echo present || echo absent":
            return 0, "present\n" if self.k3s_installed else "absent\n", ""
        if "https://get.k3s.io" in command:
            if "INSTALL_K3S_VERSION=" not in command:
                return 1, "", "refusing an unpinned k3s install in this test\n"
            self.installs.append(command)
            self.k3s_installed = True
            return 0, "[INFO]  systemd: Starting k3s\n", ""
        if command == "cat /etc/rancher/k3s/k3s.yaml":
            if not self.k3s_installed:
                return 1, "", "cat: /etc/rancher/k3s/k3s.yaml: No such file or directory\n"
            return 0, K3S_YAML.format(server=self.kube_server, token=self.kube_token), ""
        return 127, "", f"sh: {command.split()[0]}: not found\n"


class _Server(asyncssh.SSHServer):
    def __init__(self, host: FakeVpsHost) -> None:
        self.host = host

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        ok = (username == self.host.user and key.public_data ==
              self.host.authorized_key.public_data)
        if not ok:
            self.host.refused_logins += 1
        return ok


async def start_fake_vps(host: FakeVpsHost, port: int, host_key: asyncssh.SSHKey) -> Any:
    async def process(proc: asyncssh.SSHServerProcess[str]) -> None:
        code, out, err = host.handle(proc.command or "")
        proc.stdout.write(out)
        proc.stderr.write(err)
        proc.exit(code)

    return await asyncssh.create_server(lambda: _Server(host), "127.0.0.1", port,
                                        server_host_keys=[host_key], process_factory=process)
