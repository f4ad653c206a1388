"""The VPS's host firewall: one declarative list of what may come in, rendered to nftables.

:func:`inbound_rules` is the one place that says which ports the host accepts from outside.
A component that needs another port adds an :class:`Inbound` there (an iroh relay, for
example, adds UDP 7842; TCP 443 is already open and shared through Traefik's SNI routing).
Everything else is dropped: the relay's plain HTTP port (4001, hostNetwork), kubelet
(10250), flannel (8472/udp), NodePorts, and the k3s API except from the operator's address.

:func:`ruleset` renders the list into one nftables file (its own table, replaced atomically,
so k3s's and Docker's tables are untouched); :func:`unit` is the systemd unit that loads it
at boot, before the network and k3s come up. Both are pure text: the kubeconfig phase
compares them with what is on the VPS and writes them only when they differ.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

TABLE = "metadata_relay"
RULES_PATH = "/etc/metadata-relay/firewall.nft"
UNIT_NAME = "metadata-relay-firewall.service"
UNIT_PATH = f"/etc/systemd/system/{UNIT_NAME}"
K3S_API_PORT = 6443
POD_INTERFACES = ("cni0", "flannel.1")  # k3s's flannel: pods reach the node through these
POD_CIDR = "10.42.0.0/16"  # k3s's default cluster CIDR


@dataclass(frozen=True)
class Inbound:
    """Traffic the host accepts from outside."""

    why: str
    protocol: Literal["tcp", "udp"]
    first: int
    last: int = 0  # a range first..last; 0: the single port ``first``
    only_operator: bool = False  # only from the operator's address

    @property
    def ports(self) -> str:
        return str(self.first) if not self.last or self.last == self.first \
            else f"{self.first}-{self.last}"


def inbound_rules(*, ssh_port: int, turn_port: int, relay_min: int, relay_max: int,
                  iroh_quic_port: int | None = None) -> list[Inbound]:
    """Everything the host accepts from outside (add a component's ports here).
    ``iroh_quic_port``: the iroh relay is deployed (its HTTPS shares 443 through Traefik)."""
    optional = [] if iroh_quic_port is None else [
        Inbound("iroh relay: QUIC address discovery", "udp", iroh_quic_port)]
    return [
        Inbound("SSH: the deploy tool and you", "tcp", ssh_port),
        Inbound("HTTP: Let's Encrypt HTTP-01 challenges, redirect to HTTPS (Traefik)", "tcp",
                80),
        Inbound("HTTPS: the relay, Argo CD, TURN over TLS, the iroh relay (Traefik, by name)",
                "tcp", 443),
        Inbound("STUN/TURN", "udp", turn_port),
        Inbound("STUN/TURN over TCP", "tcp", turn_port),
        Inbound("TURN relay allocations", "udp", relay_min, relay_max),
        *optional,
        Inbound("Kubernetes API (k3s): the deploy tool and your kubectl", "tcp", K3S_API_PORT,
                only_operator=True),
    ]


def _source(address: str) -> str:
    ip = ipaddress.ip_address(address)
    return f"{'ip' if ip.version == 4 else 'ip6'} saddr {ip}"


def ruleset(rules: list[Inbound], operator_address: str) -> str:
    """The nftables file for ``rules``, the operator's address filling ``only_operator``."""
    accept = []
    for rule in rules:
        source = f"{_source(operator_address)} " if rule.only_operator else ""
        why = rule.why.replace('"', "'")
        accept.append(f'        {source}{rule.protocol} dport {rule.ports} accept '
                      f'comment "{why}"')
    public: dict[str, list[str]] = {"tcp": [], "udp": []}
    for rule in rules:
        if not rule.only_operator:
            public[rule.protocol].append(rule.ports)
    pods = ", ".join(f'"{name}"' for name in POD_INTERFACES)
    forward = [f"        ct state new ct status dnat meta l4proto {proto} "
               f"ct original proto-dst != {{ {', '.join(ports)} }} drop"
               for proto, ports in public.items() if ports]
    lines = [
        "#!/usr/sbin/nft -f",
        "# metadata-relay host firewall, written by ./infra/deploy (relay_deploy/firewall.py).",
        "# Do not edit: the next run rewrites it. Loaded at boot by " + UNIT_NAME + ".",
        f"table inet {TABLE}",
        f"delete table inet {TABLE}",
        f"table inet {TABLE} {{",
        "    chain input {",
        "        type filter hook input priority filter; policy drop;",
        '        iif "lo" accept',
        "        ct state established,related accept",
        "        ct state invalid drop",
        f"        iifname {{ {pods} }} accept comment \"pods (k3s flannel)\"",
        f"        ip saddr {POD_CIDR} accept comment \"pod network\"",
        "        meta l4proto { icmp, ipv6-icmp } accept",
        '        udp sport 67 udp dport 68 accept comment "DHCPv4 replies"',
        '        udp sport 547 udp dport 546 accept comment "DHCPv6 replies"',
        *accept,
        "    }",
        "    # Ports published through DNAT (hostPort, NodePort, k3s's service load balancer)",
        "    # are forwarded, not delivered: only the public ports above may be reached so.",
        "    chain forward {",
        "        type filter hook forward priority filter; policy accept;",
        "        ct state established,related accept",
        f"        iifname {{ {pods} }} accept",
        *forward,
        "    }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def unit() -> str:
    """The systemd unit that loads the ruleset at boot, before the network and k3s."""
    return "\n".join([
        "[Unit]",
        "Description=metadata-relay host firewall (nftables; written by ./infra/deploy)",
        "DefaultDependencies=no",
        "Wants=network-pre.target",
        "Before=network-pre.target k3s.service",
        "After=local-fs.target",
        "",
        "[Service]",
        "Type=oneshot",
        "RemainAfterExit=yes",
        f"ExecStart=/usr/sbin/nft -f {RULES_PATH}",
        f"ExecReload=/usr/sbin/nft -f {RULES_PATH}",
        "",
        "[Install]",
        "WantedBy=sysinit.target",
        "",
    ])
