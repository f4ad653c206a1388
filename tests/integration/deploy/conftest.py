"""A world of loopback doubles for ./infra/deploy: fake OVH API, SSH "VPS", fake Kubernetes
API, DNS resolver, STUN server, /health and an image registry (Docker Hub); the tool itself
runs as a process of its own per run (forked from a process that has imported it, see
forkserver.py; ``fresh=True`` starts a plain ``python -m relay_deploy.cli``)."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh
import pytest
import trustme
import yaml
from aiohttp import web

from relay_deploy.ovh_rights import access_rules
from tests.doubles.fake_kube import TOKEN, FakeKube
from tests.doubles.fake_ovh import AK, AS, CK, FakeOvh
from tests.doubles.fake_registry import FakeRegistry
from tests.doubles.fake_traefik import FakeIrohRelay, FakeTraefik, FakeTurnTcp, TlsRoute
from tests.doubles.fake_vps import FakeVpsHost, start_fake_vps
from tests.doubles.net import FakeDns, FakeHealth, FakeStun
from tests.integration.deploy import forkserver
from tests.tools import free_port, free_tcp_udp_port

REPO = Path(__file__).resolve().parents[3]
DOMAIN = "mydia.test"
RELAY_HOST = f"relay.{DOMAIN}"
TURN_HOST = f"turn.{DOMAIN}"
IROH_HOST = f"iroh.{DOMAIN}"
IROH_IMAGE, IROH_TAG = "n0computer/iroh-relay", "v0.96.1"  # the kustomization's pin


@dataclass
class Result:
    rc: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


@dataclass
class World:
    tmp: Path
    ovh: FakeOvh
    kube: FakeKube
    vps: FakeVpsHost
    dns: FakeDns
    stun: FakeStun
    health: FakeHealth
    traefik: FakeTraefik  # 443: TURN over TLS and the iroh relay, routed by SNI
    turn_tcp: FakeTurnTcp
    iroh: FakeIrohRelay
    registry: FakeRegistry  # Docker Hub: the iroh relay image's digest
    ca: trustme.CA
    config_path: Path
    ovh_conf: Path
    env: dict[str, str]
    forks: str  # the fork server's socket
    config: dict[str, Any] = field(default_factory=dict)

    def write_config(self, **changes: Any) -> None:
        self.config.update(changes)
        self.config_path.write_text(yaml.safe_dump(self.config))

    def saved(self) -> dict[str, Any]:
        return yaml.safe_load(self.config_path.read_text())

    def advanced(self, **changes: Any) -> None:
        """Change ``advanced:`` settings in the config file (keeping what the tool wrote)."""
        config = self.saved()
        config["advanced"].update(changes)
        self.write_config(**config)

    async def start(self, *args: str, fresh: bool = False
                    ) -> asyncio.subprocess.Process | forkserver.ForkedRun:
        argv = ["--config", str(self.config_path), "--ovh-config", str(self.ovh_conf), *args]
        if not fresh:
            return await forkserver.start_run(self.forks, argv, self.env, str(self.tmp))
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "relay_deploy.cli", *argv, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=self.env,
            cwd=self.tmp)

    async def deploy(self, *args: str, stdin: str = "", fresh: bool = False) -> Result:
        proc = await self.start(*args, fresh=fresh)
        out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 120)
        return Result(proc.returncode or 0, out.decode(), err.decode())


async def _udp(proto: Any, port: int) -> Any:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: proto,
                                                       local_addr=("127.0.0.1", port))
    return transport


def _free_udp() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def forks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The fork server of the whole session (its socket path)."""
    path = str(tmp_path_factory.mktemp("forks") / "cli.sock")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO)]))
    server = subprocess.Popen([sys.executable, "-m", "tests.integration.deploy.forkserver",
                               path], stdin=subprocess.PIPE, env=env, cwd=REPO)
    try:
        forkserver.wait_ready(path, server)
        yield path
    finally:
        assert server.stdin is not None
        server.stdin.close()  # EOF: the server exits
        server.wait(30)


@pytest.fixture
async def world(tmp_path: Path, forks: str) -> AsyncIterator[World]:
    runners: list[web.AppRunner] = []

    async def serve(app: web.Application) -> int:
        port = free_port()
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
        return port

    ovh = FakeOvh()
    ovh.grants[CK] = access_rules()  # exactly what `./infra/deploy ovh-token` asks for
    ovh_port = await serve(ovh.app())
    ovh.base = f"http://127.0.0.1:{ovh_port}/1.0"
    kube = FakeKube()
    kube_port = await serve(kube.app())
    health = FakeHealth()
    health_port = await serve(health.app())
    registry = FakeRegistry()
    registry.base = f"http://127.0.0.1:{await serve(registry.app())}"
    registry.tag(IROH_IMAGE, IROH_TAG, seed="first build")

    client_key = asyncssh.generate_private_key("ssh-ed25519")
    keydir = tmp_path / "keys"
    keydir.mkdir()
    client_key.write_private_key(keydir / "id_ed25519")
    client_key.write_public_key(keydir / "id_ed25519.pub")
    vps = FakeVpsHost(authorized_keys=[client_key], kube_server=f"http://127.0.0.1:{kube_port}",
                      kube_token=TOKEN)
    ssh_port = free_port()
    ssh_server = await start_fake_vps(vps, ssh_port, asyncssh.generate_private_key("ssh-ed25519"))
    # the VPS an order delivers is this SSH double: a fresh image without our key, until the
    # rebuild installs it for the image's user
    ovh.on_delivered = lambda _vps: vps.reimage(None)
    ovh.on_rebuilt = lambda _vps, key: vps.reimage(key)

    # external-dns: the relay's A record, the routes by SNI as CNAMEs of it
    dns = FakeDns(records={RELAY_HOST: ["127.0.0.1"]},
                  cnames={TURN_HOST: RELAY_HOST, IROH_HOST: RELAY_HOST})
    dns_port = _free_udp()
    dns_transport = await _udp(dns, dns_port)
    stun = FakeStun()
    stun_port = free_tcp_udp_port()
    stun_transport = await _udp(stun, stun_port)
    # TURN's TCP side answers too (verify checks 3478/tcp from outside, and TURN over TLS
    # reaches it through Traefik with a PROXY v2 header)
    turn = FakeTurnTcp()
    turn_server = await turn.start(stun_port)
    # Traefik on "443": TURN over TLS terminated with a certificate from the test CA, the
    # iroh relay passed through to its own TLS (a certificate for its host name)
    ca = trustme.CA()
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem.bytes())
    iroh = FakeIrohRelay()
    iroh_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(IROH_HOST).configure_cert(iroh_context)
    iroh_port = free_port()
    iroh_runner = web.AppRunner(iroh.app())
    await iroh_runner.setup()
    await web.TCPSite(iroh_runner, "127.0.0.1", iroh_port, ssl_context=iroh_context).start()
    runners.append(iroh_runner)
    turn_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(TURN_HOST).configure_cert(turn_context)
    traefik = FakeTraefik(routes={
        TURN_HOST: TlsRoute(("127.0.0.1", stun_port), turn_context),
        IROH_HOST: TlsRoute(("127.0.0.1", iroh_port)),
    })
    traefik_port = free_port()
    traefik_server = await traefik.start(traefik_port)

    infra = tmp_path / "infra"
    infra.mkdir()
    ovh_conf = infra / "ovh.conf"
    ovh_conf.write_text(f"[default]\nendpoint={ovh.base}\n\n[{ovh.base}]\n"
                        f"application_key={AK}\napplication_secret={AS}\nconsumer_key={CK}\n")
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OVH_", "SSH_AUTH_SOCK", "KUBECONFIG"))}
    env.update(HOME=str(home), KUBECONFIG=str(home / ".kube" / "config"), NO_PROXY="*",
               no_proxy="*", PYTHONPATH=str(REPO / "src"), COLUMNS="200", TERM="dumb")
    w = World(tmp=tmp_path, ovh=ovh, kube=kube, vps=vps, dns=dns, stun=stun, health=health,
              traefik=traefik, turn_tcp=turn, iroh=iroh, registry=registry, ca=ca,
              config_path=infra / "config.yaml", ovh_conf=ovh_conf, env=env, forks=forks)
    w.write_config(
        domain_name=DOMAIN, acme_email="ops@mydia.test", cloudflare_api_token="cf-token-secret",
        relay_secret_key_base="k" * 64, relay_tmdb_api_key="tmdb-secret-key",
        ssh_public_key_path=str(keydir / "id_ed25519.pub"), ssh_port=ssh_port,
        vps_datacenter="SBG",
        advanced={"dns_resolver": "127.0.0.1", "dns_port": dns_port,
                  "health_base_url": f"http://127.0.0.1:{health_port}",
                  "stun_port": stun_port, "https_port": traefik_port,
                  "tls_ca_file": str(tmp_path / "ca.pem"),
                  "image_registry_url": registry.base, "registry_timeout_seconds": 2,
                  "relay_http_port": free_port(), "probe_timeout_seconds": 0.5,
                  "poll_seconds": 0.05, "wait_timeout_seconds": 2,
                  "vps_poll_seconds": 0.02, "vps_order_timeout_seconds": 10,
                  "vps_task_timeout_seconds": 10, "ssh_connect_timeout_seconds": 5})
    try:
        yield w
    finally:
        ssh_server.close()
        dns_transport.close()
        stun_transport.close()
        turn_server.close()
        traefik_server.close()
        for r in runners:
            await r.cleanup()
