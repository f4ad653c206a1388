"""The host firewall: one declarative inbound list, rendered to an nftables ruleset that the
real ``nft`` accepts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from relay_deploy import firewall as fw
from relay_deploy import platform
from tests.doubles.fake_vps import nft_problem
from tests.tools import require_tool


def _rules(ssh_port: int = 22) -> list[fw.Inbound]:
    ports = platform.relay_ports()
    return fw.inbound_rules(ssh_port=ssh_port, turn_port=ports.turn, relay_min=ports.relay_min,
                            relay_max=ports.relay_max)


def test_inbound_is_ssh_http_https_turn_and_the_relay_range() -> None:
    ports = platform.relay_ports()
    assert ports.http == 4001 and ports.turn == 3478
    public = {(r.protocol, r.ports) for r in _rules() if not r.only_operator}
    assert public == {("tcp", "22"), ("tcp", "80"), ("tcp", "443"), ("udp", "3478"),
                      ("tcp", "3478"), ("udp", f"{ports.relay_min}-{ports.relay_max}")}
    assert [(r.protocol, r.ports) for r in _rules() if r.only_operator] == [("tcp", "6443")]


def test_ruleset_opens_only_the_declared_ports() -> None:
    text = fw.ruleset(_rules(2222), "203.0.113.7")
    assert "policy drop" in text
    assert 'tcp dport 2222 accept comment "SSH' in text
    assert "ip saddr 203.0.113.7 tcp dport 6443 accept" in text
    for closed in ("4001", "10250", "8472", "6443 accept comment \"SSH"):
        assert closed not in text.replace("ip saddr 203.0.113.7 tcp dport 6443", "")
    assert "ct original proto-dst != { 2222, 80, 443, 3478 } drop" in text
    v6 = fw.ruleset(_rules(), "2001:db8::7")
    assert "ip6 saddr 2001:db8::7 tcp dport 6443 accept" in v6
    assert fw.ruleset(_rules(), "203.0.113.7") == fw.ruleset(_rules(), "203.0.113.7")


def test_a_component_adds_its_port_in_the_one_list() -> None:
    iroh = [*_rules(), fw.Inbound("iroh QUIC address discovery", "udp", 7842)]
    text = fw.ruleset(iroh, "203.0.113.7")
    assert "udp dport 7842 accept" in text
    assert "ct original proto-dst != { 3478, 49152-49252, 7842 } drop" in text


def test_the_iroh_relay_opens_only_its_quic_port() -> None:
    """Enabled, the iroh relay adds exactly UDP 7842 (its host port, read from its manifest);
    its HTTPS shares 443 through Traefik."""
    ports = platform.relay_ports()
    quic = platform.iroh_relay().quic_port
    assert quic == 7842
    rules = fw.inbound_rules(ssh_port=22, turn_port=ports.turn, relay_min=ports.relay_min,
                             relay_max=ports.relay_max, iroh_quic_port=quic)
    added = {(r.protocol, r.ports, r.only_operator) for r in rules} - {
        (r.protocol, r.ports, r.only_operator) for r in _rules()}
    assert added == {("udp", "7842", False)}
    assert "ct original proto-dst != { 3478, 49152-49252, 7842 } drop" in fw.ruleset(
        rules, "203.0.113.7")


def test_bad_operator_address_is_refused() -> None:
    with pytest.raises(ValueError):
        fw.ruleset(_rules(), "203.0.113.7; flush ruleset")


def test_real_nft_accepts_the_ruleset(tmp_path: Path) -> None:
    """``nft -c`` in a network namespace of its own: the kernel checks the ruleset without
    the host's firewall being touched."""
    nft = require_tool("nft")
    unshare = require_tool("unshare")
    rules = tmp_path / "firewall.nft"
    rules.write_text(fw.ruleset(_rules(), "203.0.113.7"))
    result = subprocess.run([unshare, "-n", nft, "-c", "-f", str(rules)], capture_output=True,
                            text=True, timeout=30)
    if result.returncode != 0 and "Operation not permitted" in result.stderr:
        pytest.skip("no permission for a network namespace here (needs root)")
    assert result.returncode == 0, result.stderr
    broken = tmp_path / "broken.nft"
    broken.write_text(rules.read_text().replace("policy drop;", "policy dorp;"))
    bad = subprocess.run([unshare, "-n", nft, "-c", "-f", str(broken)], capture_output=True,
                         text=True, timeout=30)
    assert bad.returncode != 0
    assert nft_problem(rules.read_text()) == ""  # the SSH double's stand-in agrees


def test_boot_unit_loads_the_ruleset_before_k3s() -> None:
    unit = fw.unit()
    assert f"ExecStart=/usr/sbin/nft -f {fw.RULES_PATH}" in unit
    assert "Before=network-pre.target k3s.service" in unit and "WantedBy=sysinit.target" in unit
