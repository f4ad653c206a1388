"""Debian coturn's own clients against ``metadata-relay`` as users start it."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.interop.turn.support import (
    FORWARDING,
    stats,
    turn_port,
    turn_service,
    turnutils_peer,
    uclient,
)
from tests.tools import require_tool


def test_turnutils_stunclient_gets_mapped_address(tmp_path: Path) -> None:
    exe = require_tool("turnutils_stunclient")
    with turn_service(tmp_path) as svc:
        out = subprocess.run([exe, "-p", str(turn_port(svc)), "127.0.0.1"],
                             capture_output=True, text=True, timeout=30)
        assert "UDP reflexive addr: 127.0.0.1:" in out.stdout + out.stderr


@FORWARDING
def test_uclient_relays_without_loss_udp_tcp_channels_and_indications(tmp_path: Path,
                                                                      forwarding: str) -> None:
    with turn_service(tmp_path, forwarding) as svc, turnutils_peer() as peer:
        variants = ((), ("-t",), ("-s",), ("-t", "-s"))
        with ThreadPoolExecutor(len(variants)) as pool:  # four independent client processes
            results = list(pool.map(
                lambda flags: uclient(turn_port(svc), peer, *flags, n=100, m=2, z=2), variants))
        for result in results:
            assert result["sent"] == 200, result["output"]
            assert result["received"] == 200, result["output"]
            assert result["lost"] == 0, result["output"]
        s = stats(svc)
        assert s["relayed_packets"]["client_to_peer"] >= 800
        assert s["relayed_packets"]["peer_to_client"] >= 800


def test_uclient_with_wrong_secret_is_refused(tmp_path: Path) -> None:
    exe = require_tool("turnutils_uclient")
    with turn_service(tmp_path) as svc, turnutils_peer() as peer:
        out = subprocess.run([exe, "-c", "-W", "wrong", "-u", "eve", "-e", "127.0.0.1", "-r",
                              str(peer), "-n", "5", "-m", "1", "-p", str(turn_port(svc)),
                              "127.0.0.1"], capture_output=True, text=True, timeout=60)
        assert out.returncode != 0
        s = stats(svc)
        assert s["allocations"] == 0
        assert s["auth_failures"].get("bad_integrity", 0) >= 1


@pytest.mark.parametrize("flag", ["-g"])
def test_uclient_dont_fragment_gets_420(tmp_path: Path, flag: str) -> None:
    with turn_service(tmp_path) as svc, turnutils_peer() as peer:
        result = uclient(turn_port(svc), peer, flag, n=5, m=1)
        assert "420" in result["output"]
        assert stats(svc)["error_responses"].get("420", 0) >= 1
