"""A real SSH server (asyncssh) on loopback standing in for the VPS.

It behaves like a fresh OVH Ubuntu image: login only for the image's user (``ubuntu``), only
with a key OVH installed by a rebuild (or one the test authorizes), root's work only through
``sudo -n``. Commands emulate the k3s installer (pinned version required; k3s.yaml then points
at the fake Kubernetes API), and the files, systemd unit and nftables table of the host
firewall (``nft -c`` refuses a ruleset that does not parse as this tool writes it). A rebuild
(see ``FakeOvh.on_rebuilt``) wipes all that and gives the server a new host key. Every command
is recorded; :meth:`FakeVpsHost.mutations` are those that changed something.
"""

from __future__ import annotations

import re
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
K3S_CONFIG = "/etc/rancher/k3s/k3s.yaml"
READ_ONLY = re.compile(r"^(test -f \S+ && echo present \|\| echo absent|cat \S+|"
                       r"systemctl is-enabled \S+|nft list table inet \S+|command -v nft|"
                       r'echo "\$SSH_CONNECTION")$')


@dataclass
class FakeVpsHost:
    authorized_keys: list[asyncssh.SSHKey]
    kube_server: str
    kube_token: str
    user: str = "ubuntu"  # OVH's Ubuntu images install the rebuild's key for this user
    k3s_installed: bool = False
    files: dict[str, str] = field(default_factory=dict)
    enabled_units: set[str] = field(default_factory=set)
    nft_loaded: str | None = None  # the ruleset loaded in the kernel
    nft_installed: bool = True
    client_address: str = "127.0.0.1"
    commands: list[str] = field(default_factory=list)
    installs: list[str] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)
    refused_logins: int = 0
    host_keys: list[asyncssh.SSHKey] = field(default_factory=list)
    acceptor: Any = None

    def read_only(self) -> bool:
        return not self.changes

    def mutations(self) -> list[str]:
        return list(self.changes)

    def reimage(self, public_key: str | None) -> None:
        """What a rebuild (or a fresh delivery) leaves: nothing of ours, the key OVH
        installed for the image's user, and a new host key."""
        self.authorized_keys = [asyncssh.import_public_key(public_key)] if public_key else []
        self.k3s_installed = False
        self.files.clear()
        self.enabled_units.clear()
        self.nft_loaded = None
        new_key = asyncssh.generate_private_key("ssh-ed25519")
        self.host_keys.append(new_key)
        if self.acceptor is not None:
            self.acceptor.update(server_host_keys=[new_key])

    def handle(self, command: str, stdin: str) -> tuple[int, str, str]:
        self.commands.append(command)
        if self.user != "root":
            if "get.k3s.io" in command:
                if "| sudo -n env " not in command:
                    return 1, "", "[ERROR]  You need to be root to perform this install\n"
            elif command.startswith("sudo -n "):
                command = command.removeprefix("sudo -n ")
            elif command not in ("command -v nft", 'echo "$SSH_CONNECTION"'):
                return 1, "", "Permission denied\n"
        if not READ_ONLY.match(command) and "get.k3s.io" not in command:
            self.changes.append(command)
        return self._root(command, stdin)

    def _root(self, command: str, stdin: str) -> tuple[int, str, str]:
        if command == 'echo "$SSH_CONNECTION"':
            return 0, f"{self.client_address} 51234 127.0.0.1 22\n", ""
        if command == f"test -f {K3S_CONFIG} && echo present || echo absent":
            return 0, "present\n" if self.k3s_installed else "absent\n", ""
        if "https://get.k3s.io" in command:
            if "INSTALL_K3S_VERSION=" not in command:
                return 1, "", "refusing an unpinned k3s install in this test\n"
            self.installs.append(command)
            self.k3s_installed = True
            return 0, "[INFO]  systemd: Starting k3s\n", ""
        if command == f"cat {K3S_CONFIG}":
            if not self.k3s_installed:
                return 1, "", f"cat: {K3S_CONFIG}: No such file or directory\n"
            return 0, K3S_YAML.format(server=self.kube_server, token=self.kube_token), ""
        if command.startswith("cat "):
            path = command[4:]
            if path not in self.files:
                return 1, "", f"cat: {path}: No such file or directory\n"
            return 0, self.files[path], ""
        if command == "command -v nft":
            return (0, "/usr/sbin/nft\n", "") if self.nft_installed else (1, "", "")
        if command.startswith("env DEBIAN_FRONTEND=noninteractive apt-get install") and \
                command.endswith(" nftables"):
            self.nft_installed = True
            return 0, "", ""
        if m := re.fullmatch(r"install -d -m 0755 (\S+)", command):
            return 0, "", ""
        if m := re.fullmatch(r"tee (\S+) >/dev/null", command):
            self.files[m.group(1)] = stdin
            return 0, "", ""
        if m := re.fullmatch(r"mv (\S+) (\S+)", command):
            if m.group(1) not in self.files:
                return 1, "", f"mv: cannot stat '{m.group(1)}'\n"
            self.files[m.group(2)] = self.files.pop(m.group(1))
            return 0, "", ""
        if m := re.fullmatch(r"nft (-c )?-f (\S+)", command):
            if not self.nft_installed:
                return 127, "", "sh: 1: nft: not found\n"
            text = self.files.get(m.group(2))
            if text is None:
                return 1, "", f"Error: Could not process rule: No such file {m.group(2)}\n"
            problem = nft_problem(text)
            if problem:
                return 1, "", f"{m.group(2)}:1:1-1: Error: {problem}\n"
            if not m.group(1):
                self.nft_loaded = text
            return 0, "", ""
        if m := re.fullmatch(r"nft list table inet (\S+)", command):
            loaded = self.nft_loaded is not None and f"table inet {m.group(1)} {{" in \
                self.nft_loaded
            return (0, self.nft_loaded or "", "") if loaded else (
                1, "", "Error: No such file or directory\n")
        if command == "systemctl daemon-reload":
            return 0, "", ""
        if m := re.fullmatch(r"systemctl enable (\S+)", command):
            if f"/etc/systemd/system/{m.group(1)}" not in self.files:
                return 1, "", f"Failed to enable unit: Unit file {m.group(1)} does not exist.\n"
            self.enabled_units.add(m.group(1))
            return 0, "", ""
        if m := re.fullmatch(r"systemctl is-enabled (\S+)", command):
            if m.group(1) in self.enabled_units:
                return 0, "enabled\n", ""
            known = f"/etc/systemd/system/{m.group(1)}" in self.files
            return 1, "disabled\n" if known else "", "" if known else "not-found\n"
        return 127, "", f"sh: {command.split()[0]}: not found\n"


def nft_problem(text: str) -> str:
    """A minimal stand-in for ``nft -c`` on the VPS (the real one checks the same file in
    tests/unit/deploy/test_firewall.py): balanced braces, one table replaced atomically."""
    if text.count("{") != text.count("}"):
        return "syntax error, unbalanced braces"
    if not re.search(r"^table inet \w+\n^delete table inet \w+\n^table inet \w+ \{", text,
                     flags=re.M):
        return "the ruleset must replace its own table atomically"
    return ""


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
        ok = username == self.host.user and any(
            key.public_data == k.public_data for k in self.host.authorized_keys)
        if not ok:
            self.host.refused_logins += 1
        return ok


async def start_fake_vps(host: FakeVpsHost, port: int, host_key: asyncssh.SSHKey) -> Any:
    async def process(proc: asyncssh.SSHServerProcess[str]) -> None:
        command = proc.command or ""
        stdin = await proc.stdin.read() if command.startswith(("tee ", "sudo -n tee ")) else ""
        code, out, err = host.handle(command, stdin)
        proc.stdout.write(out)
        proc.stderr.write(err)
        proc.exit(code)

    host.host_keys.append(host_key)
    host.acceptor = await asyncssh.create_server(
        lambda: _Server(host), "127.0.0.1", port, server_host_keys=[host_key],
        process_factory=process)
    return host.acceptor
